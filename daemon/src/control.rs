//! The control socket: how `rerod user add`, `rerod user passwd` and
//! `rerod user import`, run on the host, reach the running daemon (which
//! alone may write its store).
//!
//! It is a Unix socket beside the store file (`rerod.sock` next to
//! `rerod.redb`), created mode 0600, and every connection's peer must be root
//! or the daemon's own user: being able to write the lab's accounts is being
//! the lab's admin. One JSON line in ([`ControlRequest`]), one JSON line out
//! ([`ControlResponse`]).

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
    let response = match read {
        Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
            Ok(request) => answer(&app, request).await,
            Err(error) => refusal("invalid_request", format!("not a control request: {error}")),
        },
        Ok(Err(error)) => refusal("invalid_request", format!("reading the request: {error}")),
        Err(_) => refusal("invalid_request", "no request within 10 s".to_owned()),
    };
    let mut text = serde_json::to_string(&response).expect("control responses serialize");
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

async fn answer(app: &App, request: ControlRequest) -> ControlResponse {
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
    };
    match result {
        Ok(message) => ControlResponse { success: true, message, code: None },
        Err(error) => refusal(error.code(), error.to_string()),
    }
}

fn refusal(code: &str, message: String) -> ControlResponse {
    ControlResponse { success: false, message, code: Some(code.to_owned()) }
}
