//! Board cameras: one upstream connection per camera, however many watch,
//! and the newest frame handed to each viewer.
//!
//! A camera's connection to its source opens with its first viewer and
//! closes `linger` after the last one leaves. A source that fails or goes
//! away makes the camera `offline` and is tried again with backoff (250 ms
//! doubling to 5 s) for as long as anyone watches. Frames are relayed as
//! they came (JPEG bytes, never decoded) through a `watch` channel that
//! holds only the newest: a viewer that falls behind skips to it, so a slow
//! viewer never delays another or makes the daemon hold more than one frame
//! per camera. Viewers learn the camera's state the same way.
//!
//! Architecture invariant: this module knows nothing of accounts, sessions
//! or HTTP; `app/camera.rs` decides who may watch, and the front ends
//! serve the frames.
//!
//! Multi-host seam: a [`Camera`] is fed by [`Camera::publish`] from its
//! upstream task alone; a host forwarding another host's camera would feed
//! a `Camera` of its own from that host's stream the same way.

mod mjpeg;
mod upstream;

pub use mjpeg::Part;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{CameraConfig, CameraSource, Config};
use crate::metrics::CameraSample;

/// The first wait before reconnecting to a failed source; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a camera is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CameraState {
    /// No one watches; no connection to the source.
    Idle,
    /// Connecting to the source (first time).
    Connecting,
    /// Frames are coming.
    Live,
    /// The source failed (`reason`); it is tried again while anyone watches.
    Offline { reason: String },
    /// The camera left the config; its viewers are closed.
    Removed,
}

impl CameraState {
    /// The state's name on the wire and in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            CameraState::Idle => "idle",
            CameraState::Connecting => "connecting",
            CameraState::Live => "live",
            CameraState::Offline { .. } => "offline",
            CameraState::Removed => "removed",
        }
    }
}

/// The newest frame of a camera.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    /// Counts frames from 1; 0 before the first.
    pub seq: u64,
    /// The JPEG, or `None` while the camera is idle (an old picture is not shown as live).
    pub jpeg: Option<Bytes>,
    /// When rerod received it.
    pub received: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    frames_dropped: AtomicU64,
    frames_oversized: AtomicU64,
    upstream_connections: AtomicU64,
    upstream_reconnects: AtomicU64,
}

/// One board's camera.
#[derive(Debug)]
pub struct Camera {
    /// The board's id.
    pub id: String,
    /// `None` once the camera is removed from the config.
    config: watch::Sender<Option<Arc<CameraConfig>>>,
    frames: watch::Sender<Frame>,
    state: watch::Sender<CameraState>,
    viewers: watch::Sender<usize>,
    /// Whether the upstream task runs; taken when it starts or stops.
    running: Mutex<bool>,
    counters: Counters,
}

impl Camera {
    fn new(id: String, config: CameraConfig) -> Camera {
        Camera {
            id,
            config: watch::Sender::new(Some(Arc::new(config))),
            frames: watch::Sender::new(Frame::default()),
            state: watch::Sender::new(CameraState::Idle),
            viewers: watch::Sender::new(0),
            running: Mutex::new(false),
            counters: Counters::default(),
        }
    }

    /// The camera's config in force (the last one it had, once removed).
    pub fn config(&self) -> Option<Arc<CameraConfig>> {
        self.config.borrow().clone()
    }

    pub fn state(&self) -> CameraState {
        self.state.borrow().clone()
    }

    pub fn viewers(&self) -> usize {
        *self.viewers.borrow()
    }

    pub fn stats(&self) -> CameraSample {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        CameraSample {
            device: self.id.clone(),
            state: self.state.borrow().as_str(),
            viewers: self.viewers() as u64,
            frames_in: load(&c.frames_in),
            frames_out: load(&c.frames_out),
            frames_dropped: load(&c.frames_dropped),
            frames_oversized: load(&c.frames_oversized),
            upstream_connections: load(&c.upstream_connections),
            upstream_reconnects: load(&c.upstream_reconnects),
        }
    }

    /// A new viewer: the first one opens the connection to the source.
    pub fn watch(self: &Arc<Self>) -> Viewer {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        self.viewers.send_modify(|n| *n += 1);
        if !*running && self.config.borrow().is_some() {
            *running = true;
            tokio::spawn(run(Arc::clone(self)));
        }
        drop(running);
        Viewer {
            camera: Arc::clone(self),
            frames: self.frames.subscribe(),
            state: self.state.subscribe(),
            last_seq: 0,
            min_interval: None,
            last_sent: None,
        }
    }

    /// Takes a frame from the source: the newest, for every viewer.
    pub fn publish(&self, part: Part) {
        match part {
            Part::Frame(jpeg) => {
                self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                self.frames.send_modify(|frame| {
                    frame.seq += 1;
                    frame.jpeg = Some(jpeg);
                    frame.received = Some(Instant::now());
                });
                self.state.send_if_modified(|state| {
                    let changed = *state != CameraState::Live;
                    *state = CameraState::Live;
                    changed
                });
            }
            Part::Oversized => {
                self.counters.frames_oversized.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn set_state(&self, new: CameraState) {
        self.state.send_if_modified(|state| {
            // Removed is final.
            let changed = *state != new && *state != CameraState::Removed;
            if changed {
                *state = new;
            }
            changed
        });
    }

    /// Resolves once no one has watched for the config's linger.
    async fn unwatched(&self) {
        let mut viewers = self.viewers.subscribe();
        loop {
            if viewers.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            let linger = self.config().map_or(Duration::ZERO, |c| c.linger);
            if tokio::time::timeout(linger, viewers.wait_for(|n| *n > 0)).await.is_err() {
                return;
            }
        }
    }
}

/// The upstream task: connects while anyone watches, then stops.
async fn run(camera: Arc<Camera>) {
    loop {
        tokio::select! {
            () = camera.unwatched() => {}
            () = connect_while_wanted(&camera) => {}
        }
        let mut running = camera.running.lock().unwrap_or_else(|p| p.into_inner());
        if camera.viewers() == 0 || camera.config.borrow().is_none() {
            *running = false;
            camera.frames.send_modify(|frame| frame.jpeg = None);
            camera.set_state(CameraState::Idle);
            tracing::debug!(device = %camera.id, "camera idle: no one watches");
            return;
        }
    }
}

/// Connects to the source, and again after each failure (with backoff) or
/// config change, until the camera is removed.
async fn connect_while_wanted(camera: &Camera) {
    let mut configs = camera.config.subscribe();
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    loop {
        let Some(config) = configs.borrow_and_update().clone() else { return };
        if first {
            camera.set_state(CameraState::Connecting);
        }
        let frames_before = camera.counters.frames_in.load(Ordering::Relaxed);
        let source = from_source(camera, &config);
        tokio::pin!(source);
        let result = loop {
            tokio::select! {
                result = &mut source => break Some(result),
                changed = configs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new source is tried at once; a new visibility or linger needs no new connection.
                    let new = configs.borrow().clone();
                    match new {
                        None => return,
                        Some(new) if new.source != config.source || new.max_frame_bytes != config.max_frame_bytes => {
                            break None;
                        }
                        Some(_) => {}
                    }
                }
            }
        };
        let Some(result) = result else { continue };
        first = false;
        if camera.counters.frames_in.load(Ordering::Relaxed) > frames_before {
            backoff = MIN_BACKOFF;
        }
        let reason = match result {
            Ok(()) => "the source ended the stream".to_owned(),
            Err(error) => error.to_string(),
        };
        tracing::info!(device = %camera.id, error = %reason, retry_ms = backoff.as_millis() as u64, "camera source failed");
        camera.counters.upstream_reconnects.fetch_add(1, Ordering::Relaxed);
        camera.set_state(CameraState::Offline { reason });
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            changed = configs.changed() => if changed.is_err() { return },
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads the source until it fails. A snapshot source "fails" only when a
/// fetch does.
async fn from_source(camera: &Camera, config: &CameraConfig) -> Result<(), upstream::SourceError> {
    camera.counters.upstream_connections.fetch_add(1, Ordering::Relaxed);
    match &config.source {
        CameraSource::Mjpeg(url) => upstream::stream(url, config.max_frame_bytes, |part| camera.publish(part)).await,
        CameraSource::Snapshot { url, interval } => {
            let mut ticks = tokio::time::interval(*interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let part = upstream::snapshot(url, config.max_frame_bytes).await?;
                camera.publish(part);
            }
        }
    }
}

/// What a viewer is told next.
#[derive(Clone, Debug)]
pub enum ViewerEvent {
    /// The newest frame (frames in between were skipped).
    Frame(Bytes),
    /// The camera's state changed.
    State(CameraState),
}

/// One viewer of a camera; counted until dropped.
#[derive(Debug)]
pub struct Viewer {
    camera: Arc<Camera>,
    frames: watch::Receiver<Frame>,
    state: watch::Receiver<CameraState>,
    last_seq: u64,
    /// The shortest time between two frames this viewer asked for.
    min_interval: Option<Duration>,
    last_sent: Option<Instant>,
}

impl Viewer {
    /// Holds this viewer to at most `fps` frames a second.
    pub fn with_max_fps(mut self, fps: Option<u32>) -> Viewer {
        self.min_interval = fps.filter(|&n| n > 0).map(|n| Duration::from_secs(1) / n);
        self
    }

    /// This viewer from the next frame on: the one on hand now is taken as seen.
    pub fn from_next_frame(mut self) -> Viewer {
        self.last_seq = self.frames.borrow_and_update().seq;
        self
    }

    pub fn camera(&self) -> &Arc<Camera> {
        &self.camera
    }

    /// The camera's state as this viewer last saw it.
    pub fn state(&mut self) -> CameraState {
        self.state.borrow_and_update().clone()
    }

    /// The next frame newer than the last one given, or a state change.
    /// Frames the viewer was too slow (or limited) to take are skipped.
    pub async fn next(&mut self) -> ViewerEvent {
        if let (Some(interval), Some(last)) = (self.min_interval, self.last_sent) {
            tokio::time::sleep_until(last + interval).await;
        }
        loop {
            if *self.state.borrow() == CameraState::Removed {
                return ViewerEvent::State(CameraState::Removed);
            }
            {
                let frame = self.frames.borrow_and_update();
                if frame.seq > self.last_seq
                    && let Some(jpeg) = &frame.jpeg
                {
                    if self.last_seq > 0 {
                        let skipped = frame.seq - self.last_seq - 1;
                        self.camera.counters.frames_dropped.fetch_add(skipped, Ordering::Relaxed);
                    }
                    self.last_seq = frame.seq;
                    self.last_sent = Some(Instant::now());
                    self.camera.counters.frames_out.fetch_add(1, Ordering::Relaxed);
                    return ViewerEvent::Frame(jpeg.clone());
                }
            }
            tokio::select! {
                biased;
                changed = self.state.changed() => {
                    if changed.is_ok() {
                        return ViewerEvent::State(self.state.borrow_and_update().clone());
                    }
                    return ViewerEvent::State(CameraState::Removed);
                }
                changed = self.frames.changed() => if changed.is_err() {
                    return ViewerEvent::State(CameraState::Removed);
                },
            }
        }
    }

    /// The newest frame within `wait`, or why there is none.
    pub async fn first_frame(&mut self, wait: Duration) -> Result<Bytes, CameraState> {
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(ViewerEvent::Frame(jpeg)) => return Ok(jpeg),
                Ok(ViewerEvent::State(CameraState::Removed)) => return Err(CameraState::Removed),
                Ok(ViewerEvent::State(_)) => continue,
                Err(_) => {
                    return Err(match self.state() {
                        CameraState::Idle | CameraState::Connecting | CameraState::Live => {
                            CameraState::Offline { reason: format!("no frame within {} s", wait.as_secs()) }
                        }
                        other => other,
                    });
                }
            }
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        // Frames that came after the last one this viewer took, and that it
        // will never take (a viewer stalled until it was dropped skipped them all).
        let latest = self.frames.borrow().seq;
        if self.last_seq > 0 && latest > self.last_seq {
            self.camera.counters.frames_dropped.fetch_add(latest - self.last_seq, Ordering::Relaxed);
        }
        self.camera.viewers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Every configured camera, by board id.
#[derive(Debug, Default)]
pub struct Cameras {
    cameras: Mutex<BTreeMap<String, Arc<Camera>>>,
}

impl Cameras {
    pub fn new(config: &Config) -> Cameras {
        let cameras = Cameras::default();
        cameras.apply(config);
        cameras
    }

    /// Follows a new config: new cameras appear, changed ones reconnect to
    /// their new source, removed ones close their viewers.
    pub fn apply(&self, config: &Config) {
        let mut cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: BTreeMap<&str, &CameraConfig> =
            config.devices.iter().filter_map(|d| Some((d.id.as_str(), d.camera.as_ref()?))).collect();
        cameras.retain(|id, camera| {
            let keep = wanted.contains_key(id.as_str());
            if !keep {
                camera.set_state(CameraState::Removed);
                camera.config.send_replace(None);
            }
            keep
        });
        for (id, new) in wanted {
            match cameras.get(id) {
                Some(camera) => {
                    camera.config.send_if_modified(|old| {
                        let changed = old.as_deref() != Some(new);
                        if changed {
                            *old = Some(Arc::new(new.clone()));
                        }
                        changed
                    });
                }
                None => {
                    cameras.insert(id.to_owned(), Arc::new(Camera::new(id.to_owned(), new.clone())));
                }
            }
        }
    }

    /// The camera of board `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Camera>> {
        self.cameras.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Camera>> {
        self.cameras.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn lab(camera: &str) -> Config {
        let board = "[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/x\"\n";
        Config::from_toml(&format!("{board}{camera}"), &Env::default()).unwrap()
    }

    /// The next frame a viewer gets (state changes skipped: the source here never answers).
    async fn frame(viewer: &mut Viewer) -> u8 {
        loop {
            if let ViewerEvent::Frame(jpeg) = viewer.next().await {
                return jpeg[0];
            }
        }
    }

    fn publish(camera: &Camera, n: u8) {
        camera.publish(Part::Frame(Bytes::from(vec![n])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_viewer_skips_to_the_newest_frame_and_a_limited_one_waits_its_turn() {
        let cameras = Cameras::new(&lab("camera = { mjpeg = \"http://127.0.0.1:1/s\" }\n"));
        let camera = cameras.get("arm-1").unwrap();
        let (mut fast, mut slow) = (camera.watch(), camera.watch());
        for n in 1..=5 {
            publish(&camera, n);
            assert_eq!(frame(&mut fast).await, n);
        }
        assert_eq!(frame(&mut slow).await, 5, "a viewer that was busy gets the newest frame, not the backlog");
        for n in 6..=8 {
            publish(&camera, n);
        }
        assert_eq!(frame(&mut slow).await, 8);
        assert_eq!(camera.stats().frames_dropped, 2, "6 and 7 were skipped");
        assert_eq!(camera.stats().viewers, 2);

        let mut limited = camera.watch().with_max_fps(Some(2));
        assert_eq!(frame(&mut limited).await, 8, "a new viewer starts with the frame on hand");
        let shown = Instant::now();
        publish(&camera, 9);
        assert_eq!(frame(&mut limited).await, 9);
        assert_eq!(shown.elapsed(), Duration::from_millis(500), "two frames a second at most");

        drop((fast, slow, limited));
        assert_eq!(camera.viewers(), 0);
        let mut last = camera.watch();
        cameras.apply(&lab(""));
        assert!(matches!(last.next().await, ViewerEvent::State(CameraState::Removed)));
        assert!(cameras.get("arm-1").is_none());
    }
}
