//! Booking rules: the lab calendar (which slots a day has, in the lab's time
//! zone) and the policy deciding what may be booked or cancelled when.
//!
//! Architecture invariant: this module is pure. Every function takes `now` as an
//! argument; nothing here does I/O, reads a clock, or knows the wire format.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;

/// The lab's calendar: one time zone, days cut into slots of equal civil length
/// aligned to midnight.
///
/// Slots follow civil time, so slot 9 is always the one starting at 09:00 (the
/// seed's clients rely on that). On the day clocks jump forward the slot whose
/// civil hour is skipped does not exist; on the day they fall back the slot
/// holding the repeated hour lasts that much longer.
#[derive(Clone, Debug)]
pub struct Calendar {
    tz: TimeZone,
    slot_minutes: u16,
}

/// One slot of one day, resolved to real instants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub date: Date,
    pub id: u16,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Civil start as shown to people, e.g. `09:00`.
    pub start_time: Time,
    /// Civil end; `00:00` for the last slot of the day.
    pub end_time: Time,
}

impl Slot {
    pub fn is_past(&self, now: Timestamp) -> bool {
        self.end <= now
    }

    pub fn is_in_progress(&self, now: Timestamp) -> bool {
        self.start <= now && now < self.end
    }
}

impl Calendar {
    /// `slot_minutes` must divide a day; the config compiler guarantees it.
    pub fn new(tz: TimeZone, slot_minutes: u16) -> Calendar {
        assert!(slot_minutes > 0 && 1440 % slot_minutes == 0, "slot length must divide a day");
        Calendar { tz, slot_minutes }
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    pub fn slot_minutes(&self) -> u16 {
        self.slot_minutes
    }

    /// Slot ids run from 0 to `n_slots_per_day() - 1` on an ordinary day.
    pub fn n_slots_per_day(&self) -> u16 {
        1440 / self.slot_minutes
    }

    pub fn today(&self, now: Timestamp) -> Date {
        self.tz.to_datetime(now).date()
    }

    /// The civil time at which slot `idx` of `date` begins; `idx == n` is the
    /// next midnight.
    fn civil_boundary(&self, date: Date, idx: u16) -> DateTime {
        let minutes = i64::from(idx) * i64::from(self.slot_minutes);
        let midnight = date.to_datetime(Time::midnight());
        midnight.checked_add(jiff::Span::new().minutes(minutes)).unwrap_or(midnight)
    }

    /// A civil boundary resolved to an instant: in a gap the later side, in a
    /// fold the earlier one, so the repeated hour belongs to the slot before.
    fn boundary(&self, date: Date, idx: u16) -> Timestamp {
        let civil = self.civil_boundary(date, idx);
        self.tz.to_ambiguous_timestamp(civil).compatible().unwrap_or(Timestamp::MAX)
    }

    /// Slot `id` of `date`, if it exists that day.
    pub fn slot(&self, date: Date, id: i64) -> Result<Slot, SlotLookupError> {
        let Some(id) = u16::try_from(id).ok().filter(|&id| id < self.n_slots_per_day()) else {
            return Err(SlotLookupError::NoSuchSlot);
        };
        let start = self.boundary(date, id);
        let end = self.boundary(date, id + 1);
        if start >= end {
            return Err(SlotLookupError::SkippedByClockChange);
        }
        Ok(Slot {
            date,
            id,
            start,
            end,
            start_time: self.civil_boundary(date, id).time(),
            end_time: self.civil_boundary(date, id + 1).time(),
        })
    }

    /// Every slot that exists on `date`, in order.
    pub fn slots(&self, date: Date) -> Vec<Slot> {
        (0..self.n_slots_per_day()).filter_map(|id| self.slot(date, i64::from(id)).ok()).collect()
    }

    /// The slot in progress at `now`.
    pub fn slot_at(&self, now: Timestamp) -> Option<Slot> {
        let date = self.today(now);
        // Around a fold the civil date's slots cover `now`; in the rare zone
        // whose midnight falls in a gap, the previous day's last slot may.
        [Some(date), date.yesterday().ok()]
            .into_iter()
            .flatten()
            .flat_map(|d| self.slots(d))
            .find(|slot| slot.is_in_progress(now))
    }
}

/// Why a slot id does not name a slot of a given day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLookupError {
    /// Outside `0..n_slots_per_day()`.
    NoSuchSlot,
    /// Its civil hour does not happen that day (clocks jump forward).
    SkippedByClockChange,
}

/// When a slot is closed for booking: a one-off window or a weekly one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maintenance {
    /// `None` blocks every device.
    pub device: Option<String>,
    pub when: MaintenanceWindow,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaintenanceWindow {
    Once {
        start: Timestamp,
        end: Timestamp,
    },
    /// Civil times on the given weekdays; `to` of `00:00` means midnight at the end of the day.
    Weekly {
        weekdays: Vec<Weekday>,
        from: Time,
        to: Time,
    },
}

impl Maintenance {
    fn blocks(&self, device: &str, slot: &Slot) -> bool {
        if self.device.as_deref().is_some_and(|d| d != device) {
            return false;
        }
        match &self.when {
            MaintenanceWindow::Once { start, end } => *start < slot.end && slot.start < *end,
            MaintenanceWindow::Weekly { weekdays, from, to } => {
                if !weekdays.contains(&slot.date.weekday()) {
                    return false;
                }
                let minutes = |t: Time, end_of_day: bool| {
                    let m = i32::from(t.hour()) * 60 + i32::from(t.minute());
                    if end_of_day && m == 0 { 1440 } else { m }
                };
                let (slot_from, slot_to) = (minutes(slot.start_time, false), minutes(slot.end_time, true));
                let (win_from, win_to) = (minutes(*from, false), minutes(*to, true));
                win_from < slot_to && slot_from < win_to
            }
        }
    }
}

/// The lab's booking policy, compiled from config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How many days after today may be booked (today is day 0).
    pub days_ahead: u32,
    /// Bookings not yet ended that one user may hold, over all devices.
    pub max_active_bookings: Option<u32>,
    /// Bookings one user may hold on one date, over all devices.
    pub max_bookings_per_day: Option<u32>,
    pub maintenance: Vec<Maintenance>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { days_ahead: 7, max_active_bookings: None, max_bookings_per_day: None, maintenance: Vec::new() }
    }
}

/// A booking rule a request broke. Each is the user's to fix, not a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BookingError {
    NoSuchSlot { id: i64, date: Date },
    SkippedByClockChange { id: u16, date: Date },
    Past { id: u16 },
    TooFarAhead { date: Date, last: Date },
    Blocked { id: u16, reason: String },
    Taken { id: u16 },
    ActiveLimit { max: u32 },
    DailyLimit { max: u32, date: Date },
    NotBooked { id: i64 },
}

impl fmt::Display for BookingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BookingError::NoSuchSlot { id, date } => write!(f, "Slot {id} does not exist on {date}"),
            BookingError::SkippedByClockChange { id, date } => {
                write!(f, "Slot {id} does not exist on {date}: the clocks skip that time (daylight saving change)")
            }
            BookingError::Past { id } => write!(f, "Slot {id} is in the past"),
            BookingError::TooFarAhead { date, last } => {
                write!(f, "{date} is too far ahead: bookings are open up to {last}")
            }
            BookingError::Blocked { id, reason } => write!(f, "Slot {id} is blocked: {reason}"),
            BookingError::Taken { id } => write!(f, "Slot {id} is not available"),
            BookingError::ActiveLimit { max } => {
                write!(f, "Booking limit reached: at most {max} upcoming bookings per user")
            }
            BookingError::DailyLimit { max, date } => {
                write!(f, "Booking limit reached: at most {max} bookings per user on {date}")
            }
            BookingError::NotBooked { id } => write!(f, "Slot {id} was not booked by you or does not exist"),
        }
    }
}

impl std::error::Error for BookingError {}

/// Looks up a slot for booking or cancelling, mapping lookup failures to rules.
fn lookup(calendar: &Calendar, date: Date, id: i64) -> Result<Slot, BookingError> {
    calendar.slot(date, id).map_err(|e| match e {
        SlotLookupError::NoSuchSlot => BookingError::NoSuchSlot { id, date },
        // `slot` only reports a skip for an id that fits in u16.
        SlotLookupError::SkippedByClockChange => {
            BookingError::SkippedByClockChange { id: u16::try_from(id).unwrap_or(u16::MAX), date }
        }
    })
}

/// The last date bookings are open for.
pub fn last_bookable_date(calendar: &Calendar, policy: &Policy, now: Timestamp) -> Date {
    let today = calendar.today(now);
    today.checked_add(jiff::Span::new().days(i64::from(policy.days_ahead))).unwrap_or(today)
}

/// The reason `slot` on `device` is closed, if a maintenance window covers it.
pub fn blocked_reason<'p>(policy: &'p Policy, device: &str, slot: &Slot) -> Option<&'p str> {
    policy.maintenance.iter().find(|m| m.blocks(device, slot)).map(|m| m.reason.as_str())
}

/// Checks everything about booking slot `id` of `date` on `device` that does
/// not depend on other bookings. The store checks availability and the
/// per-user caps atomically with the write (see [`check_caps`]).
pub fn check_bookable(
    calendar: &Calendar,
    policy: &Policy,
    device: &str,
    now: Timestamp,
    date: Date,
    id: i64,
) -> Result<Slot, BookingError> {
    let slot = lookup(calendar, date, id)?;
    if slot.is_past(now) {
        return Err(BookingError::Past { id: slot.id });
    }
    let last = last_bookable_date(calendar, policy, now);
    if date > last {
        return Err(BookingError::TooFarAhead { date, last });
    }
    if let Some(reason) = blocked_reason(policy, device, &slot) {
        return Err(BookingError::Blocked { id: slot.id, reason: reason.to_owned() });
    }
    Ok(slot)
}

/// Checks the per-user caps against the bookings the user already holds
/// (`existing`: date and slot id of each, over all devices), for a new booking on `date`.
pub fn check_caps(
    calendar: &Calendar,
    policy: &Policy,
    now: Timestamp,
    existing: &[(Date, u16)],
    date: Date,
) -> Result<(), BookingError> {
    if let Some(max) = policy.max_active_bookings {
        let n_active = existing
            .iter()
            .filter(|(d, id)| calendar.slot(*d, i64::from(*id)).is_ok_and(|slot| !slot.is_past(now)))
            .count();
        if n_active >= max as usize {
            return Err(BookingError::ActiveLimit { max });
        }
    }
    if let Some(max) = policy.max_bookings_per_day {
        let n_that_day = existing.iter().filter(|(d, _)| *d == date).count();
        if n_that_day >= max as usize {
            return Err(BookingError::DailyLimit { max, date });
        }
    }
    Ok(())
}

/// Checks that slot `id` of `date` may still be cancelled: it has not ended.
pub fn check_cancellable(calendar: &Calendar, now: Timestamp, date: Date, id: i64) -> Result<Slot, BookingError> {
    let slot = lookup(calendar, date, id)?;
    if slot.is_past(now) {
        return Err(BookingError::Past { id: slot.id });
    }
    Ok(slot)
}

/// How a slot looks to one viewer. Its words on the wire are
/// `wire::SlotStatus`'s: the domain knows no wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotStatus {
    Available,
    Booked,
    Mine,
    Past,
    Blocked,
}

/// The status of `slot`, given who (if anyone) booked it and who is looking.
/// A booking outranks the clock: the viewer's own past booking stays `mine`.
pub fn slot_status(
    policy: &Policy,
    device: &str,
    now: Timestamp,
    slot: &Slot,
    booked_by: Option<&str>,
    viewer: Option<&str>,
) -> SlotStatus {
    match booked_by {
        Some(owner) if viewer == Some(owner) => SlotStatus::Mine,
        Some(_) => SlotStatus::Booked,
        None if slot.is_past(now) => SlotStatus::Past,
        None if blocked_reason(policy, device, slot).is_some() => SlotStatus::Blocked,
        None => SlotStatus::Available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time};

    fn berlin() -> Calendar {
        Calendar::new(TimeZone::get("Europe/Berlin").unwrap(), 60)
    }

    fn at(cal: &Calendar, d: Date, h: i8, m: i8) -> Timestamp {
        cal.time_zone().to_timestamp(d.at(h, m, 0, 0)).unwrap()
    }

    #[test]
    fn an_ordinary_day_has_24_hourly_slots_named_by_their_hour() {
        let cal = berlin();
        let slots = cal.slots(date(2026, 11, 24));
        assert_eq!(slots.len(), 24);
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(slot.id as usize, i);
            assert_eq!(slot.start_time, time(i as i8, 0, 0, 0));
            assert_eq!(slot.end.duration_since(slot.start).as_secs(), 3600);
        }
        assert_eq!(slots[23].end_time, Time::midnight());
        assert_eq!(slots[23].end, cal.slots(date(2026, 11, 25))[0].start);
    }

    #[test]
    fn spring_forward_day_has_23_slots_and_the_skipped_hour_is_not_bookable() {
        let cal = berlin();
        let day = date(2026, 3, 29);
        let slots = cal.slots(day);
        assert_eq!(slots.len(), 23);
        assert!(slots.iter().all(|s| s.id != 2));
        assert_eq!(cal.slot(day, 2), Err(SlotLookupError::SkippedByClockChange));
        let total: i64 = slots.iter().map(|s| s.end.duration_since(s.start).as_secs()).sum();
        assert_eq!(total, 23 * 3600);
        let now = at(&cal, date(2026, 3, 28), 12, 0);
        assert_eq!(
            check_bookable(&cal, &Policy::default(), "d", now, day, 2),
            Err(BookingError::SkippedByClockChange { id: 2, date: day })
        );
        // Slot 3 starts at 03:00 CEST, directly after slot 1.
        assert_eq!(cal.slot(day, 1).unwrap().end, cal.slot(day, 3).unwrap().start);
    }

    #[test]
    fn fall_back_day_lasts_25_hours_and_the_repeated_hour_stays_in_one_slot() {
        let cal = berlin();
        let day = date(2026, 10, 25);
        let slots = cal.slots(day);
        assert_eq!(slots.len(), 24);
        let total: i64 = slots.iter().map(|s| s.end.duration_since(s.start).as_secs()).sum();
        assert_eq!(total, 25 * 3600);
        let long = cal.slot(day, 2).unwrap();
        assert_eq!(long.end.duration_since(long.start).as_secs(), 2 * 3600);
        assert_eq!((long.start_time, long.end_time), (time(2, 0, 0, 0), time(3, 0, 0, 0)));
        // Both 02:30s belong to slot 2.
        let first = long.start.checked_add(jiff::SignedDuration::from_mins(30)).unwrap();
        let second = first.checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
        assert_eq!(cal.slot_at(first).unwrap().id, 2);
        assert_eq!(cal.slot_at(second).unwrap().id, 2);
    }

    #[test]
    fn slot_ids_outside_the_day_do_not_exist() {
        let cal = berlin();
        let day = date(2026, 11, 24);
        for id in [-1, 24, 65536, i64::MAX] {
            assert_eq!(cal.slot(day, id), Err(SlotLookupError::NoSuchSlot), "id {id}");
        }
    }

    #[test]
    fn half_hour_slots_are_48_and_align_to_midnight() {
        let cal = Calendar::new(TimeZone::UTC, 30);
        let slots = cal.slots(date(2026, 11, 24));
        assert_eq!(slots.len(), 48);
        assert_eq!(slots[3].start_time, time(1, 30, 0, 0));
    }

    #[test]
    fn past_slots_are_refused_and_the_slot_in_progress_is_bookable() {
        let cal = berlin();
        let day = date(2026, 11, 24);
        let now = at(&cal, day, 10, 59);
        let policy = Policy::default();
        assert_eq!(check_bookable(&cal, &policy, "d", now, day, 9), Err(BookingError::Past { id: 9 }));
        assert_eq!(check_bookable(&cal, &policy, "d", now, day, 10).unwrap().id, 10);
        assert!(check_bookable(&cal, &policy, "d", now, day, 11).is_ok());
        let yesterday = date(2026, 11, 23);
        assert_eq!(check_bookable(&cal, &policy, "d", now, yesterday, 23), Err(BookingError::Past { id: 23 }));
        // Cancelling follows the same clock: an ended slot stays booked.
        assert_eq!(check_cancellable(&cal, now, day, 9), Err(BookingError::Past { id: 9 }));
        assert!(check_cancellable(&cal, now, day, 10).is_ok());
    }

    #[test]
    fn the_booking_horizon_is_days_ahead_from_today_in_the_lab_zone() {
        let cal = berlin();
        // 23:30 UTC on the 24th is already the 25th in Berlin.
        let now: Timestamp = "2026-11-24T23:30:00Z".parse().unwrap();
        assert_eq!(cal.today(now), date(2026, 11, 25));
        let policy = Policy { days_ahead: 2, ..Policy::default() };
        assert!(check_bookable(&cal, &policy, "d", now, date(2026, 11, 27), 0).is_ok());
        assert_eq!(
            check_bookable(&cal, &policy, "d", now, date(2026, 11, 28), 0),
            Err(BookingError::TooFarAhead { date: date(2026, 11, 28), last: date(2026, 11, 27) })
        );
    }

    #[test]
    fn caps_count_active_bookings_and_bookings_per_day() {
        let cal = berlin();
        let day = date(2026, 11, 24);
        let now = at(&cal, day, 12, 0);
        let policy = Policy { max_active_bookings: Some(2), max_bookings_per_day: Some(2), ..Policy::default() };
        // An ended booking does not count towards the active cap.
        let existing = [(day, 8), (day, 13)];
        assert!(check_caps(&cal, &policy, now, &existing, date(2026, 11, 25)).is_ok());
        // ...but it does count towards the day's.
        assert_eq!(check_caps(&cal, &policy, now, &existing, day), Err(BookingError::DailyLimit { max: 2, date: day }));
        let existing = [(day, 13), (date(2026, 11, 25), 9)];
        assert_eq!(
            check_caps(&cal, &policy, now, &existing, date(2026, 11, 26)),
            Err(BookingError::ActiveLimit { max: 2 })
        );
        assert!(check_caps(&cal, &Policy::default(), now, &existing, day).is_ok());
    }

    #[test]
    fn maintenance_windows_block_overlapping_slots_on_their_device() {
        let cal = berlin();
        let day = date(2026, 11, 24); // a Tuesday
        let now = at(&cal, day, 0, 30);
        let policy = Policy {
            maintenance: vec![
                Maintenance {
                    device: Some("arm-1".into()),
                    when: MaintenanceWindow::Once { start: at(&cal, day, 9, 30), end: at(&cal, day, 11, 0) },
                    reason: "motor swap".into(),
                },
                Maintenance {
                    device: None,
                    when: MaintenanceWindow::Weekly {
                        weekdays: vec![Weekday::Tuesday],
                        from: time(22, 0, 0, 0),
                        to: Time::midnight(),
                    },
                    reason: "weekly cleaning".into(),
                },
            ],
            ..Policy::default()
        };
        let blocked = |device: &str, id| check_bookable(&cal, &policy, device, now, day, id).err();
        assert_eq!(blocked("arm-1", 9), Some(BookingError::Blocked { id: 9, reason: "motor swap".into() }));
        assert!(matches!(blocked("arm-1", 10), Some(BookingError::Blocked { id: 10, .. })));
        assert_eq!(blocked("arm-1", 11), None);
        assert_eq!(blocked("arm-2", 9), None);
        assert_eq!(blocked("arm-2", 21), None);
        assert!(matches!(blocked("arm-2", 22), Some(BookingError::Blocked { id: 22, .. })));
        assert!(matches!(blocked("arm-2", 23), Some(BookingError::Blocked { id: 23, .. })));
        let wednesday = date(2026, 11, 25);
        assert!(check_bookable(&cal, &policy, "arm-2", now, wednesday, 23).is_ok());
    }

    #[test]
    fn status_tells_a_viewer_their_own_booking_apart() {
        let cal = berlin();
        let day = date(2026, 11, 24);
        let now = at(&cal, day, 12, 0);
        let policy = Policy::default();
        let slot = cal.slot(day, 14).unwrap();
        let status = |by, viewer| slot_status(&policy, "d", now, &slot, by, viewer);
        assert_eq!(status(None, None), SlotStatus::Available);
        assert_eq!(status(Some("a@x"), Some("a@x")), SlotStatus::Mine);
        assert_eq!(status(Some("a@x"), Some("b@x")), SlotStatus::Booked);
        assert_eq!(status(Some("a@x"), None), SlotStatus::Booked);
        let past = cal.slot(day, 3).unwrap();
        assert_eq!(slot_status(&policy, "d", now, &past, None, None), SlotStatus::Past);
    }

    #[test]
    fn current_slot_is_found_for_any_instant() {
        let cal = berlin();
        let day = date(2026, 11, 24);
        assert_eq!(cal.slot_at(at(&cal, day, 0, 0)).unwrap().id, 0);
        assert_eq!(cal.slot_at(at(&cal, day, 23, 59)).unwrap().id, 23);
        assert_eq!(cal.slot_at(at(&cal, day, 9, 15)).unwrap().id, 9);
    }
}
