//! The daemon under benchmark: the release `rerod` on a free loopback port
//! with a fresh store and a UTC lab, and readings of its CPU and memory.
//! Shared by the bench targets through `#[path]`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// From starting the process to its port accepting a connection.
    #[allow(dead_code)]
    pub ready_after: Duration,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The benchmarks' config: every client connects, registers and logs in
/// from 127.0.0.1, so the limits per address are lifted, and the connection
/// caps are raised above the largest client count (10,000 sockets).
#[allow(dead_code)]
pub const CONFIG: &str = "[lab]\ntimezone = \"UTC\"\n\
                          [auth]\nmax_registrations_per_address_per_hour = 1000000\nmax_logins_per_address = 1000000\n\
                          [server]\nmax_connections = 30000\nmax_websocket_connections = 30000\n\
                          max_connections_per_address = 30000\nmax_websockets_per_address = 30000\n";

#[path = "../common/pg.rs"]
mod pg;

/// Sets server settings of the benchmark's PostgreSQL server
/// (tests/common/pg.rs; `name=value` each, with `ALTER SYSTEM`) and has the
/// server read them again: for runs that measure what a setting changes
/// (`synchronous_commit=off`, measurement only) or that rely on one a lab
/// sets (`commit_delay`). Prints them, so a run's output says which settings
/// it ran with.
#[allow(dead_code)]
pub fn pg_settings(settings: &[String]) {
    if settings.is_empty() {
        return;
    }
    for setting in settings {
        let (name, value) = setting.split_once('=').expect("a PostgreSQL setting as name=value");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a setting's name: {name}");
        let sql = format!("ALTER SYSTEM SET {name} = '{}'", value.replace('\'', "''"));
        pg::psql("postgres", &sql);
    }
    pg::psql("postgres", "SELECT pg_reload_conf()");
    println!("PostgreSQL settings for this run: {}", settings.join(", "));
}

/// Two hosts of one lab on a new database `db` of the benchmark's server: B serves
/// `devices`, A none (the clients reach A, which forwards to B). `config` is
/// both hosts' config before their boards and `[cluster]`; `dir` holds the
/// lab's secret. Returns (A, B) at once: B's boards reach A's list with
/// B's first presence (within a second or so).
#[allow(dead_code)]
pub fn two_hosts(config: &str, devices: &str, db: &str, dir: &std::path::Path) -> (Daemon, Daemon) {
    let url = pg_database(db);
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, "a-lab-secret-shared-by-every-host-of-it-0123456789\n").unwrap();
    let host = |name: &str, port: u16, devices: &str| {
        format!(
            "{config}{devices}[cluster]\nname = \"{name}\"\nadvertise = \"http://127.0.0.1:{port}\"\n\
             secret_file = \"{}\"\n",
            secret.display()
        )
    };
    let (port_a, port_b) = (free_port(), free_port());
    let b = Daemon::start_on(port_b, 4, &host("bench-b", port_b, devices), &[("DATABASE_URL", &url)]);
    let a = Daemon::start_on(port_a, 4, &host("bench-a", port_a, ""), &[("DATABASE_URL", &url)]);
    (a, b)
}

/// A new database `db` on the benchmark's server: its URL.
#[allow(dead_code)]
pub fn pg_database(db: &str) -> String {
    pg::create_database(db)
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().unwrap().port()
}

impl Daemon {
    /// Starts rerod on [`CONFIG`] with this bcrypt cost; `BENCH_LOG_LEVEL`
    /// (default `info`) sets its log level.
    #[allow(dead_code)]
    pub fn start(bcrypt_cost: u32) -> Daemon {
        Daemon::start_with(bcrypt_cost, CONFIG)
    }

    /// Starts rerod with this bcrypt cost and config file text. `BENCH_REROD`
    /// names another rerod binary to run (an older build, to compare).
    pub fn start_with(bcrypt_cost: u32, config_text: &str) -> Daemon {
        Daemon::start_with_env(bcrypt_cost, config_text, &[])
    }

    /// [`Daemon::start_with`], with more environment variables (`DATABASE_URL`, say).
    pub fn start_with_env(bcrypt_cost: u32, config_text: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(free_port(), bcrypt_cost, config_text, env)
    }

    /// [`Daemon::start_with_env`] on a port chosen beforehand (a host of a
    /// lab of several hosts names its address in its config).
    pub fn start_on(port: u16, bcrypt_cost: u32, config_text: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        // Config and state in separate directories, as on a lab host
        // (/etc/rerod, /var/lib/rerod): the config watcher never sees commits.
        let (config_dir, state_dir) = (dir.path().join("etc"), dir.path().join("state"));
        std::fs::create_dir(&config_dir).unwrap();
        std::fs::create_dir(&state_dir).unwrap();
        let config = config_dir.join("rerod.toml");
        std::fs::write(&config, config_text).unwrap();
        let binary = std::env::var_os("BENCH_REROD").unwrap_or_else(|| env!("CARGO_BIN_EXE_rerod").into());
        let started = Instant::now();
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .current_dir(&state_dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("BCRYPT_ROUNDS", bcrypt_cost.to_string())
            .env("LOG_LEVEL", std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()))
            .env("DATABASE_PATH", state_dir.join("rerod.redb"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rerod");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "rerod did not start");
            std::thread::sleep(Duration::from_millis(1));
        }
        Daemon { child, addr, ready_after: started.elapsed(), _dir: dir }
    }

    /// CPU time (user + system) the daemon has used so far.
    #[allow(dead_code)]
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Resident memory, in KiB.
    #[allow(dead_code)]
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}
