//! `CancelToken`: one flag that both blocking code (serial loops) and async code can wait on.
//!
//! The daemon cancels an upload when the session ends; the uploader notices
//! within one read slice (≤ 50 ms) in blocking code, or at once in async code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A cloneable cancellation flag. Cancelling is permanent.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    // The condvar wakes blocking waiters; Notify wakes async ones.
    lock: Mutex<()>,
    cond: Condvar,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        {
            // Taking the lock orders this wake-up after any waiter's check of the flag.
            let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.inner.cond.notify_all();
        }
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Blocks for up to `timeout`; returns true when cancelled (at once if it already was).
    pub fn wait_blocking(&self, timeout: Duration) -> bool {
        let guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_guard, _) = self
            .inner
            .cond
            .wait_timeout_while(guard, timeout, |_| !self.is_cancelled())
            .unwrap_or_else(|e| e.into_inner());
        self.is_cancelled()
    }

    /// Completes when the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Register before checking the flag so a cancel in between is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_wait_returns_on_cancel_from_another_thread() {
        let token = CancelToken::new();
        assert!(!token.wait_blocking(Duration::from_millis(1)));
        let other = token.clone();
        let t = std::thread::spawn(move || other.wait_blocking(Duration::from_secs(60)));
        token.cancel();
        assert!(t.join().expect("waiter thread"));
        assert!(token.wait_blocking(Duration::from_secs(60)), "already cancelled returns at once");
    }

    #[tokio::test]
    async fn async_wait_returns_on_cancel() {
        let token = CancelToken::new();
        let other = token.clone();
        let waiter = tokio::spawn(async move { other.cancelled().await });
        tokio::task::yield_now().await;
        token.cancel();
        waiter.await.expect("waiter task");
        token.cancelled().await;
    }
}
