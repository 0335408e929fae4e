//! Throttling password checks, two ways.
//!
//! Per account: after too many wrong passwords for one address within a
//! window, further attempts are refused (429 with `Retry-After`) until the
//! oldest failure leaves the window. An attempt counts from the moment it is
//! admitted, not when its answer is known, so parallel guesses cannot slip
//! past the limit while bcrypt runs. Guessing a password then costs the
//! attacker days, while a student who mistypes a few times never notices.
//!
//! Per client address: every login or registration counts, so one client
//! cannot fill the hashing queue with attempts for random accounts.
//!
//! New accounts: per client address and overall, per hour, counted by the
//! same sliding window, so that nobody can make accounts by the hundred.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most; beyond this the idle entries are dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
struct Entry {
    /// When each counted event (a failure, or any attempt) happened, oldest first.
    times: VecDeque<Instant>,
    /// Attempts admitted whose outcome is not known yet.
    in_flight: u32,
}

#[derive(Debug, Default)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
}

/// An admitted password check. Say how it went with [`Attempt::succeeded`]
/// or [`Attempt::failed`]; dropped without either (the request went away),
/// it just stops counting as in flight.
#[derive(Debug)]
pub struct Attempt<'t> {
    throttle: &'t Throttle,
    key: String,
    window: Duration,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was right: the account's failures are forgotten.
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut entries = self.throttle.lock();
        entries.remove(&self.key);
    }

    /// The password was wrong: it counts against the account for the window.
    pub fn failed(mut self, now: Instant) {
        self.settled = true;
        let mut entries = self.throttle.lock();
        make_room(&mut entries, &self.key, now, self.window);
        let entry = entries.entry(self.key.clone()).or_default();
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.times.push_back(now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut entries = self.throttle.lock();
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.in_flight == 0 && entry.times.is_empty() {
                entries.remove(&self.key);
            }
        }
    }
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one password check for `key` unless its failures within
    /// `window` plus the checks still running reach `max`; otherwise
    /// `Err(retry_after)`.
    pub fn begin(&self, key: &str, now: Instant, max: u32, window: Duration) -> Result<Attempt<'_>, Duration> {
        let mut entries = self.lock();
        let entry = entries.entry(key.to_owned()).or_default();
        expire(entry, now, window);
        if entry.times.len() + entry.in_flight as usize >= max as usize {
            let retry_after = match entry.times.front() {
                Some(oldest) => window.saturating_sub(now.duration_since(*oldest)),
                // Only checks in flight: they finish within a second or so.
                None => Duration::from_secs(1),
            };
            return Err(retry_after.max(Duration::from_secs(1)));
        }
        entry.in_flight += 1;
        Ok(Attempt { throttle: self, key: key.to_owned(), window, settled: false })
    }

    /// Whether [`Throttle::hit`] would count an event for `key` now, counting nothing.
    pub fn check(&self, key: &str, now: Instant, max: u32, window: Duration) -> Result<(), Duration> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else { return Ok(()) };
        expire(entry, now, window);
        match entry.times.front() {
            Some(oldest) if entry.times.len() >= max as usize => {
                Err(window.saturating_sub(now.duration_since(*oldest)).max(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    /// Counts one event for `key` unless `max` happened within `window`
    /// already; otherwise `Err(retry_after)` and nothing is counted.
    pub fn hit(&self, key: &str, now: Instant, max: u32, window: Duration) -> Result<(), Duration> {
        let mut entries = self.lock();
        make_room(&mut entries, key, now, window);
        let entry = entries.entry(key.to_owned()).or_default();
        expire(entry, now, window);
        if entry.times.len() >= max as usize {
            let oldest = entry.times.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.duration_since(oldest)).max(Duration::from_secs(1)));
        }
        entry.times.push_back(now);
        Ok(())
    }
}

fn expire(entry: &mut Entry, now: Instant, window: Duration) {
    while entry.times.front().is_some_and(|t| now.duration_since(*t) >= window) {
        entry.times.pop_front();
    }
}

/// Keeps the map bounded: before a new key is added to a full map, entries
/// with nothing in the window and nothing in flight are forgotten.
fn make_room(entries: &mut HashMap<String, Entry>, key: &str, now: Instant, window: Duration) {
    if entries.len() >= MAX_TRACKED && !entries.contains_key(key) {
        entries.retain(|_, e| e.in_flight > 0 || e.times.back().is_some_and(|t| now.duration_since(*t) < window));
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
            let attempt = throttle.begin("a@x.org", t0, 3, window).unwrap();
            attempt.failed(t0 + Duration::from_secs(i * 10));
        }
        let refused = throttle.begin("a@x.org", t0 + Duration::from_secs(30), 3, window).map(drop);
        assert_eq!(refused, Err(Duration::from_secs(270)));
        // Other accounts are unaffected.
        assert!(throttle.begin("b@x.org", t0, 3, window).is_ok());
        // Once the first failure is 300 s old, one more attempt is allowed.
        assert!(throttle.begin("a@x.org", t0 + Duration::from_secs(300), 3, window).is_ok());
        // Success forgets the failures.
        throttle.begin("a@x.org", t0 + Duration::from_secs(301), 3, window).unwrap().succeeded();
        assert!(throttle.begin("a@x.org", t0 + Duration::from_secs(31), 3, window).is_ok());
    }

    #[test]
    fn checks_in_flight_count_against_the_limit() {
        let throttle = Throttle::default();
        let (t0, window) = (Instant::now(), Duration::from_secs(300));
        let running: Vec<_> = (0..3).map(|_| throttle.begin("a@x.org", t0, 3, window).unwrap()).collect();
        // Three guesses are being checked: a fourth waits, whatever their outcome.
        assert_eq!(throttle.begin("a@x.org", t0, 3, window).map(drop), Err(Duration::from_secs(1)));
        // A request that went away frees its place without counting as a failure.
        drop(running);
        assert!(throttle.begin("a@x.org", t0, 3, window).is_ok());
    }

    #[test]
    fn every_hit_counts_per_address() {
        let throttle = Throttle::default();
        let (t0, window) = (Instant::now(), Duration::from_secs(60));
        for i in 0..5 {
            throttle.hit("10.0.0.1", t0 + Duration::from_secs(i), 5, window).unwrap();
        }
        assert_eq!(throttle.hit("10.0.0.1", t0 + Duration::from_secs(10), 5, window), Err(Duration::from_secs(50)));
        assert!(throttle.hit("10.0.0.2", t0, 5, window).is_ok());
        assert!(throttle.hit("10.0.0.1", t0 + Duration::from_secs(60), 5, window).is_ok());
    }

    #[test]
    fn a_check_counts_nothing() {
        let throttle = Throttle::default();
        let (t0, window) = (Instant::now(), Duration::from_secs(60));
        for _ in 0..3 {
            throttle.check("10.0.0.1", t0, 2, window).unwrap();
        }
        throttle.hit("10.0.0.1", t0, 2, window).unwrap();
        throttle.hit("10.0.0.1", t0, 2, window).unwrap();
        assert_eq!(throttle.check("10.0.0.1", t0 + Duration::from_secs(20), 2, window), Err(Duration::from_secs(40)));
        assert!(throttle.check("10.0.0.1", t0 + Duration::from_secs(60), 2, window).is_ok());
    }
}
