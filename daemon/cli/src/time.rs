//! Times as the lab keeps them: in the lab's zone (from `/health`), written
//! "Thu 3 Dec 14:00–15:00", with the zone named once per command rather
//! than an offset on every time.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use rerod_wire::HealthResponse;

use crate::api::Client;

/// The lab's zone and its name.
#[derive(Clone, Debug)]
pub struct LabClock {
    zone: TimeZone,
    name: String,
}

impl LabClock {
    /// The lab's zone as `/health` names it; this machine's when the lab's
    /// zone has no name or the server does not say.
    pub async fn fetch(client: &Client) -> LabClock {
        let named = match client.get::<HealthResponse>("/health", false).await {
            Ok(health) => health.lab.timezone,
            Err(_) => None,
        };
        LabClock::named(named.as_deref())
    }

    pub fn named(name: Option<&str>) -> LabClock {
        match name.and_then(|name| TimeZone::get(name).ok().map(|zone| (zone, name.to_owned()))) {
            Some((zone, name)) => LabClock { zone, name },
            None => {
                let zone = TimeZone::system();
                let name = zone.iana_name().unwrap_or("this computer's time zone").to_owned();
                LabClock { zone, name }
            }
        }
    }

    /// The zone's name, to say once: "Europe/Berlin".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// "Thu 3 Dec 14:00–15:00" for two RFC 3339 times; a span that ends at
    /// the next midnight ends at 24:00. Unreadable times are shown as sent.
    pub fn span(&self, start: &str, end: &str) -> String {
        let (Ok(start_at), Ok(end_at)) = (start.parse::<Timestamp>(), end.parse::<Timestamp>()) else {
            return format!("{start} to {end}");
        };
        let (start_at, end_at) =
            (start_at.to_zoned_datetime(self.zone.clone()), end_at.to_zoned_datetime(self.zone.clone()));
        let until = if end_at.date() > start_at.date() && end_at.time() == jiff::civil::Time::midnight() {
            "24:00".to_owned()
        } else {
            end_at.strftime("%H:%M").to_string()
        };
        format!("{} {}–{until}", start_at.strftime("%a %-d %b"), start_at.strftime("%H:%M"))
    }

    /// Minutes from now until `end` (RFC 3339), at least 0.
    pub fn minutes_left(&self, end: &str) -> Option<i64> {
        let end = end.parse::<Timestamp>().ok()?;
        Some(((end.as_second() - Timestamp::now().as_second()) / 60).max(0))
    }
}

/// "Thu 3 Dec" for a `YYYY-MM-DD` date; the text as sent when it is not one.
pub fn day(date: &str) -> String {
    date.parse::<Date>().map_or_else(|_| date.to_owned(), |d| d.strftime("%a %-d %b").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_local_and_say_24_00_for_a_midnight_end() {
        let berlin = LabClock::named(Some("Europe/Berlin"));
        assert_eq!(berlin.name(), "Europe/Berlin");
        assert_eq!(berlin.span("2026-12-03T13:00:00Z", "2026-12-03T14:00:00Z"), "Thu 3 Dec 14:00–15:00");
        assert_eq!(berlin.span("2026-12-02T23:00:00Z", "2026-12-03T23:00:00Z"), "Thu 3 Dec 00:00–24:00");
        assert_eq!(berlin.span("soon", "later"), "soon to later");
        assert_eq!(day("2026-12-03"), "Thu 3 Dec");
    }
}
