//! `/slot-booking` over a real WebSocket: the seed's flow, broadcasts,
//! malformed input, slow clients and oversized frames.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::util::{Daemon, Ws, scaled, utc_date};

fn assert_slots_update(update: &serde_json::Value) {
    assert_eq!(update["type"], "slots_update");
    assert!(update["timestamp"].is_string());
    let data = &update["data"];
    for key in ["slots", "available_slots", "booked_slots"] {
        assert!(data[key].is_array(), "data.{key} missing: {update}");
    }
    assert!(data["date"].is_string() && data["device"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_books_cancels_and_broadcasts_to_every_client() {
    let daemon = Daemon::start();
    let c = daemon.client();
    c.register("user@example.com", "securepassword123").await.expect(200);
    let token = c.login("user@example.com", "securepassword123").await;

    let mut alice = daemon.ws("/slot-booking").await;
    let mut other = daemon.ws("/slot-booking").await;
    for ws in [&mut alice, &mut other] {
        let update = ws.recv().await;
        assert_slots_update(&update);
        assert_eq!(update["data"]["slots"].as_array().unwrap().len(), 24);
        assert_eq!(update["data"]["date"], utc_date(0).to_string());
        assert_eq!(update["data"]["device"], "default");
    }
    assert_eq!(c.get("/").await.expect(200)["active_connections"], 2);
    assert_eq!(c.get("/health").await.expect(200)["active_connections"], 2);

    // Book with e-mail and password, exactly as the seed README shows.
    alice
        .send(
            &json!({"type": "book_slot", "slot_id": 23, "email": "user@example.com", "password": "securepassword123"}),
        )
        .await;
    let response = alice.recv_type("booking_response").await;
    assert_eq!(response["success"], true);
    assert_eq!(response["message"], "Slot 23 booked successfully");
    assert_eq!(response["slot_id"], 23);
    let update = other.recv_type("slots_update").await;
    assert_slots_update(&update);
    assert_eq!(update["data"]["booked_slots"], json!([23]));
    assert_eq!(update["data"]["slots"][23]["booked_by"], "user@example.com");
    let update = alice.recv_type("slots_update").await;
    assert_eq!(update["data"]["booked_slots"], json!([23]));

    // Taken: the seed's refusal.
    other.send(&json!({"type": "book_slot", "slot_id": 23, "token": token})).await;
    let response = other.recv_type("booking_response").await;
    assert_eq!(
        (response["success"].clone(), response["message"].clone()),
        (json!(false), json!("Slot 23 is not available"))
    );

    // Cancel with a token.
    alice.send(&json!({"type": "cancel_slot", "slot_id": 23, "token": token})).await;
    let response = alice.recv_type("cancellation_response").await;
    assert_eq!(response["success"], true);
    assert_eq!(response["message"], "Slot 23 booking cancelled successfully");
    assert_eq!(response["slot_id"], 23);
    assert_eq!(other.recv_type("slots_update").await["data"]["booked_slots"], json!([]));

    // Wrong password: the seed's authentication failure, and nothing booked.
    alice.send(&json!({"type": "book_slot", "slot_id": 22, "email": "user@example.com", "password": "wrong"})).await;
    let response = alice.recv_type("booking_response").await;
    assert_eq!(response["success"], false);
    assert_eq!(response["message"], "Authentication failed. Invalid email or password.");
    assert_eq!(response["slot_id"], 22);
    // Missing fields: the seed's error message. (A broadcast, such as the
    // cancellation's above, may still be on its way: it is no reply.)
    alice.send(&json!({"type": "book_slot", "slot_id": 22})).await;
    let error = alice.recv_type("error").await;
    assert_eq!(error, json!({"type": "error", "message": "Missing slot_id, email, or password in booking request"}));
    alice.send(&json!({"type": "cancel_slot", "email": "user@example.com", "password": "x"})).await;
    assert_eq!(
        alice.recv_type("error").await["message"],
        "Missing slot_id, email, or password in cancellation request"
    );
    // Cancelling what is not booked (slot 23, the day's last, is never past today).
    alice.send(&json!({"type": "cancel_slot", "slot_id": 23, "token": token})).await;
    let response = alice.recv_type("cancellation_response").await;
    assert_eq!(response["success"], false);
    assert_eq!(response["message"], "Slot 23 was not booked by you or does not exist");

    // get_slots answers with the asked-for view.
    let tomorrow = utc_date(1).to_string();
    alice.send(&json!({"type": "get_slots", "date": tomorrow})).await;
    let update = alice.recv_type("slots_update").await;
    assert_eq!(update["data"]["date"], tomorrow);
    alice.send(&json!({"type": "get_slots"})).await;
    assert_eq!(alice.recv_type("slots_update").await["data"]["date"], utc_date(0).to_string());
    assert_eq!(c.booked(utc_date(0)).await, Vec::<u64>::new());
}

#[tokio::test]
async fn http_bookings_are_broadcast_to_websocket_clients() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let mut ws = daemon.ws("/slot-booking").await;
    ws.recv_type("slots_update").await;
    let tomorrow = utc_date(1).to_string();
    c.post_auth("/book-slot", &token, &json!({"slot_id": 8, "date": tomorrow})).await.expect(200);
    let update = ws.recv_type("slots_update").await;
    assert_eq!(update["data"]["date"], tomorrow);
    assert_eq!(update["data"]["booked_slots"], json!([8]));
    c.post_auth("/cancel-slot", &token, &json!({"slot_id": 8, "date": tomorrow})).await.expect(200);
    assert_eq!(ws.recv_type("slots_update").await["data"]["booked_slots"], json!([]));
}

#[tokio::test]
async fn malformed_messages_get_errors_and_the_connection_stays_usable() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let mut ws = daemon.ws("/slot-booking").await;
    ws.recv_type("slots_update").await;

    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("not json".into()), "not valid JSON"),
        (Message::Text("[1,2]".into()), "JSON object"),
        (Message::Text(r#"{"slot_id": 3}"#.into()), "Missing message type"),
        (Message::Text(r#"{"type": "launch_rocket"}"#.into()), "Unknown message type: launch_rocket"),
        (
            Message::Text(json!({"type": "book_slot", "slot_id": "9", "token": token}).to_string().into()),
            "slot_id must be an integer",
        ),
        (
            Message::Text(json!({"type": "book_slot", "slot_id": 9.5, "token": token}).to_string().into()),
            "slot_id must be an integer",
        ),
        (Message::Text(json!({"type": "get_slots", "date": "someday"}).to_string().into()), "date must be a date"),
        (Message::Binary(vec![0xff, 0x00, 0x13].into()), "Binary frames are not supported"),
    ];
    for (message, expected) in cases {
        let shown = format!("{message:?}");
        ws.send_raw(message).await;
        // The reply is an error; a slot ending meanwhile may broadcast first.
        let reply = ws.recv_type("error").await;
        assert!(reply["message"].as_str().unwrap().contains(expected), "{shown}: {reply}");
    }
    // Rule violations answer in the response type, not as errors.
    ws.send(&json!({"type": "book_slot", "slot_id": 24, "token": token, "date": utc_date(1).to_string()})).await;
    let reply = ws.recv_type("booking_response").await;
    assert_eq!((reply["success"].clone(), reply["code"].clone()), (json!(false), json!("slot_not_found")));

    // The same connection still books.
    ws.send(&json!({"type": "book_slot", "slot_id": 9, "token": token, "date": utc_date(1).to_string()})).await;
    let reply = ws.recv_type("booking_response").await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["date"], utc_date(1).to_string());
}

#[tokio::test]
async fn oversized_frames_close_that_connection_with_1009_only() {
    let daemon = Daemon::start();
    let mut big = daemon.ws("/slot-booking").await;
    let mut bystander = daemon.ws("/slot-booking").await;
    big.recv_type("slots_update").await;
    bystander.recv_type("slots_update").await;
    let huge = format!(r#"{{"type": "get_slots", "pad": "{}"}}"#, "x".repeat(200_000));
    big.send_raw(Message::Text(huge.into())).await;
    match big.next().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    bystander.send(&json!({"type": "get_slots"})).await;
    assert_slots_update(&bystander.recv_type("slots_update").await);
}

#[tokio::test]
async fn plain_http_on_the_socket_path_gets_a_clear_4xx() {
    let daemon = Daemon::start();
    let r = daemon.client().get("/slot-booking").await;
    assert_eq!(r.expect(426)["code"], "websocket_required");
    assert_eq!(r.header("upgrade"), Some("websocket"));
}

/// A `/slot-booking` client whose socket buffers fill after a few frames it
/// does not read.
async fn small_buffered_client(daemon: &Daemon) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(daemon.addr).await.unwrap();
    Ws::handshake(daemon.addr, "/slot-booking", stream).await
}

/// A client that never reads must not hold up the others, and the server
/// must not buffer without bound for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_delay_others_or_grow_memory() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;

    // The stalled client never reads.
    let _stalled = small_buffered_client(&daemon).await;

    let mut watcher = daemon.ws("/slot-booking").await;
    watcher.recv_type("slots_update").await;
    let rss_before = daemon.rss_kib();

    // Each booking and cancellation broadcasts a ~5 KB frame: far more than
    // the stalled client's buffers hold.
    let tomorrow = utc_date(1).to_string();
    let mut worst = Duration::ZERO;
    for i in 0..1200 {
        let path = if i % 2 == 0 { "/book-slot" } else { "/cancel-slot" };
        let started = Instant::now();
        c.post_auth(path, &token, &json!({"slot_id": 5, "date": tomorrow})).await.expect(200);
        let update = watcher.recv_type("slots_update").await;
        worst = worst.max(started.elapsed());
        let expected = if i % 2 == 0 { json!([5]) } else { json!([]) };
        assert_eq!(update["data"]["booked_slots"], expected, "update {i}");
    }
    assert!(worst < scaled(Duration::from_secs(2)), "a broadcast took {worst:?} to reach a reading client");
    // What the server keeps is what counts: pages the requests used and
    // freed go back to the kernel once unused for a second (the allocator's
    // decay, main.rs); read at once they showed as up to 0.5 MB of growth.
    // The stalled client is still connected (it is dropped after the send
    // timeout, 10 s), so anything buffered for it would still be held.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let grown = daemon.rss_kib().saturating_sub(rss_before);
    // 1200 frames of ~5 KB is 6 MB; the server keeps at most a small ring of them.
    assert!(grown < 1500, "server memory grew by {grown} KiB while a client lagged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_client_that_reads_again_gets_whole_frames_and_the_latest_state() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;

    // A client watching tomorrow pauses reading while far more broadcasts
    // go out than its socket buffers hold.
    let mut lagging = small_buffered_client(&daemon).await;
    let tomorrow = utc_date(1).to_string();
    lagging.send(&json!({"type": "get_slots", "date": tomorrow})).await;
    while lagging.recv_type("slots_update").await["data"]["date"] != tomorrow.as_str() {}
    for i in 0..601 {
        let path = if i % 2 == 0 { "/book-slot" } else { "/cancel-slot" };
        c.post_auth(path, &token, &json!({"slot_id": 5, "date": tomorrow})).await.expect(200);
    }

    // Reading again, it gets only whole, valid messages (each one parsed),
    // and the last word on its day is the final state: slot 5 booked.
    // A second of silence (scaled) means the server has sent all it will.
    let mut last = None;
    while let Ok(message) = tokio::time::timeout(scaled(Duration::from_secs(1)), lagging.next()).await {
        let Some(Message::Text(text)) = message else { panic!("unexpected message: {message:?}") };
        let update: serde_json::Value = serde_json::from_str(&text).expect("a whole JSON message");
        assert_slots_update(&update);
        if update["data"]["date"] == tomorrow.as_str() {
            last = Some(update);
        }
    }
    let last = last.expect("updates for tomorrow");
    assert_eq!(last["data"]["booked_slots"], json!([5]), "the client was left with a stale view");
    let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    let resynced = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"rerod_websocket_slow_clients_total{action="resynced"} "#))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(resynced >= Some(1), "the client fell behind far enough to be resynced: {resynced:?}");
    // The connection is still usable.
    lagging.send(&json!({"type": "get_slots", "date": tomorrow})).await;
    assert_eq!(lagging.recv_type("slots_update").await["data"]["booked_slots"], json!([5]));
}

#[tokio::test]
async fn a_message_sent_together_with_the_handshake_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start();
    let tomorrow = utc_date(1).to_string();
    // The upgrade request and a first (masked) message in one write, so the
    // server reads the message along with the handshake.
    let payload = json!({"type": "get_slots", "date": tomorrow}).to_string().into_bytes();
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut bytes = format!(
        "GET /slot-booking HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        daemon.addr
    )
    .into_bytes();
    assert!(payload.len() < 126);
    bytes.extend([0x81, 0x80 | payload.len() as u8]);
    bytes.extend(mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();

    // Past the 101 response, the rest is WebSocket frames.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let mut ws = Ws { socket };
    let greeting = ws.recv_type("slots_update").await;
    assert_eq!(greeting["data"]["date"], utc_date(0).to_string());
    let answer = ws.recv_type("slots_update").await;
    assert_eq!(answer["data"]["date"], tomorrow);
}

#[tokio::test]
async fn feeds_beyond_their_cap_get_503_and_consoles_still_open() {
    let config = format!(
        "{}[server]\nmax_websocket_connections = 1\n[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/dev/rerod-test-absent\"\n",
        crate::util::UTC_LAB
    );
    let daemon = Daemon::start_with(crate::util::Options::config(&config));
    let mut first = daemon.ws("/slot-booking").await;
    first.recv_type("slots_update").await;
    let stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    let refused = tokio_tungstenite::client_async(format!("ws://{}/slot-booking", daemon.addr), stream).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "5");
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    // Consoles are not the feeds' to take: this one opens, and is refused only for who it is.
    let mut console = daemon.ws("/devices/read/arm-1").await;
    console.send(&json!({"token": "not-a-token"})).await;
    assert_eq!(console.recv_type("error").await["code"], "invalid_token");
    // The connected client is unaffected.
    first.send(&json!({"type": "get_slots"})).await;
    assert_slots_update(&first.recv_type("slots_update").await);
}

#[tokio::test]
async fn a_socket_identifies_with_a_token_and_stays_anonymous_otherwise() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let mut ws = daemon.ws("/slot-booking").await;
    assert_slots_update(&ws.recv().await);
    for (message, code) in [
        (json!({"type": "identify"}), "not_authenticated"),
        (json!({"type": "identify", "token": "not-a-token"}), "invalid_token"),
        (json!({"type": "identify", "email": "ada@example.com", "password": "wrong-password"}), "invalid_credentials"),
    ] {
        ws.send(&message).await;
        let refused = ws.recv_type("error").await;
        assert_eq!(refused["code"], code, "{message}: {refused}");
    }
    ws.send(&json!({"type": "identify", "token": ada})).await;
    let identified = ws.recv_type("identified").await;
    assert_eq!(identified["email"], "ada@example.com", "{identified}");
    // The socket goes on as before.
    ws.send(&json!({"type": "get_slots"})).await;
    assert_slots_update(&ws.recv_type("slots_update").await);
}

/// A disabled or signed-out account is told over its open sockets at once,
/// not at its next request: the student's page signs out there and then.
#[tokio::test]
async fn a_disabled_or_signed_out_account_is_told_on_its_socket_at_once() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let admin = daemon.host_account("head@example.com", true).await;
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let identified = async |token: &str| {
        let mut ws = daemon.ws("/slot-booking").await;
        assert_slots_update(&ws.recv().await);
        ws.send(&json!({"type": "identify", "token": token})).await;
        ws.recv_type("identified").await;
        ws
    };
    let mut ada_ws = identified(&ada).await;
    let mut bob_ws = identified(&bob).await;

    c.post_auth("/admin/users/disable", &admin, &json!({"email": "ada@example.com"})).await.expect(200);
    let told = ada_ws.recv_type("signed_out").await;
    assert_eq!((told["code"].as_str(), told["email"].as_str()), (Some("account_disabled"), Some("ada@example.com")));
    assert!(told["message"].as_str().unwrap().contains("disabled"), "{told}");
    // Only ada's socket: bob's hears the next broadcast and nothing of ada.
    c.post_auth("/book-slot", &bob, &json!({"slot_id": 23})).await.expect(200);
    loop {
        let next = bob_ws.recv().await;
        assert_ne!(next["type"], "signed_out", "{next}");
        if next["type"] == "slots_update" {
            break;
        }
    }

    // Signing out everywhere tells the account's sockets too.
    c.post_auth("/auth/logout-all", &bob, &json!({})).await.expect(200);
    let told = bob_ws.recv_type("signed_out").await;
    assert_eq!(told["code"], "signed_out", "{told}");
    // The socket goes on, anonymous.
    bob_ws.send(&json!({"type": "get_slots"})).await;
    assert_slots_update(&bob_ws.recv_type("slots_update").await);
}
