//! One lab on several hosts: daemons sharing one PostgreSQL database (a
//! throwaway server under target/, see tests/common/pg.rs), each test on a
//! database of its own.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::devices::{ADMIN, Board, Console, rig_bytes};
use crate::util::{
    Daemon, Options, OwnPgServer, PASSWORD, UTC_LAB_MANY_ACCOUNTS, eventually, pg_database, psql, race_outcome,
    utc_date,
};

/// Waits until `daemon` answers `path` (a `/slots` query) with `booked` as its booked slots.
async fn booked_on(daemon: &Daemon, what: &str, path: &str, booked: serde_json::Value) {
    let c = daemon.client();
    eventually(what, async || {
        let slots = c.get(path).await.expect(200);
        if slots["booked_slots"] == booked { Ok(()) } else { Err(slots.to_string()) }
    })
    .await;
}

/// A host of the lab on the database at `url`.
fn host(url: &str) -> Daemon {
    Daemon::start_with(Options::config(UTC_LAB_MANY_ACCOUNTS).env("DATABASE_URL", url))
}

/// Waits until `daemon` counts `n` accounts (other hosts' accounts reach
/// it through the database's notifications).
async fn sees_accounts(daemon: &Daemon, n: u64) {
    let c = daemon.client();
    eventually("the other host's accounts", async || {
        let total = c.get("/stats").await.expect(200)["users"]["total"].clone();
        if total == n { Ok(()) } else { Err(format!("{total} accounts")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_registered_on_one_host_logs_in_on_another() {
    let (_db, url) = pg_database();
    let (a, b) = (host(&url), host(&url));
    a.client().register("ann@lab.example", PASSWORD).await.expect(200);
    // At once: the password check reads the account from the database.
    let token = b.client().login("ann@lab.example", PASSWORD).await;
    b.client().get_auth("/my-bookings", &token).await.expect(200);
    // And a token one host issued is good on the other: one JWT secret.
    a.client().get_auth("/my-bookings", &token).await.expect(200);
    let wrong = json!({"email": "ann@lab.example", "password": "not-it-at-all"});
    assert_eq!(b.client().post("/auth/login", &wrong).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_clients_split_over_two_hosts_race_for_one_slot_and_one_wins() {
    let (db, url) = pg_database();
    let (a, b) = (host(&url), host(&url));
    let mut tokens = Vec::new();
    for i in 0..100 {
        tokens.push(a.client().user(&format!("racer{i}@example.com")).await);
    }
    sees_accounts(&b, 100).await;
    let day = utc_date(1).to_string();
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let c = if i % 2 == 0 { a.client() } else { b.client() };
            let body = json!({"slot_id": 12, "date": day});
            tokio::spawn(async move { c.post_auth("/book-slot", &token, &body).await })
        })
        .collect();
    assert_eq!(race_outcome(tasks, 12).await, (1, 99));
    assert_eq!(psql(&db, "SELECT count(*) FROM bookings"), "1");
    for daemon in [&a, &b] {
        booked_on(daemon, "one booking on each host", &format!("/slots?date={day}"), json!([12])).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_wrong_passwords_spread_over_two_hosts_lock_the_account_on_both() {
    let (_db, url) = pg_database();
    let (a, b) = (host(&url), host(&url));
    a.client().register("bob@lab.example", PASSWORD).await.expect(200);
    let guess = json!({"email": "bob@lab.example", "password": "wrong-guess-of-bob"});
    for i in 0..10 {
        let c = if i % 2 == 0 { a.client() } else { b.client() };
        assert_eq!(c.post("/auth/login", &guess).await.status, 401, "guess {i}");
    }
    // Five on each host: neither would lock the account on its own.
    for daemon in [&a, &b] {
        let r = daemon.client().post("/auth/login", &guess).await;
        assert_eq!(r.status, 429, "{:?}", r.json());
        assert!(r.header("retry-after").is_some());
        let right = json!({"email": "bob@lab.example", "password": PASSWORD});
        assert_eq!(daemon.client().post("/auth/login", &right).await.status, 429, "even the right password waits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_acknowledged_just_before_kill_9_is_there_after_restart() {
    let (db, url) = pg_database();
    let (a, b) = (host(&url), host(&url));
    let token = a.client().user("cy@lab.example").await;
    let day = utc_date(2).to_string();
    a.client().post_auth("/book-slot", &token, &json!({"slot_id": 7, "date": day})).await.expect(200);
    let a = a.kill9_and_restart();
    assert_eq!(a.client().get(&format!("/slots?date={day}")).await.expect(200)["booked_slots"], json!([7]));
    assert_eq!(psql(&db, "SELECT email FROM bookings"), "cy@lab.example");
    booked_on(&b, "the booking on the other host", &format!("/slots?date={day}"), json!([7])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_made_on_one_host_reaches_the_booking_sockets_of_another() {
    let (_db, url) = pg_database();
    let (a, b) = (host(&url), host(&url));
    let mut socket = a.ws("/slot-booking").await;
    let first = socket.recv_type("slots_update").await;
    assert_eq!(first["data"]["booked_slots"], json!([]));
    a.client().register("dee@lab.example", PASSWORD).await.expect(200);
    let token = b.client().login("dee@lab.example", PASSWORD).await;
    let today = utc_date(0).to_string();
    b.client().post_auth("/book-slot", &token, &json!({"slot_id": 23, "date": today})).await.expect(200);
    let update = socket.recv_type("slots_update").await;
    assert_eq!(update["data"]["booked_slots"], json!([23]), "{update}");
    assert_eq!(update["data"]["slots"][23]["booked_by"], "dee@lab.example");
}

#[tokio::test]
async fn a_host_refuses_a_database_whose_schema_is_newer_than_it_knows() {
    let (db, url) = pg_database();
    drop(host(&url));
    psql(&db, "UPDATE rerod_meta SET value = '99' WHERE key = 'schema_version'");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rerod"))
        .current_dir(dir.path())
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATABASE_PATH", dir.path().join("rerod.redb"))
        .env("DATABASE_URL", &url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "rerod must not start on a schema it does not know");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has schema version 99, newer than this rerod knows (4)"), "{stderr}");
    assert_eq!(psql(&db, "SELECT value FROM rerod_meta WHERE key = 'schema_version'"), "99", "left as it was");
}

#[tokio::test]
async fn a_malformed_database_url_is_refused_at_start_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rerod"))
        .current_dir(dir.path())
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATABASE_PATH", dir.path().join("rerod.redb"))
        .env("DATABASE_URL", "mysql://root:hunter2secret@db/lab")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store.url"), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "the password is never printed: {stderr}");
    assert!(!dir.path().join("rerod.redb").exists(), "nothing was created");
}

/// Runs `rerod store copy --from FROM --to TO`; its output.
fn store_copy(from: &str, to: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rerod"))
        .env_clear()
        .args(["store", "copy", "--from", from, "--to", to])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_lab_to_postgres_and_back_with_logins_bookings_and_the_audit_log() {
    // A one-host lab on its redb file: an account, a booking, an admin's action.
    let mut one_host = Daemon::start_with(Options::config(UTC_LAB_MANY_ACCOUNTS));
    let token = one_host.client().user("eve@lab.example").await;
    let day = utc_date(3).to_string();
    one_host.client().post_auth("/book-slot", &token, &json!({"slot_id": 9, "date": day})).await.expect(200);
    let admin = one_host.host_account("root@lab.example", true).await;
    one_host.client().register("mallory@lab.example", PASSWORD).await.expect(200);
    let who = json!({"email": "mallory@lab.example"});
    one_host.client().post_auth("/admin/users/disable", &admin, &who).await.expect(200);
    one_host.terminate().await;
    let redb = one_host.store_path();

    let (db, url) = pg_database();
    let copied = store_copy(redb.to_str().unwrap(), &url);
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    assert_eq!(psql(&db, "SELECT count(*) FROM users"), "3");
    // A second copy into the same database is refused and adds nothing.
    assert!(!store_copy(redb.to_str().unwrap(), &url).status.success());
    assert_eq!(psql(&db, "SELECT count(*) FROM users"), "3");

    let check = async |lab: &Daemon| {
        let c = lab.client();
        c.login("eve@lab.example", PASSWORD).await;
        // The JWT secret came along: a token issued before the move still works.
        let mine = c.get_auth("/my-bookings", &token).await.expect(200);
        assert_eq!((mine["bookings"][0]["id"].clone(), mine["total_bookings"].clone()), (json!(9), json!(1)), "{mine}");
        assert_eq!(c.get(&format!("/slots?date={day}")).await.expect(200)["booked_slots"], json!([9]));
        let log = c.get_auth("/admin/audit", &admin).await.expect(200).to_string();
        assert!(log.contains("account_disabled") && log.contains("mallory@lab.example"), "{log}");
        let refused = c.post("/auth/login", &json!({"email": "mallory@lab.example", "password": PASSWORD})).await;
        assert_eq!(refused.status, 403, "still disabled");
    };
    let mut on_postgres = host(&url);
    check(&on_postgres).await;
    on_postgres.terminate().await;

    // And back, into a new file.
    let back_dir = tempfile::tempdir().unwrap();
    let back = back_dir.path().join("back.redb");
    let copied = store_copy(&url, back.to_str().unwrap());
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    assert!(!store_copy(&url, back.to_str().unwrap()).status.success(), "an existing file is never overwritten");
    let on_redb =
        Daemon::start_with(Options::config(UTC_LAB_MANY_ACCOUNTS).env("DATABASE_PATH", back.to_str().unwrap()));
    check(&on_redb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_reads_are_served_writes_get_503_and_resume_once_it_is_back() {
    let server = OwnPgServer::start();
    let lab = host(&server.url());
    let c = lab.client();
    let token = c.user("fay@lab.example").await;
    let day = utc_date(1).to_string();
    c.post_auth("/book-slot", &token, &json!({"slot_id": 3, "date": day})).await.expect(200);

    server.stop();
    let health = eventually("health to say degraded", async || {
        let health = c.get("/health").await.expect(200);
        if health["status"] == "degraded" { Ok(health) } else { Err(health.to_string()) }
    })
    .await;
    assert!(health["store"]["last_write_error"].is_string(), "{health}");
    // Reads come from what the host has.
    assert_eq!(c.get(&format!("/slots?date={day}")).await.expect(200)["booked_slots"], json!([3]));
    let mine = c.get_auth("/my-bookings", &token).await.expect(200);
    assert_eq!(mine["total_bookings"], 1);
    // Writes are refused, and say why.
    let refused = c.post_auth("/book-slot", &token, &json!({"slot_id": 4, "date": day})).await;
    assert_eq!((refused.status, refused.json()["code"].clone()), (503, json!("store_unavailable")));

    server.resume();
    // No restart: the next write reaches the database again.
    eventually("a booking to commit again", async || {
        let r = c.post_auth("/book-slot", &token, &json!({"slot_id": 4, "date": day})).await;
        if r.status == 200 { Ok(()) } else { Err(format!("{} {:?}", r.status, r.json())) }
    })
    .await;
    assert_eq!(c.get(&format!("/slots?date={day}")).await.expect(200)["booked_slots"], json!([3, 4]));
    eventually("health to clear", async || {
        let health = c.get("/health").await.expect(200);
        if health["status"] == "healthy" { Ok(()) } else { Err(health.to_string()) }
    })
    .await;
}

#[test]
fn backup_and_export_point_to_the_database_tools_when_the_store_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["backup", "--out", "copy.redb"][..], &["export"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_rerod"))
            .current_dir(dir.path())
            .env_clear()
            .env("DATABASE_URL", "postgres://rerod@db.lab.example/lab")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("the store is the PostgreSQL database"), "{stderr}");
        assert!(!dir.path().join("copy.redb").exists());
    }
}

/// A host of the lab named `name`, serving the board `board` (its port is
/// absent: the board is listed, not used), renewing its presence for a
/// 3 s offline limit.
fn cluster_host(url: &str, name: &str, board: &str) -> Daemon {
    static SECRET: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("rerod-cluster-test-{}.secret", std::process::id()));
        std::fs::write(&path, "a-lab-secret-shared-by-every-host-of-it-0123456789\n").unwrap();
        path
    });
    let config = format!(
        "{UTC_LAB_MANY_ACCOUNTS}[[devices]]\nid = \"{board}\"\nplugin = \"stk500v1\"\nport = \"/dev/null-{board}\"\n\
         [cluster]\nname = \"{name}\"\nadvertise = \"http://{name}.lab.example:8000\"\nsecret_file = \"{}\"\n\
         offline_after_secs = 3\n",
        secret.display()
    );
    Daemon::start_with(Options::config(&config).env("DATABASE_URL", url))
}

/// What `daemon` says of the lab's hosts: (name, online, board ids) of each.
async fn lab_hosts(daemon: &Daemon) -> Vec<(String, bool, Vec<String>)> {
    let body = daemon.client().get("/cluster").await.expect(200);
    body["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let boards = h["boards"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_owned());
            (h["name"].as_str().unwrap().to_owned(), h["online"].as_bool().unwrap(), boards.collect())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_lists_every_board_of_the_lab_and_a_killed_host_shows_offline_until_it_is_back() {
    let (_db, url) = pg_database();
    let a = cluster_host(&url, "bench-a", "uno-a");
    let b = cluster_host(&url, "bench-b", "mega-b");
    let both_up = vec![(s("bench-a"), true, vec![s("uno-a")]), (s("bench-b"), true, vec![s("mega-b")])];
    for daemon in [&a, &b] {
        eventually("both hosts listed online", async || {
            let hosts = lab_hosts(daemon).await;
            if hosts == both_up { Ok(()) } else { Err(format!("{hosts:?}")) }
        })
        .await;
    }
    assert_eq!(a.client().get("/cluster").await.expect(200)["host"], "bench-a");

    b.signal(libc::SIGKILL);
    eventually("bench-b offline on bench-a", async || {
        let hosts = lab_hosts(&a).await;
        let b_offline = vec![(s("bench-a"), true, vec![s("uno-a")]), (s("bench-b"), false, vec![s("mega-b")])];
        if hosts == b_offline { Ok(()) } else { Err(format!("{hosts:?}")) }
    })
    .await;

    let _b = b.restart();
    eventually("bench-b back", async || {
        let hosts = lab_hosts(&a).await;
        if hosts == both_up { Ok(()) } else { Err(format!("{hosts:?}")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_of_a_lab_shows_how_far_its_clock_is_from_the_databases() {
    let (_db, url) = pg_database();
    let a = cluster_host(&url, "clock-a", "uno-clock");
    let c = a.client();
    let health = eventually("a reading of the clock with the first presence renewal", async || {
        let health = c.get("/health").await.expect(200);
        if health["cluster_clock"].is_object() { Ok(health) } else { Err(health.to_string()) }
    })
    .await;
    // The database runs on this machine: one clock, read twice.
    let clock = &health["cluster_clock"];
    let (ahead, uncertainty) = (clock["ahead_ms"].as_i64().unwrap(), clock["uncertainty_ms"].as_i64().unwrap());
    assert!(ahead.abs() <= uncertainty + 5, "{clock}");
    assert!((0..1000).contains(&uncertainty), "{clock}");
    assert_eq!(clock["off"], false);
    assert_eq!(health["status"], "healthy");

    let alone = Daemon::start().client().get("/health").await.expect(200);
    assert!(alone.get("cluster_clock").is_none(), "a one-host lab has no lab clock: {alone}");
}

#[tokio::test]
async fn a_one_host_lab_lists_no_hosts() {
    let lab = Daemon::start();
    assert_eq!(lab.client().get("/cluster").await.expect(200), json!({"host": null, "hosts": []}));
}

fn s(text: &str) -> String {
    text.to_owned()
}

/// What `daemon` lists of the lab's boards: (id, host, online) of each.
async fn lab_boards(daemon: &Daemon) -> Vec<(String, String, bool)> {
    let body = daemon.client().get("/devices").await.expect(200);
    body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (s(d["id"].as_str().unwrap()), s(d["host"].as_str().unwrap()), d["online"].as_bool().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_lists_and_books_every_board_of_the_lab() {
    let (_db, url) = pg_database();
    let a = cluster_host(&url, "bench-a", "uno-a");
    let b = cluster_host(&url, "bench-b", "mega-b");
    // The ports are absent: both boards are listed, offline, on both hosts, numbered alike.
    let both = vec![(s("uno-a"), s("bench-a"), false), (s("mega-b"), s("bench-b"), false)];
    for daemon in [&a, &b] {
        eventually("both boards listed", async || {
            let boards = lab_boards(daemon).await;
            if boards == both { Ok(()) } else { Err(format!("{boards:?}")) }
        })
        .await;
        let devices = daemon.client().get("/devices").await.expect(200);
        assert_eq!(devices["devices"][1]["number"], 1);
    }
    // A student books B's board through A, and B's calendar has it.
    let token = a.client().user("gus@lab.example").await;
    let day = utc_date(1).to_string();
    let body = json!({"slot_id": 5, "date": day, "device": "mega-b"});
    a.client().post_auth("/book-slot", &token, &body).await.expect(200);
    booked_on(&b, "the booking on B's calendar", &format!("/slots?date={day}&device=mega-b"), json!([5])).await;
    // Cancelled on B, gone on A.
    b.client().post_auth("/cancel-slot", &token, &body).await.expect(200);
    booked_on(&a, "the cancel on A's calendar", &format!("/slots?date={day}&device=1"), json!([])).await;
    let unknown =
        a.client().post_auth("/book-slot", &token, &json!({"slot_id": 5, "date": day, "device": "nope"})).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.json());
}

/// A loopback port free now, for a host whose advertised address must be
/// known before it starts (and kept across a restart).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A host of the lab named `name` on `port`, serving the simulated Uno or Mega
/// `board` as `id`; offline 3 s after it stops renewing its presence.
fn rig_host(url: &str, name: &str, port: u16, id: &str, board: &Board) -> Daemon {
    rig_host_with(url, name, port, id, board, "", "")
}

/// [`rig_host`] with more keys for the board (`device_extra`) and more
/// config text at the end (`extra`).
fn rig_host_with(url: &str, name: &str, port: u16, id: &str, board: &Board, device_extra: &str, extra: &str) -> Daemon {
    let secret = std::env::temp_dir().join(format!("rerod-cluster-rig-{}.secret", std::process::id()));
    std::fs::write(&secret, "a-lab-secret-shared-by-every-host-of-it-0123456789\n").unwrap();
    let config = format!(
        r#"
[lab]
timezone = "UTC"
slot_minutes = 1440
[auth]
admins = ["{ADMIN}"]
max_registrations_per_address_per_hour = 1000
[[devices]]
id = "{id}"
port = "{port_path}"
reset = ["sh", "-c", "kill -USR1 \"$(cat '{pid_file}')\""]
{kind}
{device_extra}
[cluster]
name = "{name}"
advertise = "http://127.0.0.1:{port}"
secret_file = "{secret}"
offline_after_secs = 3
{extra}
"#,
        port_path = board.path().display(),
        pid_file = board.pid_file().display(),
        secret = secret.display(),
        // The rig's Optiboot takes 1 KB of the Uno's flash (tests/rig/README.md).
        kind = match board.is_mega() {
            true => "plugin = \"stk500v2\"\nmodel = \"mega2560\"",
            false => "plugin = \"stk500v1\"\nflash_limit = 31744",
        },
    );
    Daemon::start_with(Options::config(&config).env("DATABASE_URL", url).env("PORT", &port.to_string()))
}

/// Waits until `daemon` lists board `id` with `online`.
async fn board_shows(daemon: &Daemon, id: &str, online: bool) {
    let c = daemon.client();
    eventually(&format!("{id} online = {online}"), async || {
        let body = c.get("/devices").await.expect(200);
        let board = body["devices"].as_array().unwrap().iter().find(|d| d["id"] == id).cloned();
        match board {
            Some(board) if board["online"] == online => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The peer addresses `daemon` logged for requests on `route`.
fn logged_peers(daemon: &Daemon, route: &str) -> Vec<String> {
    daemon
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["fields"]["route"] == route || event["route"] == route)
        .filter_map(|event| {
            let peer = event["fields"]["peer"].as_str().or(event["peer"].as_str())?.to_owned();
            Some(peer.rsplit_once(':').map_or(peer.clone(), |(ip, _)| ip.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_uses_another_hosts_board_through_the_host_they_reach() {
    let (_db, url) = pg_database();
    let (board_a, board_b) = (Board::start(None), Board::start_mega());
    let (port_a, port_b) = (free_port(), free_port());
    let a = rig_host(&url, "bench-a", port_a, "uno-a", &board_a);
    // B's board has a camera (its source is never asked: nobody watches it here).
    let camera = "camera = { mjpeg = \"http://127.0.0.1:9/stream\", visibility = \"public\" }";
    let b = rig_host_with(&url, "bench-b", port_b, "mega-b", &board_b, camera, "");
    board_shows(&a, "mega-b", true).await;
    // Its camera is listed on A, and its state comes from B.
    let devices = a.client().get("/devices").await.expect(200);
    assert_eq!(devices["devices"][1]["camera"]["visibility"], "public", "{devices}");
    let camera = a.client().get("/devices/camera/mega-b").await.expect(200);
    assert_eq!(camera["camera"]["state"], "idle", "{camera}");

    // Registered on A, logs in on B; books B's board through A.
    let token = a.client().user("hal@lab.example").await;
    b.client().login("hal@lab.example", PASSWORD).await;
    a.client().post_auth("/book-slot", &token, &json!({"slot_id": 0, "device": "mega-b"})).await.expect(200);
    booked_on(&b, "the booking on B", "/slots?device=mega-b", json!([0])).await;

    // Uploads and the console through A reach B's board; B sees the client's address.
    let mut console = Console::open(&a, "mega-b", &token).await;
    let from = a.client().from("127.0.0.3");
    let body = from.upload("mega-b", &token, "application/octet-stream", rig_bytes("echo-mega.hex")).await.expect(200);
    assert_eq!(body["device"], "mega-b");
    console.echoes("hello through bench-a\n").await;
    // By number too: the lab numbers its boards alike on every host.
    let body = a.client().upload("1", &token, "application/octet-stream", rig_bytes("echo-mega.hex")).await.expect(200);
    assert_eq!(body["device"], "mega-b");
    console.echoes("again\n").await;
    // (The access log is written by its own thread: wait for the lines.)
    eventually("B to log the client's address", async || {
        let peers = logged_peers(&b, "/devices/upload/{device}");
        if peers.contains(&s("127.0.0.3")) { Ok(()) } else { Err(format!("{peers:?}")) }
    })
    .await;

    // Another student's token is refused by B itself; so is none.
    let other = a.client().user("ivy@lab.example").await;
    let refused = a.client().upload("mega-b", &other, "application/octet-stream", rig_bytes("echo-mega.hex")).await;
    assert_eq!((refused.status, refused.json()["code"].clone()), (403, json!("not_your_slot")), "{:?}", refused.json());

    // The session's records and the board's admin routes, through A.
    let records = a.client().get_auth("/records?device=mega-b", &token).await.expect(200);
    assert!(records["count"].as_u64().unwrap() >= 1, "{records}");
    let id = records["records"][0]["id"].as_str().unwrap().to_owned();
    let record = a.client().get_auth(&format!("/records/{id}"), &token).await.expect(200);
    assert_eq!(record["uploads"].as_array().unwrap().len(), 2, "{record}");
    // Every board's records, asked of A, hold B's sessions too: B answers for its own.
    let all = a.client().get_auth("/records", &token).await.expect(200);
    assert!(all["records"].as_array().unwrap().iter().any(|r| r["id"] == id.as_str()), "{all}");
    assert!(all.get("unreachable_hosts").is_none(), "{all}");
    let admin = a.host_account(ADMIN, true).await;
    a.client().get_auth("/admin/devices/checks/mega-b", &admin).await.expect(200);

    // A booking made on B reaches A's booking sockets.
    let mut socket = a.ws("/slot-booking").await;
    socket.recv_type("slots_update").await;
    let day = utc_date(1).to_string();
    b.client()
        .post_auth("/book-slot", &token, &json!({"slot_id": 0, "date": day, "device": "mega-b"}))
        .await
        .expect(200);
    loop {
        let update = socket.recv_type("slots_update").await;
        if update["data"]["device"] == "mega-b" && update["data"]["date"] == day.as_str() {
            assert_eq!(update["data"]["booked_slots"], json!([0]), "{update}");
            break;
        }
    }

    // B killed mid-session: its board shows offline on A and A says why it cannot reach it.
    drop(console);
    b.signal(libc::SIGKILL);
    board_shows(&a, "mega-b", false).await;
    let all = a.client().get_auth("/records", &token).await.expect(200);
    assert_eq!(all["unreachable_hosts"], json!(["bench-b"]), "{all}");
    let r = a.client().upload("mega-b", &token, "application/octet-stream", rig_bytes("echo-mega.hex")).await;
    assert_eq!((r.status, r.json()["code"].clone()), (503, json!("board_host_unreachable")), "{:?}", r.json());
    // Back, it picks up its board and the session still in progress.
    let b = b.restart();
    board_shows(&a, "mega-b", true).await;
    let mut console = Console::open(&a, "mega-b", &token).await;
    a.client().upload("mega-b", &token, "application/octet-stream", rig_bytes("echo-mega.hex")).await.expect(200);
    console.echoes("back again\n").await;
    // Cancelled on A, the session ends on B, and the console through A hears it and closes 1000.
    let today = json!({"slot_id": 0, "device": "mega-b"});
    a.client().post_auth("/cancel-slot", &token, &today).await.expect(200);
    console.session_ends("was cancelled").await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_peer_header_from_a_client_changes_nothing() {
    let (_db, url) = pg_database();
    let board = Board::start(None);
    let lab = rig_host(&url, "bench-a", free_port(), "uno-a", &board);
    let c = lab.client();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let forged = format!("{now};10.9.9.9;{}", "ab".repeat(32));
    for value in [forged.as_str(), "10.9.9.9", ""] {
        let r = c.request(hyper::Method::GET, "/stats", &[("x-rerod-peer", value)], Vec::new()).await;
        assert_eq!(r.status, 200);
    }
    // The address the request came from, not the header's.
    eventually("three /stats lines", async || {
        let peers = logged_peers(&lab, "/stats");
        if peers == vec![s("127.0.0.1"); 3] { Ok(()) } else { Err(format!("{peers:?}")) }
    })
    .await;
    // Nor does it stop a board being found here.
    let token = c.user("jo@lab.example").await;
    let body = json!({"slot_id": 0, "device": "uno-a"});
    let auth = format!("Bearer {token}");
    let headers = [("x-rerod-peer", forged.as_str()), ("authorization", &auth), ("content-type", "application/json")];
    let r = c.request(hyper::Method::POST, "/book-slot", &headers, body.to_string()).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_progress_goes_on_while_the_database_is_down() {
    let server = OwnPgServer::start();
    let board = Board::start(None);
    let lab = rig_host(&server.url(), "bench-a", free_port(), "uno-a", &board);
    board_shows(&lab, "uno-a", true).await;
    let c = lab.client();
    let token = c.user("kim@lab.example").await;
    c.post_auth("/book-slot", &token, &json!({"slot_id": 0, "device": "uno-a"})).await.expect(200);
    let mut console = Console::open(&lab, "uno-a", &token).await;

    server.stop();
    eventually("health to say degraded", async || {
        let health = c.get("/health").await.expect(200);
        if health["status"] == "degraded" { Ok(()) } else { Err(health.to_string()) }
    })
    .await;
    // The holder still uploads and types: who holds the board is read from this host's copy.
    c.upload("uno-a", &token, "application/octet-stream", rig_bytes("echo.hex")).await.expect(200);
    console.echoes("still here\n").await;
    // A new booking is refused, and says why; the calendar is still read.
    let day = utc_date(1).to_string();
    let refused = c.post_auth("/book-slot", &token, &json!({"slot_id": 0, "date": day, "device": "uno-a"})).await;
    assert_eq!((refused.status, refused.json()["code"].clone()), (503, json!("store_unavailable")));
    assert_eq!(c.get("/slots?device=uno-a").await.expect(200)["booked_slots"], json!([0]));

    server.resume();
    eventually("a booking to commit again", async || {
        let r = c.post_auth("/book-slot", &token, &json!({"slot_id": 0, "date": day, "device": "uno-a"})).await;
        if r.status == 200 { Ok(()) } else { Err(format!("{} {:?}", r.status, r.json())) }
    })
    .await;
    console.echoes("and after\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_a_peer_forwards_are_not_held_to_the_connection_cap_per_address() {
    let (_db, url) = pg_database();
    let (board_a, board_b) = (Board::start(None), Board::start(None));
    let a = rig_host(&url, "bench-a", free_port(), "uno-a", &board_a);
    let cap = "[server]\nmax_connections_per_address = 2\n";
    let b = rig_host_with(&url, "bench-b", free_port(), "uno-b", &board_b, "", cap);
    // B has read A's presence, and so knows A's address.
    board_shows(&b, "uno-a", true).await;
    board_shows(&a, "uno-b", true).await;
    let token = a.client().user("lee@lab.example").await;
    a.client().post_auth("/book-slot", &token, &json!({"slot_id": 0, "device": "uno-b"})).await.expect(200);
    booked_on(&b, "the booking on B", "/slots?device=uno-b", json!([0])).await;
    // Three consoles through A: three connections from A to B, over B's cap of two from one address.
    let mut consoles = Vec::new();
    for _ in 0..3 {
        consoles.push(Console::open(&a, "uno-b", &token).await);
    }
    assert_eq!(consoles.len(), 3);
}
