//! The demo lab (`rerod --demo`), walked as the README tells a newcomer to:
//! register, book the slot in progress on the demo board, upload the demo
//! .hex, see the board's output, type into it.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::devices::Console;
use crate::util::{Daemon, Options, PASSWORD, eventually, scaled};

/// The README's demo section: from the line after `tests/run.sh` to "## Using it".
fn readme_demo() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme.find("Try it with nothing plugged in").expect("the README has a demo section");
    let end = start + readme[start..].find("## Using it").expect("the demo comes before \"Using it\"");
    readme[start..end].to_owned()
}

/// The file `path` (relative to the workspace root) the README names.
fn workspace_file(path: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
    std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("the README's {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_path_works_on_a_fresh_store() {
    let demo = readme_demo();
    assert!(demo.contains("    cargo run --release --bin rerod -- --demo\n"), "{demo}");
    let hex_path = demo
        .split('`')
        .find(|part| part.ends_with(".hex"))
        .expect("the demo section names the .hex to upload")
        .to_owned();
    let hex = workspace_file(&hex_path);

    // `rerod --demo`, as the README runs it, on a fresh directory: the store
    // goes where the demo puts it.
    let daemon =
        Daemon::start_with(Options { args: vec!["--demo".into()], store_from_settings: true, ..Options::default() });
    let c = daemon.client();
    let health = c.get("/health").await.expect(200);
    assert_eq!(health["lab"]["demo"], true, "{health}");
    let devices = c.get("/devices").await.expect(200);
    assert_eq!(devices["count"], 1, "{devices}");
    assert_eq!(devices["devices"][0]["id"], "demo-1");
    assert_eq!(devices["devices"][0]["name"], "Demo board (simulated Uno)");
    assert!(demo.contains("\"Demo board (simulated Uno)\""), "the README names the board as the app shows it");

    // 1. Register (registration is open) and sign in.
    c.register("newcomer@example.org", PASSWORD).await.expect(200);
    let token = c.login("newcomer@example.org", PASSWORD).await;
    assert!(daemon.working_dir_file("data/demo/rerod.redb").exists(), "the demo keeps its own store");

    // 2. Book the slot in progress.
    let day = c.get("/slots?device=demo-1").await.expect(200);
    let now = Timestamp::now();
    let current = day["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .find(|s| {
            let at = |key: &str| s[key].as_str().expect("times").parse::<Timestamp>().expect("RFC 3339");
            at("start") <= now && now < at("end")
        })
        .expect("a slot is in progress")
        .clone();
    let booked = c
        .post_auth("/book-slot", &token, &json!({"slot_id": current["id"], "date": day["date"], "device": "demo-1"}))
        .await
        .expect(200);
    assert_eq!(booked["success"], true, "{booked}");

    // 3. Upload the demo .hex: the console shows the program's output.
    c.device_until("online", |d| d["online"] == true).await;
    let mut console = Console::open(&daemon, "demo-1", &token).await;
    let upload = eventually("the demo board to take the upload", async || {
        let r = c.upload("demo-1", &token, "application/octet-stream", hex.clone()).await;
        if r.status == 200 { Ok(r.json()) } else { Err(r.json()) }
    })
    .await;
    assert_eq!(upload["success"], true, "{upload}");
    let shown =
        tokio::time::timeout(scaled(std::time::Duration::from_secs(30)), console.until_output(b"hello from the board"))
            .await
            .expect("the board's output reaches the console");
    assert!(!shown.is_empty());

    // 4. Type into it.
    console.ws.send(&json!({"type": "input", "data": "hi demo\n"})).await;
    let answered =
        tokio::time::timeout(scaled(std::time::Duration::from_secs(10)), console.until_output(b"you sent: hi demo"))
            .await
            .expect("the board answers what was typed");
    assert!(!answered.is_empty());
}

/// A lab started from a config file never has the demo board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_with_a_config_file_has_no_demo() {
    let daemon = Daemon::start();
    let c = daemon.client();
    assert_eq!(c.get("/health").await.expect(200)["lab"]["demo"], false);
    let devices: Value = c.get("/devices").await.expect(200);
    assert_eq!(devices["count"], 0, "{devices}");
    // And the two cannot be combined.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rerod"))
        .args(["--demo", "--config", "lab.toml"])
        .output()
        .expect("rerod runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"), "{}", String::from_utf8_lossy(&out.stderr));
}
