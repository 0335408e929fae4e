//! Writing one pre-encoded frame to thousands of sockets.
//!
//! A `/slot-booking` socket has two writers: the connection's own task
//! (replies, pings and the close frame, framed by tungstenite) and the
//! fan-out (broadcast `slots_update` frames). Both write through the
//! socket's [`Outbox`], which keeps their frames whole and in order.
//!
//! A broadcast is written straight into each socket by a fan-out thread,
//! with one non-blocking write per client: a client that keeps up costs one
//! `send` and wakes no task. Only what the kernel does not take at once is
//! queued, and the connection's task is woken to write it out when the
//! socket drains. A client that falls further behind than
//! [`MAX_QUEUED_BROADCASTS`] loses its queued broadcasts and gets one fresh
//! view instead (a resync); one that stops reading altogether is dropped by
//! its task after the send timeout. The queue holds `Bytes` handles to the
//! shared frame, so a lagging client costs a few words per frame, not a copy.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Broadcast frames a client may have queued before it is resynced instead.
pub const MAX_QUEUED_BROADCASTS: usize = 16;

/// The connection's own frames (replies, pings) that may wait in its queue;
/// past this its writes wait for the client to read.
const MAX_QUEUED_OWN_BYTES: usize = 1 << 20;

/// Frames a fan-out thread may have waiting; past this it drops them and
/// has every client it serves resynced instead.
const MAX_PENDING_FRAMES: usize = 64;

/// The write side of one booking socket, shared by its task and the fan-out.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    /// Tells the connection's task it has queued bytes to write out or a resync to send.
    wake: Notify,
}

#[derive(Debug)]
struct Inner {
    /// `None` once the connection has ended: the fan-out then forgets it.
    socket: Option<TcpStream>,
    /// Whole frames in order; the front one may be partly written.
    queue: VecDeque<Queued>,
    front_started: bool,
    queued_broadcasts: usize,
    queued_own_bytes: usize,
    resync: bool,
}

#[derive(Debug)]
struct Queued {
    bytes: Bytes,
    broadcast: bool,
}

impl Inner {
    fn push(&mut self, bytes: Bytes, broadcast: bool, started: bool) {
        if self.queue.is_empty() {
            self.front_started = started;
        }
        if broadcast {
            self.queued_broadcasts += 1;
        } else {
            self.queued_own_bytes += bytes.len();
        }
        self.queue.push_back(Queued { bytes, broadcast });
    }

    /// Drops every queued broadcast not yet begun; the client gets a resync instead.
    fn drop_broadcasts(&mut self) {
        let keep_front = self.front_started;
        let mut index = 0;
        self.queue.retain(|queued| {
            let keep = !queued.broadcast || (index == 0 && keep_front);
            index += 1;
            keep
        });
        self.queued_broadcasts = self.queue.iter().filter(|q| q.broadcast).count();
        self.resync = true;
    }

    /// Writes queued bytes until the queue is empty or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(socket) = &self.socket else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
            let Some(front) = self.queue.front_mut() else { return Poll::Ready(Ok(())) };
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write(&front.bytes) {
                Ok(n) if n == front.bytes.len() => {
                    let done = self.queue.pop_front().expect("front exists");
                    if done.broadcast {
                        self.queued_broadcasts -= 1;
                    } else {
                        self.queued_own_bytes -= n;
                    }
                    self.front_started = false;
                }
                Ok(n) => {
                    front.bytes.advance(n);
                    if !front.broadcast {
                        self.queued_own_bytes -= n;
                    }
                    self.front_started = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Outbox {
    fn new(socket: TcpStream) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner {
                socket: Some(socket),
                queue: VecDeque::new(),
                front_started: false,
                queued_broadcasts: 0,
                queued_own_bytes: 0,
                resync: false,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is consistent between statements, so a panic elsewhere does not spoil it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a broadcast frame to this client; false once the connection has ended.
    fn offer(&self, frame: &Bytes) -> bool {
        let mut inner = self.lock();
        let Some(socket) = &inner.socket else { return false };
        if inner.queue.is_empty() {
            match socket.try_write(frame) {
                Ok(n) if n == frame.len() => return true,
                Ok(n) => inner.push(frame.slice(n..), true, true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => inner.push(frame.clone(), true, false),
                // The task meets the error on its own next read or write.
                Err(_) => return true,
            }
        } else if inner.queued_broadcasts >= MAX_QUEUED_BROADCASTS {
            inner.drop_broadcasts();
        } else {
            inner.push(frame.clone(), true, false);
        }
        drop(inner);
        self.wake.notify_one();
        true
    }

    /// Asks the connection's task to send its client a fresh view; false once it has ended.
    fn resync(&self) -> bool {
        let mut inner = self.lock();
        if inner.socket.is_none() {
            return false;
        }
        inner.resync = true;
        drop(inner);
        self.wake.notify_one();
        true
    }

    fn is_open(&self) -> bool {
        self.lock().socket.is_some()
    }

    /// Resolves when there are queued bytes to write out or a resync to send.
    pub async fn needs_attention(&self) {
        self.wake.notified().await;
    }

    /// Whether the client is owed a fresh view (and clears that).
    pub fn take_resync(&self) -> bool {
        std::mem::take(&mut self.lock().resync)
    }

    fn close(&self) {
        let mut inner = self.lock();
        inner.socket = None;
        inner.queue.clear();
    }
}

/// A booking socket as tungstenite sees it: reads come from the TCP stream
/// (after any bytes hyper read past the handshake); writes go through the
/// [`Outbox`]. A write is taken whole or not at all, so a broadcast never
/// lands in the middle of a frame tungstenite writes.
#[derive(Debug)]
pub struct OutboxStream {
    outbox: Arc<Outbox>,
    /// Bytes the client sent right after its handshake, which hyper has already read.
    early: Bytes,
}

impl OutboxStream {
    /// Takes over an upgraded connection of rerod's own HTTP server.
    pub fn new(upgraded: hyper::upgrade::Upgraded) -> Option<OutboxStream> {
        match upgraded.downcast::<hyper_util::rt::TokioIo<crate::linger::Lingering>>() {
            Ok(parts) => Some(OutboxStream::over(parts.io.into_inner().into_inner(), &parts.read_buf)),
            Err(_) => {
                tracing::error!("an upgraded connection is not a TCP stream");
                None
            }
        }
    }

    fn over(socket: TcpStream, early: &[u8]) -> OutboxStream {
        OutboxStream {
            outbox: Arc::new(Outbox::new(socket)),
            // A copy (usually of nothing), so hyper's whole read buffer is freed now.
            early: Bytes::copy_from_slice(early),
        }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

impl Drop for OutboxStream {
    fn drop(&mut self) {
        // Closes the socket now, not when the fan-out next walks its clients.
        self.outbox.close();
    }
}

impl AsyncRead for OutboxStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let inner = this.outbox.lock();
        let Some(socket) = &inner.socket else { return Poll::Ready(Ok(())) };
        loop {
            ready!(socket.poll_read_ready(cx))?;
            // Client messages are few and small: zeroing the space first costs nothing that shows.
            match socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for OutboxStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut inner = self.outbox.lock();
        // Make what progress the socket allows first; past the cap, wait for the client.
        if inner.poll_drain(cx)?.is_pending() && inner.queued_own_bytes + buf.len() > MAX_QUEUED_OWN_BYTES {
            return Poll::Pending;
        }
        if inner.queue.is_empty() {
            let Some(socket) = &inner.socket else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
            match socket.try_write(buf) {
                Ok(n) if n == buf.len() => return Poll::Ready(Ok(n)),
                Ok(n) => inner.push(Bytes::copy_from_slice(&buf[n..]), false, true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    inner.push(Bytes::copy_from_slice(buf), false, false);
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        } else {
            inner.push(Bytes::copy_from_slice(buf), false, false);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.lock().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.outbox.lock();
        ready!(inner.poll_drain(cx))?;
        match inner.socket.as_mut() {
            Some(socket) => Pin::new(socket).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Threads that write broadcast frames into every booking socket, each
/// serving its share of the clients, so one broadcast uses every core.
#[derive(Debug)]
pub struct FanOut {
    shards: Vec<Shard>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Shard {
    tx: mpsc::Sender<ToShard>,
    pending_frames: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
}

/// The thread's side of a [`Shard`].
struct ShardWorker {
    rx: mpsc::Receiver<ToShard>,
    pending_frames: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
}

impl Shard {
    fn new() -> (Shard, ShardWorker) {
        let (tx, rx) = mpsc::channel();
        let (pending_frames, lagged) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let worker = ShardWorker { rx, pending_frames: Arc::clone(&pending_frames), lagged: Arc::clone(&lagged) };
        (Shard { tx, pending_frames, lagged }, worker)
    }
}

enum ToShard {
    Join(Arc<Outbox>),
    Frame(Bytes),
    /// Frames were dropped for this shard: resync its clients instead.
    Resync,
}

impl FanOut {
    /// Starts one fan-out thread per core (at most four).
    pub fn start() -> FanOut {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let shards = (0..threads)
            .map(|i| {
                let (shard, worker) = Shard::new();
                std::thread::Builder::new()
                    .name(format!("rerod-fanout-{i}"))
                    .spawn(move || {
                        // Answering a request comes before finishing a broadcast.
                        crate::priority::lower_current_thread(crate::priority::Background::FanOut);
                        worker.run()
                    })
                    .expect("spawning a fan-out thread");
                shard
            })
            .collect();
        FanOut { shards, next: AtomicUsize::new(0) }
    }

    /// Adds a client: from now on it receives every broadcast.
    pub fn join(&self, stream: &OutboxStream) {
        let shard = &self.shards[self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len()];
        let _ = shard.tx.send(ToShard::Join(Arc::clone(stream.outbox())));
    }

    /// Sends a pre-encoded frame to every client; returns at once.
    pub fn broadcast(&self, frame: &Bytes) {
        for shard in &self.shards {
            if shard.pending_frames.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_FRAMES {
                shard.pending_frames.fetch_sub(1, Ordering::AcqRel);
                // One resync stands in for every frame dropped until the shard catches up.
                if !shard.lagged.swap(true, Ordering::AcqRel) {
                    let _ = shard.tx.send(ToShard::Resync);
                }
                continue;
            }
            let _ = shard.tx.send(ToShard::Frame(frame.clone()));
        }
    }
}

impl ShardWorker {
    /// One fan-out thread: owns its clients and writes each frame to all of them,
    /// until the [`FanOut`] is gone.
    fn run(self) {
        let mut clients: Vec<Arc<Outbox>> = Vec::new();
        let mut live_after_sweep = 0;
        while let Ok(message) = self.rx.recv() {
            match message {
                ToShard::Join(outbox) => {
                    clients.push(outbox);
                    // With no broadcast to notice them, ended clients are swept here.
                    if clients.len() >= 2 * live_after_sweep + 64 {
                        clients.retain(|client| client.is_open());
                        live_after_sweep = clients.len();
                    }
                }
                ToShard::Frame(frame) => {
                    clients.retain(|client| client.offer(&frame));
                    self.pending_frames.fetch_sub(1, Ordering::AcqRel);
                }
                ToShard::Resync => {
                    self.lagged.store(false, Ordering::Release);
                    tracing::info!(clients = clients.len(), "broadcasts fell behind; resyncing clients instead");
                    clients.retain(|client| client.resync());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Both ends of a loopback TCP connection: (the server's, the client's).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    /// A test frame: its length, its id, then `len` bytes that all equal the
    /// id, so a frame split by another one shows as a wrong byte.
    fn frame(id: u8, len: u32) -> Bytes {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.push(id);
        bytes.resize(5 + len as usize, id);
        Bytes::from(bytes)
    }

    /// Reads test frames until the server closes; checks every one is whole.
    async fn read_frames(mut client: TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        let mut ids = Vec::new();
        let mut rest = all.as_slice();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let id = rest[4];
            let body = &rest[5..5 + len];
            assert!(body.iter().all(|&b| b == id), "frame {id} has another frame's bytes in it");
            ids.push(id);
            rest = &rest[5 + len..];
        }
        ids
    }

    #[tokio::test]
    async fn a_lagging_client_gets_whole_frames_in_order_and_a_resync_for_what_it_missed() {
        let (server, client) = pair().await;
        let mut stream = OutboxStream::over(server, b"");
        let outbox = Arc::clone(stream.outbox());
        // Broadcast while the client does not read, until the kernel stops
        // taking frames and they queue up.
        let mut next_id = 0u8;
        while outbox.lock().queue.is_empty() {
            assert!(next_id < 200, "the socket never filled");
            assert!(outbox.offer(&frame(next_id, 64 * 1024)));
            next_id += 1;
        }
        let first_queued = next_id - 1;
        // The connection's own frame (a reply) queues behind them, whole.
        stream.write_all(&frame(255, 1000)).await.unwrap();
        // More broadcasts than a client may have queued: the ones not begun are dropped.
        for _ in 0..2 * MAX_QUEUED_BROADCASTS {
            assert!(outbox.offer(&frame(next_id, 64 * 1024)));
            next_id += 1;
        }
        assert!(outbox.take_resync(), "the client is owed a fresh view");
        assert!(outbox.lock().queued_broadcasts <= MAX_QUEUED_BROADCASTS);

        let reader = tokio::spawn(read_frames(client));
        // What the connection's task does when woken: write the queue out.
        stream.flush().await.unwrap();
        drop(stream);
        let ids = reader.await.unwrap();

        let broadcasts: Vec<u8> = ids.iter().copied().filter(|&id| id != 255).collect();
        assert!(broadcasts.windows(2).all(|w| w[0] < w[1]), "broadcasts out of order: {ids:?}");
        assert!((0..first_queued).all(|id| broadcasts.contains(&id)), "a frame the kernel took is missing: {ids:?}");
        assert_eq!(ids.iter().filter(|&&id| id == 255).count(), 1, "the reply arrives once: {ids:?}");
        assert!(broadcasts.len() < usize::from(next_id), "nothing was dropped: {ids:?}");
    }

    #[tokio::test]
    async fn clients_that_keep_up_get_each_frame_straight_from_the_fan_out() {
        let fan_out = FanOut::start();
        let mut streams = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (server, client) = pair().await;
            let stream = OutboxStream::over(server, b"");
            fan_out.join(&stream);
            streams.push(stream);
            clients.push(client);
        }
        fan_out.broadcast(&frame(7, 100));
        for client in &mut clients {
            let mut got = vec![0; 105];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame(7, 100));
        }
        for stream in &streams {
            assert!(stream.outbox().lock().queue.is_empty(), "a frame the kernel could take was queued");
        }

        // A connection that ends closes its socket at once, not at the next broadcast.
        drop(streams.remove(0));
        let mut rest = Vec::new();
        assert_eq!(clients[0].read_to_end(&mut rest).await.unwrap(), 0);
        fan_out.broadcast(&frame(8, 10));
        for client in &mut clients[1..] {
            let mut got = vec![0; 15];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, frame(8, 10));
        }
    }

    #[tokio::test]
    async fn a_fan_out_thread_that_falls_behind_resyncs_its_clients_instead() {
        let (shard, worker) = Shard::new();
        let fan_out = FanOut { shards: vec![shard], next: AtomicUsize::new(0) };
        let (server, mut client) = pair().await;
        let stream = OutboxStream::over(server, b"");
        fan_out.join(&stream);
        // The thread is not running yet: frames past the limit are dropped.
        for id in 0..MAX_PENDING_FRAMES + 10 {
            fan_out.broadcast(&frame(id as u8, 10));
        }
        drop(fan_out);
        // The worker catches up (and ends, the FanOut being gone).
        std::thread::spawn(move || worker.run()).join().unwrap();
        assert!(stream.outbox().take_resync(), "the client is owed a fresh view");
        let mut got = vec![0; 15 * MAX_PENDING_FRAMES];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[got.len() - 15..], frame(MAX_PENDING_FRAMES as u8 - 1, 10));
    }

    #[tokio::test]
    async fn bytes_read_with_the_handshake_come_first() {
        let (server, mut client) = pair().await;
        let mut stream = OutboxStream::over(server, b"early ");
        client.write_all(b"later").await.unwrap();
        let mut got = vec![0; 11];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"early later");
    }
}
