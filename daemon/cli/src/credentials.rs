//! The stored login: `$XDG_CONFIG_HOME/rero/credentials.toml` (else
//! `~/.config/rero/credentials.toml`), mode 0600, holding the server and the
//! token; `RERO_SERVER` and `RERO_TOKEN` override what it holds.

use std::fmt;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use rerod_wire::{EmailPassword, LoginResponse, RegisterResponse, UserSlotResponse};
use serde::{Deserialize, Serialize};

use crate::api::{Client, Error};

/// The server rero talks to when nothing says otherwise: rerod's own default.
pub const DEFAULT_SERVER: &str = "http://localhost:8000";

/// What the credentials file holds.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// The server and token in force: the environment's, else the stored ones.
#[derive(Clone)]
pub struct Settings {
    pub server: String,
    pub token: Option<String>,
    /// Who the stored token belongs to (none with `RERO_TOKEN`).
    pub email: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself, only whether there is one.
        f.debug_struct("Settings")
            .field("server", &self.server)
            .field("token", &self.token.is_some())
            .field("email", &self.email)
            .finish()
    }
}

fn path() -> Result<PathBuf, Error> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Err(Error::message("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the login")),
        },
    };
    Ok(base.join("rero").join("credentials.toml"))
}

fn load() -> Result<Stored, Error> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| Error::message(format!("{}: {e}; run `rero logout` and log in again", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(e) => Err(Error::message(format!("reading {}: {e}", path.display()))),
    }
}

/// Writes the file whole, created 0600 (in a 0700 folder) and renamed into
/// place, so the token is never readable by others, not even for a moment.
fn save(stored: &Stored) -> Result<PathBuf, Error> {
    let path = path()?;
    let failed = |e: std::io::Error| Error::message(format!("writing {}: {e}", path.display()));
    let dir = path.parent().ok_or_else(|| Error::message("the credentials path has no folder"))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(failed)?;
    let text = toml::to_string(stored).map_err(|e| Error::message(e.to_string()))?;
    let partial = path.with_extension("toml.partial");
    let _ = std::fs::remove_file(&partial);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial).map_err(failed)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(failed)?;
    std::fs::rename(&partial, &path).map_err(failed)?;
    Ok(path)
}

/// A client of the stored server with the stored token, each overridden by
/// `RERO_SERVER` and `RERO_TOKEN`.
pub fn client() -> Result<Client, Error> {
    let settings = settings()?;
    Client::new(&settings.server, settings.token)
}

/// The server and token in force.
pub fn settings() -> Result<Settings, Error> {
    let stored = load()?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let from_env = env("RERO_TOKEN");
    Ok(Settings {
        server: env("RERO_SERVER").or(stored.server).unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
        email: if from_env.is_some() { None } else { stored.email },
        token: from_env.or(stored.token),
    })
}

/// `rero login`: asks for the password, logs in, keeps the token.
pub async fn login(email: &str, server: Option<&str>, json: bool) -> Result<(), Error> {
    let mut settings = settings()?;
    if let Some(server) = server {
        settings.server = server.to_owned();
    }
    let client = Client::new(&settings.server, settings.token.clone())?;
    let password = read_password()?;
    sign_in(&client, &settings, email, password, json).await
}

/// `rero register`: asks for a password, creates the account, and logs in
/// with it as `rero login` does.
pub async fn register(email: &str, server: Option<&str>, json: bool) -> Result<(), Error> {
    let mut settings = settings()?;
    if let Some(server) = server {
        settings.server = server.to_owned();
    }
    let client = Client::new(&settings.server, settings.token.clone())?;
    let password = read_new_password()?;
    let request = EmailPassword { email: email.to_owned(), password: password.clone() };
    let answer: RegisterResponse = client.post("/auth/register", &request, false).await?;
    if !json {
        println!("Registered {} at {}.", answer.email, settings.server);
    }
    sign_in(&client, &settings, &answer.email, password, json).await
}

/// Logs in with `password` and keeps the token.
async fn sign_in(client: &Client, settings: &Settings, email: &str, password: String, json: bool) -> Result<(), Error> {
    let request = EmailPassword { email: email.to_owned(), password };
    let answer: LoginResponse = client.post("/auth/login", &request, false).await?;
    let stored = Stored {
        server: Some(settings.server.clone()),
        email: Some(answer.user.email.clone()),
        token: Some(answer.token.clone()),
    };
    let path = save(&stored)?;
    if json {
        // The token is the one field never shown: it lives in the file alone.
        let mut shown = answer;
        shown.token = String::from("(saved)");
        return crate::api::print_json(&shown);
    }
    println!(
        "Logged in to {} as {} ({}); the token is in {}",
        settings.server,
        answer.user.email,
        answer.user.role,
        path.display()
    );
    Ok(())
}

/// `rero status --json`.
#[derive(Debug, Serialize)]
struct StatusJson<'a> {
    server: &'a str,
    version: &'a str,
    timezone: &'a str,
    demo: bool,
    email: Option<&'a str>,
    logged_in: bool,
    booking: Option<&'a UserSlotResponse>,
}

/// `rero status`: which lab rero talks to, who you are there, and your
/// booking in progress or next. Fails only when the server cannot be reached.
pub async fn status(json: bool) -> Result<(), Error> {
    let settings = settings()?;
    let client = Client::new(&settings.server, settings.token.clone())?;
    let health: rerod_wire::HealthResponse = client.get("/health", false).await?;
    let clock = crate::time::LabClock::named(health.lab.timezone.as_deref());
    let mine: Option<Result<UserSlotResponse, Error>> =
        if client.has_token() { Some(client.get("/slots/user", true).await) } else { None };
    if json {
        return crate::api::print_json(&StatusJson {
            server: &settings.server,
            version: &health.version,
            timezone: clock.name(),
            demo: health.lab.demo,
            email: settings.email.as_deref(),
            logged_in: matches!(mine, Some(Ok(_))),
            booking: mine.as_ref().and_then(|m| m.as_ref().ok()),
        });
    }
    let demo = if health.lab.demo { ", the demo lab" } else { "" };
    println!("Server:  {} (rerod {}{demo}; times in {})", settings.server, health.version, clock.name());
    let who = settings.email.as_deref().unwrap_or("the account of RERO_TOKEN");
    match mine {
        None => println!("Account: not logged in (rero login EMAIL, or rero register EMAIL for a new account)"),
        Some(Err(Error::Api { body, .. })) => {
            println!("Account: {who}, but the login no longer works ({}): rero login EMAIL", body.detail)
        }
        Some(Err(error)) => return Err(error),
        Some(Ok(mine)) => {
            println!("Account: {who}");
            let board = mine.device.as_deref().unwrap_or("?");
            match (mine.start.as_deref(), mine.end.as_deref()) {
                (Some(start), Some(end)) if mine.has_booking && mine.is_current => {
                    let left = clock.minutes_left(end).unwrap_or(0);
                    println!("Booking: in progress on {board}, {} ({left} min left)", clock.span(start, end));
                }
                (Some(start), Some(end)) if mine.has_booking => {
                    println!("Booking: next on {board}, {}", clock.span(start, end));
                }
                _ => println!("Booking: none (rero slots, then rero book now or rero book HH:MM)"),
            }
        }
    }
    Ok(())
}

/// `rero logout`: forgets the stored server and token.
pub fn logout() -> Result<(), Error> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => println!("Logged out: {} removed", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("Not logged in; nothing to forget"),
        Err(e) => return Err(Error::message(format!("removing {}: {e}", path.display()))),
    }
    Ok(())
}

/// From the terminal without echo, or the first line of stdin in a script.
fn read_password() -> Result<String, Error> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        crate::terminal::read_hidden("Password: ").map_err(|e| Error::message(format!("reading the password: {e}")))?
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| Error::message(format!("reading the password: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err(Error::message("no password given"));
    }
    Ok(password)
}

/// A new password: from the terminal without echo, asked twice; or the first
/// line of stdin in a script.
fn read_new_password() -> Result<String, Error> {
    if !std::io::stdin().is_terminal() {
        return read_password();
    }
    let first = read_password()?;
    let again =
        crate::terminal::read_hidden("Again: ").map_err(|e| Error::message(format!("reading the password: {e}")))?;
    if first != again {
        return Err(Error::message("the two passwords differ; no account was made"));
    }
    Ok(first)
}
