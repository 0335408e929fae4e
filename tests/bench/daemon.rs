//! The daemon under benchmark: the release `rerod` on a free loopback port
//! with a fresh store and a UTC lab, and readings of its CPU and memory.
//! Shared by the bench targets through `#[path]`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts rerod with this bcrypt cost; `BENCH_LOG_LEVEL` (default `info`) sets its log level.
    /// Every benchmark client registers from 127.0.0.1, so the hourly
    /// registration limit per address is lifted.
    #[allow(dead_code)]
    pub fn start(bcrypt_cost: u32) -> Daemon {
        let config = "[lab]\ntimezone = \"UTC\"\n[auth]\nmax_registrations_per_address_per_hour = 1000000\n";
        Daemon::start_with(bcrypt_cost, config)
    }

    /// Starts rerod with this bcrypt cost and config file text.
    pub fn start_with(bcrypt_cost: u32, config_text: &str) -> Daemon {
        Daemon::start_with_env(bcrypt_cost, config_text, &[])
    }

    /// [`Daemon::start_with`], with more environment variables (`DATABASE_URL`, say).
    pub fn start_with_env(bcrypt_cost: u32, config_text: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().unwrap().port();
        // Config and state in separate directories, as on a lab host
        // (/etc/rerod, /var/lib/rerod): the config watcher never sees commits.
        let (config_dir, state_dir) = (dir.path().join("etc"), dir.path().join("state"));
        std::fs::create_dir(&config_dir).unwrap();
        std::fs::create_dir(&state_dir).unwrap();
        let config = config_dir.join("rerod.toml");
        std::fs::write(&config, config_text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rerod"))
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
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, addr, _dir: dir }
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
