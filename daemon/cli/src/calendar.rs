//! The calendar commands: `boards`, `slots`, `book`, `cancel`, `bookings`
//! and `watch`.

use std::io::{IsTerminal as _, Write as _};

use crossterm::style::Color;
use futures_util::{SinkExt as _, StreamExt as _};
use jiff::Timestamp;
use jiff::civil::Date;
use rerod_wire::{
    BodyCredentials, BookSlotResponse, BookingClientMessage, BookingServerMessage, CancelSlotResponse, DeviceRef,
    DevicesResponse, GetSlots, MyBookingsResponse, SlotJson, SlotRequest, SlotStatus, SlotsJson, UserSlotResponse,
};
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Client, Error, print_json, query_value};
use crate::table::{Cell, render, stdout_is_colored};
use crate::time::{LabClock, day as day_name};

/// Which day of which board.
#[derive(Debug, Default)]
pub struct Day {
    pub date: Option<Date>,
    pub board: Option<String>,
}

impl Day {
    fn slots_path(&self) -> String {
        let mut query = Vec::new();
        if let Some(date) = self.date {
            query.push(format!("date={date}"));
        }
        if let Some(board) = &self.board {
            query.push(format!("device={}", query_value(board)));
        }
        if query.is_empty() { "/slots".to_owned() } else { format!("/slots?{}", query.join("&")) }
    }
}

/// `rero boards`.
pub async fn boards(client: &Client, json: bool) -> Result<(), Error> {
    let answer: DevicesResponse = client.get("/devices", false).await?;
    if json {
        return print_json(&answer);
    }
    if answer.devices.is_empty() {
        println!("This lab has no boards configured (only its default calendar).");
        return Ok(());
    }
    let color = stdout_is_colored();
    let rows: Vec<Vec<Cell>> = answer
        .devices
        .iter()
        .map(|d| {
            vec![
                Cell::plain(d.number.to_string()),
                Cell::plain(&d.id),
                Cell::plain(&d.name),
                Cell::plain(&d.model),
                if d.online { Cell::colored("online", Color::Green) } else { Cell::colored("offline", Color::Red) },
                Cell::plain(if d.in_use { "in use" } else { "free" }),
            ]
        })
        .collect();
    print!("{}", render(&["#", "ID", "NAME", "MODEL", "STATUS", "NOW"], &rows, color));
    Ok(())
}

/// `rero slots`.
pub async fn slots(client: &Client, day: &Day, json: bool) -> Result<(), Error> {
    let listing: SlotsJson = client.get(&day.slots_path(), client.has_token()).await?;
    if json {
        return print_json(&listing);
    }
    let clock = LabClock::fetch(client).await;
    print!("{}", slots_table(&listing, clock.name(), Timestamp::now(), stdout_is_colored()));
    Ok(())
}

/// A day's slots: yours say "yours", the one in progress "now".
fn slots_table(listing: &SlotsJson, zone: &str, now: Timestamp, color: bool) -> String {
    let rows: Vec<Vec<Cell>> = listing
        .slots
        .iter()
        .map(|s| {
            let state = match s.status {
                SlotStatus::Available => Cell::colored("available", Color::Green),
                SlotStatus::Mine => Cell::colored("yours", Color::Cyan).bold(),
                SlotStatus::Booked => Cell::colored("booked", Color::Yellow),
                SlotStatus::Past => Cell::colored("past", Color::DarkGrey),
                SlotStatus::Blocked => Cell::colored("blocked", Color::Magenta),
            };
            let when = if in_progress(s, now) { Cell::plain("now").bold() } else { Cell::plain("") };
            vec![
                Cell::plain(s.id.to_string()),
                Cell::plain(format!("{}-{}", s.start_time, s.end_time)),
                when,
                state,
                Cell::plain(s.booked_by.clone().unwrap_or_default()),
            ]
        })
        .collect();
    let title = format!(
        "{} on {} (times in {zone}): {} available\n",
        listing.device,
        day_name(&listing.date),
        listing.available_slots.len()
    );
    title + &render(&["SLOT", "TIME", "", "STATE", "HOLDER"], &rows, color)
}

/// The slot `slot` names on `day`: a number as it is; `HH:MM` or `now` looked
/// up in that day's `/slots`, whose date and board the request then names,
/// so the lookup and the booking agree.
async fn slot_request(client: &Client, slot: &str, day: &Day, booking: bool) -> Result<SlotRequest, Error> {
    if let Ok(slot_id) = slot.parse::<i64>() {
        return Ok(SlotRequest {
            slot_id,
            date: day.date,
            device: day.board.as_deref().map(DeviceRef::parse),
            credentials: BodyCredentials::default(),
        });
    }
    let listing: SlotsJson = client.get(&day.slots_path(), client.has_token()).await?;
    let found = if slot == "now" {
        let now = Timestamp::now();
        listing.slots.iter().find(|s| in_progress(s, now))
    } else {
        let time = hh_mm(slot).ok_or_else(|| {
            Error::message(format!("{slot:?} is not a slot: give its number, its start time (HH:MM) or `now`"))
        })?;
        listing.slots.iter().find(|s| s.start_time == time)
    };
    let Some(found) = found else {
        let starts: Vec<&str> = listing.slots.iter().map(|s| s.start_time.as_str()).collect();
        return Err(Error::message(format!(
            "no slot {} on {} for {} (slots start at {})",
            if slot == "now" { "is in progress".to_owned() } else { format!("starts at {slot}") },
            listing.date,
            listing.device,
            starts.join(", ")
        )));
    };
    if booking && found.status == SlotStatus::Mine {
        let which = if slot == "now" { "The slot in progress" } else { "That slot" };
        return Err(Error::message(format!(
            "{which} on {} ({} {}-{}) is already yours: use it with `rero upload FILE` and `rero console`",
            listing.device,
            day_name(&listing.date),
            found.start_time,
            found.end_time
        )));
    }
    let date = listing.date.parse().map_err(|e| Error::message(format!("the server sent a bad date: {e}")))?;
    Ok(SlotRequest {
        slot_id: i64::from(found.id),
        date: Some(date),
        device: Some(DeviceRef::Id(listing.device.clone())),
        credentials: BodyCredentials::default(),
    })
}

fn in_progress(slot: &SlotJson, now: Timestamp) -> bool {
    let start = slot.start.parse::<Timestamp>();
    let end = slot.end.parse::<Timestamp>();
    matches!((start, end), (Ok(start), Ok(end)) if start <= now && now < end)
}

/// `9:00` or `09:00` as the server writes slot times, `09:00`.
fn hh_mm(text: &str) -> Option<String> {
    let (h, m) = text.split_once(':')?;
    let (h, m) = (h.parse::<u8>().ok()?, m.parse::<u8>().ok()?);
    (h < 24 && m < 60 && text.len() <= 5).then(|| format!("{h:02}:{m:02}"))
}

/// `rero book`.
pub async fn book(client: &Client, slot: &str, day: &Day, json: bool) -> Result<(), Error> {
    client.token()?;
    let request = slot_request(client, slot, day, true).await?;
    let answer: BookSlotResponse = client.post("/book-slot", &request, true).await?;
    if json {
        return print_json(&answer);
    }
    let clock = LabClock::fetch(client).await;
    println!(
        "Booked {}, slot {}: {} ({}).",
        answer.device,
        answer.slot_id,
        clock.span(&answer.start, &answer.end),
        clock.name()
    );
    Ok(())
}

/// `rero cancel`.
pub async fn cancel(client: &Client, slot: &str, day: &Day, json: bool) -> Result<(), Error> {
    client.token()?;
    let request = slot_request(client, slot, day, false).await?;
    let answer: CancelSlotResponse = client.post("/cancel-slot", &request, true).await?;
    if json {
        return print_json(&answer);
    }
    println!("Cancelled {}, slot {} on {}.", answer.device, answer.slot_id, day_name(&answer.date));
    Ok(())
}

/// `rero bookings`.
pub async fn bookings(client: &Client, history: bool, json: bool) -> Result<(), Error> {
    let path = if history { "/my-bookings?history=true" } else { "/my-bookings" };
    let answer: MyBookingsResponse = client.get(path, true).await?;
    if json {
        return print_json(&answer);
    }
    if answer.bookings.is_empty() {
        println!("No bookings.");
        return Ok(());
    }
    let now = Timestamp::now();
    let rows: Vec<Vec<Cell>> = answer
        .bookings
        .iter()
        .map(|b| {
            let running = matches!((b.start.parse::<Timestamp>(), b.end.parse::<Timestamp>()), (Ok(s), Ok(e)) if s <= now && now < e);
            vec![
                Cell::plain(day_name(&b.date)),
                Cell::plain(format!("{}-{}", b.start_time, b.end_time)),
                if running { Cell::colored("in progress", Color::Cyan).bold() } else { Cell::plain("") },
                Cell::plain(&b.device),
                Cell::plain(b.id.to_string()),
            ]
        })
        .collect();
    let clock = LabClock::fetch(client).await;
    println!("Your bookings (times in {}):", clock.name());
    print!("{}", render(&["DAY", "TIME", "", "BOARD", "SLOT"], &rows, stdout_is_colored()));
    Ok(())
}

/// The board a command means when none is named: the one of the caller's
/// booking in progress, else the first.
pub async fn default_board(client: &Client, board: Option<String>) -> Result<String, Error> {
    if let Some(board) = board {
        return Ok(board);
    }
    let mine: UserSlotResponse = client.get("/slots/user", true).await?;
    Ok(match mine.device {
        Some(device) if mine.is_current => device,
        _ => "0".to_owned(),
    })
}

/// `rero watch`: the day's calendar, redrawn on every `slots_update` for it.
pub async fn watch(client: &Client, day: &Day, json: bool) -> Result<(), Error> {
    // The day and board are settled over HTTP first, so updates are matched
    // by the exact date and device id the server uses.
    let first: SlotsJson = client.get(&day.slots_path(), client.has_token()).await?;
    let mut socket = client.websocket("/slot-booking").await?;
    let ask = BookingClientMessage::GetSlots(GetSlots {
        date: first.date.parse().ok(),
        device: Some(DeviceRef::Id(first.device.clone())),
    });
    let text = serde_json::to_string(&ask).map_err(|e| Error::message(e.to_string()))?;
    socket.send(Message::Text(text.into())).await.map_err(|e| Error::message(format!("/slot-booking: {e}")))?;
    let terminal = std::io::stdout().is_terminal() && !json;
    let clock = LabClock::fetch(client).await;
    let show = |listing: &SlotsJson| show(listing, clock.name(), json, terminal);
    show(&first)?;
    while let Some(message) = socket.next().await {
        let message = message.map_err(|e| Error::message(format!("/slot-booking: {e}")))?;
        let Message::Text(text) = message else { continue };
        match serde_json::from_str::<BookingServerMessage>(&text) {
            Ok(BookingServerMessage::SlotsUpdate { data, .. })
                if data.date == first.date && data.device == first.device =>
            {
                show(&data)?;
            }
            Ok(BookingServerMessage::Error { message, .. }) => eprintln!("rero: the server says: {message}"),
            _ => {}
        }
    }
    Err(Error::message("the server closed the connection"))
}

fn show(listing: &SlotsJson, zone: &str, json: bool, terminal: bool) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        let line = serde_json::to_string(listing).map_err(|e| Error::message(e.to_string()))?;
        writeln!(out, "{line}")
    } else if terminal {
        use crossterm::{cursor::MoveTo, terminal::Clear, terminal::ClearType};
        crossterm::queue!(out, Clear(ClearType::All), MoveTo(0, 0))
            .and_then(|()| write!(out, "{}", slots_table(listing, zone, Timestamp::now(), stdout_is_colored())))
            .and_then(|()| writeln!(out, "\nLive; Ctrl-C to quit."))
    } else {
        writeln!(out, "{}", slots_table(listing, zone, Timestamp::now(), false))
    };
    written.and_then(|()| out.flush()).map_err(|e| Error::message(format!("writing to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_are_read_as_the_server_writes_them() {
        assert_eq!(hh_mm("9:00").as_deref(), Some("09:00"));
        assert_eq!(hh_mm("14:30").as_deref(), Some("14:30"));
        assert_eq!(hh_mm("24:00"), None);
        assert_eq!(hh_mm("now"), None);
    }
}
