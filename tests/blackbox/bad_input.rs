//! Bad input of every kind gets a clear error with the right status, and
//! changes nothing.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{Client, Daemon, Options, PASSWORD, UTC_LAB, scaled, utc_date};

/// Users and bookings in the store, to show a refused request changed nothing.
async fn totals(c: &Client) -> (Value, Value) {
    let stats = c.get("/stats").await.expect(200);
    (stats["users"]["total"].clone(), stats["bookings"]["total"].clone())
}

/// Sends `body` raw with a JSON content type.
async fn post_raw(c: &Client, path: &str, token: Option<&str>, body: impl Into<bytes::Bytes>) -> crate::util::Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    c.request(Method::POST, path, &headers, body).await
}

#[tokio::test]
async fn malformed_bodies_get_422_naming_the_problem() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let before = totals(&c).await;
    let day = utc_date(1).to_string();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("/auth/register", br#"{"email": "x@example.com", "password": "#.to_vec(), "body"),
        ("/auth/register", b"[1, 2]".to_vec(), "body"),
        ("/auth/register", br#"{"email": 5, "password": "password1"}"#.to_vec(), "email"),
        ("/auth/register", br#"{"email": "x@example.com"}"#.to_vec(), "password"),
        ("/auth/register", br#"{"password": "password1"}"#.to_vec(), "email"),
        ("/auth/register", b"{\"email\": \"x\xff@example.com\", \"password\": \"password1\"}".to_vec(), "body"),
        ("/auth/login", br#"{"email": "ada@example.com", "password": null}"#.to_vec(), "password"),
        ("/book-slot", format!(r#"{{"date": "{day}"}}"#).into_bytes(), "slot_id"),
        ("/book-slot", format!(r#"{{"slot_id": "9", "date": "{day}"}}"#).into_bytes(), "slot_id"),
        ("/book-slot", format!(r#"{{"slot_id": 9.5, "date": "{day}"}}"#).into_bytes(), "slot_id"),
        ("/book-slot", format!(r#"{{"slot_id": [9], "date": "{day}"}}"#).into_bytes(), "slot_id"),
        ("/book-slot", br#"{"slot_id": 9, "date": "tomorrow"}"#.to_vec(), "date"),
        ("/book-slot", br#"{"slot_id": 9, "date": "2026-02-30"}"#.to_vec(), "date"),
        ("/book-slot", br#"{"slot_id": 9, "date": 20261124}"#.to_vec(), "date"),
        ("/book-slot", format!(r#"{{"slot_id": 9, "date": "{day}", "device": {{}}}}"#).into_bytes(), "device"),
        ("/cancel-slot", br#"{"slot_id": true}"#.to_vec(), "slot_id"),
    ];
    for (path, body, field) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let r = post_raw(&c, path, Some(&token), body).await;
        let json = r.expect(422);
        assert_eq!(json["field"], field, "{path} {shown}: {json}");
        assert!(json["detail"].as_str().unwrap().contains(field), "{path} {shown}: {json}");
    }
    let r = c.get("/slots?date=24.11.2026").await;
    assert_eq!(r.expect(422)["field"], "date");
    assert_eq!(totals(&c).await, before);
}

#[tokio::test]
async fn slot_ids_and_dates_outside_the_rules_get_400() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let before = totals(&c).await;
    let book = |slot: Value, date: String| {
        let token = token.clone();
        async move { c.post_auth("/book-slot", &token, &json!({"slot_id": slot, "date": date})).await }
    };
    let tomorrow = utc_date(1).to_string();
    for slot in [json!(-1), json!(24), json!(1_000_000), json!(i64::MAX)] {
        let body = book(slot.clone(), tomorrow.clone()).await.expect(400);
        assert_eq!(body["code"], "slot_not_found", "{slot}");
        assert_eq!(body["detail"], format!("Slot {slot} does not exist on {tomorrow}"));
    }
    let body = book(json!(5), utc_date(-1).to_string()).await.expect(400);
    assert_eq!((body["code"].as_str(), body["detail"].as_str()), (Some("slot_in_past"), Some("Slot 5 is in the past")));
    let body = book(json!(5), utc_date(8).to_string()).await.expect(400);
    assert_eq!(body["code"], "date_too_far_ahead");
    let body =
        c.post_auth("/cancel-slot", &token, &json!({"slot_id": 5, "date": utc_date(-1).to_string()})).await.expect(400);
    assert_eq!(body["code"], "slot_in_past");
    assert_eq!(totals(&c).await, before);
}

#[tokio::test]
async fn passwords_and_emails_are_checked_at_registration() {
    let daemon = Daemon::start();
    let c = daemon.client();
    c.register("ada@example.com", PASSWORD).await.expect(200);
    let before = totals(&c).await;
    for (email, password, field) in [
        ("new@example.com", "", "password"),
        ("new@example.com", "12345", "password"),
        ("new@example.com", &"x".repeat(73) as &str, "password"),
        ("new@example.com", &"€".repeat(25) as &str, "password"),
        ("not-an-email", PASSWORD, "email"),
        ("", PASSWORD, "email"),
        ("a b@example.com", PASSWORD, "email"),
    ] {
        let r = c.register(email, password).await;
        let body = r.expect(422);
        assert_eq!(body["field"], field, "{email:?} / {} bytes: {body}", password.len());
    }
    // The same address in another case is the same user.
    let body = c.register("  ADA@Example.COM", "password2").await.expect(400);
    assert_eq!(body["detail"], "User with this email already exists");
    assert_eq!(body["code"], "email_taken");
    assert_eq!(totals(&c).await, before);

    // 72 bytes is the most bcrypt reads: accepted, and only the exact password logs in.
    let long = PASSWORD.repeat(4)[..72].to_owned();
    c.register("long@example.com", &long).await.expect(200);
    c.login("long@example.com", &long).await;
    let r = c.post("/auth/login", &json!({"email": "long@example.com", "password": &long[..71]})).await;
    r.expect(401);
    // Unicode passwords: counted in characters for the minimum, in bytes for the maximum.
    c.register("uni@example.com", "pässwörd€").await.expect(200);
    c.login("uni@example.com", "pässwörd€").await;
    c.post("/auth/login", &json!({"email": "uni@example.com", "password": "passwörd€"})).await.expect(401);
}

#[tokio::test]
async fn oversized_unsupported_and_slow_requests_are_refused() {
    let daemon = Daemon::start_with(Options::config(&format!("{UTC_LAB}[server]\nheader_read_timeout_secs = 1\n")));
    let c = daemon.client();
    let token = c.user("ada@example.com").await;
    let before = totals(&c).await;

    let huge = format!(r#"{{"slot_id": 5, "pad": "{}"}}"#, "x".repeat(1 << 20));
    let r = post_raw(&c, "/book-slot", Some(&token), huge).await;
    assert_eq!(r.expect(413)["code"], "body_too_large");

    let r = c
        .request(
            Method::POST,
            "/auth/register",
            &[("content-type", "application/x-www-form-urlencoded")],
            "email=a&password=b",
        )
        .await;
    assert_eq!(r.expect(415)["code"], "unsupported_media_type");

    // Headers that never finish: the connection is closed, not left hanging.
    let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    stream.write_all(b"GET /slots HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(scaled(Duration::from_secs(10)), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a client that never finishes its headers must be disconnected");
    assert_eq!(totals(&c).await, before);
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_get_401() {
    let secret = "a-test-secret-of-reasonable-length";
    let daemon = Daemon::start_with(Options::config(UTC_LAB).env("JWT_SECRET_KEY", secret));
    let c = daemon.client();
    let good = c.user("ada@example.com").await;
    let before = totals(&c).await;
    let now = jiff::Timestamp::now().as_second();
    let sign = |key: &str, claims: Value| {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(key.as_bytes())).unwrap()
    };
    let forged = sign("another-secret", json!({"sub": "ada@example.com", "iat": now, "exp": now + 600}));
    let expired = sign(secret, json!({"sub": "ada@example.com", "iat": now - 7200, "exp": now - 3600}));
    let unknown_user = sign(secret, json!({"sub": "ghost@example.com", "iat": now, "exp": now + 600}));
    let payload = good.split('.').nth(1).unwrap();
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = sign(secret, json!({"sub": "boss@example.com", "iat": now, "exp": now + 600}))
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        parts.join(".")
    };
    let body = json!({"slot_id": 5, "date": utc_date(1).to_string()});
    for (name, token, code) in [
        ("forged", forged.as_str(), "invalid_token"),
        ("expired", &expired, "token_expired"),
        ("unknown user", &unknown_user, "invalid_token"),
        ("alg none", &alg_none, "invalid_token"),
        ("tampered", &tampered, "invalid_token"),
        ("garbage", "not.a.token", "invalid_token"),
    ] {
        let r = c.post_auth("/book-slot", token, &body).await;
        assert_eq!(r.expect(401)["code"], code, "{name}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{name}");
        c.get_auth("/my-bookings", token).await.expect(401);
    }
    // Bearer wins: a bad header is not rescued by good credentials in the body.
    let with_password =
        json!({"slot_id": 5, "date": utc_date(1).to_string(), "email": "ada@example.com", "password": PASSWORD});
    c.post_auth("/book-slot", &forged, &with_password).await.expect(401);
    assert_eq!(totals(&c).await, before);
    // The good token still works.
    c.post_auth("/book-slot", &good, &body).await.expect(200);
}

#[tokio::test]
async fn bad_credentials_in_the_body_change_nothing() {
    let daemon = Daemon::start();
    let c = daemon.client();
    c.user("ada@example.com").await;
    let before = totals(&c).await;
    let body =
        json!({"slot_id": 5, "date": utc_date(1).to_string(), "email": "ada@example.com", "password": "wrong-one"});
    let r = c.post("/book-slot", &body).await;
    assert_eq!(r.expect(401)["detail"], "Invalid email or password");
    assert_eq!(totals(&c).await, before);
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_with_429_and_retry_after() {
    let daemon = Daemon::start_with(Options::config(&format!("{UTC_LAB}[auth]\nmax_failed_logins = 3\n")));
    let c = daemon.client();
    c.user("ada@example.com").await;
    c.user("bob@example.com").await;
    for _ in 0..3 {
        c.post("/auth/login", &json!({"email": "ada@example.com", "password": "guess-guess"})).await.expect(401);
    }
    // Now even the right password waits: guessing is throttled, not answered.
    for body in [
        json!({"email": "ada@example.com", "password": PASSWORD}),
        json!({"email": "ADA@example.com", "password": "guess-again"}),
    ] {
        let r = c.post("/auth/login", &body).await;
        assert_eq!(r.expect(429)["code"], "too_many_attempts");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=300).contains(&retry), "Retry-After {retry}");
    }
    // Body credentials on other routes count too; other accounts are unaffected.
    let r = c.post("/my-bookings", &json!({"email": "ada@example.com", "password": PASSWORD})).await;
    r.expect(429);
    c.login("bob@example.com", PASSWORD).await;
}

/// Regression: a body over the limit was answered 413 and the connection
/// closed with the body unread, so the kernel reset it and a client still
/// sending saw "broken pipe" or "connection reset" instead of the 413.
#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_the_413() {
    let daemon = Daemon::start();
    let token = daemon.client().user("ada@example.com").await;
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
        let body = vec![b'x'; 2 << 20];
        let head = format!(
            "POST /book-slot HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The answer comes while this is still being sent.
        stream.write_all(&body).await.expect("the server reads what is sent after its answer, not resets");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("an orderly end, not a reset");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("body_too_large"), "{answer}");
    }
}
