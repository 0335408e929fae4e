//! Slot-boundary enforcement: when a slot ends, the session of its holder
//! ends on that device (consoles closed, upload aborted, board restored),
//! unless the same person also holds the next slot.
//!
//! One task watches the lab's calendar with the app's [`crate::clock::Clock`]:
//! it sleeps until the slot in progress ends (at most a minute at a time, so a
//! wall-clock jump or a changed `slot_minutes` is noticed), then compares the
//! holders of the slot that ended and the one that began, per board.
//! Cancelling the booking in progress ends its session at once (`App::cancel`).

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
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
    loop {
        let now = app.now();
        let until_end = current.as_ref().and_then(|slot| Duration::try_from(slot.end.duration_since(now)).ok());
        tokio::time::sleep(until_end.map_or(MAX_WAIT, |d| d.min(MAX_WAIT)) + SLACK).await;
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
            app.register(email, "password1", LOCALHOST).await.unwrap();
            let who = Principal { email: email.into(), role: Role::User };
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

    #[tokio::test]
    async fn cancelling_the_booking_in_progress_ends_the_session_at_once() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", ONE_BOARD);
        let (device, board) = app.board(&DeviceRef::Number(0)).unwrap();
        let date = jiff::civil::date(2026, 11, 24);
        app.register("a@x.org", "password1", LOCALHOST).await.unwrap();
        let who = Principal { email: "a@x.org".into(), role: Role::User };
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
