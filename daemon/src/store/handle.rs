//! The open database behind the store, and how the store recovers when a commit fails.
//!
//! When redb fails to write (a full disk: ENOSPC), it latches the failure:
//! from then on every read and write of that `Database` fails with
//! `PreviousIo` until the file is closed and opened again. The file itself
//! stays at its last good commit; opening it again recovers from there. So
//! after a failed commit the writer thread closes the database and opens the
//! file again, and the store goes on serving reads while writes fail (and
//! answer 503) until the disk has room again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redb::{ConcurrencyMode, Database, DatabaseError};

use super::StoreError;

/// Opens the store's file; the store calls it at start and again after a failed commit.
pub(super) type Opener = Box<dyn Fn(&Path) -> Result<Database, DatabaseError> + Send + Sync>;

/// The database every reader and the writer share, swapped for a fresh one
/// after a failed commit.
pub(super) struct Handle {
    path: PathBuf,
    opener: Opener,
    /// `None` only when opening the file again failed; reads then fail too
    /// until the writer manages to open it.
    current: RwLock<Option<Arc<Database>>>,
    /// Why the last write failed, until a write commits again.
    write_failure: Mutex<Option<String>>,
}

/// Opens `path` the way the daemon does: exclusively. No other process may
/// open the file meanwhile, so each commit is one `fdatasync`, not the two
/// that sharing the file with readers in other processes takes; `rerod
/// backup` and `rerod export` ask the running daemon instead (`control.rs`).
pub(super) fn open_file(path: &Path) -> Result<Database, DatabaseError> {
    Database::builder().set_concurrency_mode(ConcurrencyMode::ExclusiveWriter).create(path)
}

impl Handle {
    pub(super) fn open(path: &Path, opener: Opener) -> Result<Handle, StoreError> {
        let db = opener(path).map_err(|source| StoreError::Open { path: path.to_owned(), source: Box::new(source) })?;
        Ok(Handle {
            path: path.to_owned(),
            opener,
            current: RwLock::new(Some(Arc::new(db))),
            write_failure: Mutex::new(None),
        })
    }

    /// The database to read or write now.
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some(db) => Ok(Arc::clone(db)),
            None => Err(StoreError::Unavailable(self.write_failure().unwrap_or_default())),
        }
    }

    /// Why the last write failed, until a write commits again.
    pub(super) fn write_failure(&self) -> Option<String> {
        self.write_failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A batch committed: the store writes again.
    pub(super) fn committed(&self) {
        let mut failure = self.write_failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.take().is_some() {
            tracing::info!("the store commits again");
        }
    }

    /// A batch failed with `error` from redb. Records it, then closes the
    /// database and opens the file again, since redb refuses all I/O on a
    /// handle after a failed write. Returns whether the store is open again.
    ///
    /// The caller must have dropped its own `Arc<Database>` first: the old
    /// database can only close once nobody holds it.
    pub(super) fn write_failed(&self, error: &StoreError) -> bool {
        *self.write_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        self.reopen()
    }

    /// Closes the current database (if any) and opens the file again.
    /// Returns whether it is open.
    pub(super) fn reopen(&self) -> bool {
        // Readers hold the database only while they begin a read
        // transaction, and holding the write lock stops new ones, so the
        // wait below is short. A read still running on the old database
        // fails, as it would have anyway once redb latched the failure.
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if let Some(mut old) = current.take() {
            let old = loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => break db,
                    Err(shared) => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            };
            // After a latched I/O failure redb writes nothing on close and
            // reports that failure again; the next open recovers the file.
            if let Err(error) = old.close() {
                tracing::debug!(%error, "closing the failed store");
            }
        }
        match (self.opener)(&self.path) {
            Ok(db) => {
                tracing::warn!(path = %self.path.display(), "store reopened after a failed write");
                *current = Some(Arc::new(db));
                true
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot reopen the store; retrying on the next write");
                *self.write_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("cannot reopen the store: {error}"));
                false
            }
        }
    }
}
