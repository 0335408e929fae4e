//! Sessions beyond the seed's, end to end: a session's transcript and
//! upload log, read by its holder and admins only, ids that cannot name
//! another path; admins watching a session read-only; admins' actions in
//! `GET /admin/audit`.

use serde_json::{Value, json};

use crate::devices::{ADMIN, Board, Console, lab_config, rig_bytes};
use crate::util::{Client, Daemon, Options, PASSWORD, eventually, utc_date};

/// The transcript's lines, parsed.
fn lines(body: &[u8]) -> Vec<Value> {
    body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

/// Reads the transcript of `id` as `token` until `done` holds for its lines.
async fn transcript_until(c: &Client, id: &str, token: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    eventually("the transcript to get there", async || {
        let r = c.get_auth(&format!("/records/{id}/transcript"), token).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let lines = lines(&r.body);
        if done(&lines) { Ok(lines) } else { Err(format!("{lines:?}")) }
    })
    .await
}

fn sha256sum(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("firmware");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("sha256sum").arg(&path).output().expect("sha256sum");
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_is_downloaded_by_its_holder_and_refused_to_anyone_else() {
    let board = Board::start(Some("echo.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let admin = daemon.host_account(ADMIN, true).await;
    c.book_today(&ada).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    let echo = rig_bytes("echo.hex");
    c.upload("uno-1", &ada, "application/octet-stream", echo.clone()).await.expect(200);
    console.echoes("hello records\n").await;

    let listed = c.get_auth("/records", &ada).await.expect(200);
    assert_eq!(listed["count"], 1, "{listed}");
    let record = &listed["records"][0];
    let id = record["id"].as_str().unwrap().to_owned();
    // Named by the slot and a random tag: the calendar alone does not give it away.
    let (slot, tag) = id.rsplit_once('_').unwrap();
    assert_eq!(slot, format!("uno-1_{}_0", utc_date(0)));
    assert!(tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!((record["holder"].as_str(), record["device"].as_str()), (Some("ada@example.com"), Some("uno-1")));

    // Both directions, timestamped; output arrives in the chunks the board sent it in.
    let lines = transcript_until(&c, &id, &ada, |lines| {
        text(lines, "in").contains("hello records\n") && text(lines, "out").contains("hello records\n")
    })
    .await;
    assert!(lines.iter().all(|l| l["at"].as_str().is_some_and(|at| at.ends_with('Z'))), "{lines:?}");

    // The upload log: the file's SHA-256 as sha256sum gives it, its size, method and result.
    let detail = c.get_auth(&format!("/records/{id}"), &ada).await.expect(200);
    let upload = &detail["uploads"][0];
    assert_eq!(upload["sha256"].as_str(), Some(sha256sum(&echo).as_str()), "{detail}");
    assert_eq!((upload["method"].as_str(), upload["result"].as_str()), (Some("firmware"), Some("ok")), "{detail}");
    assert_eq!(upload["bytes"].as_u64(), Some(echo.len() as u64));
    assert!(upload["duration_ms"].as_u64().unwrap() > 0, "{detail}");

    // Refused to anyone else, readable by admins.
    for path in [format!("/records/{id}"), format!("/records/{id}/transcript")] {
        let r = c.get_auth(&path, &bob).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["code"], "not_your_record");
        assert_eq!(c.get_auth(&path, &admin).await.status, 200, "{path}");
        assert_eq!(c.get(&path).await.status, 401, "{path}");
    }
    assert_eq!(c.get_auth("/records", &bob).await.expect(200)["count"], 0);
    assert_eq!(c.get_auth("/records?user=ada%40example.com", &bob).await.json()["code"], "admin_only");
    let all = c.get_auth("/records?user=ada%40example.com&device=uno-1", &admin).await.expect(200);
    assert_eq!(all["count"], 1, "{all}");

    // Ids name records and nothing else: no path leaves the records directory.
    for bad in [
        format!("uno-1_{}_0", utc_date(0)).as_str(),
        "uno-1_2020-01-01_0",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..%2Frerod.redb",
        "%2E%2E",
        "uno-1_2026-11-24_0%2F..%2F..",
        "uno-1_2026-11-24_00",
    ] {
        for path in [format!("/records/{bad}"), format!("/records/{bad}/transcript")] {
            let r = c.get_auth(&path, &admin).await;
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.json()["code"], "record_not_found", "{path}");
        }
    }
    // The files are the daemon's user's alone.
    let dir = daemon.store_path().parent().unwrap().join("records");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(&id).join("transcript.jsonl")), 0o600);
}

/// The text of a transcript's lines that went one way (`in` or `out`).
fn text(lines: &[Value], dir: &str) -> String {
    lines.iter().filter(|l| l["dir"] == dir).map(|l| l["text"].as_str().unwrap()).collect()
}

/// Regression: a record was named by its device, date and first slot, and
/// belonged to whoever first held the slot. After a cancel and a rebook the
/// next holder's console and uploads went into it, and the first holder read
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_booked_again_after_a_cancel_is_a_new_record_that_the_first_holder_cannot_read() {
    let board = Board::start(Some("echo.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let admin = daemon.host_account(ADMIN, true).await;
    let echo = rig_bytes("echo.hex");

    // Ada books the slot in progress, uses it, and cancels.
    c.book_today(&ada).await;
    let mut console = Console::open(&daemon, "uno-1", &ada).await;
    c.upload("uno-1", &ada, "application/octet-stream", echo.clone()).await.expect(200);
    console.echoes("typed by ada\n").await;
    let listed = c.get_auth("/records", &ada).await.expect(200);
    let ada_id = listed["records"][0]["id"].as_str().unwrap().to_owned();
    transcript_until(&c, &ada_id, &ada, |l| text(l, "out").contains("typed by ada")).await;
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    console.session_ends("cancelled").await;

    // Bob books the same slot and uses it.
    c.book_today(&bob).await;
    let mut console = Console::open(&daemon, "uno-1", &bob).await;
    c.upload("uno-1", &bob, "application/octet-stream", echo).await.expect(200);
    console.echoes("typed by bob\n").await;
    let listed = c.get_auth("/records", &bob).await.expect(200);
    assert_eq!(listed["count"], 1, "bob's session is in his own records: {listed}");
    let bob_id = listed["records"][0]["id"].as_str().unwrap().to_owned();
    assert_ne!(bob_id, ada_id);
    assert_eq!(listed["records"][0]["holder"], "bob@example.com");
    let bob_lines = transcript_until(&c, &bob_id, &bob, |l| text(l, "out").contains("typed by bob")).await;
    assert!(!text(&bob_lines, "in").contains("typed by ada"), "{bob_lines:?}");

    // Ada sees her own session and nothing of Bob's.
    let listed = c.get_auth("/records", &ada).await.expect(200);
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["records"][0]["id"].as_str(), Some(ada_id.as_str()));
    let ada_transcript = c.get_auth(&format!("/records/{ada_id}/transcript"), &ada).await;
    let ada_lines = lines(&ada_transcript.body);
    assert!(text(&ada_lines, "in").contains("typed by ada"), "{ada_lines:?}");
    assert!(!text(&ada_lines, "in").contains("typed by bob"), "{ada_lines:?}");
    for path in [format!("/records/{bob_id}"), format!("/records/{bob_id}/transcript")] {
        assert_eq!(c.get_auth(&path, &ada).await.json()["code"], "not_your_record", "{path}");
    }
    // The id the calendar gives names no record, for anyone.
    let guessed = format!("/records/uno-1_{}_0/transcript", utc_date(0));
    for token in [&ada, &bob, &admin] {
        assert_eq!(c.get_auth(&guessed, token).await.status, 404);
    }

    // Each record's upload log holds its own holder's upload only.
    for (id, token, email) in [(&ada_id, &ada, "ada@example.com"), (&bob_id, &bob, "bob@example.com")] {
        let detail = c.get_auth(&format!("/records/{id}"), token).await.expect(200);
        let by: Vec<&str> = detail["uploads"].as_array().unwrap().iter().map(|u| u["by"].as_str().unwrap()).collect();
        assert_eq!(by, [email], "{detail}");
    }
    assert_eq!(c.get_auth("/records?device=uno-1", &admin).await.expect(200)["count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_cancels_and_account_changes_are_in_the_audit_log() {
    let daemon = Daemon::start_with(Options::config(&format!("[auth]\nadmins = [\"{ADMIN}\"]\n")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let admin = daemon.host_account(ADMIN, true).await;
    let tomorrow = utc_date(1).to_string();
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 9, "date": tomorrow})).await.expect(200);
    c.post_auth("/cancel-slot", &admin, &json!({"slot_id": 9, "date": tomorrow})).await.expect(200);
    c.post_auth("/admin/users/disable", &admin, &json!({"email": "ada@example.com"})).await.expect(200);
    c.post_auth("/admin/users/enable", &admin, &json!({"email": "ada@example.com"})).await.expect(200);

    let log = c.get_auth("/admin/audit", &admin).await.expect(200);
    let actions: Vec<(&str, &str)> = log["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["user"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        actions,
        [
            ("account_enabled", "ada@example.com"),
            ("account_disabled", "ada@example.com"),
            ("booking_cancelled", "ada@example.com"),
        ],
        "{log}"
    );
    assert_eq!(log["audit"][2]["actor"], ADMIN);
    assert_eq!(log["audit"][2]["device"], "default");
    assert_eq!(c.get_auth("/admin/audit?limit=1", &admin).await.expect(200)["count"], 1);
    for bad in ["0", "1001", "x", "-1"] {
        let r = c.get_auth(&format!("/admin/audit?limit={bad}"), &admin).await;
        assert_eq!(r.status, 422, "limit={bad}");
    }
    let ada = c.login("ada@example.com", PASSWORD).await;
    assert_eq!(c.get_auth("/admin/audit", &ada).await.json()["code"], "admin_only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_watches_a_session_read_only_and_the_holder_sees_who_watches() {
    let board = Board::start(Some("echo.hex"));
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let admin = daemon.host_account(ADMIN, true).await;
    c.book_today(&ada).await;
    let mut holder = Console::open(&daemon, "uno-1", &ada).await;
    let mut watcher = Console::open(&daemon, "uno-1", &admin).await;
    let joined = holder.until_type("watchers").await;
    assert_eq!(joined["watchers"], json!([ADMIN]), "{joined}");

    // The admin reads the holder's session but cannot type into it.
    watcher.ws.send(&json!({"type": "input", "data": "from the admin\n"})).await;
    let refused = watcher.until_type("error").await;
    assert_eq!(refused["code"], "console_read_only", "{refused}");
    holder.echoes("from ada\n").await;
    // Everything the board printed since the admin's console opened: no echo of the admin's line.
    let seen = watcher.until_output(b"from ada").await;
    assert!(!seen.windows(14).any(|w| w == b"from the admin"), "the admin's input reached the board: {seen:?}");

    drop(watcher);
    let left = holder.until_type("watchers").await;
    assert_eq!(left["watchers"], json!([]), "{left}");
}
