//! The running daemon: starts every long-running service (config reloader,
//! slot-boundary scheduler, booking hub, HTTP server, systemd watchdog and
//! status), and stops them all on one shutdown signal, in order: stop
//! accepting and close sockets, stop the background tasks, abort uploads and
//! close the ports, flush the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::clock::SystemClock;
use crate::config::{Config, Env};
use crate::logging::LevelControl;
use crate::notify::Notifier;
use crate::reload::Reloader;
use crate::ws::booking::BookingHub;

/// How often systemd's STATUS= line is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// A failure to start, for the person who ran rerod.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Says at start how sketches will be compiled, loudly when they are not confined.
fn log_compile_sandbox(app: &App) {
    use crate::compile::SandboxStatus;
    match app.compile_sandbox() {
        SandboxStatus::Landlock => tracing::info!(sandbox = "landlock", "sketches compile in the Landlock sandbox"),
        SandboxStatus::Off => tracing::warn!(
            sandbox = "off",
            "compile.sandbox is off: a sketch can make the compiler read any file the daemon can read"
        ),
        SandboxStatus::Unavailable => tracing::warn!(
            sandbox = "unavailable",
            "this kernel has no Landlock: compiling answers 503 compile_sandbox_unavailable until it has, or compile.sandbox is \"off\""
        ),
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn run(config: Config, config_path: Option<PathBuf>, env: Env, log_level: LevelControl) -> Result<(), Error> {
    let notifier = Notifier::from_env();
    let listen = config.server.listen;
    let metrics = crate::metrics::Metrics::with_routes(crate::http::ROUTES.iter().map(|r| r.pattern));
    let app = Arc::new(App::new(config, Arc::new(SystemClock), metrics)?);
    let (stop_tx, stop) = watch::channel(false);
    let mut background: Vec<JoinHandle<()>> = Vec::new();
    let reloader =
        Reloader { app: Arc::clone(&app), path: config_path.clone(), env, log_level, notifier: notifier.clone() };
    background.push(reloader.start());
    let listener = bind(listen).await?;
    // `rerod user ...` on the host reaches the daemon here.
    match crate::control::start(Arc::clone(&app)) {
        Ok(task) => background.push(task),
        Err(error) => tracing::warn!(%error, "no control socket: `rerod user` cannot reach this daemon"),
    }
    // Slot boundaries end sessions on the boards.
    background.push(crate::session::start(Arc::clone(&app)));
    // Console transcripts into the session records, and their retention.
    background.push(app.start_records());
    let booking = BookingHub::start(Arc::clone(&app), stop.clone());
    // The webhook listens before the first checks start, so no alert is missed.
    background.push(crate::webhook::start(Arc::clone(&app)));
    app.start_health();
    // Other hosts' booking changes reach this host's booking sockets.
    background.extend(app.start_following_store());
    // This host's presence in a lab of several hosts, and the others'.
    background.extend(app.start_presence());
    let address = listener.local_addr()?;
    log_compile_sandbox(&app);
    tracing::info!(%address, config = ?config_path, store = %app.store.path().display(), "listening");
    if notifier.is_enabled() {
        if let Err(error) = notifier.ready_with_status(&app.status_line()) {
            tracing::warn!(%error, "could not notify systemd");
        }
        if let Some(every) = crate::notify::watchdog_interval() {
            let (notifier, app) = (notifier.clone(), Arc::clone(&app));
            background.push(tokio::spawn(async move {
                notifier.feed_watchdog(every, || app.store.check().is_ok()).await;
            }));
        }
        let (notifier, app) = (notifier.clone(), Arc::clone(&app));
        background.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(STATUS_INTERVAL);
            loop {
                every.tick().await;
                let _ = notifier.status(&app.status_line());
            }
        }));
    }
    let server = tokio::spawn(crate::http::serve(Arc::clone(&app), booking, listener, stop));
    shutdown_signal().await;
    let _ = notifier.stopping();
    // One signal: the server stops accepting, drains, and every socket closes with a reason.
    let _ = stop_tx.send(true);
    if let Err(error) = server.await {
        tracing::error!(%error, "the HTTP server task failed");
    }
    for task in background {
        task.abort();
    }
    let _ = std::fs::remove_file(crate::control::socket_path(app.store.path()));
    tracing::info!("shutting down: aborting uploads and closing device ports");
    app.devices.shutdown().await;
    tracing::info!("shutting down: flushing the store");
    app.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e} (set server.listen, or HOST and PORT)").into())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
