//! Accounts in front of hostile clients: parallel password guessing, floods
//! of logins, a full hashing queue, admin addresses, truncated passwords,
//! short secrets, taking tokens back (password change, logout everywhere),
//! look-alike addresses, weak passwords and floods of registrations.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::util::{Daemon, Options, PASSWORD, UTC_LAB};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_parallel_wrong_passwords_reach_bcrypt_at_most_max_failed_logins_times() {
    let config = format!("{UTC_LAB}[auth]\nmax_failed_logins = 10\n");
    // Hashes slow enough that all forty guesses are in flight together.
    let daemon = Daemon::start_with(Options::config(&config).env("BCRYPT_ROUNDS", "10"));
    let c = daemon.client();
    c.register("victim@example.com", PASSWORD).await.expect(200);
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let c = daemon.client();
            tokio::spawn(async move {
                let body = json!({"email": "victim@example.com", "password": format!("guess{i}")});
                c.post("/auth/login", &body).await
            })
        })
        .collect();
    let (mut checked, mut throttled) = (0, 0);
    for guess in guesses {
        let r = guess.await.unwrap();
        match r.status {
            // A 401 means the guess was hashed and compared.
            401 => checked += 1,
            429 => {
                assert_eq!(r.json()["code"], "too_many_attempts");
                assert!(r.header("retry-after").is_some());
                throttled += 1;
            }
            other => panic!("unexpected {other}: {:?}", r.json()),
        }
    }
    assert_eq!((checked, throttled), (10, 30), "only max_failed_logins guesses may reach bcrypt");
    // The right password is throttled too until the window passes: the answer tells nothing.
    let r = c.post("/auth/login", &json!({"email": "victim@example.com", "password": PASSWORD})).await;
    assert_eq!(r.status, 429);
}

#[tokio::test]
async fn one_address_gets_max_logins_per_address_then_429() {
    let config = format!("{UTC_LAB}[auth]\nmax_logins_per_address = 5\naddress_window_secs = 600\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    c.register("ada@example.com", PASSWORD).await.expect(200);
    let token = c.login("ada@example.com", PASSWORD).await;
    for _ in 0..3 {
        c.login("ada@example.com", PASSWORD).await;
    }
    // Registrations and logins share the allowance: that was the fifth.
    let r = c.post("/auth/login", &json!({"email": "ada@example.com", "password": PASSWORD})).await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert_eq!(r.json()["code"], "too_many_attempts");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    assert_eq!(c.register("bob@example.com", PASSWORD).await.status, 429);
    // Requests that carry a token are not logins: the signed-in account goes on working.
    c.get_auth("/my-bookings", &token).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_password_queue_answers_503_overloaded_at_once() {
    // Costly hashes and room for one waiting check: a flood cannot queue.
    let config = format!("{UTC_LAB}[auth]\nmax_queued_password_checks = 1\n");
    let daemon = Daemon::start_with(Options::config(&config).env("BCRYPT_ROUNDS", "13"));
    let floods: Vec<_> = (0..12)
        .map(|i| {
            let c = daemon.client();
            tokio::spawn(async move {
                let body = json!({"email": format!("nobody{i}@example.com"), "password": PASSWORD});
                c.post("/auth/login", &body).await
            })
        })
        .collect();
    let mut overloaded = 0;
    for flood in floods {
        let r = flood.await.unwrap();
        match r.status {
            401 => {}
            503 => {
                assert_eq!(r.json()["code"], "overloaded");
                assert!(r.header("retry-after").is_some());
                overloaded += 1;
            }
            other => panic!("unexpected {other}: {:?}", r.json()),
        }
    }
    assert!(overloaded >= 1, "a flood beyond the queue must be refused, not queued");
}

#[tokio::test]
async fn an_admin_address_cannot_register_itself() {
    let config = format!("{UTC_LAB}[auth]\nadmins = [\"boss@example.com\"]\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    let r = c.register(" Boss@Example.com ", PASSWORD).await;
    assert_eq!(r.status, 403, "{:?}", r.json());
    assert_eq!(r.json()["code"], "registration_refused");
    assert!(r.json()["detail"].as_str().unwrap().contains("rerod user add"));
    // Nothing was created.
    let r = c.post("/auth/login", &json!({"email": "boss@example.com", "password": PASSWORD})).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_password_is_never_checked_truncated() {
    let daemon = Daemon::start();
    let c = daemon.client();
    // 72 bytes, and not one letter repeated: that would be refused as weak.
    let password = PASSWORD.repeat(4)[..72].to_owned();
    c.register("ada@example.com", &password).await.expect(200);
    c.login("ada@example.com", &password).await;
    for longer in [format!("{password}x"), format!("{password}{}", "anything".repeat(4))] {
        let r = c.post("/auth/login", &json!({"email": "ada@example.com", "password": longer})).await;
        assert_eq!(r.status, 401, "a password past 72 bytes must not match its first 72");
    }
}

#[tokio::test]
async fn changing_the_password_revokes_every_earlier_token() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let laptop = c.user("ada@example.com").await;
    let phone = c.login("ada@example.com", PASSWORD).await;
    // The current password is required, and the new one must be acceptable.
    let wrong = json!({"old_password": "nope", "new_password": "harbor-lantern-violet-7"});
    assert_eq!(c.post_auth("/auth/password", &laptop, &wrong).await.status, 401);
    let short = json!({"old_password": PASSWORD, "new_password": "x"});
    assert_eq!(c.post_auth("/auth/password", &laptop, &short).await.expect(422)["field"], "new_password");
    let weak = json!({"old_password": PASSWORD, "new_password": "password"});
    assert_eq!(c.post_auth("/auth/password", &laptop, &weak).await.expect(422)["code"], "weak_password");
    assert_eq!(c.post("/auth/password", &json!({"old_password": "a", "new_password": "b"})).await.status, 401);

    let change = json!({"old_password": PASSWORD, "new_password": "harbor-lantern-violet-7"});
    let changed = c.post_auth("/auth/password", &laptop, &change).await.expect(200);
    let fresh = changed["token"].as_str().unwrap().to_owned();
    for old in [&laptop, &phone] {
        assert_eq!(c.get_auth("/my-bookings", old).await.status, 401, "tokens from before the change are revoked");
    }
    c.get_auth("/my-bookings", &fresh).await.expect(200);
    let r = c.post("/auth/login", &json!({"email": "ada@example.com", "password": PASSWORD})).await;
    assert_eq!(r.status, 401);
    c.login("ada@example.com", "harbor-lantern-violet-7").await;
}

#[tokio::test]
async fn logout_all_revokes_every_token_of_the_account_only() {
    let daemon = Daemon::start();
    let c = daemon.client();
    let one = c.user("ada@example.com").await;
    let two = c.login("ada@example.com", PASSWORD).await;
    let bob = c.user("bob@example.com").await;
    c.post_auth("/auth/logout-all", &one, &json!({})).await.expect(200);
    assert_eq!(c.get_auth("/my-bookings", &one).await.status, 401);
    assert_eq!(c.get_auth("/my-bookings", &two).await.status, 401);
    c.get_auth("/my-bookings", &bob).await.expect(200);
    // Signing in again works.
    let again = c.login("ada@example.com", PASSWORD).await;
    c.get_auth("/my-bookings", &again).await.expect(200);
}

#[test]
fn a_short_jwt_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rerod"))
        .current_dir(dir.path())
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATABASE_PATH", dir.path().join("rerod.redb"))
        .env("JWT_SECRET_KEY", "only-twenty-six-bytes-long")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "rerod must not start with a guessable secret");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(!stderr.contains("only-twenty-six-bytes-long"), "the secret itself is never printed");
}

#[tokio::test]
async fn the_host_creates_the_first_admin_and_resets_passwords_while_rerod_runs() {
    let daemon = Daemon::start();
    let c = daemon.client();
    // No admin is configured: the lab creates one on the host.
    let boss = daemon.host_account("boss@example.com", true).await;
    let login = c.post("/auth/login", &json!({"email": "boss@example.com", "password": PASSWORD})).await;
    assert_eq!(login.expect(200)["user"]["role"], "admin");
    c.get_auth("/admin/users", &boss).await.expect(200);
    // Without --admin it is an ordinary account.
    let ada = daemon.host_account("ada@example.com", false).await;
    assert_eq!(c.get_auth("/admin/users", &ada).await.expect(403)["code"], "admin_only");
    // The same address twice is refused and changes nothing.
    let again = daemon.host_command(&["user", "add", "ada@example.com"], "other-password");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    c.login("ada@example.com", PASSWORD).await;
    // A forgotten password is set on the host; every earlier token stops working.
    let reset = daemon.host_command(&["user", "passwd", "ada@example.com"], "new-password");
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert_eq!(c.get_auth("/my-bookings", &ada).await.status, 401);
    c.login("ada@example.com", "new-password").await;
    // Bad input gets a clear error.
    let short = daemon.host_command(&["user", "add", "bob@example.com"], "x");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least"));
    let unknown = daemon.host_command(&["user", "passwd", "nobody@example.com"], PASSWORD);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("No account"));
}

#[tokio::test]
async fn rerod_user_needs_the_running_daemon() {
    let mut daemon = Daemon::start();
    daemon.terminate().await;
    let output = daemon.host_command(&["user", "add", "boss@example.com", "--admin"], PASSWORD);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("rerod must be running"));
}

#[tokio::test]
async fn no_password_hash_or_token_reaches_the_log() {
    let daemon = Daemon::start_with(Options::config(UTC_LAB).env("LOG_LEVEL", "debug"));
    let c = daemon.client();
    let password = "correct-horse-battery";
    c.register("ada@example.com", password).await.expect(200);
    let token = c.login("ada@example.com", password).await;
    c.post("/auth/login", &json!({"email": "ada@example.com", "password": "a-wrong-guess"})).await;
    let change = json!({"old_password": password, "new_password": "staple-and-more"});
    let fresh = c.post_auth("/auth/password", &token, &change).await.expect(200)["token"].as_str().unwrap().to_owned();
    let booking = json!({"slot_id": 23, "email": "ada@example.com", "password": "staple-and-more"});
    c.post("/book-slot", &booking).await.expect(200);
    daemon.host_command(&["user", "passwd", "ada@example.com"], "reset-by-the-host");
    let log = daemon.log_until(|log| log.contains("password set on the host")).await;
    for secret in [password, "a-wrong-guess", "staple-and-more", "reset-by-the-host", &token, &fresh, "$2b$"] {
        assert!(!log.contains(secret), "the log shows {secret:?}");
    }
}

/// Copies of an admin's address that a reader cannot tell from it, as they
/// would appear in `booked_by` and the admin list.
#[tokio::test]
async fn look_alike_copies_of_an_admins_address_are_refused_naming_the_reason() {
    let config = format!("{UTC_LAB}[auth]\nadmins = [\"lab-admin@uni.example\"]\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    // A zero-width space, a right-to-left override, a left-to-right one.
    for copy in ["lab-admin\u{200B}@uni.example", "\u{202E}lab-admin@uni.example", "lab-ad\u{202D}min@uni.example"] {
        let body = c.register(copy, PASSWORD).await.expect(422);
        assert_eq!(body["field"], "email", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("invisible"), "{body}");
    }
    // Cyrillic letters, and a digit for a letter.
    for copy in ["lab-\u{430}dmin@uni.example", "l\u{430}b-\u{430}dmin@uni.\u{435}xample", "1ab-admin@uni.example"] {
        let body = c.register(copy, PASSWORD).await.expect(400);
        assert_eq!(body["code"], "email_confusable", "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("looks the same as an existing account"), "{detail}");
        assert!(!detail.contains("lab-admin@uni.example"), "the other address is not named: {detail}");
    }
    // Full-width letters are the admin's address itself once normalized.
    let body = c.register("ｌａｂ-ａｄｍｉｎ@uni.example", PASSWORD).await.expect(403);
    assert_eq!(body["code"], "registration_refused");
    // None of them was created.
    let admin = daemon.host_account("lab-admin@uni.example", true).await;
    let users = c.get_auth("/admin/users", &admin).await.expect(200);
    assert_eq!(users["count"], 1, "{users}");
}

#[tokio::test]
async fn a_look_alike_of_a_students_address_is_refused() {
    let daemon = Daemon::start();
    let c = daemon.client();
    c.user("ada.king@example.com").await;
    for copy in
        ["\u{430}da.king@example.com", "ada.king@examp1e.com", "ada.k\u{456}ng@example.com", "ada.king@exarnple.com"]
    {
        let body = c.register(copy, PASSWORD).await.expect(400);
        assert_eq!(body["code"], "email_confusable", "{copy}: {body}");
        assert!(!body["detail"].as_str().unwrap().contains("ada.king@example.com"), "{body}");
    }
    // Full-width letters normalize to the same address.
    assert_eq!(c.register("ＡＤＡ.ＫＩＮＧ@example.com", PASSWORD).await.expect(400)["code"], "email_taken");
    // An address that only resembles it in spelling is someone else.
    c.register("ada.kings@example.com", PASSWORD).await.expect(200);
    // The host cannot create a look-alike either.
    let output = daemon.host_command(&["user", "add", "\u{430}da.king@example.com"], PASSWORD);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("looks the same"), "{output:?}");
}

#[tokio::test]
async fn the_address_and_common_passwords_are_refused() {
    let daemon = Daemon::start();
    let c = daemon.client();
    for password in ["adalovelace@example.com", "AdaLovelace", "password", "12345678", "qwertyuiop"] {
        let body = c.register("adalovelace@example.com", password).await.expect(422);
        assert_eq!((body["code"].as_str(), body["field"].as_str()), (Some("weak_password"), Some("password")));
    }
    // No composition rules: a few words are enough.
    c.register("adalovelace@example.com", "orchid lantern tuesday").await.expect(200);
}

#[tokio::test]
async fn new_accounts_from_one_address_are_limited_per_hour() {
    let config = format!("{UTC_LAB}[auth]\nmax_registrations_per_address_per_hour = 3\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    // Refused registrations make no account and count for nothing.
    c.register("s0@example.com", "password").await.expect(422);
    for i in 0..3 {
        c.register(&format!("s{i}@example.com"), PASSWORD).await.expect(200);
    }
    let r = c.register("s3@example.com", PASSWORD).await;
    let body = r.expect(429);
    assert_eq!(body["code"], "too_many_registrations");
    assert!(body["detail"].as_str().unwrap().contains("from this address"), "{body}");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((3000..=3600).contains(&retry), "{retry}");
    // Accounts already made go on logging in.
    c.login("s1@example.com", PASSWORD).await;
}

#[tokio::test]
async fn new_accounts_from_everywhere_are_limited_per_hour() {
    let config = format!("{UTC_LAB}[auth]\nmax_registrations_per_hour = 2\n");
    let daemon = Daemon::start_with(Options::config(&config));
    let c = daemon.client();
    c.register("s0@example.com", PASSWORD).await.expect(200);
    c.register("s1@example.com", PASSWORD).await.expect(200);
    let r = c.register("s2@example.com", PASSWORD).await;
    assert_eq!(r.expect(429)["code"], "too_many_registrations");
    assert!(r.header("retry-after").is_some());
    // The host still creates accounts: the limits are for self-registration.
    let output = daemon.host_command(&["user", "add", "s2@example.com"], PASSWORD);
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn the_host_imports_a_class_from_csv_and_gets_its_passwords() {
    let daemon = Daemon::start();
    let c = daemon.client();
    c.user("taken@example.com").await;
    let csv = "Name,Email,Password\n\
               Ada,ADA@example.com,\n\
               Bob,bob@example.com,orchid lantern tuesday\n\
               Eve,taken@example.com,\n\
               Mallory,t\u{430}ken@example.com,\n\
               Walt,walt@example.com,password\n";
    let output = daemon.host_command(&["user", "import", "-"], csv);
    let (stdout, stderr) = (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap());
    assert!(!output.status.success(), "three rows were refused: {stderr}");
    // Lines 4 to 6: taken, a look-alike, a weak password.
    for (line, reason) in [(4, "already exists"), (5, "looks the same"), (6, "too easy to guess")] {
        assert!(stderr.lines().any(|l| l.starts_with(&format!("line {line}:")) && l.contains(reason)), "{stderr}");
    }
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("email,password"));
    let ada = lines.next().unwrap().strip_prefix("ada@example.com,").expect("ada's generated password").to_owned();
    assert_eq!(ada.len(), 16);
    assert_eq!(lines.next(), Some("bob@example.com,orchid lantern tuesday"));
    assert_eq!(lines.next(), None);
    c.login("ada@example.com", &ada).await;
    c.login("bob@example.com", "orchid lantern tuesday").await;
    // Passwords appear only where the admin asked for them: never in the daemon's log.
    assert!(!daemon.log().contains(&ada));
}
