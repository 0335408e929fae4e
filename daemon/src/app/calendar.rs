//! The lab's calendars: the devices, a device's day as a viewer sees it (and
//! its cached anonymous rendering), booking and cancelling, and a user's
//! bookings.

use jiff::Timestamp;
use jiff::civil::Date;

use std::sync::atomic::Ordering;

use super::{App, AppError, CachedView, DEFAULT_DEVICE_ID, DeviceInfo, DeviceRef, MAX_CACHED_VIEWS, Principal, Role};
use crate::booking::{self, BookingError, Slot, SlotStatus};
use crate::config::{Config, Privacy};
use crate::metrics::BookingAction;
use crate::store::{self, BookError, Booking, CancelError, SlotKey};

/// The current-or-next booking of a user.
#[derive(Clone, Debug)]
pub struct NextBooking {
    pub booking: Booking,
    pub slot: Slot,
    pub is_current: bool,
}

/// One slot of a listing, as one viewer sees it.
#[derive(Clone, Debug)]
pub struct SlotEntry {
    pub slot: Slot,
    pub booking: Option<Booking>,
    pub status: SlotStatus,
}

/// A device's day, as one viewer sees it.
#[derive(Clone, Debug)]
pub struct DaySlots {
    pub device: DeviceInfo,
    pub date: Date,
    pub entries: Vec<SlotEntry>,
}

impl DaySlots {
    pub fn available_ids(&self) -> Vec<u16> {
        self.entries.iter().filter(|e| e.status == SlotStatus::Available).map(|e| e.slot.id).collect()
    }

    pub fn booked_ids(&self) -> Vec<u16> {
        self.entries.iter().filter(|e| e.booking.is_some()).map(|e| e.slot.id).collect()
    }
}

impl App {
    /// The devices in config order, or the default calendar when none is configured.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let config = self.config();
        match &config.cluster {
            None => devices_of(&config),
            Some(cluster) => match self.lab_devices(config.arc(), &cluster.name) {
                lab if lab.is_empty() => vec![default_device()],
                lab => lab.to_vec(),
            },
        }
    }

    /// Resolves a device reference; `None` means the first device. Only the
    /// device found is copied out of the config (this runs on every `GET /slots`).
    pub fn device(&self, reference: Option<&DeviceRef>) -> Result<DeviceInfo, AppError> {
        let config = self.config();
        let wanted = |number: usize, id: &str| match reference {
            None => number == 0,
            Some(DeviceRef::Number(n)) => usize::try_from(*n).is_ok_and(|n| n == number),
            Some(DeviceRef::Id(want)) => want == id,
        };
        let found = match (&config.cluster, config.devices.is_empty()) {
            // A lab of several hosts: its boards are every host's.
            (Some(cluster), _) => match self.lab_devices(config.arc(), &cluster.name) {
                lab if lab.is_empty() => wanted(0, DEFAULT_DEVICE_ID).then(default_device),
                lab => lab.iter().find(|d| wanted(d.number, &d.id)).cloned(),
            },
            (None, true) => wanted(0, DEFAULT_DEVICE_ID).then(default_device),
            (None, false) => {
                config.devices.iter().enumerate().find(|(n, d)| wanted(*n, &d.id)).map(|(n, d)| device_info(n, d))
            }
        };
        found.ok_or_else(|| {
            AppError::UnknownDevice(match reference {
                Some(DeviceRef::Number(n)) => n.to_string(),
                Some(DeviceRef::Id(id)) => format!("{id:?}"),
                None => "(none configured)".to_owned(),
            })
        })
    }

    pub fn today(&self) -> Date {
        self.config().lab.calendar.today(self.now())
    }

    /// A device's slots on `date` as `viewer` sees them.
    pub fn day_slots(&self, device: DeviceInfo, date: Date, viewer: Option<&str>) -> Result<DaySlots, AppError> {
        let config = self.config();
        let now = self.now();
        let mut bookings = self.store.bookings_on(&device.id, date)?.into_iter().peekable();
        let mut entries = Vec::new();
        for slot in config.lab.calendar.slots(date) {
            while bookings.peek().is_some_and(|b| b.key.slot < slot.id) {
                bookings.next();
            }
            let booking = bookings.next_if(|b| b.key.slot == slot.id);
            let booked_by = booking.as_ref().map(|b| b.email.as_str());
            let status = booking::slot_status(&config.lab.policy, &device.id, now, &slot, booked_by, viewer);
            entries.push(SlotEntry { slot, booking, status });
        }
        Ok(DaySlots { device, date, entries })
    }

    /// The anonymous view of a device's day, rendered by `render` and cached
    /// until a booking changes, the config changes, or a slot ends.
    pub fn day_view_cached(
        &self,
        device: DeviceInfo,
        date: Date,
        render: impl FnOnce(&DaySlots) -> bytes::Bytes,
    ) -> Result<bytes::Bytes, AppError> {
        // Read the generation before the store: a change committed meanwhile
        // bumps it afterwards, so a view that might miss it is never served.
        let bookings_generation = self.bookings_generation.load(Ordering::Acquire);
        let config_generation = self.config_generation();
        let now = self.now();
        let key = (device.id.clone(), date);
        let lock = || self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(view) = lock().get(&key)
            && view.bookings_generation == bookings_generation
            && view.config_generation == config_generation
            && now < view.valid_until
        {
            return Ok(view.bytes.clone());
        }
        let day = self.day_slots(device, date, None)?;
        let bytes = render(&day);
        let valid_until =
            day.entries.iter().map(|e| e.slot.end).filter(|end| *end > now).min().unwrap_or(Timestamp::MAX);
        let mut views = lock();
        if views.len() >= MAX_CACHED_VIEWS {
            views.clear();
        }
        views.insert(key, CachedView { bookings_generation, config_generation, valid_until, bytes: bytes.clone() });
        Ok(bytes)
    }

    /// Whether `viewer` may see who booked `booking`, under the lab's privacy setting.
    pub fn shows_booker(&self, booking: &Booking, viewer: Option<&str>) -> bool {
        match self.config().lab.privacy {
            Privacy::ShowEmails => true,
            Privacy::HideOthers => viewer == Some(booking.email.as_str()),
        }
    }

    /// Books a slot for `who`.
    pub async fn book(
        &self,
        who: &Principal,
        device: &DeviceInfo,
        date: Date,
        slot_id: i64,
    ) -> Result<(Booking, Slot), AppError> {
        let config = self.config();
        let now = self.now();
        let calendar = config.lab.calendar.clone();
        let slot = booking::check_bookable(&calendar, &config.lab.policy, &device.id, now, date, slot_id)
            .map_err(AppError::Booking)?;
        self.check_takes_bookings(device)?;
        let key = SlotKey { device: device.id.clone(), date, slot: slot.id };
        // Admins are not held to the per-user caps.
        let policy = config.lab.policy.clone();
        let is_admin = who.role == Role::Admin;
        let admit: store::Admit =
            Box::new(
                move |existing| {
                    if is_admin { Ok(()) } else { booking::check_caps(&calendar, &policy, now, existing, date) }
                },
            );
        match self.store.book(key, who.email.clone(), now, admit).await {
            Ok(booking) => {
                tracing::info!(email = %who.email, device = %device.id, %date, slot = slot.id, "slot booked");
                self.metrics.record_booking(BookingAction::Book);
                self.changed(&booking.key);
                Ok((booking, slot))
            }
            Err(BookError::Rule(rule)) => Err(AppError::Booking(rule)),
            Err(BookError::AccountDisabled) => Err(AppError::AccountDisabled),
            Err(BookError::Store(e)) => Err(e.into()),
        }
    }

    /// Cancels a booking: one's own, or any for an admin.
    pub async fn cancel(
        &self,
        who: &Principal,
        device: &DeviceInfo,
        date: Date,
        slot_id: i64,
    ) -> Result<Booking, AppError> {
        let config = self.config();
        let slot = booking::check_cancellable(&config.lab.calendar, self.now(), date, slot_id).map_err(|e| match e {
            BookingError::Past { .. } => e,
            _ => BookingError::NotBooked { id: slot_id },
        });
        let slot = slot.map_err(AppError::Booking)?;
        let key = SlotKey { device: device.id.clone(), date, slot: slot.id };
        let requester = (who.role != Role::Admin).then(|| who.email.clone());
        match self.store.cancel(key, requester).await {
            Ok(booking) => {
                if booking.email != who.email {
                    tracing::info!(admin = %who.email, owner = %booking.email, device = %device.id, %date, slot = slot.id, "booking cancelled by admin");
                    let detail = format!("slot {} on {date}", slot.id);
                    self.audit(who, &device.id, "booking_cancelled", Some(&booking.email), detail).await;
                } else {
                    tracing::info!(email = %who.email, device = %device.id, %date, slot = slot.id, "booking cancelled");
                }
                self.metrics.record_booking(BookingAction::Cancel);
                self.changed(&booking.key);
                if slot.is_in_progress(self.now()) {
                    // Cancelling the slot in progress ends its session at once.
                    let message = format!("the booking of slot {} was cancelled", slot.id);
                    self.devices.end_session(&device.id, &booking.email, message);
                }
                Ok(booking)
            }
            Err(CancelError::NotBooked) => Err(AppError::Booking(BookingError::NotBooked { id: slot_id })),
            Err(CancelError::Store(e)) => Err(e.into()),
        }
    }

    /// A user's bookings with their slots, in time order; ended ones only with `history`.
    pub fn bookings_of(&self, email: &str, history: bool) -> Result<Vec<(Booking, Slot)>, AppError> {
        let config = self.config();
        let now = self.now();
        let mut out: Vec<(Booking, Slot)> = self
            .store
            .bookings_of(email)?
            .into_iter()
            .filter_map(|b| {
                let slot = config.lab.calendar.slot(b.key.date, i64::from(b.key.slot)).ok()?;
                Some((b, slot))
            })
            .filter(|(_, slot)| history || !slot.is_past(now))
            .collect();
        out.sort_by(|(a, sa), (b, sb)| sa.start.cmp(&sb.start).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    /// The booking in progress, or else the next one.
    pub fn next_booking(&self, email: &str) -> Result<Option<NextBooking>, AppError> {
        let now = self.now();
        Ok(self.bookings_of(email, false)?.into_iter().next().map(|(booking, slot)| NextBooking {
            is_current: slot.is_in_progress(now),
            booking,
            slot,
        }))
    }
}

/// The devices a config declares, or the one default calendar.
fn devices_of(config: &Config) -> Vec<DeviceInfo> {
    if config.devices.is_empty() {
        return vec![default_device()];
    }
    config.devices.iter().enumerate().map(|(number, d)| device_info(number, d)).collect()
}

/// The calendar of a lab that declares no devices.
fn default_device() -> DeviceInfo {
    DeviceInfo {
        number: 0,
        id: DEFAULT_DEVICE_ID.to_owned(),
        name: "Default calendar".to_owned(),
        model: String::new(),
        plugin: String::new(),
        port: None,
        baud: 0,
        host: None,
        remote: None,
    }
}

/// The config's `number`th device.
pub(super) fn device_info(number: usize, d: &crate::config::DeviceConfig) -> DeviceInfo {
    DeviceInfo {
        number,
        id: d.id.clone(),
        name: d.name.clone(),
        model: d.model.clone(),
        plugin: d.plugin.clone(),
        port: d.port.as_ref().map(|p| p.display().to_string()),
        baud: d.baud,
        host: None,
        remote: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::app::testing::LOCALHOST;
    use crate::clock::ManualClock;
    use crate::config::Env;
    use crate::metrics::Metrics;

    fn app_at(now: &str) -> (tempfile::TempDir, Arc<ManualClock>, App) {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([("BCRYPT_ROUNDS", "4")]);
        let mut config = Config::from_toml("[lab]\ntimezone = \"UTC\"\n", &env).unwrap();
        config.store.path = dir.path().join("rerod.redb");
        config.records.path = dir.path().join("records");
        let clock = Arc::new(ManualClock::new(now.parse().unwrap()));
        let app = App::new(config, clock.clone(), Metrics::new()).unwrap();
        (dir, clock, app)
    }

    fn statuses(bytes: &bytes::Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn cached_views_follow_bookings_and_the_clock() {
        let (_dir, clock, app) = app_at("2026-11-24T10:30:00Z");
        let render = |day: &DaySlots| {
            // The variants' names; the wire's words are `wire::SlotStatus`'s business.
            let s: Vec<String> = day.entries.iter().map(|e| format!("{:?}", e.status).to_lowercase()).collect();
            bytes::Bytes::from(s.join(","))
        };
        let date = jiff::civil::date(2026, 11, 24);
        let device = app.device(None).unwrap();
        let view = app.day_view_cached(device.clone(), date, render).unwrap();
        assert!(statuses(&view).starts_with(&format!("{}available,available", "past,".repeat(10))));

        // A booking shows at once.
        app.register("a@x.org", "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        let who = Principal { email: "a@x.org".into(), role: Role::User, address: None };
        app.book(&who, &device, date, 11).await.unwrap();
        let view = app.day_view_cached(device.clone(), date, render).unwrap();
        assert!(statuses(&view).starts_with(&format!("{}available,booked", "past,".repeat(10))));

        // When slot 10 ends it turns past, without any booking change.
        clock.set("2026-11-24T11:00:00Z".parse().unwrap());
        let view = app.day_view_cached(device, date, render).unwrap();
        assert!(statuses(&view).starts_with(&format!("{}booked", "past,".repeat(11))));
    }
}
