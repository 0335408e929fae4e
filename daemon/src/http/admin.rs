//! The lab admin's routes: the accounts, and disabling one. Bearer only, and
//! only for accounts listed in `auth.admins`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::error::ApiError;
use super::json_response;
use super::request::Req;
use crate::app::App;
use crate::wire::{self, BookingJson};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// `GET /admin/users`: every account, by e-mail.
pub async fn users(app: &Arc<App>, req: &Req) -> Reply {
    let who = req.bearer_principal(app).await?;
    let users: Vec<_> = app
        .accounts(&who)?
        .into_iter()
        .map(|(user, role)| {
            json!({
                "email": user.email,
                "role": role.as_str(),
                "created_at": wire::utc(user.created_at),
                "disabled": user.disabled,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "success": true, "count": users.len(), "users": users })))
}

/// `POST /admin/users/disable` and `/admin/users/enable`: `{email}`.
pub async fn set_disabled(app: &Arc<App>, req: &Req, disabled: bool) -> Reply {
    let body = req.json()?;
    let email = body.required_str("email")?;
    let who = req.bearer_principal(app).await?;
    let change = app.set_account_disabled(&who, email, disabled).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    let cancelled: Vec<BookingJson> =
        change.cancelled.iter().map(|(booking, slot)| BookingJson::new(booking, slot, &tz)).collect();
    let user = &change.user;
    let message = match (disabled, cancelled.len()) {
        (false, _) => format!("Account {} enabled", user.email),
        (true, 0) => format!("Account {} disabled", user.email),
        (true, n) => format!("Account {} disabled; {n} of its bookings cancelled", user.email),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": true,
            "message": message,
            "user": { "email": user.email, "created_at": wire::utc(user.created_at), "disabled": user.disabled },
            "cancelled_bookings": cancelled,
        }),
    ))
}
