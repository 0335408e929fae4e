//! Accounts: registering, checking passwords (throttled), logging in,
//! authenticating a request, and the lab admin's account changes.

use crate::auth::{self, TokenError};
use crate::booking::Slot;
use crate::config::{Config, Registration};
use crate::metrics::{BookingAction, Outcome};
use crate::store::{self, Booking, CreateUserError, SetDisabledError, SlotKey, User};

use super::{App, AppError, Credentials, Principal, Role};

impl App {
    pub async fn register(&self, email: &str, password: &str) -> Result<User, AppError> {
        let config = self.config();
        let email = auth::normalize_email(email).map_err(|e| AppError::invalid("email", e.to_string()))?;
        auth::check_new_password(password, config.auth.min_password_len)
            .map_err(|e| AppError::invalid("password", e.to_string()))?;
        match &config.auth.registration {
            Registration::Open => {}
            Registration::Closed => {
                return Err(AppError::RegistrationRefused(
                    "Registration is closed; ask a lab admin for an account".into(),
                ));
            }
            Registration::Domains(domains) => {
                let domain = email.rsplit('@').next().unwrap_or_default();
                if !domains.iter().any(|d| d == domain) {
                    return Err(AppError::RegistrationRefused(format!(
                        "Registration is open only to addresses at {}",
                        domains.join(", ")
                    )));
                }
            }
        }
        // Cheap early answer for the common duplicate; the store re-checks atomically.
        if self.store.user(&email)?.is_some() {
            return Err(AppError::EmailTaken);
        }
        let password_hash = self
            .hasher
            .hash(password.to_owned(), config.auth.bcrypt_cost)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        let user = User {
            email,
            password_hash,
            created_at: self.now(),
            disabled: false,
            credential_generation: 0,
            last_login: None,
        };
        match self.store.create_user(user).await {
            Ok(user) => {
                tracing::info!(email = %user.email, "user registered");
                Ok(user)
            }
            Err(CreateUserError::Exists) => Err(AppError::EmailTaken),
            Err(CreateUserError::Store(e)) => Err(e.into()),
        }
    }

    /// Checks an e-mail and password; answers the same way, in about the same
    /// time, whether the address is unknown or the password wrong.
    ///
    /// After `auth.max_failed_logins` wrong passwords for one address within
    /// `auth.failed_login_window_secs`, attempts are refused before any
    /// hashing until the oldest failure leaves the window, known address or not.
    pub async fn check_password(&self, email: &str, password: &str) -> Result<(User, Role), AppError> {
        let config = self.config();
        let email = auth::normalize_email(email).unwrap_or_default();
        let (max_failures, window) = (config.auth.max_failed_logins, config.auth.failed_login_window);
        self.login_throttle
            .check(&email, std::time::Instant::now(), max_failures, window)
            .map_err(|retry_after| AppError::Throttled { retry_after })?;
        let user = if email.is_empty() { None } else { self.store.user(&email)? };
        let ok = self
            .hasher
            .verify(password.to_owned(), user.as_ref().map(|u| u.password_hash.clone()), config.auth.bcrypt_cost)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        match user {
            Some(user) if ok => {
                self.login_throttle.succeeded(&email);
                if user.disabled {
                    return Err(AppError::AccountDisabled);
                }
                let role = self.role_of(&config, &user.email);
                Ok((user, role))
            }
            _ => {
                self.login_throttle.failed(&email, std::time::Instant::now(), window);
                Err(AppError::InvalidCredentials)
            }
        }
    }

    /// Logs in: a token for the account, and the account.
    pub async fn login(&self, email: &str, password: &str) -> Result<Login, AppError> {
        let checked = self.check_password(email, password).await;
        self.metrics.record_login(if checked.is_ok() { Outcome::Ok } else { Outcome::Failed });
        let (user, role) = checked?;
        let lifetime = self.config().auth.token_lifetime;
        let now = self.now();
        let token = self.tokens.issue(&user.email, user.credential_generation, now, lifetime);
        let previous_login = self.store.record_login(user.email.clone(), now).await?;
        tracing::info!(email = %user.email, "login");
        Ok(Login { token, lifetime, principal: Principal { email: user.email.clone(), role }, user, previous_login })
    }

    /// Refuses anyone but a lab admin.
    pub fn require_admin(&self, who: &Principal) -> Result<(), AppError> {
        require_admin(who)
    }

    fn role_of(&self, config: &Config, email: &str) -> Role {
        if config.auth.admins.contains(email) { Role::Admin } else { Role::User }
    }

    /// Establishes who is calling. A token must still match a live account.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Principal, AppError> {
        match credentials {
            Credentials::Password { email, password } => {
                let (user, role) = self.check_password(&email, &password).await?;
                Ok(Principal { email: user.email, role })
            }
            Credentials::Token(token) => {
                let claims = self.tokens.verify(&token, self.now()).map_err(AppError::InvalidToken)?;
                let user = self.store.user(&claims.sub)?;
                match user {
                    Some(user) if user.disabled => Err(AppError::AccountDisabled),
                    Some(user) if user.credential_generation == claims.generation => {
                        let role = self.role_of(&self.config(), &user.email);
                        Ok(Principal { email: user.email, role })
                    }
                    // Deleted, or the password changed since the token was issued.
                    _ => Err(AppError::InvalidToken(TokenError::Invalid)),
                }
            }
        }
    }

    /// Every account with its role, by e-mail: admins only.
    pub fn accounts(&self, who: &Principal) -> Result<Vec<(User, Role)>, AppError> {
        require_admin(who)?;
        let config = self.config();
        let accounts = self.store.users()?.into_iter().map(|user| {
            let role = self.role_of(&config, &user.email);
            (user, role)
        });
        Ok(accounts.collect())
    }

    /// Disables or re-enables an account: admins only.
    ///
    /// A disabled account cannot log in, its tokens are refused (also after it
    /// is enabled again: it logs in afresh), and its bookings that have not
    /// ended are cancelled in the same transaction and broadcast; the one in
    /// progress ends its session at once. Ended bookings stay as history.
    /// Admins listed in the config cannot be disabled.
    pub async fn set_account_disabled(
        &self,
        who: &Principal,
        email: &str,
        disabled: bool,
    ) -> Result<AccountUpdate, AppError> {
        require_admin(who)?;
        let config = self.config();
        let email = auth::normalize_email(email).map_err(|e| AppError::invalid("email", e.to_string()))?;
        if disabled && self.role_of(&config, &email) == Role::Admin {
            return Err(AppError::AccountIsAdmin(email));
        }
        let (calendar, now) = (config.lab.calendar.clone(), self.now());
        // A booking whose slot the calendar no longer has is history too.
        let doomed: store::Doomed = Box::new(move |key: &SlotKey| {
            calendar.slot(key.date, i64::from(key.slot)).is_ok_and(|slot| !slot.is_past(now))
        });
        let change = match self.store.set_disabled(email.clone(), disabled, doomed).await {
            Ok(change) => change,
            Err(SetDisabledError::NoSuchUser) => return Err(AppError::UnknownUser(email)),
            Err(SetDisabledError::Store(e)) => return Err(e.into()),
        };
        let action = if disabled { "account disabled" } else { "account enabled" };
        tracing::info!(admin = %who.email, email = %email, cancelled = change.cancelled.len(), "{action}");
        let mut cancelled = Vec::with_capacity(change.cancelled.len());
        for booking in change.cancelled {
            self.metrics.record_booking(BookingAction::Cancel);
            self.changed(&booking.key);
            // Only bookings whose slot exists were picked.
            let Ok(slot) = config.lab.calendar.slot(booking.key.date, i64::from(booking.key.slot)) else { continue };
            if slot.is_in_progress(now) {
                let message = "the account was disabled by a lab admin".to_owned();
                self.devices.end_session(&booking.key.device, &booking.email, message);
            }
            cancelled.push((booking, slot));
        }
        Ok(AccountUpdate { user: change.user, cancelled })
    }
}

/// A successful login.
#[derive(Debug)]
pub struct Login {
    pub token: String,
    pub lifetime: std::time::Duration,
    pub principal: Principal,
    pub user: User,
    /// The login before this one, if any.
    pub previous_login: Option<jiff::Timestamp>,
}

/// An account as an admin left it, and the bookings that went with it, with their slots.
#[derive(Debug)]
pub struct AccountUpdate {
    pub user: User,
    pub cancelled: Vec<(Booking, Slot)>,
}

fn require_admin(who: &Principal) -> Result<(), AppError> {
    if who.role == Role::Admin { Ok(()) } else { Err(AppError::AdminOnly) }
}
