//! `/slot-booking`: the seed's real-time booking protocol.
//!
//! On connect the client gets a `slots_update`; it sends `book_slot`,
//! `cancel_slot` and `get_slots` and gets `booking_response`,
//! `cancellation_response` and `slots_update`. Every committed change (from
//! any front end) and every slot ending is broadcast as a `slots_update` to
//! every client. The hub renders and frames each update once; the fan-out
//! threads write that one frame into every socket ([`super::fanout`]), so a
//! client that stops reading only ever falls behind (and is resynced or
//! dropped), never holds others up.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use jiff::civil::Date;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::fanout::{FanOut, OutboxStream};
use super::{Close, Conn, PING_INTERVAL};
use crate::app::{App, AppError, BookingMoved, DeviceInfo, DeviceRef, OpenSocket, SessionWarning, SignOut};
use crate::metrics::SlowClient;
use crate::wire::{self, BookingClientMessage, BookingReply, BookingServerMessage, MessageError, SlotMessage};

type Socket = WebSocketStream<OutboxStream>;

/// Renders and fans out `slots_update` frames.
#[derive(Clone, Debug)]
pub struct BookingHub {
    fan_out: Arc<FanOut>,
    stop: watch::Receiver<bool>,
}

impl BookingHub {
    /// Starts the fan-out task; it ends when `stop` turns true.
    pub fn start(app: Arc<App>, stop: watch::Receiver<bool>) -> BookingHub {
        let hub = BookingHub { fan_out: Arc::new(FanOut::start()), stop };
        tokio::spawn(hub.clone().fan_out(app));
        hub
    }

    async fn fan_out(self, app: Arc<App>) {
        let mut changes = app.subscribe();
        let mut moves = app.subscribe_moves();
        let mut stop = self.stop.clone();
        loop {
            let until_boundary = next_slot_end(&app);
            tokio::select! {
                change = changes.recv() => match change {
                    // A device that left the config since has no viewers to tell.
                    Ok(change) => if let Ok(device) = app.device(Some(&DeviceRef::Id(change.device.clone()))) {
                        self.publish(&app, device, change.date);
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => self.publish_today(&app),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                moved = moves.recv() => match moved {
                    Ok(moved) => self.publish_move(&app, &moved),
                    // The slots_updates of both devices still go out; only the notice is lost.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep(until_boundary) => self.publish_today(&app),
                () = stopped(&mut stop) => return,
            }
        }
    }

    /// Today's view of every device: what changes when a slot ends.
    fn publish_today(&self, app: &App) {
        let today = app.today();
        for device in app.devices() {
            self.publish(app, device, today);
        }
    }

    fn publish(&self, app: &App, device: DeviceInfo, date: Date) {
        match slots_update(app, device, date) {
            Ok(frame) => self.fan_out.broadcast(&encode_text_frame(frame.as_bytes())),
            Err(error) => tracing::warn!(%error, "could not render a slots_update"),
        }
    }

    /// Tells every client that a booking moved off a broken board; the
    /// holder's client knows it by `booked_by`, as in `slots_update`.
    fn publish_move(&self, app: &App, moved: &BookingMoved) {
        let shown = match app.config().lab.privacy {
            crate::config::Privacy::ShowEmails => Some(moved.email.clone()),
            crate::config::Privacy::HideOthers => None,
        };
        let message = BookingServerMessage::BookingMoved {
            date: moved.date.to_string(),
            slot_id: moved.slot,
            from_device: moved.from.clone(),
            to_device: moved.to.clone(),
            booked_by: shown,
            message: format!(
                "The booking of slot {} on {} moved from {} to {}: {} cannot be used",
                moved.slot, moved.date, moved.from, moved.to, moved.from
            ),
            timestamp: wire::utc(app.now()),
        };
        let frame = serde_json::to_vec(&message).expect("messages serialize");
        self.fan_out.broadcast(&encode_text_frame(&frame));
    }

    /// Serves one client until it leaves, stalls, goes silent, or the server stops.
    pub async fn serve(&self, app: Arc<App>, socket: Socket, open: OpenSocket) {
        let outbox = Arc::clone(socket.get_ref().outbox());
        // Joined before the greeting is rendered: no change can fall between the two.
        self.fan_out.join(socket.get_ref());
        let mut warnings = app.subscribe_warnings();
        let mut sign_outs = app.subscribe_sign_outs();
        let mut client = Client { conn: Conn::new(&app, open, socket), app, view: (None, None), identified: None };
        let mut stop = self.stop.clone();
        if client.send_view().await.is_err() {
            return;
        }
        let mut ticks = tokio::time::interval(PING_INTERVAL);
        ticks.tick().await;
        let close = loop {
            let step = tokio::select! {
                // Broadcasts the client did not take at once, or a resync it is owed.
                () = outbox.needs_attention() => client.catch_up().await,
                incoming = client.conn.socket.next() => match client.conn.heard(incoming) {
                    // Boxed: booking, cancelling and signing in are large
                    // futures, and an idle client should not carry their room.
                    Ok(message) => Box::pin(client.on_message(message)).await,
                    Err(close) => Err(close),
                },
                warning = warnings.recv() => match warning {
                    Ok(warning) => client.on_warning(&warning).await,
                    // A warning missed under a flood of them is not worth closing for.
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err(Close::with(CloseCode::Away, "server shutting down")),
                },
                sign_out = sign_outs.recv() => match sign_out {
                    Ok(sign_out) => client.on_sign_out(&sign_out).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err(Close::with(CloseCode::Away, "server shutting down")),
                },
                _ = ticks.tick() => client.conn.keep_alive().await,
                _ = stopped(&mut stop) => Err(Close::with(CloseCode::Away, "server shutting down")),
            };
            if let Err(close) = step {
                break close;
            }
        };
        client.conn.close(close).await;
    }
}

/// Resolves once the server stops (or the stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Time until the slot in progress ends (plus a little, to land after it).
fn next_slot_end(app: &App) -> Duration {
    let now = app.now();
    let end = app.config().lab.calendar.slot_at(now).map(|slot| slot.end);
    end.and_then(|end| Duration::try_from(end.duration_since(now)).ok())
        .map_or(Duration::from_secs(60), |d| d + Duration::from_millis(5))
}

/// One `/slot-booking` client.
struct Client {
    conn: Conn<OutboxStream>,
    app: Arc<App>,
    /// The device and date this client last asked for (default: first, today).
    view: (Option<DeviceRef>, Option<Date>),
    /// The account this socket identified as (`identify`), for its session warnings.
    identified: Option<String>,
}

impl Client {
    /// Writes out the broadcasts queued for a slow client, then the fresh
    /// view it is owed if it fell too far behind.
    async fn catch_up(&mut self) -> Result<(), Close> {
        self.conn.flush().await?;
        if self.conn.socket.get_ref().outbox().take_resync() {
            self.app.metrics.record_slow_client(SlowClient::Resynced);
            return self.send_view().await;
        }
        Ok(())
    }

    async fn send_error(&mut self, message: impl Into<String>) -> Result<(), Close> {
        self.conn.send_json(&BookingServerMessage::Error { message: message.into(), code: None }).await
    }

    /// A full `slots_update` for this client's view.
    async fn send_view(&mut self) -> Result<(), Close> {
        let (device, date) = self.view.clone();
        let frame = self
            .app
            .device(device.as_ref())
            .and_then(|device| slots_update(&self.app, device, date.unwrap_or_else(|| self.app.today())));
        match frame {
            // About 5 KB: through tungstenite it would stay allocated in
            // its write buffer for as long as the client is connected.
            Ok(frame) => self.conn.send_frame(&encode_text_frame(frame.as_bytes())).await,
            Err(error) => self.send_error(error.to_string()).await,
        }
    }

    /// Passes a session warning on, if it is this socket's account's.
    async fn on_warning(&mut self, warning: &SessionWarning) -> Result<(), Close> {
        if self.identified.as_deref() != Some(warning.email.as_str()) {
            return Ok(());
        }
        let tz = self.app.config().lab.calendar.time_zone().clone();
        let end = wire::lab_time(warning.end, &tz);
        let message = BookingServerMessage::SessionEnding {
            device: warning.device.clone(),
            minutes_left: warning.minutes_left,
            message: format!(
                "Your session on {} ends in {} minute{} (at {})",
                warning.device,
                warning.minutes_left,
                if warning.minutes_left == 1 { "" } else { "s" },
                end
            ),
            end,
        };
        self.conn.send_json(&message).await
    }

    /// Tells this socket its account was signed out, if it is its account's;
    /// the socket goes on as an anonymous feed.
    async fn on_sign_out(&mut self, sign_out: &SignOut) -> Result<(), Close> {
        if self.identified.as_deref() != Some(sign_out.email.as_str()) {
            return Ok(());
        }
        self.identified = None;
        let message = BookingServerMessage::SignedOut {
            email: sign_out.email.clone(),
            code: sign_out.reason.code().to_owned(),
            message: format!("You are signed out: {}", sign_out.reason.message()),
        };
        self.conn.send_json(&message).await
    }

    /// `identify`: from now on this socket gets the account's session warnings.
    async fn identify(&mut self, credentials: wire::BodyCredentials) -> Result<(), Close> {
        let who = match wire::body_credentials(&credentials) {
            Some(credentials) => self.app.authenticate(credentials).await,
            None => Err(AppError::NotAuthenticated),
        };
        let who = who.and_then(|who| self.conn.claim_account(&who).map(|()| who));
        let reply = match who {
            Ok(who) => {
                let message = format!("Identified as {}: this socket gets your session warnings", who.email);
                self.identified = Some(who.email.clone());
                BookingServerMessage::Identified { email: who.email, message }
            }
            Err(error) => {
                // A failed identify leaves the socket anonymous, as it was.
                self.identified = None;
                let message = format!("Identification failed: {error}");
                BookingServerMessage::Error { message, code: Some(error.code().to_owned()) }
            }
        };
        self.conn.send_json(&reply).await
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Close> {
        match message {
            Message::Text(text) => self.on_text(&text).await,
            Message::Binary(_) => self.send_error("Binary frames are not supported; send JSON text").await,
            _ => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Close> {
        let reply = match BookingClientMessage::parse(text) {
            Ok(BookingClientMessage::BookSlot(request)) => book_or_cancel(&self.app, request, Action::Book).await,
            Ok(BookingClientMessage::CancelSlot(request)) => book_or_cancel(&self.app, request, Action::Cancel).await,
            Ok(BookingClientMessage::Identify(credentials)) => return self.identify(credentials).await,
            Ok(BookingClientMessage::GetSlots(wire::GetSlots { date, device })) => {
                self.view = (device, date);
                return self.send_view().await;
            }
            Err(MessageError::Invalid(error)) if error.is_body() => {
                return self.send_error(format!("Invalid message: {error}")).await;
            }
            Err(MessageError::Invalid(error)) => return self.send_error(error.to_string()).await,
            Err(MessageError::MissingType) => return self.send_error("Missing message type").await,
            Err(MessageError::UnknownType(other)) => {
                return self.send_error(format!("Unknown message type: {other}")).await;
            }
        };
        self.conn.send_json(&reply).await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Book,
    Cancel,
}

/// Runs a `book_slot` or `cancel_slot` message; the reply in the seed's shapes.
async fn book_or_cancel(app: &App, request: SlotMessage, action: Action) -> BookingServerMessage {
    let (Some(slot_id), Some(credentials)) = (request.slot_id, wire::body_credentials(&request.credentials)) else {
        let request_name = match action {
            Action::Book => "booking",
            Action::Cancel => "cancellation",
        };
        let message = format!("Missing slot_id, email, or password in {request_name} request");
        return BookingServerMessage::Error { message, code: None };
    };
    let reply = |success: bool, message: String, code: Option<&str>| {
        let code = code.map(str::to_owned);
        // A reply names a slot that can exist; an id no slot can have (the
        // app refuses it as `slot_not_found`) gets the same words as an error.
        let Ok(slot_id) = u16::try_from(slot_id) else { return BookingServerMessage::Error { message, code } };
        let reply = BookingReply { success, message, slot_id, code, date: None, device: None };
        match action {
            Action::Book => BookingServerMessage::BookingResponse(reply),
            Action::Cancel => BookingServerMessage::CancellationResponse(reply),
        }
    };
    let device = match app.device(request.device.as_ref()) {
        Ok(device) => device,
        Err(e) => return reply(false, e.to_string(), Some(e.code())),
    };
    let date = request.date.unwrap_or_else(|| app.today());
    let who = match app.authenticate(credentials).await {
        Ok(who) => who,
        Err(e @ (AppError::InvalidCredentials | AppError::InvalidToken(_) | AppError::AccountDisabled)) => {
            let text = match &e {
                AppError::InvalidCredentials => "Authentication failed. Invalid email or password.".to_owned(),
                other => format!("Authentication failed. {other}"),
            };
            return reply(false, text, Some(e.code()));
        }
        Err(e) => return reply(false, e.to_string(), Some(e.code())),
    };
    let outcome = match action {
        Action::Book => app.book(&who, &device, date, slot_id).await.map(|(b, _)| b),
        Action::Cancel => app.cancel(&who, &device, date, slot_id).await,
    };
    match outcome {
        Ok(booking) => {
            let verb = match action {
                Action::Book => "booked",
                Action::Cancel => "booking cancelled",
            };
            let mut ok = reply(true, format!("Slot {} {verb} successfully", booking.key.slot), None);
            if let BookingServerMessage::BookingResponse(r) | BookingServerMessage::CancellationResponse(r) = &mut ok {
                r.date = Some(date.to_string());
                r.device = Some(booking.key.device);
            }
            ok
        }
        Err(e) => reply(false, e.to_string(), Some(e.code())),
    }
}

/// An unmasked, final WebSocket text frame (as servers send) around `payload`.
fn encode_text_frame(payload: &[u8]) -> bytes::Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    bytes::Bytes::from(frame)
}

/// A complete `slots_update` frame for one device's day (anonymous view).
fn slots_update(app: &App, device: DeviceInfo, date: Date) -> Result<Utf8Bytes, AppError> {
    let view = app.day_view_cached(device, date, |day| {
        bytes::Bytes::from(serde_json::to_vec(&wire::slots_json(app, day, None)).expect("slots serialize"))
    })?;
    let view = std::str::from_utf8(&view).map_err(|e| AppError::Internal(e.to_string()))?;
    // The cached view is spliced in as it is: the same bytes serde would
    // write for `BookingServerMessage::SlotsUpdate` (a unit test holds the two together).
    Ok(format!(r#"{{"type":"slots_update","data":{view},"timestamp":"{}"}}"#, wire::utc(app.now())).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::lab_at;

    #[tokio::test]
    async fn the_spliced_slots_update_is_the_typed_message() {
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", "");
        let device = app.device(None).unwrap();
        let date = app.today();
        let spliced = slots_update(&app, device.clone(), date).unwrap();
        let day = app.day_slots(device, date, None).unwrap();
        let typed = BookingServerMessage::SlotsUpdate {
            data: wire::slots_json(&app, &day, None),
            timestamp: wire::utc(app.now()),
        };
        assert_eq!(spliced.as_str(), serde_json::to_string(&typed).unwrap());
    }

    #[test]
    fn encoded_frames_use_the_shortest_length_form() {
        for (len, header) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = vec![b'x'; len];
            let frame = encode_text_frame(&payload);
            assert_eq!(&frame[..header.len()], header.as_slice(), "length {len}");
            assert_eq!(&frame[header.len()..], payload.as_slice(), "length {len}");
        }
    }
}
