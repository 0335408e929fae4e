//! Sketch compiling under attack: a hostile sketch must not read the host's
//! files through the compiler (GCC quotes what it includes in its errors, and
//! `.incbin` copies a file into the program) nor exhaust the host.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Client, Daemon, Options, scaled};

/// Debian's AVR toolchain (tests/rig/setup.sh installs it): compile, then
/// turn the ELF into the `.hex` rerod looks for in `{build}`.
pub(crate) const AVR_GCC: &str = r#"argv = ["sh", "-c", "avr-gcc -x c++ -mmcu=atmega328p -Os \"$0\" -o \"$1/sketch.elf\" && avr-objcopy -O ihex -R .eeprom \"$1/sketch.elf\" \"$1/sketch.hex\"", "{sketch}", "{build}"]"#;

const SKETCH: &str = "int main() { volatile int x = 0; for (;;) { x++; } }\n";

/// A marker no file on the host holds by chance.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{nanos:x}-{:x}", std::process::id())
}

/// A lab whose only toolchain is avr-gcc for the default model, plus `extra`.
fn lab(extra: &str) -> String {
    format!("[lab]\ntimezone = \"UTC\"\n[compilers.uno]\n{AVR_GCC}\ntimeout_secs = 30\n{extra}\n")
}

async fn compile(c: &Client, token: &str, code: &str) -> (u16, Value) {
    let r = c.post_auth("/devices/compile", token, &json!({ "code": code })).await;
    let body = r.json();
    (r.status, body)
}

/// How the daemon says it compiles: "landlock", "off" or "unavailable".
async fn sandbox(c: &Client) -> String {
    let health = c.get("/health").await.expect(200);
    health["compile"]["sandbox"].as_str().expect("health names the compile sandbox").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sketch_cannot_read_the_hosts_files_through_the_compiler() {
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("jwt.secret");
    // Long enough for rerod to accept it as a secret (32 bytes at least).
    let secret = format!("{}-and-enough-bytes-to-be-a-real-secret", marker("jwt-secret"));
    std::fs::write(&secret_file, &secret).unwrap();
    let env_marker = marker("env");
    let config = lab(&format!("[auth]\njwt_secret_file = \"{}\"\n", secret_file.display()));
    let daemon = Daemon::start_with(Options::config(&config).env("RERO_TEST_MARKER", &env_marker));
    let c = daemon.client();
    let mallory = c.user("mallory@example.com").await;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let passwd_first = passwd.lines().next().unwrap().to_owned();
    let store = daemon.store_path();
    let landlock = sandbox(&c).await == "landlock";

    let attacks = [
        ("environ", "#include \"/proc/self/environ\"\n".to_owned()),
        ("secret", format!("#include \"{}\"\n", secret_file.display())),
        ("store", format!("#include \"{}\"\n", store.display())),
        ("config", format!("#include \"{}\"\n", daemon.config_path().display())),
        ("passwd", "#include \"/etc/passwd\"\n".to_owned()),
        ("incbin", format!("asm(\".section .progmem.data\\n.incbin \\\"{}\\\"\");\n{SKETCH}", secret_file.display())),
    ];
    for (what, code) in attacks {
        let (status, body) = compile(&c, &mallory, &code).await;
        let text = body.to_string();
        for leak in [&secret, &env_marker, &passwd_first, "mallory@example.com", "$2b$"] {
            assert!(!text.contains(leak), "{what}: the response shows {leak:?}: {text}");
        }
        // The .incbin would copy the secret's bytes into the program: there must be none.
        assert_eq!(body["success"], false, "{what}: compiled: {text}");
        if landlock {
            assert_eq!(status, 200, "{what}: {text}");
            let output = body["compile_output"].as_str().unwrap();
            // GCC says "Permission denied"; the assembler, for .incbin, "file not found".
            let refused = output.contains("Permission denied") || output.contains("file not found");
            assert!(refused, "{what}: the file was not refused: {output}");
        } else {
            assert_eq!((status, body["code"].as_str()), (503, Some("compile_sandbox_unavailable")), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn including_dev_zero_ends_quickly_and_costs_the_daemon_nothing() {
    // With the sandbox the read is refused; with it off, the memory limit ends it.
    for compile_section in ["", "[compile]\nsandbox = \"off\"\nmemory_mb = 256\n"] {
        let daemon = Daemon::start_with(Options::config(&lab(compile_section)));
        let c = daemon.client();
        let mallory = c.user("mallory@example.com").await;
        let rss_before = daemon.rss_kib();
        let started = Instant::now();
        let (status, body) = compile(&c, &mallory, "#include \"/dev/zero\"\n").await;
        assert!(
            started.elapsed() < scaled(Duration::from_secs(30)),
            "{compile_section:?}: took {:?}",
            started.elapsed()
        );
        assert!(status == 200 || status == 503, "{compile_section:?}: {status} {body}");
        assert_eq!(body["success"], false, "{compile_section:?}: {body}");
        let grown = daemon.rss_kib().saturating_sub(rss_before);
        assert!(grown < 32 << 10, "{compile_section:?}: the daemon grew by {grown} KiB");
        // And the daemon still compiles afterwards.
        let expected = if status == 503 { 503 } else { 200 };
        let (status, body) = compile(&c, &mallory, SKETCH).await;
        assert_eq!(status, expected, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_sketches_still_compile_in_the_sandbox() {
    let daemon = Daemon::start_with(Options::config(&lab("")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    match sandbox(&c).await.as_str() {
        "landlock" => {
            let (status, body) = compile(&c, &ada, SKETCH).await;
            assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
            let (status, body) = compile(&c, &ada, "int main() { nonsense }").await;
            assert_eq!(status, 200);
            let output = body["compile_output"].as_str().unwrap();
            assert!(output.contains("nonsense"), "{body}");
            // The error names the sketch, never the lab's build directory.
            assert!(output.contains("sketch.ino:1:") && !output.contains("/tmp"), "{output}");
            let request = json!({ "code": "int main() { nonsense }", "file_name": "blink.ino" });
            let body = c.post_auth("/devices/compile", &ada, &request).await.expect(200);
            let output = body["compile_output"].as_str().unwrap();
            assert!(output.contains("blink.ino:1:") && !output.contains("sketch.ino"), "{output}");
            let request = json!({ "code": SKETCH, "file_name": "../etc/passwd" });
            let body = c.post_auth("/devices/compile", &ada, &request).await.expect(422);
            assert_eq!(body["field"], "file_name", "{body}");
        }
        "unavailable" => {
            let r = c.post_auth("/devices/compile", &ada, &json!({ "code": SKETCH })).await;
            let body = r.expect(503);
            assert_eq!(body["code"], "compile_sandbox_unavailable");
            assert!(body["detail"].as_str().unwrap().contains("compile.sandbox"), "{body}");
        }
        other => panic!("the sandbox is on by default, /health says {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_arduino_builder_compiles_in_the_sandbox() {
    // No [compilers] entry: an Uno sketch goes to Debian's arduino-builder.
    let daemon = Daemon::start_with(Options::config("[lab]\ntimezone = \"UTC\"\n"));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    if sandbox(&c).await != "landlock" {
        return; // Refused with 503, as normal_sketches_still_compile_in_the_sandbox shows.
    }
    let sketch = "void setup() { Serial.begin(9600); }\nvoid loop() { Serial.println(42); }\n";
    let (status, body) = compile(&c, &ada, sketch).await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sandbox_off_the_compiler_still_gets_none_of_the_daemons_environment() {
    let env_marker = marker("env");
    let config = lab("[compile]\nsandbox = \"off\"\n");
    let daemon = Daemon::start_with(Options::config(&config).env("RERO_TEST_MARKER", &env_marker));
    let c = daemon.client();
    assert_eq!(sandbox(&c).await, "off");
    daemon.log_until(|log| log.contains("compile.sandbox is off")).await;
    let mallory = c.user("mallory@example.com").await;
    let (status, body) = compile(&c, &mallory, "#include \"/proc/self/environ\"\n").await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(&env_marker), "{body}");
}
