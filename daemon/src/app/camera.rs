//! Cameras as lab operations: who may watch a board's camera now, and the
//! short-lived tickets a browser opens a stream with.
//!
//! The holder of the session in progress and admins always may watch; the
//! camera's `visibility` admits others (`signed_in`: anyone signed in;
//! `public`: anyone), during sessions and between them. Front ends ask again
//! when the holder's session ends, and end the stream if the answer changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{App, AppError, DeviceInfo, DeviceRef, Principal, Role};
use crate::camera::Camera;
use crate::config::Visibility;

/// How long a picture for a session record waits for the camera's next frame.
const RECORD_PICTURE_WAIT: Duration = Duration::from_secs(5);

/// How long a ticket opens a stream; it is used once.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);
/// Tickets not yet used, at most; beyond it minting waits for some to expire.
const MAX_TICKETS: usize = 4096;

/// Why someone may watch a camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraAccess {
    /// The holder of the session in progress.
    Holder,
    /// A lab admin, watching any board.
    Admin,
    /// The camera's visibility admits them.
    Visible(Visibility),
}

/// A ticket that opens one stream of one camera for one account, once,
/// within [`TICKET_LIFETIME`]. Its text goes in the stream's URL instead
/// of the bearer token, which must not end up in logs.
#[derive(Clone, Debug)]
pub struct CameraTicket {
    pub ticket: String,
    pub expires_in: Duration,
}

#[derive(Debug)]
struct Pending {
    who: Principal,
    device: String,
    expires: Instant,
}

/// Tickets minted and not yet used.
#[derive(Debug, Default)]
pub(super) struct Tickets {
    pending: Mutex<HashMap<String, Pending>>,
}

impl App {
    /// A configured board with a camera, by number or id.
    pub fn camera_of(&self, reference: &DeviceRef) -> Result<(DeviceInfo, Arc<Camera>), AppError> {
        let info = self.device(Some(reference))?;
        match self.cameras.get(&info.id) {
            Some(camera) => Ok((info, camera)),
            None => Err(AppError::NoCamera(info.id)),
        }
    }

    /// Whether `who` (`None`: not signed in) may watch `device`'s camera now.
    pub fn camera_access(&self, who: Option<&Principal>, device: &DeviceInfo) -> Result<CameraAccess, AppError> {
        let config = self.config();
        let visibility = config
            .devices
            .iter()
            .find(|d| d.id == device.id)
            .and_then(|d| d.camera.as_ref())
            .map(|c| c.visibility)
            .ok_or_else(|| AppError::NoCamera(device.id.clone()))?;
        if let Some(who) = who {
            if who.role == Role::Admin {
                return Ok(CameraAccess::Admin);
            }
            if let Some(slot) = config.lab.calendar.slot_at(self.now())
                && self.holder(&device.id, &slot)?.as_deref() == Some(who.email.as_str())
            {
                return Ok(CameraAccess::Holder);
            }
        }
        match (visibility, who) {
            (Visibility::Public, _) | (Visibility::SignedIn, Some(_)) => Ok(CameraAccess::Visible(visibility)),
            (Visibility::SignedIn, None) => Err(AppError::NotAuthenticated),
            (Visibility::Holder, None) => Err(AppError::NotAuthenticated),
            (Visibility::Holder, Some(_)) => Err(AppError::CameraNotVisible(format!(
                "The camera of device {} is shown only to the holder of the session in progress (and lab admins)",
                device.id
            ))),
        }
    }

    /// A ticket for `who` to open `device`'s camera stream, if they may watch it now.
    pub fn mint_camera_ticket(&self, who: &Principal, device: &DeviceInfo) -> Result<CameraTicket, AppError> {
        self.camera_access(Some(who), device)?;
        let bytes = crate::auth::random_secret()
            .map_err(|e| AppError::Internal(format!("cannot read /dev/urandom for a camera ticket: {e}")))?;
        let ticket: String = bytes.iter().take(24).map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut pending = self.camera_tickets.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_TICKETS {
            return Err(AppError::Overloaded { what: "opening camera streams" });
        }
        let entry = Pending { who: who.clone(), device: device.id.clone(), expires: now + TICKET_LIFETIME };
        pending.insert(ticket.clone(), entry);
        Ok(CameraTicket { ticket, expires_in: TICKET_LIFETIME })
    }

    /// Who a ticket was minted for, if it is for `device`, unused and not
    /// expired. It cannot be used again.
    pub fn redeem_camera_ticket(&self, ticket: &str, device: &DeviceInfo) -> Result<Principal, AppError> {
        let mut pending = self.camera_tickets.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.remove(ticket) {
            Some(p) if p.device == device.id && p.expires > Instant::now() => Ok(p.who),
            _ => Err(AppError::InvalidTicket),
        }
    }

    /// Keeps the camera's next frame of `device` (if it has a camera) in the
    /// session record `id` as the picture `name`, in the background: an
    /// idle camera is woken for it, one that gives no frame is logged.
    pub(super) fn picture_into_record(&self, device: &str, id: &crate::records::SessionId, name: String) {
        let Some(camera) = self.cameras.get(device) else { return };
        let sink = self.records.snapshot_sink(id);
        let (device, session) = (device.to_owned(), id.to_string());
        tokio::spawn(async move {
            let mut viewer = camera.watch().from_next_frame();
            let jpeg = match viewer.first_frame(RECORD_PICTURE_WAIT).await {
                Ok(jpeg) => jpeg,
                Err(state) => {
                    tracing::info!(%device, %session, state = state.as_str(), "no camera picture for the session record");
                    return;
                }
            };
            drop(viewer);
            let saved = tokio::task::spawn_blocking(move || sink.save(&name, &jpeg)).await;
            if let Ok(Err(error)) = saved {
                tracing::warn!(%device, %session, %error, "could not keep the camera picture in the session record");
            }
        });
    }

    /// The camera the old client's `/websocket/{quality}` shows:
    /// `lab.legacy_camera_device`'s, and only while it is public.
    pub fn legacy_camera(&self) -> Result<(DeviceInfo, Arc<Camera>), AppError> {
        let Some(id) = self.config().lab.legacy_camera_device.clone() else {
            return Err(AppError::CameraNotVisible(
                "No camera is shown here: the lab sets none (lab.legacy_camera_device)".to_owned(),
            ));
        };
        let (device, camera) = self.camera_of(&DeviceRef::Id(id))?;
        match self.camera_access(None, &device) {
            Ok(_) => Ok((device, camera)),
            Err(_) => Err(AppError::CameraNotVisible(format!(
                "The camera of device {} is not public; sign in to the lab's web app to watch it",
                device.id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ErrorKind;
    use crate::app::testing::{LOCALHOST, lab_at};

    const BOARD: &str = "[[devices]]\nid = \"arm-1\"\nplugin = \"stk500v1\"\nport = \"/nonexistent/x\"\n";

    fn user(email: &str, role: Role) -> Principal {
        Principal { email: email.into(), role, address: None }
    }

    #[tokio::test]
    async fn the_holder_and_admins_watch_and_visibility_admits_others() {
        let camera = "camera = { mjpeg = \"http://127.0.0.1:1/stream\" }\n";
        let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", &format!("{BOARD}{camera}"));
        let (device, _) = app.camera_of(&DeviceRef::Number(0)).unwrap();
        app.register("a@x.org", "plum-orbit-cactus-41", LOCALHOST).await.unwrap();
        let (holder, other, admin) =
            (user("a@x.org", Role::User), user("b@x.org", Role::User), user("z@x.org", Role::Admin));
        app.book(&holder, &device, jiff::civil::date(2026, 11, 24), 10).await.unwrap();
        assert_eq!(app.camera_access(Some(&holder), &device).unwrap(), CameraAccess::Holder);
        assert_eq!(app.camera_access(Some(&admin), &device).unwrap(), CameraAccess::Admin);
        assert_eq!(app.camera_access(Some(&other), &device).unwrap_err().kind(), ErrorKind::CameraNotVisible);
        assert_eq!(app.camera_access(None, &device).unwrap_err().kind(), ErrorKind::NotAuthenticated);
        assert_eq!(app.legacy_camera().unwrap_err().kind(), ErrorKind::CameraNotVisible);

        let ticket = app.mint_camera_ticket(&holder, &device).unwrap();
        assert_eq!(app.redeem_camera_ticket(&ticket.ticket, &device).unwrap().email, "a@x.org");
        let used = app.redeem_camera_ticket(&ticket.ticket, &device).unwrap_err();
        assert_eq!(used.kind(), ErrorKind::InvalidTicket, "a ticket opens one stream");
        assert_eq!(app.mint_camera_ticket(&other, &device).unwrap_err().kind(), ErrorKind::CameraNotVisible);
    }

    #[tokio::test]
    async fn public_and_signed_in_cameras_between_sessions() {
        for (visibility, anonymous_ok) in [("public", true), ("signed_in", false)] {
            let camera = format!("camera = {{ mjpeg = \"http://127.0.0.1:1/s\", visibility = \"{visibility}\" }}\n");
            let lab = format!("legacy_camera_device = \"arm-1\"\n{BOARD}{camera}");
            let (_dir, _clock, app) = lab_at("2026-11-24T10:30:00Z", &lab);
            let (device, _) = app.camera_of(&DeviceRef::Id("arm-1".into())).unwrap();
            let other = user("b@x.org", Role::User);
            assert_eq!(
                app.camera_access(Some(&other), &device).unwrap(),
                CameraAccess::Visible(if anonymous_ok { Visibility::Public } else { Visibility::SignedIn })
            );
            assert_eq!(app.camera_access(None, &device).is_ok(), anonymous_ok, "{visibility}");
            assert_eq!(app.legacy_camera().is_ok(), anonymous_ok, "{visibility}");
        }
    }
}
