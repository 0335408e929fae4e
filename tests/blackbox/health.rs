//! Boards that heal between sessions, end to end on the rig: the health
//! check (reset, idle firmware, the pattern on the console), its escalation
//! (power cycle, flash, check again), `failing` boards and maintenance, the
//! webhook, and bookings moved to a spare board with their holder told.
//!
//! The rig honours a power cycle on SIGUSR2 and latches up on SIGWINCH
//! (tests/rig/README.md), so a device's `power` command here signals its rig.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::devices::{ADMIN, Board, Console};
use crate::util::{Client, Daemon, Options, eventually_within, scaled, utc_date};

/// Cycles the rig's power, as uhubctl would a real board's.
const POWER_RIG: &str = "rig";
/// A power switch that does nothing: the board stays as it is.
const POWER_NOTHING: &str = "nothing";

/// One board of a test lab.
struct Spec<'a> {
    id: &'a str,
    board: &'a Board,
    /// `[devices.health]` and its idle firmware; none for a board without a check.
    idle: Option<&'a str>,
    power: &'a str,
    webhook: Option<u16>,
}

fn lab(specs: &[Spec<'_>]) -> String {
    let rig = rerod_devices::testkit::rig_dir();
    let mut text = format!("[lab]\ntimezone = \"UTC\"\nslot_minutes = 1440\n[auth]\nadmins = [\"{ADMIN}\"]\n");
    for spec in specs {
        let pid = spec.board.pid_file();
        text.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nplugin = \"stk500v1\"\nport = \"{port}\"\n\
             reset = [\"sh\", \"-c\", \"kill -USR1 \\\"$(cat '{pid}')\\\"\"]\nflash_limit = 31744\n",
            id = spec.id,
            port = spec.board.path().display(),
            pid = pid.display(),
        ));
        let Some(idle) = spec.idle else { continue };
        let power = match spec.power {
            POWER_RIG => format!("[\"sh\", \"-c\", \"kill -USR2 \\\"$(cat '{}')\\\"\"]", pid.display()),
            _ => "[\"true\"]".to_owned(),
        };
        // READY comes every 500 ms; the allowance covers a simulated board
        // slowed by the other tests sharing the machine's two cores.
        text.push_str(&format!(
            "idle_firmware = \"{}\"\npower = {power}\n[devices.health]\nexpect = \"READY\"\ntimeout_secs = 8\n",
            rig.join(idle).display()
        ));
        if let Some(port) = spec.webhook {
            text.push_str(&format!("webhook = \"http://127.0.0.1:{port}/alerts\"\n"));
        }
    }
    text
}

fn spec<'a>(id: &'a str, board: &'a Board, idle: Option<&'a str>, power: &'a str) -> Spec<'a> {
    Spec { id, board, idle, power, webhook: None }
}

/// GET /devices until device `number`'s health is `health`; answers that device.
async fn health_until(c: &Client, number: usize, health: &str) -> Value {
    // A check with its power cycles takes far longer than a request.
    eventually_within(Duration::from_secs(90), &format!("device {number} to become {health}"), async || {
        let body = c.get("/devices").await.expect(200);
        let device = &body["devices"][number];
        if device["health"] == health { Ok(device.clone()) } else { Err(body) }
    })
    .await
}

async fn check_now(c: &Client, admin: &str, device: &str) -> Value {
    c.post_auth(&format!("/admin/devices/check/{device}"), admin, &json!({})).await.expect(200)
}

async fn history(c: &Client, admin: &str, device: &str) -> Value {
    c.get_auth(&format!("/admin/devices/checks/{device}"), admin).await.expect(200)
}

fn steps(check: &Value) -> Vec<(String, bool)> {
    check["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_owned(), s["ok"].as_bool().unwrap()))
        .collect()
}

fn step(name: &str, ok: bool) -> (String, bool) {
    (name.to_owned(), ok)
}

/// Accepts one HTTP request and answers 204; yields its body.
async fn webhook_receiver() -> (u16, tokio::task::JoinHandle<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        let body = loop {
            let n = socket.read(&mut chunk).await.unwrap();
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    assert!(head.starts_with("POST /alerts HTTP/1.1"), "{head}");
                    break body[..length].to_owned();
                }
            }
            assert!(n > 0, "the webhook request ended early: {text}");
        };
        socket.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        serde_json::from_str(&body).unwrap()
    });
    (port, task)
}

#[tokio::test]
async fn a_latched_up_board_fails_its_check_and_a_power_cycle_revives_it() {
    let board = Board::start(Some("ready.hex"));
    let daemon = Daemon::start_with(Options::config(&lab(&[spec("uno-1", &board, Some("ready.hex"), POWER_RIG)])));
    let c = daemon.client();
    // Checked at start.
    health_until(&c, 0, "good").await;
    let admin = daemon.host_account(ADMIN, false).await;

    // Resets no longer reach it: only its power does.
    board.signal(libc::SIGWINCH);
    let answer = check_now(&c, &admin, "uno-1").await;
    assert_eq!((answer["success"].as_bool(), answer["health"].as_str()), (Some(true), Some("good")), "{answer}");
    let check = &answer["check"];
    assert_eq!(check["power_cycled"], true, "{check}");
    assert_eq!(check["trigger"], "admin");
    assert_eq!(check["requested_by"], ADMIN);
    let steps = steps(check);
    assert_eq!(steps[1], step("flash", false), "the first flash fails on the latched-up board: {check}");
    assert_eq!(steps[2..], [step("power_cycle", true), step("reset", true), step("flash", true), step("expect", true)]);

    let report = history(&c, &admin, "uno-1").await;
    let triggers: Vec<&str> =
        report["checks"].as_array().unwrap().iter().map(|c| c["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["admin", "start"], "newest first: {report}");
    assert_eq!(report["audit"][0]["action"], "check_requested");
    assert_eq!(report["audit"][0]["actor"], ADMIN);
    let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("rerod_health_checks_total{result=\"ok\"} 2"), "{metrics}");
    assert!(metrics.contains("rerod_device_health{device=\"uno-1\",state=\"good\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_board_that_stays_broken_is_failing_then_maintenance_then_cleared() {
    let board = Board::start(Some("ready.hex"));
    let (port, alert) = webhook_receiver().await;
    let config = lab(&[Spec { webhook: Some(port), ..spec("uno-1", &board, Some("ready.hex"), POWER_NOTHING) }]);
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    health_until(&c, 0, "good").await;
    let admin = daemon.host_account(ADMIN, false).await;
    let ada = c.user("ada@example.com").await;

    // Latched up, and its power switch does not help: failing.
    board.signal(libc::SIGWINCH);
    let answer = check_now(&c, &admin, "uno-1").await;
    assert_eq!((answer["success"].as_bool(), answer["health"].as_str()), (Some(false), Some("failing")), "{answer}");
    let device = health_until(&c, 0, "failing").await;
    assert!(device["health_reason"].as_str().unwrap().contains("did not flash"), "{device}");
    // Admins are told: the webhook, the metric, the log.
    let alert =
        tokio::time::timeout(scaled(Duration::from_secs(10)), alert).await.expect("the webhook is called").unwrap();
    assert_eq!((alert["event"].as_str(), alert["device"].as_str()), (Some("board_failing"), Some("uno-1")), "{alert}");
    assert_eq!(alert["check"]["ok"], false);
    let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("rerod_board_failures_total 1"), "{metrics}");
    assert!(metrics.contains("rerod_device_health{device=\"uno-1\",state=\"failing\"} 1"), "{metrics}");
    daemon.log_until(|log| log.contains("board failing its health check")).await;
    let health = c.get("/health").await.expect(200);
    assert_eq!(health["device_health"][0]["health"], "failing", "{health}");
    // It takes no bookings, and says why.
    let refused = c
        .post_auth("/book-slot", &ada, &json!({"slot_id": 0, "device": "uno-1", "date": utc_date(1).to_string()}))
        .await;
    assert_eq!(refused.expect(400)["code"], "device_unavailable");
    let slots = c.get("/slots?device=uno-1").await.expect(200);
    assert_eq!(slots["health"], "failing", "clients can grey it out: {slots}");

    // An admin takes it out of service ...
    let bad = c.post_auth("/admin/devices/maintenance/uno-1", &admin, &json!({"reason": "  "})).await;
    assert_eq!(bad.expect(422)["field"], "reason");
    let not_admin = c.post_auth("/admin/devices/maintenance/uno-1", &ada, &json!({"reason": "mine"})).await;
    assert_eq!(not_admin.status, 403);
    let set = c.post_auth("/admin/devices/maintenance/uno-1", &admin, &json!({"reason": "USB hub replaced"})).await;
    assert_eq!(set.expect(200)["health"], "maintenance");
    let device = health_until(&c, 0, "maintenance").await;
    assert_eq!(device["health_reason"], "USB hub replaced");
    // ... repairs it by hand (the rig's power, cycled) ...
    board.signal(libc::SIGUSR2);
    // ... and clears it: checked again at once, good.
    let clear = |token: String| async move {
        let auth = format!("Bearer {token}");
        c.request(Method::DELETE, "/admin/devices/maintenance/uno-1", &[("authorization", &auth)], Vec::new()).await
    };
    assert_eq!(clear(admin.clone()).await.expect(200)["health"], "unknown");
    health_until(&c, 0, "good").await;
    assert_eq!(clear(admin.clone()).await.expect(409)["code"], "not_in_maintenance");
    let report = history(&c, &admin, "uno-1").await;
    let actions: Vec<&str> =
        report["audit"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["maintenance_cleared", "maintenance_set", "check_requested"], "{report}");
    assert_eq!(report["checks"][0]["trigger"], "maintenance_cleared");
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 0, "device": "uno-1", "date": utc_date(1).to_string()}))
        .await
        .expect(200);
}

#[tokio::test]
async fn a_board_whose_bootloader_never_answers_is_failing_even_after_a_power_cycle() {
    let board = Board::start_with("dead_bootloader.hex", None);
    let daemon = Daemon::start_with(Options::config(&lab(&[spec("uno-1", &board, Some("ready.hex"), POWER_RIG)])));
    let c = daemon.client();
    health_until(&c, 0, "failing").await;
    let admin = daemon.host_account(ADMIN, false).await;
    let report = history(&c, &admin, "uno-1").await;
    let check = &report["checks"][0];
    assert_eq!((check["trigger"].as_str(), check["power_cycled"].as_bool()), (Some("start"), Some(true)), "{check}");
    assert_eq!(
        steps(check),
        [
            step("reset", true),
            step("flash", false),
            step("power_cycle", true),
            step("reset", true),
            step("flash", false)
        ]
    );
}

#[tokio::test]
async fn an_idle_firmware_that_never_prints_the_pattern_fails_the_check() {
    let board = Board::start(None);
    let daemon = Daemon::start_with(Options::config(&lab(&[spec("uno-1", &board, Some("silent.hex"), POWER_RIG)])));
    let c = daemon.client();
    let device = health_until(&c, 0, "failing").await;
    assert!(device["health_reason"].as_str().unwrap().contains("\"READY\" did not appear"), "{device}");
    let admin = daemon.host_account(ADMIN, false).await;
    let check = &history(&c, &admin, "uno-1").await["checks"][0];
    assert_eq!(steps(check)[..3], [step("reset", true), step("flash", true), step("expect", false)], "{check}");
}

#[tokio::test]
async fn a_flooding_program_is_replaced_by_the_check_after_its_session() {
    let board = Board::start(Some("ready.hex"));
    let daemon = Daemon::start_with(Options::config(&lab(&[spec("uno-1", &board, Some("ready.hex"), POWER_RIG)])));
    let c = daemon.client();
    health_until(&c, 0, "good").await;
    let ada = c.user("ada@example.com").await;
    c.book_today(&ada).await;
    let flood = std::fs::read(rerod_devices::testkit::rig_file("flood.hex")).unwrap();
    c.upload("uno-1", &ada, "application/octet-stream", flood).await.expect(200);
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    console.until_output(b"flood ").await;
    drop(console);
    // The session ends (cancelled); the check after it flashes the idle firmware through the flood.
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    let admin = daemon.host_account(ADMIN, false).await;
    let check = eventually_within(Duration::from_secs(60), "a check after the session", async || {
        let report = history(&c, &admin, "uno-1").await;
        if report["checks"][0]["trigger"] == "session" { Ok(report["checks"][0].clone()) } else { Err(report) }
    })
    .await;
    assert_eq!((check["ok"].as_bool(), check["health"].as_str()), (Some(true), Some("good")), "{check}");
    assert_eq!(check["power_cycled"], false);
}

#[tokio::test]
async fn a_booking_on_a_board_taken_out_of_service_moves_to_a_spare_and_its_holder_is_told() {
    let broken = Board::start(Some("ready.hex"));
    let spare = Board::start(Some("ready.hex"));
    let config = lab(&[spec("uno-1", &broken, None, POWER_NOTHING), spec("uno-2", &spare, None, POWER_NOTHING)]);
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let admin = daemon.host_account(ADMIN, false).await;
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let (day1, day2) = (utc_date(1).to_string(), utc_date(2).to_string());
    // No check configured: unknown, and bookable.
    assert_eq!(health_until(&c, 1, "unknown").await["online"], true);
    for (token, device, date) in [(&ada, "uno-1", &day1), (&ada, "uno-1", &day2), (&bob, "uno-2", &day2)] {
        c.post_auth("/book-slot", token, &json!({"slot_id": 0, "device": device, "date": date})).await.expect(200);
    }
    let mut ws = daemon.ws("/slot-booking").await;
    ws.recv_type("slots_update").await;

    let set = c.post_auth("/admin/devices/maintenance/uno-1", &admin, &json!({"reason": "gripper broken"})).await;
    set.expect(200);
    // Ada is told over /slot-booking: the move, and both devices' days (in whatever order).
    let (mut moved, mut updated) = (None, std::collections::BTreeSet::new());
    while moved.is_none() || updated.len() < 2 {
        let message = ws.recv().await;
        match message["type"].as_str() {
            Some("booking_moved") => moved = Some(message),
            Some("slots_update") if message["data"]["date"] == day1.as_str() => {
                updated.insert(message["data"]["device"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
    let moved = moved.unwrap();
    assert_eq!(
        (moved["from_device"].as_str(), moved["to_device"].as_str(), moved["date"].as_str(), moved["slot_id"].as_u64()),
        (Some("uno-1"), Some("uno-2"), Some(day1.as_str()), Some(0)),
        "{moved}"
    );
    assert_eq!(moved["booked_by"], "ada@example.com");
    // ... and in /my-bookings: the first moved, the second (the spare is taken that day) flagged.
    let mine = c.get_auth("/my-bookings", &ada).await.expect(200);
    let bookings = mine["bookings"].as_array().unwrap();
    assert_eq!(bookings.len(), 2, "{mine}");
    let first = bookings.iter().find(|b| b["date"] == day1.as_str()).unwrap();
    assert_eq!((first["device"].as_str(), first["moved_from"].as_str()), (Some("uno-2"), Some("uno-1")), "{mine}");
    assert!(first.get("board_health").is_none(), "{mine}");
    let second = bookings.iter().find(|b| b["date"] == day2.as_str()).unwrap();
    assert_eq!((second["device"].as_str(), second["board_health"].as_str()), (Some("uno-1"), Some("maintenance")));
    assert!(second.get("moved_from").is_none(), "{mine}");
    // The spare's calendar shows Ada's booking; the broken board's day is free and greyed out.
    let spare_day = c.get(&format!("/slots?device=uno-2&date={day1}")).await.expect(200);
    assert_eq!(spare_day["slots"][0]["booked_by"], "ada@example.com");
    let broken_day = c.get(&format!("/slots?device=uno-1&date={day1}")).await.expect(200);
    assert_eq!(
        (broken_day["slots"][0]["is_booked"].as_bool(), broken_day["health"].as_str()),
        (Some(false), Some("maintenance"))
    );
}
