//! Board cameras: the tests' own MJPEG source (tiny JPEG-shaped frames, each
//! carrying its number in a comment segment) behind a board, watched
//! through the daemon like a browser or the old client would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::frames::{frame_number, jpeg};
use crate::util::{Daemon, Options, Ws, eventually, scaled};

/// An MJPEG source like ustreamer: every connection gets the same frames,
/// numbered from `first`, every 20 ms.
struct Source {
    port: u16,
    state: Arc<SourceState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct SourceState {
    /// Connections accepted, ever.
    connections: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// The number of the newest frame made.
    latest: AtomicU64,
    /// Padding bytes in each frame, to make them as large as a test needs.
    padding: AtomicUsize,
}

impl Source {
    async fn start(first: u64) -> Source {
        Source::start_on(0, first, Arc::default()).await
    }

    async fn start_on(port: u16, first: u64, state: Arc<SourceState>) -> Source {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        state.latest.store(first, Ordering::SeqCst);
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // One clock for every connection, as a camera has.
            let ticker = Arc::clone(&shared);
            let (frames_tx, _) = tokio::sync::broadcast::channel::<Bytes>(4);
            let frames = frames_tx.clone();
            // Everything the source runs ends with the set, when the source stops.
            let mut connections = tokio::task::JoinSet::new();
            connections.spawn(async move {
                let mut n = ticker.latest.load(Ordering::SeqCst);
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n += 1;
                    ticker.latest.store(n, Ordering::SeqCst);
                    let _ = frames.send(Bytes::from(jpeg(n, ticker.padding.load(Ordering::SeqCst))));
                }
            });
            loop {
                let Ok((socket, _)) = listener.accept().await else { break };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                shared.open.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&shared);
                let mut frames = frames_tx.subscribe();
                connections.spawn(async move {
                    let (mut read, mut write) = socket.into_split();
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\
                                  Connection: close\r\n\r\n";
                    let mut ok = write.write_all(answer.as_bytes()).await.is_ok();
                    while ok {
                        tokio::select! {
                            frame = frames.recv() => {
                                let Ok(frame) = frame else { continue };
                                let head = format!(
                                    "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                                    frame.len()
                                );
                                ok = write.write_all(head.as_bytes()).await.is_ok()
                                    && write.write_all(&frame).await.is_ok()
                                    && write.write_all(b"\r\n").await.is_ok();
                            }
                            // The daemon closed its end.
                            n = read.read(&mut buf) => ok = matches!(n, Ok(n) if n > 0),
                        }
                    }
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            connections.abort_all();
        });
        Source { port, state, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/stream", self.port)
    }

    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    fn latest(&self) -> u64 {
        self.state.latest.load(Ordering::SeqCst)
    }

    /// Stops the source: its connections are cut and its port refuses.
    async fn stop(self) -> (u16, Arc<SourceState>) {
        self.task.abort();
        let _ = self.task.await;
        // Aborting drops the connection tasks with the JoinSet.
        self.state.open.store(0, Ordering::SeqCst);
        (self.port, self.state)
    }
}

/// A lab with one board (never plugged in: the camera needs none) and a camera.
fn lab(source: &Source, camera: &str, extra_lab: &str) -> String {
    format!(
        "[lab]\ntimezone = \"UTC\"\nslot_minutes = 1440\n{extra_lab}\n[auth]\nadmins = [\"admin@example.com\"]\n\
         [[devices]]\nid = \"uno-1\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/uno-1\"\n\
         camera = {{ mjpeg = \"{}\", linger_ms = 200{camera} }}\n",
        source.url()
    )
}

/// One viewer's live stream, read part by part.
struct Stream {
    body: Incoming,
    buf: Vec<u8>,
}

/// A part of the stream: its content type and bytes.
struct Part {
    content_type: String,
    bytes: Vec<u8>,
}

impl Stream {
    /// Opens `path`; the answer's status and JSON body when it is not a stream.
    async fn open(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Stream, (u16, Value)> {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", addr.to_string());
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.into_body().collect().await.unwrap().to_bytes();
            return Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        }
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "multipart/x-mixed-replace; boundary=rerodframe");
        Ok(Stream { body: response.into_body(), buf: Vec::new() })
    }

    /// The next part, or `None` when the stream ended.
    async fn part(&mut self) -> Option<Part> {
        loop {
            if let Some(part) = self.take_part() {
                return Some(part);
            }
            if self.buf.starts_with(b"--rerodframe--") {
                return None;
            }
            let frame = tokio::time::timeout(scaled(Duration::from_secs(10)), self.body.frame())
                .await
                .expect("the stream sent nothing for 10 s (scaled)");
            match frame {
                Some(Ok(frame)) => self.buf.extend_from_slice(&frame.into_data().unwrap_or_default()),
                _ => return None,
            }
        }
    }

    fn take_part(&mut self) -> Option<Part> {
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        if !head.starts_with("--rerodframe\r\n") {
            return None;
        }
        let header = |name: &str| {
            head.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).expect("part header")
        };
        let len: usize = header("Content-Length:").parse().unwrap();
        if self.buf.len() < head_end + len + 2 {
            return None;
        }
        let bytes = self.buf[head_end..head_end + len].to_vec();
        assert_eq!(&self.buf[head_end + len..head_end + len + 2], b"\r\n");
        self.buf.drain(..head_end + len + 2);
        Some(Part { content_type: header("Content-Type:"), bytes })
    }

    /// The next frame's number; panics on anything else.
    async fn frame(&mut self) -> u64 {
        let part = self.part().await.expect("a frame, not the end of the stream");
        assert_eq!(part.content_type, "image/jpeg", "{}", String::from_utf8_lossy(&part.bytes));
        frame_number(&part.bytes)
    }

    /// Reads frames until the stream ends, and answers the reason it gave.
    async fn ending(&mut self) -> Value {
        loop {
            match self.part().await {
                Some(part) if part.content_type == "application/json" => {
                    let reason: Value = serde_json::from_slice(&part.bytes).unwrap();
                    assert!(self.part().await.is_none(), "nothing after the reason");
                    return reason;
                }
                Some(_) => continue,
                None => panic!("the stream ended without a reason"),
            }
        }
    }
}

/// Frames that advance: three in a row, each newer than the one before.
async fn advancing(stream: &mut Stream) -> u64 {
    let mut last = stream.frame().await;
    for _ in 0..3 {
        let next = stream.frame().await;
        assert!(next > last, "frame {next} after {last}");
        last = next;
    }
    last
}

async fn camera_state(c: &crate::util::Client) -> Value {
    c.get("/devices").await.expect(200)["devices"][0]["camera"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_watches_advancing_frames_and_another_student_is_refused() {
    let source = Source::start(0).await;
    let daemon = Daemon::start_with(Options::config(&lab(&source, "", "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    assert_eq!(camera_state(&c).await, json!({"state": "idle", "visibility": "holder", "viewers": 0}));
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);

    let path = "/devices/camera/uno-1/stream";
    let mut stream = Stream::open(daemon.addr, path, Some(&ada)).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut stream).await;
    let (status, body) = Stream::open(daemon.addr, path, Some(&bob)).await.err().unwrap();
    assert_eq!((status, body["code"].as_str()), (403, Some("camera_not_visible")), "{body}");
    let (status, body) = Stream::open(daemon.addr, path, None).await.err().unwrap();
    assert_eq!((status, body["code"].as_str()), (401, Some("not_authenticated")), "{body}");
    assert_eq!(c.get_auth("/devices/camera/uno-1/snapshot", &bob).await.expect(403)["code"], "camera_not_visible");

    // A browser's <img> cannot send a header: a one-use ticket goes in the URL instead of the token.
    let ticket = c.post_auth("/devices/camera/uno-1/ticket", &ada, &json!({})).await.expect(200);
    let url = ticket["stream_url"].as_str().unwrap();
    let mut by_ticket = Stream::open(daemon.addr, url, None).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut by_ticket).await;
    let (status, body) = Stream::open(daemon.addr, url, None).await.err().unwrap();
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_ticket")), "a ticket is used once: {body}");
    assert_eq!(
        c.post_auth("/devices/camera/uno-1/ticket", &bob, &json!({})).await.expect(403)["code"],
        "camera_not_visible"
    );

    // A snapshot is one JPEG, the newest.
    let r = c.get_auth("/devices/camera/uno-1/snapshot", &ada).await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/jpeg")));
    assert!(frame_number(&r.body) > 0);
    let status = c.get_auth("/devices/camera/uno-1", &ada).await.expect(200);
    assert_eq!((status["camera"]["state"].as_str(), status["access"].as_str()), (Some("live"), Some("holder")));
    assert_eq!(status["camera"]["viewers"], 2, "{status}");

    // Admins watch any board; the operations views show the camera.
    let admin = daemon.host_account("admin@example.com", false).await;
    let mut admin_stream = Stream::open(daemon.addr, path, Some(&admin)).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut admin_stream).await;
    let health = c.get("/health").await.json();
    assert_eq!(health["cameras"][0]["device"], "uno-1", "{health}");
    assert_eq!(health["cameras"][0]["state"], "live", "{health}");
    let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("rerod_camera_viewers{device=\"uno-1\"} 3"), "{metrics}");
    assert!(metrics.contains("rerod_camera_upstream_connections_total{device=\"uno-1\"} 1"), "{metrics}");
    assert_eq!(source.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_viewers_share_one_upstream_connection_closed_after_the_last_leaves() {
    let source = Source::start(0).await;
    let daemon = Daemon::start_with(Options::config(&lab(&source, ", visibility = \"public\"", "")));
    let c = daemon.client();
    let mut viewers = Vec::new();
    for _ in 0..20 {
        let stream = Stream::open(daemon.addr, "/devices/camera/uno-1/stream", None).await;
        viewers.push(stream.unwrap_or_else(|e| panic!("{e:?}")));
    }
    for viewer in &mut viewers {
        advancing(viewer).await;
    }
    assert_eq!(source.connections(), 1, "one upstream connection, however many watch");
    assert_eq!(camera_state(&c).await["viewers"], 20);
    drop(viewers);
    eventually("the upstream connection to close after the last viewer left", async || {
        if source.open() == 0 { Ok(()) } else { Err(format!("{} open", source.open())) }
    })
    .await;
    let state = camera_state(&c).await;
    assert_eq!((state["state"].as_str(), state["viewers"].as_u64()), (Some("idle"), Some(0)), "{state}");
    // The next viewer opens a new one.
    let mut again =
        Stream::open(daemon.addr, "/devices/camera/uno-1/stream", None).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut again).await;
    assert_eq!(source.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_does_not_hold_up_a_fast_one() {
    let source = Source::start(0).await;
    // Frames of 256 KB: a viewer that reads nothing fills its socket's buffers in a few dozen.
    source.state.padding.store(256 << 10, Ordering::SeqCst);
    let daemon = Daemon::start_with(Options::config(&lab(&source, ", visibility = \"public\"", "")));
    let c = daemon.client();
    let path = "/devices/camera/uno-1/stream";
    let stalled = Stream::open(daemon.addr, path, None).await.unwrap_or_else(|e| panic!("{e:?}"));
    let mut fast = Stream::open(daemon.addr, path, None).await.unwrap_or_else(|e| panic!("{e:?}"));
    let rss_before = daemon.rss_kib();
    // 150 frames (about 38 MB) pass while the stalled viewer reads nothing.
    let start = fast.frame().await;
    let mut last = start;
    while last < start + 150 {
        let next = fast.frame().await;
        assert!(next > last);
        last = next;
    }
    // The fast viewer is at the source's newest frames, not held back to the
    // stalled one's pace (which would leave it a send timeout, 500 frames, behind).
    assert!(source.latest() - last <= 50, "fast viewer at {last}, source at {}", source.latest());
    // Memory stays bounded: nowhere near the 38 MB that passed.
    let grown = daemon.rss_kib().saturating_sub(rss_before);
    assert!(grown < 16 << 10, "the daemon grew by {grown} KiB while a viewer read nothing");
    // The frames the stalled viewer missed were skipped, not queued.
    drop(stalled);
    eventually("the stalled viewer's skipped frames in /metrics", async || {
        let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
        let dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("rerod_camera_frames_total{device=\"uno-1\",kind=\"dropped\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if dropped >= 50 { Ok(()) } else { Err(format!("{dropped} dropped")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_restarts_is_retried_and_viewers_resume_without_reconnecting() {
    let source = Source::start(0).await;
    let daemon = Daemon::start_with(Options::config(&lab(&source, ", visibility = \"public\"", "")));
    let c = daemon.client();
    let mut stream =
        Stream::open(daemon.addr, "/devices/camera/uno-1/stream", None).await.unwrap_or_else(|e| panic!("{e:?}"));
    let before = advancing(&mut stream).await;
    assert!(before < 1000);
    let (port, state) = source.stop().await;
    eventually("the camera to show offline", async || {
        let camera = camera_state(&c).await;
        if camera["state"] == "offline" { Ok(()) } else { Err(camera) }
    })
    .await;
    // Back, numbering from 1000, on the same address.
    let source = Source::start_on(port, 1000, state).await;
    // Frames from before the stop may still come first; then the restarted source's.
    // (Bounded: the stopped source sends nothing more, so a frame that is not
    // the new source's can only be one already on its way.)
    let resumed = loop {
        let n = stream.frame().await;
        if n > 1000 {
            break n;
        }
        assert!(n < 1000 && n >= before, "frame {n}");
    };
    assert!(resumed > 1000, "the same stream goes on with the restarted source's frames: {resumed}");
    advancing(&mut stream).await;
    let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    assert!(!metrics.contains("rerod_camera_upstream_reconnects_total{device=\"uno-1\"} 0"), "{metrics}");
    assert!(source.connections() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holders_stream_ends_with_the_session_unless_the_visibility_admits_them() {
    let source = Source::start(0).await;
    let daemon = Daemon::start_with(Options::config(&lab(&source, "", "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let path = "/devices/camera/uno-1/stream";
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    let mut stream = Stream::open(daemon.addr, path, Some(&ada)).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut stream).await;
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    let reason = stream.ending().await;
    assert_eq!(reason["code"], "session_ended", "{reason}");
    let detail = reason["detail"].as_str().unwrap();
    assert!(detail.contains("cancelled") && detail.contains("only to the holder"), "{detail}");
    let (status, _) = Stream::open(daemon.addr, path, Some(&ada)).await.err().unwrap();
    assert_eq!(status, 403);

    // With a camera shown to everyone signed in, her stream goes on after her session.
    std::fs::write(daemon.config_path(), lab(&source, ", visibility = \"signed_in\"", "")).unwrap();
    eventually("the new visibility", async || {
        let camera = camera_state(&c).await;
        if camera["visibility"] == "signed_in" { Ok(()) } else { Err(camera) }
    })
    .await;
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    let mut stream = Stream::open(daemon.addr, path, Some(&ada)).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut stream).await;
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    // Frames go on well past the end (the end is checked at once, before the next frame is sent).
    for _ in 0..10 {
        stream.frame().await;
    }
}

/// The close frame a legacy socket ends with.
async fn closed(ws: &mut Ws) -> (CloseCode, String) {
    loop {
        match ws.next().await {
            Some(Message::Close(Some(frame))) => return (frame.code, frame.reason.to_string()),
            Some(Message::Binary(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_signed_in_between_sessions_and_the_old_clients_socket_only_when_public() {
    let source = Source::start(0).await;
    let legacy = "legacy_camera_device = \"uno-1\"";
    let daemon = Daemon::start_with(Options::config(&lab(&source, ", visibility = \"public\"", legacy)));
    let c = daemon.client();
    let bob = c.user("bob@example.com").await;
    let path = "/devices/camera/uno-1/stream";
    // No session, no token: a public camera is anyone's.
    let mut anonymous = Stream::open(daemon.addr, path, None).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut anonymous).await;
    let r = c.get("/devices/camera/uno-1/snapshot").await;
    assert_eq!(r.status, 200);
    let mut old_client = daemon.ws("/websocket/95").await;
    let mut last = 0;
    for _ in 0..3 {
        match old_client.next().await {
            Some(Message::Binary(jpeg)) => {
                let n = frame_number(&jpeg);
                assert!(n > last);
                last = n;
            }
            other => panic!("expected a JPEG frame, got {other:?}"),
        }
    }

    // The lab makes it signed_in: the old client's socket closes with the reason, anonymous viewers are refused.
    std::fs::write(daemon.config_path(), lab(&source, ", visibility = \"signed_in\"", legacy)).unwrap();
    let (code, reason) = closed(&mut old_client).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("not public"), "{reason}");
    let reason = anonymous.ending().await;
    assert_eq!(reason["code"], "not_authenticated", "{reason}");
    let (status, _) = Stream::open(daemon.addr, path, None).await.err().unwrap();
    assert_eq!(status, 401);
    let mut signed_in = Stream::open(daemon.addr, path, Some(&bob)).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut signed_in).await;
    let mut refused = daemon.ws("/websocket/30").await;
    let (code, reason) = closed(&mut refused).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("not public"), "{reason}");
    // Whatever the old client sends changes nothing.
    let _ = refused.socket.next().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rero_camera_saves_the_holders_picture_and_shows_the_state() {
    use crate::rero::Rero;
    let source = Source::start(0).await;
    let daemon = Daemon::start_with(Options::config(&lab(&source, "", "")));
    let c = daemon.client();
    c.register("ada@example.com", crate::util::PASSWORD).await.expect(200);
    let rero = Rero::new();
    let server = format!("http://{}", daemon.addr);
    let login = rero.run_with(
        &["login", "ada@example.com", "--server", &server],
        format!("{}\n", crate::util::PASSWORD).as_bytes(),
    );
    assert!(login.status.success(), "{login:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("now.jpg");
    let file_arg = file.to_str().unwrap();

    // Not her session yet: the server's refusal, and no file.
    let refused = rero.run(&["camera", "--board", "uno-1", "--snapshot", file_arg]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only to the holder"), "{refused:?}");
    assert!(!file.exists());

    rero.ok(&["book", "now", "--board", "uno-1"]);
    let saved = rero.ok(&["camera", "--snapshot", file_arg]);
    assert!(saved.contains("Saved") && saved.contains("uno-1"), "{saved}");
    assert!(frame_number(&std::fs::read(&file).unwrap()) > 0);
    let state = rero.ok(&["camera"]);
    assert!(state.starts_with("uno-1: camera "), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_at_each_upload_and_at_the_sessions_end_are_kept_with_the_record() {
    use crate::devices::{ADMIN, Board, lab_config, rig_bytes};
    let source = Source::start(0).await;
    let board = Board::start(None);
    let camera = format!("camera = {{ mjpeg = \"{}\" }}\n", source.url());
    let daemon = Daemon::start_with(Options::config(&lab_config(&board, &camera)));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    let bob = c.user("bob@example.com").await;
    let admin = daemon.host_account(ADMIN, false).await;
    c.book_today(&ada).await;
    c.device_until("online", |d| d["online"] == true).await;
    c.upload("uno-1", &ada, "application/octet-stream", rig_bytes("counter.hex")).await.expect(200);
    let records = c.get_auth("/records", &ada).await.expect(200);
    let id = records["records"][0]["id"].as_str().unwrap().to_owned();
    let snapshots = async |what: &str| {
        let what = what.to_owned();
        eventually(&format!("a {what} picture in the record"), async || {
            let record = c.get_auth(&format!("/records/{id}"), &ada).await.expect(200);
            let snapshots = record["snapshots"].as_array().unwrap().clone();
            match snapshots.iter().any(|s| s["name"].as_str().unwrap().starts_with(&what)) {
                true => Ok(snapshots),
                false => Err(record),
            }
        })
        .await
    };
    snapshots("upload-").await;
    c.post_auth("/cancel-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    let kept = snapshots("session-end").await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    for snapshot in &kept {
        let url = snapshot["url"].as_str().unwrap();
        let r = c.get_auth(url, &ada).await;
        assert_eq!((r.status, r.header("content-type")), (200, Some("image/jpeg")), "{url}");
        assert_eq!(r.body.len() as u64, snapshot["bytes"].as_u64().unwrap());
        assert!(frame_number(&r.body) > 0);
        assert_eq!(c.get_auth(url, &admin).await.status, 200, "admins read every record");
        assert_eq!(c.get_auth(url, &bob).await.expect(403)["code"], "not_your_record", "{url}");
    }
    let missing = c.get_auth(&format!("/records/{id}/snapshot?name=nothing"), &ada).await.expect(404);
    assert_eq!(missing["code"], "record_not_found");
    let path = c.get_auth(&format!("/records/{id}/snapshot?name=..%2Fsession"), &ada).await.expect(404);
    assert_eq!(path["code"], "record_not_found");
}

/// The browser check, in headless chromium (tests/web/camera.mjs):
/// the holder's page shows advancing frames, another student's says no, and
/// the holder's says why the picture stopped when the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holders_browser_shows_advancing_frames_and_why_they_stopped() {
    use crate::util::{PASSWORD, TIME_SCALE_VAR, time_scale, within};
    crate::web::browser_tools();
    let source = Source::start(0).await;
    let daemon = Daemon::start_with(Options::config(&lab(&source, "", "")));
    let c = daemon.client();
    let ada = c.user("ada@example.com").await;
    c.user("bob@example.com").await;
    c.post_auth("/book-slot", &ada, &json!({"slot_id": 0, "device": "uno-1"})).await.expect(200);
    let root = crate::web::workspace_root();
    let shots = root.join("target/web-screenshots/camera");
    std::fs::create_dir_all(&shots).unwrap();
    let log_path = shots.join("camera.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut browser = std::process::Command::new("node")
        .arg(root.join("tests/web/camera.mjs"))
        .env("APP_URL", format!("http://{}", daemon.addr))
        .env("HOLDER", "ada@example.com")
        .env("OTHER", "bob@example.com")
        .env("PASSWORD", PASSWORD)
        .env("SHOTS", &shots)
        .env(TIME_SCALE_VAR, time_scale().to_string())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("node runs");
    let finished = within(Duration::from_secs(120), async || browser.try_wait().unwrap()).await;
    let Ok(status) = finished else {
        let _ = browser.kill();
        panic!("the browser check did not finish:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "the browser check failed (screenshots in {}):\n{output}", shots.display());
    assert!(output.contains("Camera stopped: Your session on uno-1 ended"), "{output}");
}

/// A camera that answers one JPEG per GET (`snapshot = ...`), numbered by request.
async fn snapshot_source(padding: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let n = counted.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            tokio::spawn(async move {
                let mut head = [0u8; 2048];
                let _ = socket.read(&mut head).await;
                let frame = jpeg(n, padding);
                let answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", frame.len());
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.write_all(&frame).await;
            });
        }
    });
    (port, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_source_is_fetched_at_its_rate_and_frames_over_the_bound_are_dropped() {
    let (port, requests) = snapshot_source(0).await;
    let (big_port, _) = snapshot_source(64 << 10).await;
    let config = format!(
        "[lab]\ntimezone = \"UTC\"\n[[devices]]\nid = \"uno-1\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/uno-1\"\n\
         camera = {{ snapshot = \"http://127.0.0.1:{port}/jpg\", snapshot_interval_ms = 50, visibility = \"public\" }}\n\
         [[devices]]\nid = \"uno-2\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/uno-2\"\n\
         camera = {{ snapshot = \"http://127.0.0.1:{big_port}/jpg\", snapshot_interval_ms = 50, visibility = \"public\", \
         max_frame_kb = 16 }}\n"
    );
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    assert_eq!(requests.load(Ordering::SeqCst), 0, "no one watches: the source is not asked");
    let mut stream =
        Stream::open(daemon.addr, "/devices/camera/uno-1/stream", None).await.unwrap_or_else(|e| panic!("{e:?}"));
    advancing(&mut stream).await;

    // 64 KB pictures from a camera bound to 16 KB: none is relayed, each is counted.
    let r = c.get("/devices/camera/uno-2/snapshot").await;
    assert_eq!(r.expect(503)["code"], "camera_offline");
    let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    let oversized = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rerod_camera_frames_total{device=\"uno-2\",kind=\"oversized\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(oversized > 0, "{metrics}");
    assert!(metrics.contains("rerod_camera_frames_total{device=\"uno-2\",kind=\"in\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_source_in_the_config_is_taken_live_and_viewers_go_on_watching() {
    let first = Source::start(0).await;
    let second = Source::start(5000).await;
    let public = ", visibility = \"public\"";
    let daemon = Daemon::start_with(Options::config(&lab(&first, public, "")));
    let mut stream =
        Stream::open(daemon.addr, "/devices/camera/uno-1/stream", None).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(advancing(&mut stream).await < 5000);
    std::fs::write(daemon.config_path(), lab(&second, public, "")).unwrap();
    // Within a thousand frames (20 s of the old source): bounded, should the switch never come.
    let mut moved = 0;
    for _ in 0..1000 {
        moved = stream.frame().await;
        if moved > 5000 {
            break;
        }
    }
    assert!(moved > 5000, "still the old source's frames: {moved}");
    eventually("the old source's connection to close", async || {
        if first.open() == 0 { Ok(()) } else { Err(format!("{} open", first.open())) }
    })
    .await;
    assert_eq!(second.connections(), 1);
}
