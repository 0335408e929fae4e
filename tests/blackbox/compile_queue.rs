//! Compiling is public, as the old backend's route was, and fair: one compile
//! at a time per account (per client address without a token), a bounded
//! line, the holder of a session in progress first, and compile time shared
//! by account and by client address.
//!
//! The toolchain here is mostly a script that blocks reading a FIFO named on
//! the sketch's first line, so the test decides when each compile finishes
//! and can see when one is running (its FIFO has a reader).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::util::{Client, Daemon, Options, Resp, eventually};

/// A compiler that waits for its FIFO to be written and closed, then fails.
fn lab(fifos: &Path) -> String {
    lab_with(fifos, "max_queued = 1\n")
}

/// [`lab`] with more `[compile]` settings.
fn lab_with(fifos: &Path, compile: &str) -> String {
    format!(
        "[lab]\ntimezone = \"UTC\"\n\
         [compilers.uno]\nargv = [\"sh\", \"-c\", \"cat \\\"$(head -n 1 \\\"$0\\\")\\\" > /dev/null; exit 1\", \"{{sketch}}\"]\n\
         timeout_secs = 60\n\
         [compile]\nread_paths = [\"{}\"]\n{compile}",
        fifos.display()
    )
}

/// A FIFO a compile waits on; while the test holds its write end open, the
/// compile reading it cannot finish.
struct Fifo {
    path: PathBuf,
    writer: std::sync::Mutex<Option<std::fs::File>>,
}

impl Fifo {
    fn new(dir: &Path, name: &str) -> Fifo {
        let path = dir.join(name);
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0, "mkfifo");
        Fifo { path, writer: std::sync::Mutex::new(None) }
    }

    /// The sketch that makes a compile wait on this FIFO.
    fn sketch(&self) -> String {
        format!("{}\nint main() {{ return 0; }}\n", self.path.display())
    }

    /// Waits (bounded) until a compile opens it, i.e. is running, and holds
    /// the write end so that compile goes on waiting.
    async fn wait_running(&self) {
        eventually(&format!("a compile to start reading {}", self.path.display()), async || {
            self.is_running().then_some(())
        })
        .await
    }

    /// Whether a compile has it open (and then it stays held).
    fn is_running(&self) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        let mut writer = self.writer.lock().unwrap();
        if writer.is_none() {
            // Opening a FIFO to write without blocking fails while nobody reads it.
            let open = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&self.path);
            *writer = open.ok();
        }
        writer.is_some()
    }

    /// Lets the compile reading it finish: its read ends when the write end closes.
    async fn release(&self) {
        self.wait_running().await;
        self.writer.lock().unwrap().take();
    }
}

fn compile(c: &Client, token: Option<&str>, code: String) -> tokio::task::JoinHandle<Resp> {
    let (c, token) = (*c, token.map(str::to_owned));
    tokio::spawn(async move {
        let body = json!({ "code": code });
        match token {
            Some(token) => c.post_auth("/devices/compile", &token, &body).await,
            None => c.post("/devices/compile", &body).await,
        }
    })
}

fn refused(r: &Resp, code: &str) -> Value {
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert!(r.header("retry-after").is_some());
    let body = r.json();
    assert_eq!(body["code"], code, "{body}");
    body
}

/// Waits (bounded) until /metrics shows `waiting` compiles in line.
async fn until_waiting(c: &Client, waiting: u64) {
    let series = "rerod_compiles{state=\"waiting\"}";
    eventually(&format!("{waiting} compile(s) waiting"), async || {
        let r = c.get("/metrics").await;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let now = text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse::<u64>().ok());
        if now == Some(waiting) { Ok(()) } else { Err(format!("{now:?} waiting")) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_may_compile_one_at_a_time_in_a_bounded_line() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(Options::config(&lab(dir.path())));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let carol = c.user("carol@example.com").await;
    let [ada_fifo, bob_fifo, anon_fifo] = ["ada", "bob", "anon"].map(|name| Fifo::new(dir.path(), name));

    // Two compiles run at once: Ada's and Bob's.
    let ada_first = compile(&c, Some(&ada), ada_fifo.sketch());
    ada_fifo.wait_running().await;
    let bob_first = compile(&c, Some(&bob), bob_fifo.sketch());
    bob_fifo.wait_running().await;
    // Ada may not line up another while hers runs.
    refused(&compile(&c, Some(&ada), ada_fifo.sketch()).await.unwrap(), "compile_already_queued");
    // Without a token the caller is its address, and it takes the one waiting place.
    let anonymous = compile(&c, None, anon_fifo.sketch());
    until_waiting(&c, 1).await;
    // The line is full: anyone else is told to come back.
    let r = compile(&c, Some(&carol), "int main() { return 0; }\n".to_owned()).await.unwrap();
    refused(&r, "compile_queue_full");

    // As the running compiles finish, the waiting one gets its turn.
    ada_fifo.release().await;
    assert_eq!(ada_first.await.unwrap().expect(200)["success"], false);
    anon_fifo.release().await;
    assert_eq!(anonymous.await.unwrap().expect(200)["success"], false);
    bob_fifo.release().await;
    bob_first.await.unwrap().expect(200);
    until_waiting(&c, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_of_the_session_in_progress_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(Options::config(&lab(dir.path())));
    let c = daemon.client();
    let [a, b, waiting, holder] = ["a", "b", "waiting", "holder"].map(|name| Fifo::new(dir.path(), name));
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let eve = c.user("eve@example.com").await;
    let hana = c.user("hana@example.com").await;
    // Hana holds the slot in progress.
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let body = json!({"slot_id": now.hour(), "date": now.date().to_string()});
    c.post_auth("/book-slot", &hana, &body).await.expect(200);

    let first = compile(&c, Some(&ada), a.sketch());
    a.wait_running().await;
    let second = compile(&c, Some(&bob), b.sketch());
    b.wait_running().await;
    let eves = compile(&c, Some(&eve), waiting.sketch());
    until_waiting(&c, 1).await;
    // The line is full, but not for the holder of the session in progress.
    let hanas = compile(&c, Some(&hana), holder.sketch());
    until_waiting(&c, 2).await;
    a.release().await;
    // The freed turn goes to Hana, though Eve waited longer.
    holder.wait_running().await;
    assert!(!waiting.is_running(), "Eve's compile must still wait");
    holder.release().await;
    waiting.release().await;
    b.release().await;
    for task in [first, second, eves, hanas] {
        task.await.unwrap().expect(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_flood_from_many_accounts_on_one_address_leaves_an_honest_students_compile_admitted() {
    let dir = tempfile::tempdir().unwrap();
    // A compile counts 5 s while it runs or waits, and an address has 10 s:
    // two compiles from one address are within its share, a third is over.
    let shares = "max_queued = 2\ncpu_secs = 5\ncpu_secs_per_account = 100\ncpu_secs_per_address = 10\n";
    let daemon = Daemon::start_with(Options::config(&lab_with(dir.path(), shares)));
    let c = daemon.client();
    // The flood: fresh accounts, all on 127.0.0.1.
    let mut flood = Vec::new();
    for n in 1..=5 {
        flood.push(c.user(&format!("flood{n}@example.com")).await);
    }
    // The honest student compiles from another machine.
    let honest = c.from("127.0.0.2");
    let ada = honest.user("ada@example.com").await;
    let fifos = ["f1", "f2", "f3", "f4", "ada"].map(|name| Fifo::new(dir.path(), name));

    // Both compilers are taken, and two more of the flood wait: the line is full.
    let f1 = compile(&c, Some(&flood[0]), fifos[0].sketch());
    fifos[0].wait_running().await;
    let f2 = compile(&c, Some(&flood[1]), fifos[1].sketch());
    fifos[1].wait_running().await;
    let f3 = compile(&c, Some(&flood[2]), fifos[2].sketch());
    until_waiting(&c, 1).await;
    let f4 = compile(&c, Some(&flood[3]), fifos[3].sketch());
    until_waiting(&c, 2).await;
    // The flood's address is over its share: a fifth finds no place.
    let r = compile(&c, Some(&flood[4]), "int main() { return 0; }\n".to_owned()).await.unwrap();
    let body = refused(&r, "compile_share_used");
    assert!(body["detail"].as_str().unwrap().contains("client address"), "{body}");

    // The honest student's compile is admitted: the last of the flood's
    // waiting compiles gives its place and is told when to come back.
    let adas = compile(&honest, Some(&ada), fifos[4].sketch());
    refused(&f4.await.unwrap(), "compile_share_used");
    until_waiting(&c, 2).await;
    // And it goes ahead of the flood's compile that waited longer.
    fifos[0].release().await;
    assert_eq!(f1.await.unwrap().expect(200)["success"], false);
    fifos[4].wait_running().await;
    assert!(!fifos[2].is_running(), "the flood's waiting compile must wait behind the honest one");
    fifos[4].release().await;
    assert_eq!(adas.await.unwrap().expect(200)["success"], false, "the stand-in compiler always fails");
    fifos[2].release().await;
    fifos[1].release().await;
    for task in [f2, f3] {
        task.await.unwrap().expect(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_compile_time_share_is_refused_with_retry_after() {
    // The uno's "compiler" burns the CPU until its 3 s limit stops it; the
    // nano's fails at once. An account has 1 s of compile time in 10 minutes.
    let config = "[lab]\ntimezone = \"UTC\"\n\
        [compilers.uno]\nargv = [\"sh\", \"-c\", \"while :; do :; done\", \"{sketch}\"]\ntimeout_secs = 60\n\
        [compilers.nano]\nargv = [\"sh\", \"-c\", \"exit 1\", \"{sketch}\"]\n\
        [compile]\ncpu_secs = 3\ncpu_secs_per_account = 1\ncpu_secs_per_address = 100\ncpu_window_secs = 600\n";
    let daemon = Daemon::start_with(Options::config(config));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let sketch = |model: &str| json!({ "code": "void setup() {}\nvoid loop() {}\n", "model": model });

    // Ada's first compile is admitted, and burns about 3 s of CPU: over twice her share.
    let body = c.post_auth("/devices/compile", &ada, &sketch("uno")).await.expect(200);
    assert_eq!(body["success"], false, "{body}");
    // Her next is refused, until that time has left the window.
    let r = c.post_auth("/devices/compile", &ada, &sketch("nano")).await;
    let body = refused(&r, "compile_share_used");
    assert!(body["detail"].as_str().unwrap().contains("account"), "{body}");
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((500..=600).contains(&retry_after), "{retry_after}");
    // Bob, on the same address, still compiles: the address is within its share.
    let body = c.post_auth("/devices/compile", &bob, &sketch("nano")).await.expect(200);
    assert_eq!(body["success"], false, "{body}");
}
