//! Boards in front of hostile students: an upload is refused on its headers
//! before its body is read, bodies in flight share one bounded budget, and
//! the next session's console shows none of the previous session's output.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::devices::{Board, Console, UNPLUGGED_LAB, lab_config};
use crate::util::{Daemon, Options, eventually, scaled};

/// Sends only the head of an upload (the body is promised, never sent) and
/// returns the status line of the answer, which must come without the body.
async fn headers_only(daemon: &Daemon, token: Option<&str>, length: usize) -> (String, tokio::net::TcpStream) {
    let mut stream = tokio::net::TcpStream::connect(daemon.client().addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /devices/upload/uno-1 HTTP/1.1\r\nHost: rerod\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\n{auth}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    // Far below the 30 s a body may take: the answer must not wait for it.
    let n = tokio::time::timeout(scaled(Duration::from_secs(5)), stream.read(&mut answer))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), stream)
}

#[tokio::test]
async fn an_upload_is_refused_on_its_headers_before_its_body_is_read() {
    let daemon = Daemon::start_with(Options::config(UNPLUGGED_LAB));
    let c = daemon.client();
    let mallory = c.user("mallory@example.com").await;
    let (status, _) = headers_only(&daemon, None, 4_000_000).await;
    assert!(status.contains(" 401 "), "{status}");
    let (status, _) = headers_only(&daemon, Some("not-a-token"), 4_000_000).await;
    assert!(status.contains(" 401 "), "{status}");
    // Signed in, but not the holder of the slot in progress: 403 at once.
    let (status, _) = headers_only(&daemon, Some(&mallory), 4_000_000).await;
    assert!(status.contains(" 403 "), "{status}");
}

#[tokio::test]
async fn upload_bodies_in_flight_share_one_bounded_budget() {
    let config = format!("{UNPLUGGED_LAB}[server]\nmax_upload_bytes_in_flight = 2048\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;
    // One body of 1,500 bytes on its way (the client is slow to send it) ...
    let head = format!(
        "POST /devices/upload/uno-1 HTTP/1.1\r\nHost: rerod\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 1500\r\nAuthorization: Bearer {ada}\r\n\r\n:"
    );
    let open_slow = || async {
        let mut slow = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        slow.write_all(head.as_bytes()).await.unwrap();
        slow
    };
    let mut slow = open_slow().await;
    // ... leaves no room for a second one: 503 at once, not more memory.
    let r = eventually("a second body beyond the budget to be refused", async || {
        let r = c.upload("uno-1", &ada, "application/octet-stream", vec![b':'; 1500]).await;
        if r.status == 503 && r.json()["code"] == "overloaded" {
            return Ok(r);
        }
        // The slow body may not have reached the budget yet; or it reached it
        // while this probe held it, and was the one refused (it then has an
        // answer to read): send it again.
        let mut answer = [0u8; 64];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), slow.read(&mut answer)).await {
            slow = open_slow().await;
        }
        Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
    })
    .await;
    assert!(r.header("retry-after").is_some());
    // When the slow client gives up, the budget is free again.
    drop(slow);
    eventually("the budget to be given back", async || {
        let r = c.upload("uno-1", &ada, "application/octet-stream", vec![b':'; 1500]).await;
        // Invalid HEX, so it is refused as such: past the budget.
        if r.status == 422 { Ok(()) } else { Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_sessions_console_shows_none_of_the_previous_sessions_output() {
    let board = Board::start(Some("counter.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    c.book_today(&ada).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    let mut seen = console.until_output(b"count ").await;
    seen.extend(console.until_output(b"\n").await);
    // What Ada's program printed during her session, in whole lines.
    let lines: Vec<String> = String::from_utf8_lossy(&seen)
        .split('\n')
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with("count ") && l.len() > "count ".len())
        .collect();
    assert!(!lines.is_empty(), "{seen:?}");
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    console.session_ends("cancelled").await;
    c.book_today(&bob).await;
    let bobs = Console::open(&daemon, "uno-1", &bob).await;
    let scrollback = String::from_utf8_lossy(&bobs.output).into_owned();
    for line in &lines {
        let shown = scrollback.split('\n').any(|l| l.trim() == line);
        assert!(!shown, "Bob's console shows Ada's {line:?}: {scrollback:?}");
    }
}
