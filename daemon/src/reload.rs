//! Live configuration reload: on SIGHUP (systemd's `ExecReload`) and when the
//! config file changes on disk. A file that does not load, or that changes
//! the lab's calendar (which only a restart may), is refused whole; the
//! running config stays and the error shows in `/health`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{Config, Env};
use crate::logging::LevelControl;
use crate::notify::Notifier;

/// Editors write a file in several steps; changes this close together are one.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the reload task needs.
#[derive(Debug)]
pub struct Reloader {
    pub app: Arc<App>,
    /// The file given with `--config`; without one there is nothing to re-read.
    pub path: Option<PathBuf>,
    pub env: Env,
    pub log_level: LevelControl,
    pub notifier: Notifier,
}

impl Reloader {
    /// Installs the SIGHUP handler and the file watcher now (so neither a
    /// signal nor an edit right after start-up is missed), then reloads on
    /// each in a background task until it is aborted.
    pub fn start(self) -> tokio::task::JoinHandle<()> {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; reload by signal is off");
                None
            }
        };
        let (changed_tx, mut changed) = mpsc::channel::<()>(1);
        let watcher = self.path.as_deref().and_then(|path| watch_file(path, changed_tx));
        tokio::spawn(async move {
            // Kept alive for as long as this task runs.
            let _watcher = watcher;
            loop {
                let reason = tokio::select! {
                    Some(()) = async { hangups.as_mut()?.recv().await } => "SIGHUP",
                    Some(()) = changed.recv() => {
                        tokio::time::sleep(DEBOUNCE).await;
                        while changed.try_recv().is_ok() {}
                        "file changed"
                    }
                    else => return,
                };
                self.reload(reason);
            }
        })
    }

    fn reload(&self, reason: &str) {
        let _ = self.notifier.reloading();
        match &self.path {
            None => tracing::info!(reason, "reload requested, but rerod runs on built-in defaults (no --config)"),
            Some(path) => match Config::load(Some(path), &self.env) {
                Ok(config) => {
                    let level = config.log.level.clone();
                    match self.app.apply_config(config) {
                        Ok(needs_restart) => {
                            self.log_level.set(&level);
                            tracing::info!(reason, generation = self.app.config_generation(), "configuration reloaded");
                            for key in needs_restart {
                                tracing::warn!(
                                    key,
                                    "this setting changed in the file but takes effect only after a restart"
                                );
                            }
                        }
                        // apply_config has recorded the refusal for /health.
                        Err(error) => {
                            tracing::error!(reason, %error, "configuration rejected; the running configuration stays");
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(reason, %error, "configuration rejected; the running configuration stays");
                    // /health is public: it names the file, not where it lives on the host.
                    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    self.app.reload_failed(error.to_string().replace(&path.display().to_string(), &name));
                }
            },
        }
        let _ = self.notifier.ready_with_status(&self.app.status_line());
    }
}

/// Watches the file's directory, so editors that save by writing a new file
/// and renaming it over the old one are followed too.
fn watch_file(path: &Path, changed: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name()?.to_owned();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == Some(name.as_os_str())) {
            // A full channel already means "reload pending".
            let _ = changed.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the config file; reload with SIGHUP");
            return None;
        }
    };
    if let Err(error) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(%error, dir = %dir.display(), "cannot watch the config directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}
