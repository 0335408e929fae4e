//! Failed-login throttling: after too many wrong passwords for one account
//! within a window, further attempts are refused (429 with `Retry-After`)
//! until the oldest failure leaves the window. Guessing a password then
//! costs the attacker days, while a student who mistypes a few times never
//! notices.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Accounts tracked at most; beyond this the oldest-idle entries are dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle { failures: Mutex::new(HashMap::new()) }
    }
}

impl Throttle {
    /// `Err(retry_after)` while `key` has `max` failures within `window` before `now`.
    pub fn check(&self, key: &str, now: Instant, max: u32, window: Duration) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = failures.get_mut(key) else { return Ok(()) };
        while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
            times.pop_front();
        }
        if times.len() >= max as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.duration_since(oldest)).max(Duration::from_secs(1)));
        }
        if times.is_empty() {
            failures.remove(key);
        }
        Ok(())
    }

    pub fn failed(&self, key: &str, now: Instant, window: Duration) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(key) {
            // Forget entries whose failures have all left the window.
            failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        failures.entry(key.to_owned()).or_default().push_back(now);
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_failures_in_the_window_throttle_until_the_oldest_expires() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(300);
        for i in 0..3 {
            assert!(throttle.check("a@x.org", t0, 3, window).is_ok());
            throttle.failed("a@x.org", t0 + Duration::from_secs(i * 10), window);
        }
        assert_eq!(throttle.check("a@x.org", t0 + Duration::from_secs(30), 3, window), Err(Duration::from_secs(270)));
        // Other accounts are unaffected.
        assert!(throttle.check("b@x.org", t0, 3, window).is_ok());
        // Once the first failure is 300 s old, one more attempt is allowed.
        assert!(throttle.check("a@x.org", t0 + Duration::from_secs(300), 3, window).is_ok());
        // Success forgets the failures.
        throttle.succeeded("a@x.org");
        assert!(throttle.check("a@x.org", t0 + Duration::from_secs(31), 3, window).is_ok());
    }
}
