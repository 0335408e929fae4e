//! Accounts: registering, checking passwords (throttled), logging in,
//! authenticating a request, and the lab admin's account changes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::auth::{self, TokenError};
use crate::booking::Slot;
use crate::config::{Config, Registration};
use crate::metrics::{BookingAction, Outcome};
use crate::store::{self, Booking, CreateUserError, SetDisabledError, SlotKey, User};

use super::{App, AppError, Credentials, Principal, Role};

/// The registration throttle's key for every new account, wherever from.
pub(super) const EVERYONE: &str = "*";
/// The window of the registration limits.
const HOUR: Duration = Duration::from_secs(3600);

impl App {
    /// Creates an account for someone registering themselves from `client`.
    pub async fn register(&self, email: &str, password: &str, client: IpAddr) -> Result<User, AppError> {
        let config = self.config();
        self.count_address_attempt(&config, client)?;
        let email = self.new_credentials(&config, email, "password", password).await?;
        // Whoever registers a listed address first would become its admin:
        // admins are created on the host instead.
        if config.auth.admins.contains(&email) {
            return Err(AppError::RegistrationRefused(format!(
                "{email} is a lab admin address: admins cannot register themselves; the lab admin creates it on \
                 the host with `rerod user add {email} --admin`"
            )));
        }
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
        refuse_look_alike_of_an_admin(&config, &email)?;
        // Cheap early answer for the common duplicate; the store re-checks atomically.
        if self.store.user(&email)?.is_some() {
            return Err(AppError::EmailTaken);
        }
        self.count_registration(&config, client)?;
        let user = self.create_account(email, password, false).await?;
        tracing::info!(email = %user.email, "user registered");
        Ok(user)
    }

    /// Hashes `password` and stores a new account for the (normalized) `email`.
    async fn create_account(&self, email: String, password: &str, admin: bool) -> Result<User, AppError> {
        let password_hash = self.hasher.hash(password.to_owned(), self.config().auth.bcrypt_cost).await?;
        let user_email = email.clone();
        let user = User {
            // The store numbers it.
            id: 0,
            email,
            password_hash,
            created_at: self.now(),
            disabled: false,
            credential_generation: 0,
            last_login: None,
            admin,
        };
        match self.store.create_user(user).await {
            Ok(user) => {
                self.hash_costs.note(&user.password_hash);
                Ok(user)
            }
            Err(CreateUserError::Exists) => Err(AppError::EmailTaken),
            Err(CreateUserError::LooksLikeAnother) => Err(AppError::LooksLikeAnAccount(user_email)),
            Err(CreateUserError::Store(e)) => Err(e.into()),
        }
    }

    /// Sets the password of the (normalized) `email`, revoking every token
    /// issued before.
    async fn set_password(&self, email: String, password: &str) -> Result<User, AppError> {
        let hash = self.hasher.hash(password.to_owned(), self.config().auth.bcrypt_cost).await?;
        self.hash_costs.note(&hash);
        let change = self
            .store
            .update_user(email.clone(), move |u| {
                u.password_hash = hash;
                u.credential_generation = u.credential_generation.wrapping_add(1);
            })
            .await?;
        change.map(|(_, user)| user).ok_or(AppError::UnknownUser(email))
    }

    /// Checks an e-mail and password; answers the same way, in about the same
    /// time, whether the address is unknown or the password wrong.
    ///
    /// After `auth.max_failed_logins` wrong passwords for one address within
    /// `auth.failed_login_window_secs`, attempts are refused before any
    /// hashing until the oldest failure leaves the window, known address or not.
    ///
    /// A check counts against the address from the moment it is admitted, so
    /// parallel guesses reach bcrypt at most `auth.max_failed_logins` times.
    pub async fn check_password(&self, email: &str, password: &str) -> Result<(User, Role), AppError> {
        let config = self.config();
        let email = auth::normalize_email(email).unwrap_or_default();
        let (max_failures, window) = (config.auth.max_failed_logins, config.auth.failed_login_window);
        let attempt = self
            .login_throttle
            .begin(&email, Instant::now(), max_failures, window)
            .map_err(|retry_after| AppError::Throttled { retry_after })?;
        // A store shared by several hosts counts failures for all of them,
        // so a guesser gets the same tries however many hosts it spreads over.
        if let Some(retry_after) = self.store.login_lockout(&email, max_failures, window).await? {
            return Err(AppError::Throttled { retry_after });
        }
        let user = if email.is_empty() { None } else { self.store.user_current(&email).await? };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.hasher.verify(password.to_owned(), hash, self.hash_costs.typical()).await?;
        match user {
            Some(user) if ok => {
                attempt.succeeded();
                self.store.clear_failed_logins(&email).await?;
                if user.disabled {
                    return Err(AppError::AccountDisabled);
                }
                let role = role_of(&config, &user);
                Ok((user, role))
            }
            _ => {
                attempt.failed(Instant::now());
                if let Err(error) = self.store.failed_login(&email, window).await {
                    // Still counted on this host; the answer stays the same.
                    tracing::warn!(%error, "could not count a failed login in the shared store");
                }
                Err(AppError::InvalidCredentials)
            }
        }
    }

    /// Logs in someone from `client`: a token for the account, and the account.
    pub async fn login(&self, email: &str, password: &str, client: IpAddr) -> Result<Login, AppError> {
        self.count_address_attempt(&self.config(), client)?;
        let checked = self.check_password(email, password).await;
        self.metrics.record_login(if checked.is_ok() { Outcome::Ok } else { Outcome::Failed });
        let (user, role) = checked?;
        let now = self.now();
        let change = self.store.update_user(user.email.clone(), move |u| u.last_login = Some(now)).await?;
        let previous_login = change.and_then(|(before, _)| before.last_login);
        self.issue_token(user, role, previous_login)
    }

    /// A fresh token for `user`, under its current credential generation.
    fn issue_token(&self, user: User, role: Role, previous_login: Option<Timestamp>) -> Result<Login, AppError> {
        let lifetime = self.config().auth.token_lifetime;
        let token = self.tokens.issue(&user.email, user.credential_generation, self.now(), lifetime);
        tracing::info!(email = %user.email, "login");
        Ok(Login {
            token,
            lifetime,
            principal: Principal { email: user.email.clone(), role, address: None },
            user,
            previous_login,
        })
    }

    /// Counts one login or registration from `client` against
    /// `auth.max_logins_per_address`.
    fn count_address_attempt(&self, config: &Config, client: IpAddr) -> Result<(), AppError> {
        let (max, window) = (config.auth.max_logins_per_address, config.auth.address_window);
        self.address_throttle
            .hit(&client.to_string(), Instant::now(), max, window)
            .map_err(|retry_after| AppError::AddressThrottled { retry_after })
    }

    /// Checks an address and a new password for it (`field` names the
    /// password in the error): its form, then its strength; the address,
    /// normalized.
    async fn new_credentials(
        &self,
        config: &Config,
        email: &str,
        field: &'static str,
        password: &str,
    ) -> Result<String, AppError> {
        let email = auth::normalize_email(email).map_err(|e| AppError::invalid("email", e.to_string()))?;
        let strength = match auth::check_new_password(password, config.auth.min_password_len) {
            Ok(()) => {
                let min_score = config.auth.min_password_score;
                self.hasher.check_strength(password.to_owned(), email.clone(), min_score).await?
            }
            Err(e) => Err(e),
        };
        strength.map_err(|e| match e {
            auth::PasswordError::IsTheAddress | auth::PasswordError::TooWeak { .. } => {
                AppError::WeakPassword { field, message: e.to_string() }
            }
            _ => AppError::invalid(field, e.to_string()),
        })?;
        Ok(email)
    }

    /// Counts one new account from `client` against the hourly limits, per
    /// address and overall. Only a registration that passed every other check
    /// counts; one refused here counts against nothing.
    fn count_registration(&self, config: &Config, client: IpAddr) -> Result<(), AppError> {
        let (per_address, overall) =
            (config.auth.max_registrations_per_address_per_hour, config.auth.max_registrations_per_hour);
        let now = Instant::now();
        let address = client.to_string();
        // Both are looked at before either counts, so a refusal leaves both as they were.
        let refused = |key: &str, max: u32| self.registration_throttle.check(key, now, max, HOUR).err();
        if let Some(retry_after) = refused(&address, per_address) {
            return Err(AppError::RegistrationThrottled { retry_after, from_address: true });
        }
        if let Some(retry_after) = refused(EVERYONE, overall) {
            return Err(AppError::RegistrationThrottled { retry_after, from_address: false });
        }
        self.registration_throttle
            .hit(&address, now, per_address, HOUR)
            .map_err(|retry_after| AppError::RegistrationThrottled { retry_after, from_address: true })?;
        self.registration_throttle
            .hit(EVERYONE, now, overall, HOUR)
            .map_err(|retry_after| AppError::RegistrationThrottled { retry_after, from_address: false })
    }

    /// Changes `who`'s password, given the current one. Every token issued
    /// before, on any device, stops working; the answer carries a new one.
    pub async fn change_password(&self, who: &Principal, current: &str, new: &str) -> Result<Login, AppError> {
        let email = self.new_credentials(&self.config(), &who.email, "new_password", new).await?;
        let (_, role) = self.check_password(&email, current).await?;
        let user = self.set_password(email, new).await?;
        tracing::info!(email = %user.email, "password changed; earlier tokens revoked");
        self.sign_out(&user.email, super::SignOutReason::PasswordChanged);
        self.issue_token(user, role, None)
    }

    /// Creates an account on the host's word (`rerod user add`): no
    /// registration policy applies, and it may be made a lab admin.
    pub async fn add_account(&self, email: &str, password: &str, admin: bool) -> Result<User, AppError> {
        let config = self.config();
        let email = self.new_credentials(&config, email, "password", password).await?;
        refuse_look_alike_of_an_admin(&config, &email)?;
        let user = self.create_account(email, password, admin).await?;
        tracing::info!(email = %user.email, admin, "account added on the host");
        Ok(user)
    }

    /// Sets an account's password on the host's word (`rerod user passwd`),
    /// revoking every token issued before.
    pub async fn reset_password(&self, email: &str, password: &str) -> Result<User, AppError> {
        let email = self.new_credentials(&self.config(), email, "password", password).await?;
        let user = self.set_password(email, password).await?;
        tracing::info!(email = %user.email, "password set on the host; earlier tokens revoked");
        self.sign_out(&user.email, super::SignOutReason::PasswordChanged);
        Ok(user)
    }

    /// Revokes every token issued to `who` so far (all devices, this one too).
    pub async fn logout_everywhere(&self, who: &Principal) -> Result<(), AppError> {
        let bump = |u: &mut User| u.credential_generation = u.credential_generation.wrapping_add(1);
        let change = self.store.update_user(who.email.clone(), bump).await?;
        change.ok_or_else(|| AppError::UnknownUser(who.email.clone()))?;
        tracing::info!(email = %who.email, "all tokens revoked");
        self.sign_out(&who.email, super::SignOutReason::SignedOutEverywhere);
        Ok(())
    }

    /// Refuses anyone but a lab admin.
    pub fn require_admin(&self, who: &Principal) -> Result<(), AppError> {
        require_admin(who)
    }

    /// Establishes who is calling. A token must still match a live account.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Principal, AppError> {
        match credentials {
            Credentials::Password { email, password } => {
                // Boxed, as the rare path below: the token path, taken by every
                // authenticated request, stays a small future.
                let (user, role) = Box::pin(self.check_password(&email, &password)).await?;
                Ok(Principal { email: user.email, role, address: None })
            }
            Credentials::Token(token) => {
                let claims = self.tokens.verify(&token, self.now()).map_err(AppError::InvalidToken)?;
                let mut user = self.store.user(&claims.sub)?;
                // A token signed by the lab's secret for an account this host has
                // not heard of yet (created or changed on another host a moment
                // ago, the notification still on its way): ask the database.
                if user.as_ref().is_none_or(|u| u.credential_generation < claims.generation) {
                    user = Box::pin(self.store.user_current(&claims.sub)).await.ok().flatten().or(user);
                }
                match user {
                    Some(user) if user.disabled => Err(AppError::AccountDisabled),
                    Some(user) if user.credential_generation == claims.generation => {
                        let role = role_of(&self.config(), &user);
                        Ok(Principal { email: user.email, role, address: None })
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
            let role = role_of(&config, &user);
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
        let is_admin = self.store.user(&email)?.is_some_and(|user| role_of(&config, &user) == Role::Admin);
        if disabled && is_admin {
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
        let (name, detail) = match disabled {
            true => ("account_disabled", format!("{} bookings cancelled", change.cancelled.len())),
            false => ("account_enabled", String::new()),
        };
        self.audit(who, "", name, Some(&email), detail).await;
        if disabled {
            self.sign_out(&email, super::SignOutReason::Disabled);
        }
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
    pub previous_login: Option<Timestamp>,
}

/// An account as an admin left it, and the bookings that went with it, with their slots.
#[derive(Debug)]
pub struct AccountUpdate {
    pub user: User,
    pub cancelled: Vec<(Booking, Slot)>,
}

/// Refuses an address that looks like one in `auth.admins` without being
/// it. Accounts in the store are checked by the store, in the transaction
/// that creates the new one.
fn refuse_look_alike_of_an_admin(config: &Config, email: &str) -> Result<(), AppError> {
    let skeleton = auth::email_skeleton(email);
    let look_alike = config.auth.admins.iter().any(|admin| admin != email && auth::email_skeleton(admin) == skeleton);
    if look_alike { Err(AppError::LooksLikeAnAccount(email.to_owned())) } else { Ok(()) }
}

/// An account's role: admin if the config lists it or it was made one on the host.
fn role_of(config: &Config, user: &User) -> Role {
    if user.admin || config.auth.admins.contains(&user.email) { Role::Admin } else { Role::User }
}

fn require_admin(who: &Principal) -> Result<(), AppError> {
    if who.role == Role::Admin { Ok(()) } else { Err(AppError::AdminOnly) }
}

/// How many stored hashes have each bcrypt cost, so that checking a password
/// for an unknown address costs what checking one for a known address does
/// (a lab that raised `auth.bcrypt_cost` keeps older hashes at the old cost).
#[derive(Debug)]
pub(super) struct HashCosts {
    counts: std::sync::Mutex<std::collections::BTreeMap<u32, usize>>,
    /// The configured cost, used while no account exists.
    configured: u32,
}

impl HashCosts {
    pub(super) fn new(users: &[User], configured: u32) -> HashCosts {
        let costs = HashCosts { counts: Default::default(), configured };
        users.iter().for_each(|u| costs.note(&u.password_hash));
        costs
    }

    pub(super) fn note(&self, hash: &auth::PasswordHash) {
        if let Some(cost) = hash.cost() {
            *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(cost).or_default() += 1;
        }
    }

    /// The most common cost of the stored hashes.
    pub(super) fn typical(&self) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().max_by_key(|(_, n)| **n).map_or(self.configured, |(cost, _)| *cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordHash;

    fn user_with(hash: &str) -> User {
        User {
            id: 1,
            email: "a@x.org".into(),
            password_hash: PasswordHash::from_stored(hash.into()),
            created_at: Timestamp::UNIX_EPOCH,
            disabled: false,
            credential_generation: 0,
            last_login: None,
            admin: false,
        }
    }

    #[test]
    fn the_dummy_hash_costs_what_the_stored_hashes_cost() {
        // No accounts yet: the configured cost.
        assert_eq!(HashCosts::new(&[], 12).typical(), 12);
        // A lab that raised the cost to 12 keeps older hashes at 10: the most common wins.
        let users = [user_with("$2b$10$a"), user_with("$2b$10$b"), user_with("$2b$12$c")];
        let costs = HashCosts::new(&users, 12);
        assert_eq!(costs.typical(), 10);
        costs.note(&PasswordHash::from_stored("$2b$12$d".into()));
        costs.note(&PasswordHash::from_stored("$2b$12$e".into()));
        assert_eq!(costs.typical(), 12);
    }
}
