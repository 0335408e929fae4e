//! The control socket: how `rerod user add`, `rerod user passwd`,
//! `rerod user import`, `rerod backup` and `rerod export`, run on the host,
//! reach the running daemon (which alone may open its store).
//!
//! It is a Unix socket beside the store file (`rerod.sock` next to
//! `rerod.redb`), created mode 0600, and every connection's peer must be root
//! or the daemon's own user: being able to write the lab's accounts is being
//! the lab's admin. One JSON line in ([`ControlRequest`]), one JSON line out
//! ([`ControlResponse`]); for a backup or an export, the bytes the answer's
//! `length` counts follow it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::app::App;
use crate::wire::{ControlRequest, ControlResponse};

/// The longest request line read; a password and an address fit many times over.
const MAX_LINE: u64 = 16 << 10;
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the control socket of the store at `store` lives.
pub fn socket_path(store: &Path) -> PathBuf {
    store.with_extension("sock")
}

/// Binds the control socket (replacing a stale one) and serves it until the
/// task is aborted.
pub fn start(app: Arc<App>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(app.store.path());
    // A socket file left by a daemon that did not stop cleanly; a live one
    // would hold the store too, and this daemon could not have opened it.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    remove_stale_backups(app.store.path());
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    tracing::info!(path = %path.display(), "control socket ready");
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(Arc::clone(&app), stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// Whether a peer with user id `uid` may use the socket: root, or the
/// daemon's own user.
fn allowed(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

async fn serve(app: Arc<App>, stream: UnixStream) {
    match stream.peer_cred() {
        Ok(cred) if allowed(cred.uid()) => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), "control socket: connection refused for this user");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "control socket: cannot tell who connected");
            return;
        }
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await;
    let (response, payload) = match read {
        Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
            Ok(request) => answer(&app, request).await,
            Err(error) => (refusal("invalid_request", format!("not a control request: {error}")), Payload::None),
        },
        Ok(Err(error)) => (refusal("invalid_request", format!("reading the request: {error}")), Payload::None),
        Err(_) => (refusal("invalid_request", "no request within 10 s".to_owned()), Payload::None),
    };
    let mut text = serde_json::to_string(&response).expect("control responses serialize");
    text.push('\n');
    if write.write_all(text.as_bytes()).await.is_err() {
        return;
    }
    let sent = match &payload {
        Payload::None => Ok(()),
        Payload::Bytes(bytes) => write.write_all(bytes).await,
        Payload::File(copy) => send_file(&copy.0, &mut write).await,
    };
    if let Err(error) = sent {
        tracing::warn!(%error, "control socket: the payload was not sent whole");
    }
}

/// Sends the file at `path` in chunks, read off the runtime's threads.
async fn send_file(path: &Path, to: &mut (impl AsyncWriteExt + Unpin)) -> std::io::Result<()> {
    const CHUNK: u64 = 256 << 10;
    let mut file = std::fs::File::open(path)?;
    loop {
        let (back, chunk) = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(CHUNK as usize);
            let read = std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, CHUNK), &mut chunk);
            (file, read.map(|_| chunk))
        })
        .await
        .map_err(std::io::Error::other)?;
        let chunk = chunk?;
        if chunk.is_empty() {
            return Ok(());
        }
        to.write_all(&chunk).await?;
        file = back;
    }
}

/// What follows an answer's line.
enum Payload {
    None,
    Bytes(Vec<u8>),
    /// A backup the daemon wrote beside its store; removed once sent.
    File(TempFile),
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the daemon's own backup copies are called, beside its store.
const BACKUP_PREFIX: &str = "rerod-backup-";

/// The directory of the store at `store`, where the daemon may write.
fn store_dir(store: &Path) -> &Path {
    store.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Removes backup copies a daemon that stopped while sending one left behind.
fn remove_stale_backups(store: &Path) {
    let Ok(entries) = std::fs::read_dir(store_dir(store)) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(BACKUP_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A consistent copy of the store, written beside it (where the daemon may
/// write) and then sent whole.
async fn backup(app: &App) -> (ControlResponse, Payload) {
    if let Err(message) = room_for_a_copy(app.store.path()) {
        return (refusal("no_room", message), Payload::None);
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{BACKUP_PREFIX}{}-{n}.redb", std::process::id());
    let copy = TempFile(store_dir(app.store.path()).join(name));
    // Where the copy is written before it is renamed into place, if it fails first.
    let _partial = TempFile(copy.0.with_extension("partial"));
    let store = app.store.clone();
    let to = copy.0.clone();
    let made = tokio::task::spawn_blocking(move || {
        let counts = store.backup_to(&to)?;
        let length = std::fs::metadata(&to)
            .map_err(|source| crate::store::StoreError::CreateFile { path: to.clone(), source })?
            .len();
        Ok::<_, crate::store::StoreError>((counts, length))
    })
    .await;
    match made {
        Ok(Ok((counts, length))) => {
            tracing::info!(users = counts.users, bookings = counts.bookings, "backup taken for the control socket");
            let message = format!("{} users, {} bookings", counts.users, counts.bookings);
            (ControlResponse { success: true, message, code: None, length: Some(length) }, Payload::File(copy))
        }
        Ok(Err(error)) => (refusal("store_error", format!("backup failed: {error}")), Payload::None),
        Err(error) => (refusal("store_error", format!("backup failed: {error}")), Payload::None),
    }
}

/// Free space kept beside the store when the daemon writes a copy of it:
/// the store's own commits must never be the ones to fill the disk.
const KEPT_FREE: u64 = 64 << 20;

/// Refuses a copy of the store at `store` that could leave its file system
/// with less than [`KEPT_FREE`] (the copy is at most as large as the store),
/// with what to do instead.
fn room_for_a_copy(store: &Path) -> Result<(), String> {
    let dir = store_dir(store);
    let needed = std::fs::metadata(store).map(|m| m.len()).unwrap_or(0);
    let free = free_bytes(dir).map_err(|error| format!("cannot read the free space in {}: {error}", dir.display()))?;
    enough_room(dir, free, needed)
}

fn enough_room(dir: &Path, free: u64, needed: u64) -> Result<(), String> {
    if free >= needed.saturating_add(KEPT_FREE) {
        return Ok(());
    }
    Err(format!(
        "not enough room in {} for the daemon's copy of the store: {} MiB free, the copy needs up to {} MiB \
         and {} MiB stays free for the store's own writes; free some space, or stop the daemon and run the \
         backup again (it then reads the store directly)",
        dir.display(),
        free >> 20,
        needed.div_ceil(1 << 20),
        KEPT_FREE >> 20
    ))
}

/// The bytes an unprivileged writer may still use on the file system of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is written by the call before it is read.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion, reason = "the fields are narrower on some 32-bit targets")]
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Every user (hashes only when asked) and booking, as `rerod export` prints them.
async fn export(app: &App, with_hashes: bool) -> (ControlResponse, Payload) {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.snapshot()).await {
        Ok(Ok(snapshot)) => {
            let mut json =
                serde_json::to_vec_pretty(&crate::wire::export(&snapshot, with_hashes)).expect("exports serialize");
            json.push(b'\n');
            let message = format!("{} users, {} bookings", snapshot.users.len(), snapshot.bookings.len());
            let length = Some(json.len() as u64);
            (ControlResponse { success: true, message, code: None, length }, Payload::Bytes(json))
        }
        Ok(Err(error)) => (refusal("store_error", format!("export failed: {error}")), Payload::None),
        Err(error) => (refusal("store_error", format!("export failed: {error}")), Payload::None),
    }
}

async fn answer(app: &App, request: ControlRequest) -> (ControlResponse, Payload) {
    let result = match &request {
        ControlRequest::UserAdd { email, password, admin } => {
            app.add_account(email, password, *admin).await.map(|user| {
                let role = if *admin { "lab admin" } else { "account" };
                format!("{role} {} created", user.email)
            })
        }
        ControlRequest::UserPasswd { email, password } => app
            .reset_password(email, password)
            .await
            .map(|user| format!("password of {} set; its earlier tokens no longer work", user.email)),
        ControlRequest::Backup => return backup(app).await,
        ControlRequest::Export { with_hashes } => return export(app, *with_hashes).await,
    };
    let response = match result {
        Ok(message) => ControlResponse { success: true, message, code: None, length: None },
        Err(error) => refusal(error.code(), error.to_string()),
    };
    (response, Payload::None)
}

fn refusal(code: &str, message: String) -> ControlResponse {
    ControlResponse { success: false, message, code: Some(code.to_owned()), length: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_that_would_leave_the_disk_nearly_full_is_refused() {
        let dir = Path::new("/var/lib/rerod");
        let store = 300 << 20;
        assert_eq!(enough_room(dir, store + KEPT_FREE, store), Ok(()));
        let refused = enough_room(dir, store + KEPT_FREE - 1, store).unwrap_err();
        assert!(refused.starts_with("not enough room in /var/lib/rerod"), "{refused}");
        assert!(refused.contains("363 MiB free, the copy needs up to 300 MiB and 64 MiB stays free"), "{refused}");
        assert!(enough_room(dir, u64::MAX - 1, u64::MAX - 10).is_err(), "a sum past u64 does not wrap into room");
    }

    #[test]
    fn the_free_space_of_a_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("gone")).is_err());
    }
}
