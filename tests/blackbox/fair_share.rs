//! One client cannot take the lab from everyone else: connections and
//! WebSockets per address and per account, the holder's console outside
//! the feeds' cap, trusted proxies, the booking caps on by default, capped
//! request headers, and a store only rerod's user can read. Each test is an
//! attack that worked before its defence.

use std::time::Duration;

use hyper::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::devices::{Board, Console, lab_config};
use crate::util::{Daemon, Options, PASSWORD, UNCAPPED_LAB, UTC_LAB, Ws, connect_from, eventually, scaled, utc_date};

/// Opens a `/slot-booking` socket from the loopback address `from`.
async fn feed_from(daemon: &Daemon, from: &str) -> Result<Ws, u16> {
    let stream = connect_from(daemon.addr, Some(from.parse().unwrap())).await;
    let url = format!("ws://{}/slot-booking", daemon.addr);
    match tokio_tungstenite::client_async(url, stream).await {
        Ok((socket, _)) => Ok(Ws { socket }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("the upgrade neither succeeded nor was refused: {other}"),
    }
}

/// What the server says on a fresh connection from `from` before it is
/// sent anything: a refused connection gets its 503 at once.
async fn greeting(daemon: &Daemon, from: &str) -> String {
    let mut stream = connect_from(daemon.addr, Some(from.parse().unwrap())).await;
    let mut text = Vec::new();
    let _ = tokio::time::timeout(scaled(Duration::from_millis(300)), stream.read_to_end(&mut text)).await;
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_leave_other_addresses_served() {
    let config = format!("{UTC_LAB}[server]\nmax_connections_per_address = 5\n");
    let daemon = Daemon::start_with(Options::config(&config));
    // The attack: idle connections that send nothing until the header timeout.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(connect_from(daemon.addr, Some("127.0.0.2".parse().unwrap())).await);
    }
    let refused = greeting(&daemon, "127.0.0.2").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_connections") && refused.contains("from your address"), "{refused}");
    // Everyone else is served as usual.
    let c = daemon.client();
    c.get("/health").await.expect(200);
    c.from("127.0.0.3").get("/health").await.expect(200);
    // A closed connection gives its place back.
    drop(idle.pop());
    let served = eventually("the freed place to be taken", || async {
        let r = daemon.client().from("127.0.0.2").get_if_served("/health").await;
        r.filter(|status| *status == 200)
    })
    .await;
    assert_eq!(served, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_keep_their_connection_counted() {
    let config = format!("{UTC_LAB}[server]\nmax_connections = 4\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let mut feeds = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        let mut ws = feed_from(&daemon, from).await.expect("a feed under the cap opens");
        ws.recv_type("slots_update").await;
        feeds.push(ws);
    }
    // Upgraded, they still hold their connections: a fifth is refused.
    let refused = greeting(&daemon, "127.0.0.6").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(feeds);
    eventually("closed feeds to give their connections back", || async {
        daemon.client().get_if_served("/health").await.filter(|status| *status == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_filling_their_share_leave_the_holders_console_open() {
    let board = Board::start(Some("echo.hex"));
    let extra = "[server]\nmax_websocket_connections = 3\nmax_websockets_per_address = 2\n";
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, extra)));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    // Two addresses fill the feeds' share; a third address is refused a feed.
    let mut feeds = Vec::new();
    for from in ["127.0.0.2", "127.0.0.2", "127.0.0.3"] {
        feeds.push(feed_from(&daemon, from).await.expect("under the caps"));
    }
    assert_eq!(feed_from(&daemon, "127.0.0.2").await.err(), Some(429), "the address's share is taken");
    assert_eq!(feed_from(&daemon, "127.0.0.4").await.err(), Some(503), "the feeds' share is taken");
    // The holder's console is not the feeds' to take.
    c.book_today(&ada).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    console.echoes("still mine\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_holds_a_bounded_number_of_sockets() {
    let config = format!("{UTC_LAB}[server]\nmax_websockets_per_account = 2\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let ada = daemon.client().user("ada@example.com").await;
    let mut identified = Vec::new();
    for _ in 0..2 {
        let mut ws = daemon.ws("/slot-booking").await;
        ws.send(&json!({"type": "identify", "token": ada})).await;
        ws.recv_type("identified").await;
        identified.push(ws);
    }
    let mut third = daemon.ws("/slot-booking").await;
    third.send(&json!({"type": "identify", "token": ada})).await;
    let refused = third.recv_type("error").await;
    assert_eq!(refused["code"], "too_many_account_sockets", "{refused}");
    // It stays open, anonymous, as a failed identify leaves a socket.
    third.send(&json!({"type": "get_slots"})).await;
    third.recv_type("slots_update").await;
    // Another account is not affected.
    let bob = daemon.client().user("bob@example.com").await;
    third.send(&json!({"type": "identify", "token": bob})).await;
    third.recv_type("identified").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_behind_a_trusted_proxy_get_their_own_login_limits() {
    let config = format!(
        "{UTC_LAB}[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[auth]\nmax_logins_per_address = 3\naddress_window_secs = 600\n"
    );
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    c.register("ada@example.com", PASSWORD).await.expect(200);
    let login = |client: crate::util::Client, forwarded: &'static str| async move {
        let body = json!({"email": "ada@example.com", "password": PASSWORD}).to_string();
        let headers = [("content-type", "application/json"), ("x-forwarded-for", forwarded)];
        client.request(Method::POST, "/auth/login", &headers, body).await.status
    };
    // Through the proxy: each student has their own budget (the registration took one of the proxy's own).
    for _ in 0..3 {
        assert_eq!(login(c, "198.51.100.1").await, 200);
    }
    assert_eq!(login(c, "198.51.100.1").await, 429, "the first student's limit");
    assert_eq!(login(c, "6.6.6.6, 198.51.100.2").await, 200, "a second student behind the same proxy");
    // Not from the proxy: a forged header is not believed, and changes nothing.
    let direct = c.from("127.0.0.2");
    for forged in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(login(direct, forged).await, 200);
    }
    assert_eq!(login(direct, "203.0.113.4").await, 429, "counted under its own address");
}

#[tokio::test]
async fn the_booking_caps_are_on_by_default() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let book = |date: jiff::civil::Date, slot: u16| {
        let ada = ada.clone();
        async move { c.post_auth("/book-slot", &ada, &json!({"slot_id": slot, "date": date.to_string()})).await }
    };
    // Two a day.
    let tomorrow = utc_date(1);
    book(tomorrow, 8).await.expect(200);
    book(tomorrow, 9).await.expect(200);
    let refused = book(tomorrow, 10).await;
    assert_eq!((refused.status, refused.json()["code"].as_str()), (400, Some("daily_booking_limit")), "{refused:?}");
    // Four upcoming.
    book(utc_date(2), 8).await.expect(200);
    book(utc_date(2), 9).await.expect(200);
    let refused = book(utc_date(3), 8).await;
    assert_eq!((refused.status, refused.json()["code"].as_str()), (400, Some("active_booking_limit")), "{refused:?}");
}

#[tokio::test]
async fn an_admin_lifts_the_booking_caps_with_zero() {
    let daemon = Daemon::start_with(Options::config(UNCAPPED_LAB));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    for slot in 0..6 {
        let body = json!({"slot_id": slot, "date": utc_date(1).to_string()});
        c.post_auth("/book-slot", &ada, &body).await.expect(200);
    }
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let daemon = Daemon::start();
    let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    // 64 KiB: well under hyper's own default buffer (about 400 KiB), which took it.
    let request = format!("GET /health HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n", "a".repeat(64 << 10));
    // The server may stop reading once it has refused; what it answered is what counts.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = vec![0; 64];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Ordinary requests with a few headers are fine.
    let headers = [("x-filler", &*"a".repeat(4096)), ("cookie", "theme=dark")];
    let r = daemon.client().request(Method::GET, "/health", &headers, bytes::Bytes::new()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_store_is_created_for_rerods_user_alone() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only sets this process's file-creation mask; the daemon inherits it.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/rerod.redb");
    let daemon = Daemon::start_with(Options::config(UTC_LAB).env("DATABASE_PATH", path.to_str().unwrap()));
    daemon.client().get("/health").await.expect(200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the store holds every hash and the token secret");
    assert_eq!(mode(path.parent().unwrap()), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_are_shown_to_admins_only() {
    let board = Board::start(Some("echo.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let admin = daemon.host_account(crate::devices::ADMIN, true).await;
    let store = daemon.store_path().display().to_string();
    let port = board.path().display().to_string();

    // Anyone, or a student: no path of the host.
    for health in [c.get("/health").await.expect(200), c.get_auth("/health", &ada).await.expect(200)] {
        assert_eq!(health["database"]["database_path"], "rerod.redb", "{health}");
        assert!(!health.to_string().contains(&store), "{health}");
    }
    for devices in [c.get("/devices").await.expect(200), c.get_auth("/devices", &ada).await.expect(200)] {
        assert_eq!(devices["devices"][0]["port"], "uno-1", "{devices}");
        assert!(!devices.to_string().contains(&port), "{devices}");
    }
    c.book_today(&ada).await;
    let mut ws = daemon.ws("/devices/read/uno-1").await;
    ws.send(&json!({"token": ada})).await;
    let hello = ws.recv_type("connection_established").await;
    assert_eq!(hello["device_info"]["port"], "uno-1", "{hello}");

    // An admin: the host as it is.
    let health = c.get_auth("/health", &admin).await.expect(200);
    assert_eq!(health["database"]["database_path"].as_str(), Some(store.as_str()));
    let devices = c.get_auth("/devices", &admin).await.expect(200);
    assert_eq!(devices["devices"][0]["port"].as_str(), Some(port.as_str()));
    let mut ws = daemon.ws("/devices/read/uno-1").await;
    ws.send(&json!({"token": admin})).await;
    let hello = ws.recv_type("connection_established").await;
    assert_eq!(hello["device_info"]["port"].as_str(), Some(port.as_str()));
}

#[tokio::test]
async fn the_audit_log_records_the_address_behind_the_proxy() {
    let config = format!(
        "{UTC_LAB}[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[auth]\nadmins = [\"{}\"]\n",
        crate::devices::ADMIN
    );
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let admin = daemon.host_account(crate::devices::ADMIN, true).await;
    let tomorrow = utc_date(1).to_string();
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 9, "date": tomorrow})).await.expect(200);
    let auth = format!("Bearer {admin}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
    ];
    let body = json!({"slot_id": 9, "date": tomorrow}).to_string();
    c.request(Method::POST, "/cancel-slot", &headers, body).await.expect(200);
    let log = c.get_auth("/admin/audit", &admin).await.expect(200);
    assert_eq!(log["audit"][0]["action"], "booking_cancelled", "{log}");
    assert_eq!(log["audit"][0]["address"], "198.51.100.7", "{log}");
}
