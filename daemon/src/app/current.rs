//! The config in force, read on every request and replaced on a reload.
//!
//! Every read used to take a read lock and clone one `Arc<Config>`: four
//! atomic writes to two cache lines that every core shares. A `GET /slots`
//! reads the config four times, so on a busy host the cores spent their time
//! passing those lines back and forth (`perf annotate` put most of the
//! request handler's own cycles on them). Now each thread keeps a handle of
//! its own to the current config and hands out clones of that, which touch
//! only the thread's own count. A reload bumps the generation; a thread
//! whose handle is of an older generation takes a fresh one, under the lock,
//! on its next read.

use std::cell::RefCell;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;

/// Tells the cells of different [`App`](super::App)s apart (tests run many in one process).
static NEXT_CELL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's handle to the config of the cell it last read.
    static SNAPSHOT: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
}

struct Snapshot {
    cell: u64,
    generation: u64,
    config: ConfigRef,
}

/// The config in force; a reload swaps it whole.
#[derive(Debug)]
pub(super) struct CurrentConfig {
    id: u64,
    config: RwLock<Arc<Config>>,
    /// Bumped after every swap.
    generation: AtomicU64,
}

impl CurrentConfig {
    pub(super) fn new(config: Config) -> CurrentConfig {
        CurrentConfig {
            id: NEXT_CELL.fetch_add(1, Ordering::Relaxed),
            config: RwLock::new(Arc::new(config)),
            generation: AtomicU64::new(1),
        }
    }

    /// The config in force.
    pub(super) fn get(&self) -> ConfigRef {
        // Read before the config: a swap that lands in between leaves this
        // thread with the new config under the old number, which the next
        // read replaces. The other order could keep the old config under
        // the new number. During the thread's teardown, or a read from
        // within a config's own drop were there one, the snapshot cannot be
        // used: the config is then read plainly.
        let generation = self.generation();
        let cached = SNAPSHOT.try_with(|snapshot| match snapshot.try_borrow().as_deref() {
            Ok(Some(s)) if s.cell == self.id && s.generation == generation => Some(s.config.clone()),
            _ => None,
        });
        if let Ok(Some(config)) = cached {
            return config;
        }
        let config = ConfigRef(Arc::new(Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))));
        let _ = SNAPSHOT.try_with(|snapshot| {
            if let Ok(mut snapshot) = snapshot.try_borrow_mut() {
                *snapshot = Some(Snapshot { cell: self.id, generation, config: config.clone() });
            }
        });
        config
    }

    /// Puts `config` in force.
    pub(super) fn replace(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// How many configs have been in force: changes with every swap.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A handle to a config that was in force when it was read. It stays valid
/// (and unchanged) after a reload; read the config again to see the new one.
///
/// The second `Arc` is the point: the outer one is this thread's own, so
/// cloning and dropping a handle counts on a line no other core writes.
#[derive(Clone, Debug)]
#[allow(clippy::redundant_allocation)]
pub struct ConfigRef(Arc<Arc<Config>>);

impl ConfigRef {
    /// The config itself, shared with every other handle to it.
    pub fn arc(&self) -> &Arc<Config> {
        &self.0
    }
}

impl Deref for ConfigRef {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: usize) -> Config {
        let text = format!("[server]\nmax_connections = {max_connections}\n");
        Config::from_toml(&text, &crate::config::Env::default()).unwrap()
    }

    #[test]
    fn a_read_after_a_swap_sees_the_new_config_on_every_thread() {
        let current = Arc::new(CurrentConfig::new(config(1)));
        let before = current.get();
        assert_eq!(before.server.max_connections, 1);
        let other = {
            let current = Arc::clone(&current);
            std::thread::spawn(move || current.get().server.max_connections)
        };
        assert_eq!(other.join().unwrap(), 1);

        current.replace(config(2));
        assert_eq!(current.get().server.max_connections, 2);
        let other = {
            let current = Arc::clone(&current);
            std::thread::spawn(move || current.get().server.max_connections)
        };
        assert_eq!(other.join().unwrap(), 2);
        assert_eq!(before.server.max_connections, 1, "a handle keeps the config it was read from");
    }

    #[test]
    fn each_cell_is_read_apart_on_one_thread() {
        let (a, b) = (CurrentConfig::new(config(1)), CurrentConfig::new(config(2)));
        for _ in 0..2 {
            assert_eq!(a.get().server.max_connections, 1);
            assert_eq!(b.get().server.max_connections, 2);
        }
    }

    #[test]
    fn repeated_reads_share_the_config_until_a_swap() {
        let current = CurrentConfig::new(config(1));
        let (first, second) = (current.get(), current.get());
        assert!(Arc::ptr_eq(first.arc(), second.arc()));
        current.replace(config(1));
        assert!(!Arc::ptr_eq(first.arc(), current.get().arc()));
    }
}
