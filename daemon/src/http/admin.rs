//! The lab admin's routes: the accounts, and disabling one. Bearer only, and
//! only for accounts listed in `auth.admins` (the route table checks both
//! before the body is read).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::error::ApiError;
use super::json_response;
use super::request::Req;
use crate::app::{App, Principal};
use crate::wire::{
    self, AccountChangeResponse, AccountJson, AccountsResponse, BookingJson, ChangedAccount, EmailRequest,
};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// `GET /admin/users`: every account, by e-mail.
pub fn users(app: &Arc<App>, who: &Principal) -> Reply {
    let users: Vec<AccountJson> = app
        .accounts(who)?
        .into_iter()
        .map(|(user, role)| AccountJson {
            email: user.email,
            role: role.as_str().to_owned(),
            created_at: wire::utc(user.created_at),
            disabled: user.disabled,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &AccountsResponse { success: true, count: users.len(), users }))
}

/// `POST /admin/users/disable` and `/admin/users/enable`: `{email}`.
pub async fn set_disabled(app: &Arc<App>, req: &Req, who: &Principal, disabled: bool) -> Reply {
    let request: EmailRequest = req.parse()?;
    let change = app.set_account_disabled(who, &request.email, disabled).await?;
    let tz = app.config().lab.calendar.time_zone().clone();
    let cancelled: Vec<BookingJson> =
        change.cancelled.iter().map(|(booking, slot)| BookingJson::new(booking, slot, &tz)).collect();
    let user = change.user;
    let message = match (disabled, cancelled.len()) {
        (false, _) => format!("Account {} enabled", user.email),
        (true, 0) => format!("Account {} disabled", user.email),
        (true, n) => format!("Account {} disabled; {n} of its bookings cancelled", user.email),
    };
    let body = AccountChangeResponse {
        success: true,
        message,
        user: ChangedAccount { email: user.email, created_at: wire::utc(user.created_at), disabled: user.disabled },
        cancelled_bookings: cancelled,
    };
    Ok(json_response(StatusCode::OK, &body))
}
