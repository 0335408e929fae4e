//! Every HTTP route's success and error shapes, starting with the seed
//! README's curl examples exactly as its clients send them.

use hyper::Method;
use serde_json::{Value, json};

use crate::util::{Client, Daemon, Options, PASSWORD, UTC_LAB, utc_date};

/// The seed README's quick-test flow: register, log in, book and cancel with
/// e-mail and password in the body, list, my-bookings, health, stats.
#[tokio::test]
async fn seed_readme_curl_examples_work_unchanged() {
    let daemon = Daemon::start();
    let c = daemon.client();

    // 200 on a fresh store, as the old backend's code answered and its scripts check.
    let body = c.register("test@example.com", "testpass123").await.expect(200);
    let id = body["user"]["id"].as_u64().expect("the account's number");
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "User registered successfully");
    assert_eq!(body["user"]["email"], "test@example.com");
    assert!(body["user"]["created_at"].as_str().unwrap().starts_with(&utc_date(0).to_string()));

    let body = c.post("/auth/login", &json!({"email":"test@example.com","password":"testpass123"})).await.expect(200);
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Login successful");
    assert_eq!(body["user"]["email"], "test@example.com");
    assert_eq!(body["user"]["role"], "user");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token"].as_str().unwrap().split('.').count(), 3);
    assert_eq!(body["user"]["id"].as_u64(), Some(id), "the old login's user.id");
    let again = c.post("/auth/login", &json!({"email":"test@example.com","password":"testpass123"})).await.expect(200);
    assert_eq!(again["user"]["id"].as_u64(), Some(id), "the same account, the same id, at every login");

    // The seed books "today"; use the last slot so the test does not depend on the hour.
    let creds = json!({"slot_id": 23, "email": "test@example.com", "password": "testpass123"});
    let body = c.post("/book-slot", &creds).await.expect(200);
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Slot 23 booked successfully");
    assert_eq!(body["slot_id"], 23);
    assert_eq!(body["date"], utc_date(0).to_string());
    assert_eq!(body["device"], "default");

    let body = c.post("/book-slot", &creds).await.expect(400);
    assert_eq!(body["detail"], "Slot 23 is not available");
    assert_eq!(body["code"], "slot_unavailable");

    let body = c.get("/slots").await.expect(200);
    assert_eq!(body["slots"].as_array().unwrap().len(), 24);
    assert_eq!(body["booked_slots"], json!([23]));
    assert!(!body["available_slots"].as_array().unwrap().contains(&json!(23)));
    let slot = &body["slots"][23];
    assert_eq!(slot["id"], 23);
    assert_eq!(slot["start_time"], "23:00");
    assert_eq!(slot["end_time"], "00:00");
    assert_eq!(slot["is_booked"], true);
    assert_eq!(slot["booked_by"], "test@example.com");
    assert!(slot["booked_at"].is_string());
    assert_eq!(slot["status"], "booked");
    assert_eq!(slot["start"], format!("{}T23:00:00+00:00", utc_date(0)));
    assert_eq!(body["date"], utc_date(0).to_string());
    assert_eq!(body["device"], "default");
    let free = &body["slots"][0];
    assert_eq!(
        (free["is_booked"].clone(), free["booked_by"].clone(), free["booked_at"].clone()),
        (json!(false), json!(null), json!(null))
    );

    let body =
        c.post("/my-bookings", &json!({"email": "test@example.com", "password": "testpass123"})).await.expect(200);
    assert_eq!(body["success"], true);
    assert_eq!(body["total_bookings"], 1);
    let booking = &body["bookings"][0];
    assert_eq!(booking["id"], 23);
    assert_eq!(booking["start_time"], "23:00");
    assert_eq!(booking["end_time"], "00:00");
    assert!(booking["booked_at"].is_string());
    assert_eq!(booking["date"], utc_date(0).to_string());
    assert_eq!(booking["device"], "default");

    let root = c.get("/").await.expect(200);
    assert_eq!(root["message"], "Slot Booking API is running");
    assert_eq!(root["websocket_endpoint"], "/slot-booking");
    assert_eq!(root["active_connections"], 0);
    assert_eq!(root["booked_slots"], json!([23]));

    // Available means bookable now, as in /slots: today's past slots are not.
    let available = c.get("/slots").await.expect(200)["available_slots"].as_array().unwrap().len();
    let health = c.get("/health").await.expect(200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["total_slots"], 24);
    assert_eq!(health["booked_slots_count"], 1);
    assert_eq!(health["available_slots_count"], available);
    assert_eq!(health["database"]["booked_slots"], 1);
    assert_eq!(health["database"]["total_slots"], 24);
    assert!(health["database"]["database_path"].as_str().unwrap().ends_with("rerod.redb"));
    assert!(health["timestamp"].is_string());
    assert_eq!(health["active_connections"], 0);
    assert_eq!(health["config"]["generation"], 1);

    let stats = c.get("/stats").await.expect(200);
    assert_eq!(stats["database"]["booked_slots"], 1);
    assert_eq!(stats["websocket"]["active_connections"], 0);
    assert_eq!(stats["slots"], json!({"total": 24, "booked": 1, "available": available}));
    assert_eq!(stats["devices"][0]["id"], "default");

    let body = c.post("/cancel-slot", &creds).await.expect(200);
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Slot 23 booking cancelled successfully");
    assert_eq!(body["slot_id"], 23);
    assert_eq!(c.booked(utc_date(0)).await, Vec::<u64>::new());

    let body = c.post("/cancel-slot", &creds).await.expect(400);
    assert_eq!(body["detail"], "Slot 23 was not booked by you or does not exist");
}

#[tokio::test]
async fn bearer_tokens_work_on_every_protected_route_and_win_over_body_credentials() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.user("bob@example.com").await;
    let day = utc_date(1).to_string();

    // Bob's credentials in the body, Ada's token in the header: Ada books.
    let body = json!({"slot_id": 10, "date": day, "email": "bob@example.com", "password": PASSWORD});
    c.post_auth("/book-slot", &ada, &body).await.expect(200);
    let slots = c.get(&format!("/slots?date={day}")).await.expect(200);
    assert_eq!(slots["slots"][10]["booked_by"], "ada@example.com");

    // A token in the body works too (the seed's WebSocket-era clients send it there).
    c.post("/book-slot", &json!({"slot_id": 11, "date": day, "token": ada})).await.expect(200);

    for method in [Method::GET, Method::POST] {
        let auth = format!("Bearer {ada}");
        let r = c.request(method.clone(), "/my-bookings", &[("authorization", &auth)], "").await;
        let body = r.expect(200);
        assert_eq!(body["total_bookings"], 2, "{method}");
        let ids: Vec<_> = body["bookings"].as_array().unwrap().iter().map(|b| b["id"].clone()).collect();
        assert_eq!(ids, [json!(10), json!(11)]);
        assert!(body["bookings"][0]["start"].as_str().unwrap().starts_with(&format!("{day}T10:00:00")));
    }

    let next = c.get_auth("/slots/user", &ada).await.expect(200);
    assert_eq!(next["success"], true);
    assert_eq!(next["has_booking"], true);
    assert_eq!(next["slot"], 10);
    assert_eq!(next["date"], day);
    assert_eq!(next["device"], "default");
    assert_eq!(next["is_current"], false);
    assert_eq!(next["start"], format!("{day}T10:00:00+00:00"));
    assert_eq!(next["end"], format!("{day}T11:00:00+00:00"));

    let bob = c.login("bob@example.com", PASSWORD).await;
    let none = c.post_auth("/slots/user", &bob, &json!({})).await.expect(200);
    assert_eq!(none["has_booking"], false);
    assert_eq!(none["slot"], json!(null));

    // Viewer-aware status on /slots.
    let slots = c.get_auth(&format!("/slots?date={day}"), &ada).await.expect(200);
    assert_eq!(slots["slots"][10]["status"], "mine");
    let slots = c.get_auth(&format!("/slots?date={day}"), &bob).await.expect(200);
    assert_eq!(slots["slots"][10]["status"], "booked");

    // Bob may not cancel Ada's booking.
    let r = c.post_auth("/cancel-slot", &bob, &json!({"slot_id": 10, "date": day})).await;
    assert_eq!(r.expect(400)["detail"], "Slot 10 was not booked by you or does not exist");
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 10, "date": day})).await.expect(200);
}

#[tokio::test]
async fn protected_routes_without_credentials_get_401_with_www_authenticate() {
    let daemon = Daemon::start();
    let c = daemon.client();
    for (method, path, body) in [
        (Method::POST, "/book-slot", r#"{"slot_id": 5}"#),
        (Method::POST, "/cancel-slot", r#"{"slot_id": 5}"#),
        (Method::POST, "/my-bookings", ""),
        (Method::GET, "/my-bookings", ""),
        (Method::GET, "/slots/user", ""),
    ] {
        let r = c.request(method.clone(), path, &[("content-type", "application/json")], body).await;
        assert_eq!(r.expect(401)["code"], "not_authenticated", "{method} {path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{method} {path}");
    }
    let r = c.request(Method::GET, "/my-bookings", &[("authorization", "Basic YWRhOnB3")], "").await;
    assert_eq!(r.expect(401)["code"], "not_authenticated");
}

#[tokio::test]
async fn login_failures_look_the_same_for_unknown_users_and_wrong_passwords() {
    let daemon = Daemon::start();
    let c = daemon.client();
    c.user("ada@example.com").await;
    let wrong = c.post("/auth/login", &json!({"email": "ada@example.com", "password": "nope-nope"})).await;
    let unknown = c.post("/auth/login", &json!({"email": "nobody@example.com", "password": "nope-nope"})).await;
    let malformed = c.post("/auth/login", &json!({"email": "not an email", "password": "nope-nope"})).await;
    for r in [&wrong, &unknown, &malformed] {
        let body = r.expect(401);
        assert_eq!(body["detail"], "Invalid email or password");
        assert_eq!(body["code"], "invalid_credentials");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // E-mail is matched case-insensitively and trimmed.
    c.login("  ADA@Example.com ", PASSWORD).await;
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405_with_allow() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let r = c.get("/nope").await;
    assert_eq!(r.expect(404)["code"], "not_found");
    let r = c.get("/book-slot").await;
    assert_eq!(r.expect(405)["code"], "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    let r = c.request(Method::DELETE, "/slots", &[], "").await;
    r.expect(405);
    assert_eq!(r.header("allow"), Some("GET, OPTIONS"));
    let r = c.request(Method::PUT, "/my-bookings", &[], "").await;
    assert_eq!(r.header("allow"), Some("GET, POST, OPTIONS"));
}

#[tokio::test]
async fn cors_preflight_and_allowed_origins() {
    let daemon =
        Daemon::start_with(Options::config(&format!("{UTC_LAB}[server]\ncors_origins = [\"https://lab.example\"]\n")));
    let c = daemon.client();
    let r = c.request(Method::OPTIONS, "/book-slot", &[("origin", "https://lab.example")], "").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://lab.example"));
    assert!(r.header("access-control-allow-headers").unwrap().contains("authorization"));
    let r = c.request(Method::GET, "/slots", &[("origin", "https://evil.example")], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn devices_are_addressed_by_number_or_id_with_separate_calendars() {
    let config = format!(
        "{UTC_LAB}[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/dev/null-a\"\n\
         [[devices]]\nid = \"arm-2\"\nplugin = \"stk500v1\"\nport = \"/dev/null-b\"\n"
    );
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let day = utc_date(1).to_string();
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 9, "date": day, "device": "arm-2"})).await.expect(200);
    // The same slot on the other device is still free.
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 9, "date": day, "device": 0})).await.expect(200);
    let r = c.post_auth("/book-slot", &ada, &json!({"slot_id": 9, "date": day, "device": 1})).await;
    assert_eq!(r.expect(400)["detail"], "Slot 9 is not available");

    for query in ["device=1", "device=arm-2"] {
        let body = c.get(&format!("/slots?date={day}&{query}")).await.expect(200);
        assert_eq!(body["device"], "arm-2");
        assert_eq!(body["booked_slots"], json!([9]));
    }
    // Default is the first device.
    assert_eq!(c.get(&format!("/slots?date={day}")).await.expect(200)["device"], "arm-1");

    for query in ["device=2", "device=arm-9", "device=-1"] {
        let r = c.get(&format!("/slots?date={day}&{query}")).await;
        assert_eq!(r.expect(404)["code"], "device_not_found", "{query}");
    }
    let r = c.post_auth("/book-slot", &ada, &json!({"slot_id": 9, "date": day, "device": "arm-9"})).await;
    r.expect(404);
}

#[tokio::test]
async fn booking_policy_caps_and_horizon_come_from_config() {
    let config = format!("{UTC_LAB}days_ahead = 2\nmax_active_bookings = 2\nmax_bookings_per_day = 1\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let book = |days: i64, slot: u16| {
        let ada = ada.clone();
        async move { c.post_auth("/book-slot", &ada, &json!({"slot_id": slot, "date": utc_date(days).to_string()})).await }
    };
    book(1, 5).await.expect(200);
    assert_eq!(book(1, 6).await.expect(400)["code"], "daily_booking_limit");
    book(2, 5).await.expect(200);
    assert_eq!(book(2, 6).await.expect(400)["code"], "active_booking_limit");
    let r = book(3, 5).await.expect(400);
    assert_eq!(r["code"], "date_too_far_ahead");
    assert!(r["detail"].as_str().unwrap().contains(&utc_date(2).to_string()));
    // Cancelling one makes room under both caps again.
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 5, "date": utc_date(2).to_string()})).await.expect(200);
    book(2, 7).await.expect(200);
}

#[tokio::test]
async fn registration_policy_and_admins_from_config() {
    let config = format!(
        "{UTC_LAB}[auth]\nregistration = \"domains\"\nallowed_domains = [\"uni.example\"]\nadmins = [\"Boss@Uni.example\"]\n"
    );
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let r = c.register("ada@elsewhere.example", PASSWORD).await;
    assert_eq!(r.expect(403)["code"], "registration_refused");
    let ada = c.user("ada@uni.example").await;
    // An admin address cannot register itself; the lab creates it on the host.
    assert_eq!(c.register("boss@uni.example", PASSWORD).await.expect(403)["code"], "registration_refused");
    let boss = daemon.host_account("boss@uni.example", false).await;
    let body = c.post("/auth/login", &json!({"email": "boss@uni.example", "password": PASSWORD})).await.expect(200);
    assert_eq!(body["user"]["role"], "admin");

    let day = utc_date(1).to_string();
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 3, "date": day})).await.expect(200);
    // An admin may cancel anyone's booking.
    c.post_auth("/cancel-slot", &boss, &json!({"slot_id": 3, "date": day})).await.expect(200);
    assert_eq!(c.booked(utc_date(1)).await, Vec::<u64>::new());
    daemon.log_until(|log| log.contains("booking cancelled by admin")).await;
}

#[tokio::test]
async fn privacy_option_hides_other_peoples_emails() {
    let daemon = Daemon::start_with(Options::config(&format!("{UTC_LAB}privacy = \"hide-others\"\n")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let day = utc_date(1).to_string();
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 4, "date": day})).await.expect(200);
    let path = format!("/slots?date={day}");
    assert_eq!(c.get_auth(&path, &ada).await.expect(200)["slots"][4]["booked_by"], "ada@example.com");
    let as_bob = c.get_auth(&path, &bob).await.expect(200);
    assert_eq!(as_bob["slots"][4]["booked_by"], json!(null));
    assert_eq!(as_bob["slots"][4]["is_booked"], true);
    assert_eq!(c.get(&path).await.expect(200)["slots"][4]["booked_by"], json!(null));
}

#[tokio::test]
async fn history_shows_past_bookings_only_when_asked() {
    // Bookings of yesterday cannot be made through the API, so make one today
    // in slot 23 and check the filter by asking for history both ways.
    let daemon = Daemon::start();
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 23})).await.expect(200);
    let upcoming = c.get_auth("/my-bookings", &ada).await.expect(200);
    let with_history = c.get_auth("/my-bookings?history=true", &ada).await.expect(200);
    assert_eq!(upcoming["total_bookings"], 1);
    assert_eq!(with_history["total_bookings"], 1);
    let r = c.get_auth("/my-bookings?history=maybe", &ada).await;
    assert_eq!(r.expect(422)["field"], "history");
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let daemon = Daemon::start();
    let c = daemon.client();
    c.register("ada@example.com", "hunter2-secret").await.expect(200);
    let token = c.login("ada@example.com", "hunter2-secret").await;
    c.post("/book-slot", &json!({"slot_id": 23, "email": "ada@example.com", "password": "hunter2-secret"}))
        .await
        .expect(200);
    c.post("/auth/login", &json!({"email": "ada@example.com", "password": "wrong-secret"})).await.expect(401);
    let log = daemon.log_until(|log| log.matches("rerod::access").count() >= 4).await;
    for secret in ["hunter2-secret", "wrong-secret", token.as_str(), "$2b$"] {
        assert!(!log.contains(secret), "log contains {secret:?}");
    }
}

/// Each request is one structured log line with method, route pattern, status and latency.
#[tokio::test]
async fn one_access_log_line_per_request() {
    let daemon = Daemon::start();
    let c: Client = daemon.client();
    c.get("/slots?date=2026-01-01").await;
    c.get("/nope").await;
    let lines: Vec<serde_json::Value> = daemon
        .log_until(|log| log.matches("rerod::access").count() >= 2)
        .await
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["target"] == "rerod::access")
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (lines[0]["method"].as_str(), lines[0]["route"].as_str(), lines[0]["status"].as_u64()),
        (Some("GET"), Some("/slots"), Some(200))
    );
    assert!(lines[0]["latency_us"].is_u64());
    assert_eq!(lines[1]["status"], 404);
}

/// Access lines are written in batches by the log's own thread; a clean stop
/// (SIGTERM) writes out what is buffered, so the last request before it is in
/// the log, ahead of the daemon's last line.
#[tokio::test]
async fn the_last_request_before_a_clean_stop_is_in_the_access_log() {
    let mut daemon = Daemon::start();
    let c: Client = daemon.client();
    for _ in 0..20 {
        c.get("/slots").await.expect(200);
    }
    c.get("/the-last-request").await.expect(404);
    assert!(daemon.terminate().await.success());
    let log = daemon.log_until(|log| log.contains("\"message\":\"stopped\"")).await;
    let events: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let access: Vec<_> = events.iter().filter(|e| e["target"] == "rerod::access").collect();
    assert_eq!(access.len(), 21, "one line per request: {log}");
    assert_eq!((access[20]["route"].as_str(), access[20]["status"].as_u64()), (Some("(unknown)"), Some(404)));
    let last = events.last().unwrap();
    assert_eq!(last["message"], "stopped", "the access lines come before the daemon's last line");
}

/// A lab admin lists the accounts and disables one: it can no longer log in
/// or use its tokens, and its bookings that have not ended are freed for
/// everyone to see. Enabling it again means logging in afresh.
#[tokio::test]
async fn an_admin_disables_and_enables_an_account() {
    let daemon = Daemon::start_with(Options::config(&format!("{UTC_LAB}[auth]\nadmins = [\"boss@example.com\"]\n")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let boss = daemon.host_account("boss@example.com", false).await;
    let day = utc_date(1).to_string();
    for slot in [3, 4] {
        c.post_auth("/book-slot", &ada, &json!({"slot_id": slot, "date": day})).await.expect(200);
    }
    let mut viewer = daemon.ws("/slot-booking").await;
    viewer.recv_type("slots_update").await;

    // Only admins, and only with a Bearer token.
    let r = c.get_auth("/admin/users", &bob).await;
    assert_eq!(r.expect(403)["code"], "admin_only");
    let r = c.post_auth("/admin/users/disable", &bob, &json!({"email": "ada@example.com"})).await;
    assert_eq!(r.expect(403)["code"], "admin_only");
    let r = c.post("/admin/users/disable", &json!({"email": "ada@example.com", "password": PASSWORD})).await;
    assert_eq!(r.expect(401)["code"], "not_authenticated");
    let users = c.get_auth("/admin/users", &boss).await.expect(200);
    assert_eq!(users["count"], 3);
    let roles: Vec<(&str, &str, bool)> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["email"].as_str().unwrap(), u["role"].as_str().unwrap(), u["disabled"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("ada@example.com", "user", false), ("bob@example.com", "user", false), ("boss@example.com", "admin", false)]
    );

    // Bad requests change nothing.
    let r = c.post_auth("/admin/users/disable", &boss, &json!({})).await;
    assert_eq!(r.expect(422)["field"], "email");
    let r = c.post_auth("/admin/users/disable", &boss, &json!({"email": "nobody@example.com"})).await;
    assert_eq!(r.expect(404)["code"], "user_not_found");
    let r = c.post_auth("/admin/users/disable", &boss, &json!({"email": "boss@example.com"})).await;
    assert_eq!(r.expect(400)["code"], "account_is_admin");
    assert_eq!(c.booked(utc_date(1)).await, [3, 4]);

    let body = c.post_auth("/admin/users/disable", &boss, &json!({"email": " Ada@Example.com"})).await.expect(200);
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["disabled"], true);
    let cancelled: Vec<u64> =
        body["cancelled_bookings"].as_array().unwrap().iter().map(|b| b["id"].as_u64().unwrap()).collect();
    assert_eq!(cancelled, [3, 4]);
    assert_eq!(c.booked(utc_date(1)).await, Vec::<u64>::new());
    // Everyone watching sees the slots free.
    loop {
        let update = viewer.recv_type("slots_update").await;
        if update["data"]["date"] == day.as_str() && update["data"]["booked_slots"] == json!([]) {
            break;
        }
    }

    // Ada is out: her token, her password, and the seed's in-body credentials.
    let r = c.get_auth("/my-bookings", &ada).await;
    assert_eq!(r.expect(403)["code"], "account_disabled");
    let r = c.post("/auth/login", &json!({"email": "ada@example.com", "password": PASSWORD})).await;
    assert_eq!(r.expect(403)["code"], "account_disabled");
    let in_body = json!({"slot_id": 5, "date": day, "email": "ada@example.com", "password": PASSWORD});
    assert_eq!(c.post("/book-slot", &in_body).await.expect(403)["code"], "account_disabled");
    let users = c.get_auth("/admin/users", &boss).await.expect(200);
    assert_eq!(users["users"][0]["disabled"], true);

    // Enabled again: the old token stays refused; a fresh login works.
    let body = c.post_auth("/admin/users/enable", &boss, &json!({"email": "ada@example.com"})).await.expect(200);
    assert_eq!(body["user"]["disabled"], false);
    assert_eq!(body["cancelled_bookings"], json!([]));
    let r = c.get_auth("/my-bookings", &ada).await;
    assert_eq!(r.expect(401)["code"], "invalid_token");
    let ada = c.login("ada@example.com", PASSWORD).await;
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 5, "date": day})).await.expect(200);

    let log = daemon.log_until(|log| log.contains("account enabled")).await;
    assert!(log.contains("account disabled"), "{log}");
    assert!(!log.contains(&ada) && !log.contains(&boss), "tokens never reach the log");
}

/// A timestamp in the old backend's format, UTC with microseconds
/// (`2026-11-24T10:30:00.123456Z`), as microseconds since the epoch.
fn utc_micros(value: &Value) -> i64 {
    let text = value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}"));
    let in_format = text.len() == 27 && text.ends_with('Z') && text.as_bytes()[19] == b'.';
    assert!(in_format, "not UTC with microseconds: {text}");
    text.parse::<jiff::Timestamp>().unwrap_or_else(|e| panic!("{text}: {e}")).as_microsecond()
}

/// The old clients read `email` at the top of the register answer, and
/// `created_at` and `last_login` (the login before this one) in the login
/// answer's `user`; rerod's own fields stay beside them.
#[tokio::test]
async fn register_and_login_answers_carry_the_old_account_fields() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let registered = c.register("ada@example.com", PASSWORD).await.expect(200);
    assert_eq!(registered["email"], "ada@example.com", "{registered}");
    assert_eq!(registered["email"], registered["user"]["email"]);
    assert_eq!(registered["success"], true);
    assert!(registered["message"].is_string());
    utc_micros(&registered["user"]["created_at"]);

    let login = |password: &'static str| async move {
        c.post("/auth/login", &json!({"email": "ada@example.com", "password": password})).await
    };
    let before_first = jiff::Timestamp::now().as_microsecond();
    let first = login(PASSWORD).await.expect(200);
    let after_first = jiff::Timestamp::now().as_microsecond();
    // A failed attempt is no login: it must not become the "last" one.
    login("wrong-one").await.expect(401);
    let second = login(PASSWORD).await.expect(200);

    for body in [&first, &second] {
        assert_eq!(body["success"], true);
        assert_eq!(body["message"], "Login successful");
        assert!(body["token"].is_string() && body["expires_in"].is_u64());
        assert_eq!(body["token_type"], "bearer");
        let user = &body["user"];
        assert_eq!((user["email"].as_str(), user["role"].as_str()), (Some("ada@example.com"), Some("user")));
        assert_eq!(user["created_at"], registered["user"]["created_at"], "{body}");
        assert!(user.as_object().unwrap().contains_key("last_login"), "{body}");
    }
    assert_eq!(first["user"]["last_login"], Value::Null, "there was no login before the first");
    let last_login = utc_micros(&second["user"]["last_login"]);
    assert!(
        (before_first..=after_first).contains(&last_login),
        "last_login {} is not the first login's time (between {before_first} and {after_first} µs)",
        second["user"]["last_login"]
    );
}

/// `/health` and `/stats` count as available what `/slots` offers: a slot
/// that has ended is not available, on every device.
#[tokio::test]
async fn health_and_stats_count_available_slots_as_slots_does() {
    // A lab whose clock reads about noon whenever the test runs, so its day
    // has slots that have ended and slots still to come. `Etc/GMT-N` is N
    // hours ahead of UTC (POSIX sign).
    let utc_hour = i64::from(jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).hour());
    let zone = format!("Etc/GMT{:+}", utc_hour - 12);
    let config = format!(
        "[lab]\ntimezone = \"{zone}\"\n[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/dev/null-a\"\n\
         [[devices]]\nid = \"arm-2\"\nplugin = \"stk500v1\"\nport = \"/dev/null-b\"\n"
    );
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 20, "device": 0})).await.expect(200);
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 21, "device": 1})).await.expect(200);

    // `available_slots` of `/slots` today, per device.
    let available = || async {
        let mut counts = Vec::new();
        for device in 0..2 {
            let day = c.get(&format!("/slots?device={device}")).await.expect(200);
            counts.push(day["available_slots"].as_array().unwrap().len());
        }
        counts
    };
    for attempt in 1.. {
        let before = available().await;
        let health = c.get("/health").await.expect(200);
        let stats = c.get("/stats").await.expect(200);
        if available().await != before {
            // A slot ended meanwhile (an hour boundary); slots end an hour apart, so read again.
            assert!(attempt < 3, "the available slots kept changing");
            continue;
        }
        assert!(before[0] < 23, "some of the 23 slots nobody booked have ended: {before:?}");
        let counts = [
            ("/health available_slots_count", &health["available_slots_count"]),
            ("/health database.available_slots", &health["database"]["available_slots"]),
            ("/stats slots.available", &stats["slots"]["available"]),
            ("/stats database.available_slots", &stats["database"]["available_slots"]),
        ];
        for (what, count) in counts {
            assert_eq!(count, &json!(before[0]), "{what} against /slots");
        }
        for (number, (id, count)) in ["arm-1", "arm-2"].into_iter().zip(before).enumerate() {
            let device = &stats["devices"][number];
            assert_eq!(device["id"], id);
            assert_eq!(device["available_slots"], count, "/stats devices[{number}]: {device}");
        }
        break;
    }
}
