//! What the daemon acknowledged survives `kill -9`.

use serde_json::json;

use crate::util::{Daemon, Options, PASSWORD, UNCAPPED_LAB, eventually, utc_date};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_bookings_and_tokens_survive_kill_9() {
    let daemon = Daemon::start_with(Options::config(UNCAPPED_LAB));
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    // Acknowledged concurrently, so they share transactions.
    let tasks: Vec<_> = (0..24)
        .map(|slot| {
            let token = if slot % 2 == 0 { token.clone() } else { bob.clone() };
            let body = json!({"slot_id": slot, "date": utc_date(2).to_string()});
            tokio::spawn(async move { c.post_auth("/book-slot", &token, &body).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect(200);
    }
    c.post_auth("/cancel-slot", &token, &json!({"slot_id": 0, "date": utc_date(2).to_string()})).await.expect(200);

    let daemon = daemon.kill9_and_restart();
    let c = daemon.client();
    let booked = c.booked(utc_date(2)).await;
    assert_eq!(booked, (1..24).collect::<Vec<u64>>());
    // The generated JWT secret was kept in the store: the old token still works.
    let mine = c.get_auth("/my-bookings", &token).await.expect(200);
    assert_eq!(mine["total_bookings"], 11);
    c.login("bob@example.com", PASSWORD).await;
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm_exits_zero_and_keeps_data() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    c.post_auth("/book-slot", &token, &json!({"slot_id": 7, "date": utc_date(1).to_string()})).await.expect(200);
    let mut daemon = daemon;
    let status = daemon.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    daemon.log_until(|log| log.contains("\"stopped\"")).await;
    let daemon = daemon.restart();
    assert_eq!(daemon.client().booked(utc_date(1)).await, [7]);
}

/// `rerod backup` while bookings pour in: the copy holds every booking
/// acknowledged before the backup began, and a daemon starts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_booking() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(c.user(&format!("u{i}@example.com")).await);
    }
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                // Each user books its own slots, day after day.
                for n in 0..200 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let (date, slot) = (utc_date(1 + (n / 3) % 6), (i as u64) * 3 + (n as u64) % 3);
                    let body = json!({"slot_id": slot, "date": date.to_string()});
                    if c.post_auth("/book-slot", &token, &body).await.status == 200 {
                        acknowledged.lock().unwrap().push((date.to_string(), slot));
                    }
                }
            })
        })
        .collect();
    // Let some bookings land, then back up while the load goes on.
    eventually("20 bookings acknowledged under load", async || {
        let n_acknowledged = acknowledged.lock().unwrap().len();
        if n_acknowledged >= 20 { Ok(()) } else { Err(format!("{n_acknowledged} so far")) }
    })
    .await;
    let before_backup = acknowledged.lock().unwrap().clone();
    let out = tempfile::tempdir().unwrap();
    let backup = out.path().join("backup.redb");
    backup_store(&daemon, &backup);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    // Restore: a daemon on the backup file.
    let restored = Daemon::start_with(
        crate::util::Options::config(crate::util::UTC_LAB).env("DATABASE_PATH", backup.to_str().unwrap()),
    );
    let rc = restored.client();
    for (date, slot) in before_backup {
        let slots = rc.get(&format!("/slots?date={date}")).await.expect(200);
        assert_eq!(slots["slots"][slot as usize]["is_booked"], true, "{date} slot {slot} lost");
    }
    rc.login("u0@example.com", PASSWORD).await;

    // export: users without hashes unless asked, and the bookings.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rerod"))
        .arg("export")
        .env("DATABASE_PATH", &backup)
        .output()
        .unwrap();
    assert!(output.status.success());
    let export: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(export["users"].as_array().unwrap().len(), 8);
    assert!(export["users"][0]["password_hash"].is_null());
    assert!(!export["bookings"].as_array().unwrap().is_empty());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rerod"))
        .args(["export", "--with-hashes"])
        .env("DATABASE_PATH", &backup)
        .output()
        .unwrap();
    let export: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(export["users"][0]["password_hash"].as_str().unwrap().starts_with("$2"));
}

/// A backup holds the JWT secret and every password hash: only its owner may
/// read it, whatever the umask of whoever ran `rerod backup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let daemon = Daemon::start();
    daemon.client().user("ada@example.com").await;
    let out = tempfile::tempdir().unwrap();
    let backup = out.path().join("backup.redb");
    backup_store(&daemon, &backup);
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "backup mode is {mode:o}");
}

/// While the daemon runs it holds its store alone, so `rerod export` and
/// `rerod backup` ask it over the control socket: the export is the live
/// data, and a backup never overwrites a file or leaves a partial one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_backup_of_a_running_daemon_go_through_it() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    c.post_auth("/book-slot", &token, &serde_json::json!({"slot_id": 23})).await.expect(200);
    let rerod = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rerod"))
            .args(args)
            .env("DATABASE_PATH", daemon.store_path())
            .output()
            .unwrap()
    };

    let output = rerod(&["export", "--with-hashes"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let export: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(export["users"][0]["email"], "ada@example.com");
    assert!(export["users"][0]["password_hash"].as_str().unwrap().starts_with("$2"));
    assert_eq!(export["bookings"].as_array().unwrap().len(), 1, "{export}");

    let out = tempfile::tempdir().unwrap();
    let existing = out.path().join("taken.redb");
    std::fs::write(&existing, b"an admin's other file").unwrap();
    let output = rerod(&["backup", "--out", existing.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&existing).unwrap(), b"an admin's other file");
    let backup = out.path().join("backup.redb");
    let output = rerod(&["backup", "--out", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 users, 1 bookings"));
    let mut left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["backup.redb", "taken.redb"], "no partial file is left");
    // Nor does the daemon keep its copy beside the store.
    let beside = std::fs::read_dir(daemon.store_path().parent().unwrap()).unwrap();
    assert!(beside.map(|e| e.unwrap().file_name()).all(|n| !n.to_string_lossy().starts_with("rerod-backup")));
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "this test mounts a small tmpfs to fill it up, which needs root (or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes `name` until the file system is full.
    fn fill(&self, name: &str) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A full disk makes writes fail with 503 and /health say why, while reads
/// go on; once there is room again, the next booking commits without a
/// restart. (redb refuses all I/O on a handle after a failed write; the
/// store opens the file again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_serves_reads_and_recovers_without_restart() {
    let disk = Tmpfs::mount("8m");
    let store = disk.path().join("rerod.redb");
    let daemon = Daemon::start_with(
        crate::util::Options::config(crate::util::UTC_LAB).env("DATABASE_PATH", store.to_str().unwrap()),
    );
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let book = |date: jiff::civil::Date, slot: u64| {
        let token = token.clone();
        async move { c.post_auth("/book-slot", &token, &json!({"slot_id": slot, "date": date.to_string()})).await }
    };
    book(utc_date(1), 0).await.expect(200);

    let filler = disk.fill("filler");
    // redb writes a commit into pages the file may already own, so a commit
    // or two may still fit; book until one needs room the disk does not have.
    let mut refused = None;
    'days: for day in 2..8 {
        for slot in 0..24 {
            let r = book(utc_date(day), slot).await;
            if r.status != 200 {
                refused = Some((utc_date(day), slot, r));
                break 'days;
            }
        }
    }
    let (date, slot, r) = refused.expect("every booking committed on a full disk");
    assert_eq!(r.status, 503, "{:?}", r.json());
    assert_eq!(r.json()["code"], "store_unavailable");

    // Reads go on, and show that the refused booking was not applied.
    let slots = c.get(&format!("/slots?date={date}")).await.expect(200);
    assert_eq!(slots["slots"][slot as usize]["is_booked"], false);
    assert_eq!(c.get(&format!("/slots?date={}", utc_date(1))).await.expect(200)["slots"][0]["is_booked"], true);
    let health = c.get("/health").await.expect(200);
    assert_eq!(health["status"], "degraded", "{health}");
    let error = health["store"]["last_write_error"].as_str().unwrap_or_else(|| panic!("no store error: {health}"));
    assert!(error.contains("space"), "{error}");

    // Room again: the same booking commits, with no restart.
    std::fs::remove_file(filler).unwrap();
    book(date, slot).await.expect(200);
    let slots = c.get(&format!("/slots?date={date}")).await.expect(200);
    assert_eq!(slots["slots"][slot as usize]["is_booked"], true);
    let health = c.get("/health").await.expect(200);
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["store"]["last_write_error"], json!(null));
    drop(daemon);
}

/// Runs `rerod backup --out to` on the daemon's store, as an admin would while it runs.
fn backup_store(daemon: &Daemon, to: &std::path::Path) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_rerod"))
        .args(["backup", "--out"])
        .arg(to)
        .env("DATABASE_PATH", daemon.store_path())
        .status()
        .unwrap();
    assert!(status.success(), "rerod backup failed");
}
