//! Slot-boundary enforcement: when a slot ends, the session of its holder
//! ends on that device (consoles closed, upload aborted, board restored),
//! unless the same person also holds the next slot.
//!
//! One task watches the lab's calendar with the app's [`crate::clock::Clock`]:
//! it sleeps until the slot in progress ends (at most a minute at a time, so a
//! wall-clock jump or a changed `slot_minutes` is noticed), then compares the
//! holders of the slot that ended and the one that began, per board.
//! Cancelling the booking in progress ends its session at once (`App::cancel`).
//!
//! The same task warns holders before their session ends
//! (`lab.session_warnings_minutes`, 5 and 1 by default): the end is that of
//! the last of the holder's back-to-back slots, read from the calendar on the
//! app's clock, so a warning is never sent for a session that goes on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::app::{App, SessionWarning};
use crate::booking::Slot;

/// The longest single sleep; the calendar is looked at again after it.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Wake a little after the boundary, so `now` is surely in the next slot.
const SLACK: Duration = Duration::from_millis(5);

/// Starts the scheduler; it runs until the runtime stops.
pub fn start(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(app))
}

async fn run(app: Arc<App>) {
    let mut current = app.config().lab.calendar.slot_at(app.now());
    let mut warned = Warned::new();
    loop {
        let now = app.now();
        let next_warning = warn(&app, &mut warned, now);
        let until = |at: Timestamp| Duration::try_from(at.duration_since(now)).ok();
        let until_end = current.as_ref().and_then(|slot| until(slot.end));
        let wait = [until_end, next_warning.and_then(until)].into_iter().flatten().fold(MAX_WAIT, Duration::min);
        tokio::time::sleep(wait + SLACK).await;
        let next = app.config().lab.calendar.slot_at(app.now());
        if next != current {
            if let Some(ended) = &current {
                boundary(&app, ended, next.as_ref());
            }
            current = next;
        }
    }
}

/// Ends, on every board, the session of whoever held `ended` but does not hold `next`.
fn boundary(app: &App, ended: &Slot, next: Option<&Slot>) {
    let holder = |id: &str, slot: &Slot| match app.holder(id, slot) {
        Ok(holder) => holder,
        Err(error) => {
            tracing::warn!(device = id, %error, "cannot read the bookings at a slot boundary");
            None
        }
    };
    for board in app.devices.boards() {
        let Some(before) = holder(&board.id, ended) else { continue };
        let after = next.and_then(|slot| holder(&board.id, slot));
        if after.as_deref() == Some(before.as_str()) {
            continue; // back-to-back bookings are one session
        }
        let message = format!(
            "slot {} ({}–{}) is over",
            ended.id,
            crate::wire::hh_mm(ended.start_time),
            crate::wire::hh_mm(ended.end_time)
        );
        board.end_session(&before, message);
    }
}

/// The smallest warning threshold already sent per (device, holder, session end).
type Warned = HashMap<(String, String, Timestamp), u16>;

/// What the thresholds (minutes, largest first) say for a session ending at
/// `end`: the tightest one reached by `now` (to send, unless it was), and
/// when the next one not yet reached is.
fn plan(now: Timestamp, end: Timestamp, thresholds: &[u16]) -> (Option<u16>, Option<Timestamp>) {
    if now >= end {
        return (None, None);
    }
    let at = |minutes: u16| end.saturating_sub(jiff::SignedDuration::from_mins(i64::from(minutes))).unwrap_or(end);
    let due = thresholds.iter().copied().filter(|m| at(*m) <= now).min();
    let next = thresholds.iter().copied().map(at).filter(|t| *t > now).min();
    (due, next)
}

/// Sends the warnings due at `now` on every board, and answers when the next one is due.
fn warn(app: &App, warned: &mut Warned, now: Timestamp) -> Option<Timestamp> {
    let config = app.config();
    let thresholds = &config.lab.session_warnings;
    warned.retain(|(_, _, end), _| *end > now);
    let slot = config.lab.calendar.slot_at(now)?;
    let mut next_warning: Option<Timestamp> = None;
    for board in app.devices.boards() {
        let Ok(Some(holder)) = app.holder(&board.id, &slot) else { continue };
        let end = session_end(app, &board.id, &holder, &slot);
        let (due, next) = plan(now, end, thresholds);
        next_warning = [next_warning, next].into_iter().flatten().min();
        let Some(minutes) = due else { continue };
        let key = (board.id.clone(), holder.clone(), end);
        if warned.get(&key).is_some_and(|sent| *sent <= minutes) {
            continue;
        }
        warned.insert(key, minutes);
        // The time really left, which is less than the threshold after a late start or a clock jump.
        let left = end.duration_since(now).as_secs().max(0).unsigned_abs().div_ceil(60);
        let minutes_left = u16::try_from(left).unwrap_or(minutes).min(minutes);
        app.warn_session(SessionWarning { device: board.id.clone(), email: holder, minutes_left, end });
    }
    next_warning
}

/// When `holder`'s session on `device`, which holds `slot`, ends: back-to-back
/// slots of the same holder are one session.
fn session_end(app: &App, device: &str, holder: &str, slot: &Slot) -> Timestamp {
    let calendar = app.config().lab.calendar.clone();
    let mut end = slot.end;
    // A day's worth of slots at most: sessions are a few hours long.
    for _ in 0..(24 * 60 / usize::from(calendar.slot_minutes().max(1))) {
        let Some(next) = calendar.slot_at(end) else { break };
        match app.holder(device, &next) {
            Ok(Some(next_holder)) if next_holder == holder => end = next.end,
            _ => break,
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::{LOCALHOST, ONE_BOARD, lab_at};
    use crate::app::{DeviceRef, Principal, Role};
    use crate::devices::ConsoleEvent;

    async fn next_session_end(events: &mut tokio::sync::broadcast::Receiver<ConsoleEvent>) -> (String, String) {
        loop {
            match events.recv().await.expect("board events") {
                ConsoleEvent::SessionEnded { email, message } => return (email, message),
                _ => continue,
            }
        }
    }

    /// Moves the lab clock to `at`, then lets (paused) tokio time run long
    /// enough for the scheduler to wake up and look.
    async fn jump(clock: &crate::clock::ManualClock, at: &str) {
        clock.set(at.parse().unwrap());
        tokio::time::sleep(MAX_WAIT * 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_end_at_the_boundary_and_back_to_back_slots_are_one_session() {
        let (_dir, clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (device, board) = app.board(&DeviceRef::Id("arm-1".into())).unwrap();
        let date = jiff::civil::date(2026, 11, 24);
        for (email, slots) in [("a@x.org", [10, 11]), ("b@x.org", [12, 14])] {
            app.register(email, "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
            let who = Principal { email: email.into(), role: Role::User, address: None };
            for slot in slots {
                app.book(&who, &device, date, slot).await.unwrap();
            }
        }
        let mut events = board.subscribe();
        let _scheduler = start(Arc::clone(&app));
        tokio::task::yield_now().await;

        // 11:00: a holds slot 11 too, so nothing ends.
        jump(&clock, "2026-11-24T11:00:00.010Z").await;
        // 12:00: a's session (slots 10 and 11) ends; the first end seen is slot 11's.
        jump(&clock, "2026-11-24T12:00:00.010Z").await;
        let (email, message) = next_session_end(&mut events).await;
        assert_eq!(email, "a@x.org");
        assert!(message.contains("slot 11 (11:00–12:00) is over"), "{message}");
        // 13:00: b's slot 12 ends; slot 13 is free.
        jump(&clock, "2026-11-24T13:00:00.010Z").await;
        assert_eq!(next_session_end(&mut events).await.0, "b@x.org");
        // A jump over several slots (a suspended host) still ends the session in progress.
        jump(&clock, "2026-11-24T14:10:00Z").await;
        jump(&clock, "2026-11-24T17:00:00Z").await;
        let (email, message) = next_session_end(&mut events).await;
        assert_eq!(email, "b@x.org");
        assert!(message.contains("slot 14"), "{message}");
        assert!(events.try_recv().is_err(), "nothing else ended");
    }

    async fn next_warning(events: &mut tokio::sync::broadcast::Receiver<ConsoleEvent>) -> (String, u16, Timestamp) {
        loop {
            match events.recv().await.expect("board events") {
                ConsoleEvent::SessionEnding { email, minutes_left, end } => return (email, minutes_left, end),
                _ => continue,
            }
        }
    }

    #[test]
    fn the_tightest_threshold_reached_is_due() {
        let t = |at: &str| -> Timestamp { format!("2026-11-24T{at}Z").parse().unwrap() };
        let end = t("11:00:00");
        assert_eq!(plan(t("10:30:00"), end, &[5, 1]), (None, Some(t("10:55:00"))));
        assert_eq!(plan(t("10:55:00"), end, &[5, 1]), (Some(5), Some(t("10:59:00"))));
        // A host that slept past both thresholds sends the tighter one only.
        assert_eq!(plan(t("10:59:30"), end, &[5, 1]), (Some(1), None));
        assert_eq!(plan(t("11:00:00"), end, &[5, 1]), (None, None));
        assert_eq!(plan(t("10:30:00"), end, &[]), (None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn holders_are_warned_five_minutes_and_one_minute_before_their_session_ends() {
        let (_dir, clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (device, board) = app.board(&DeviceRef::Id("arm-1".into())).unwrap();
        let date = jiff::civil::date(2026, 11, 24);
        for (email, slots) in [("a@x.org", [10, 11]), ("b@x.org", [12, 12])] {
            app.register(email, "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
            let who = Principal { email: email.into(), role: Role::User, address: None };
            app.book(&who, &device, date, slots[0]).await.unwrap();
            if slots[1] != slots[0] {
                app.book(&who, &device, date, slots[1]).await.unwrap();
            }
        }
        let mut events = board.subscribe();
        let mut sockets = app.subscribe_warnings();
        let _scheduler = start(Arc::clone(&app));
        tokio::task::yield_now().await;

        // 10:55: a's session goes on in slot 11, so nothing is due.
        jump(&clock, "2026-11-24T10:55:00.010Z").await;
        assert!(events.try_recv().is_err(), "no warning before a session that goes on");
        // 11:55: five minutes before the end of a's two slots.
        jump(&clock, "2026-11-24T11:55:00.010Z").await;
        let end: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        assert_eq!(next_warning(&mut events).await, ("a@x.org".to_owned(), 5, end));
        let warning = sockets.recv().await.unwrap();
        assert_eq!((warning.device.as_str(), warning.email.as_str(), warning.minutes_left), ("arm-1", "a@x.org", 5));
        // Sent once, however often the scheduler looks.
        jump(&clock, "2026-11-24T11:56:00Z").await;
        assert!(sockets.try_recv().is_err());
        jump(&clock, "2026-11-24T11:59:00.010Z").await;
        assert_eq!(next_warning(&mut events).await, ("a@x.org".to_owned(), 1, end));
        // b's single slot 12.
        jump(&clock, "2026-11-24T12:55:00.010Z").await;
        let (email, minutes, _) = next_warning(&mut events).await;
        assert_eq!((email.as_str(), minutes), ("b@x.org", 5));
    }

    #[tokio::test]
    async fn cancelling_the_booking_in_progress_ends_the_session_at_once() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (device, board) = app.board(&DeviceRef::Number(0)).unwrap();
        let date = jiff::civil::date(2026, 11, 24);
        app.register("a@x.org", "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        let who = Principal { email: "a@x.org".into(), role: Role::User, address: None };
        app.book(&who, &device, date, 10).await.unwrap();
        app.book(&who, &device, date, 12).await.unwrap();
        let mut events = board.subscribe();
        // A later booking's cancellation ends nothing.
        app.cancel(&who, &device, date, 12).await.unwrap();
        assert!(events.try_recv().is_err());
        app.cancel(&who, &device, date, 10).await.unwrap();
        let (email, message) = next_session_end(&mut events).await;
        assert_eq!(email, "a@x.org");
        assert!(message.contains("slot 10 was cancelled"), "{message}");
    }
}
