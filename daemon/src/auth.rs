//! Credentials: e-mail and password rules, bcrypt hashing on a small pool of
//! threads (so a login never stalls other requests), and JWTs.
//!
//! Architecture invariant: nothing here logs or formats a password, hash or
//! token; the types holding them do not implement `Display`.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, mpsc};

use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::oneshot;

/// bcrypt reads at most 72 bytes; longer passwords are refused, never truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is empty")]
    Empty,
    #[error("email is not a valid address (expected name@domain.tld)")]
    Malformed,
    #[error("email is longer than 254 characters")]
    TooLong,
    #[error(
        "email contains an invisible formatting or text-direction character (U+{0:04X}); type the address \
         without it"
    )]
    InvisibleCharacter(u32),
}

/// Normalizes an e-mail address and checks its shape: trimmed, Unicode NFKC
/// (full-width and other compatibility forms become the plain letters), then
/// lower case.
///
/// Format characters (Unicode category Cf: zero-width spaces and joiners, the
/// bidi controls such as RIGHT-TO-LEFT OVERRIDE, soft hyphens) are refused,
/// not removed: they make one address look like another, or like nothing at
/// all, and nobody types them on purpose.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    use unicode_normalization::UnicodeNormalization;
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let trimmed = raw.trim();
    if let Some(c) = trimmed.chars().find(|c| c.general_category() == GeneralCategory::Format) {
        return Err(EmailError::InvisibleCharacter(u32::from(c)));
    }
    let email = trimmed.nfkc().collect::<String>().to_lowercase();
    if email.is_empty() {
        return Err(EmailError::Empty);
    }
    if email.len() > 254 {
        return Err(EmailError::TooLong);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(EmailError::Malformed);
    };
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '@' | '<' | '>' | ',' | ';' | '"');
    let labels_ok = domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if local.is_empty() || local.len() > 64 || local.chars().any(bad_char) || domain.chars().any(bad_char) || !labels_ok
    {
        return Err(EmailError::Malformed);
    }
    Ok(email)
}

/// The confusable skeleton of a normalized address (Unicode TS #39): two
/// addresses with the same skeleton look alike to a reader ("paypal" with a
/// Cyrillic "а", "rn" for "m", "1" for "l"), so only one of them may have an
/// account.
///
/// The skeleton is lower-cased again at the end because addresses compare
/// without case, while TS #39's mapping keeps it ("0" becomes "O").
pub fn email_skeleton(normalized: &str) -> String {
    unicode_security::skeleton(normalized).collect::<String>().to_lowercase()
}

/// Names the rules and Unicode data behind [`normalize_email`] and
/// [`email_skeleton`]: skeletons stored under another (after an upgrade of the
/// Unicode crates, say) are computed afresh.
pub fn skeleton_version() -> String {
    let (a, b, c) = unicode_security::UNICODE_VERSION;
    let (d, e, f) = unicode_normalization::UNICODE_VERSION;
    format!("1;confusables {a}.{b}.{c};nfkc {d}.{e}.{f}")
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {min} characters long")]
    TooShort { min: usize },
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes long (UTF-8)")]
    TooLong,
    #[error("password must not contain NUL characters")]
    ContainsNul,
    #[error("password must not be the e-mail address or its name part; choose a different password")]
    IsTheAddress,
    #[error(
        "password is too easy to guess (strength {score} of 4, at least {min} needed){}; a few unrelated words \
         make a strong password",
        hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default()
    )]
    TooWeak { score: u8, min: u8, hint: Option<String> },
}

/// Checks the form of a new password: at least `min_chars` characters, at
/// most 72 bytes, no NUL. See [`check_password_strength`] for the rest.
pub fn check_new_password(password: &str, min_chars: usize) -> Result<(), PasswordError> {
    if password.chars().count() < min_chars {
        return Err(PasswordError::TooShort { min: min_chars });
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.contains('\0') {
        return Err(PasswordError::ContainsNul);
    }
    Ok(())
}

/// Refuses a new password for the (normalized) `email` that an attacker
/// would try early: the address itself or its name part, or a password the
/// zxcvbn estimator scores below `min_score` (0 to 4: common passwords,
/// keyboard walks, dictionary words with digits, dates, the address's own
/// parts). As NIST SP 800-63B advises, there are no composition rules
/// ("a digit and a capital"): they make passwords harder to remember, not
/// to guess.
pub fn check_password_strength(password: &str, email: &str, min_score: u8) -> Result<(), PasswordError> {
    let local = email.split_once('@').map_or(email, |(local, _)| local);
    let typed = password.trim().to_lowercase();
    if typed == email || typed == local {
        return Err(PasswordError::IsTheAddress);
    }
    if min_score == 0 {
        return Ok(());
    }
    let domain = email.rsplit_once('@').map_or("", |(_, domain)| domain);
    let mut inputs = vec![email, local];
    inputs.extend(domain.split('.').filter(|label| label.len() > 2));
    let estimate = zxcvbn::zxcvbn(password, &inputs);
    let score = u8::from(estimate.score());
    if score >= min_score {
        return Ok(());
    }
    let hint = estimate.feedback().and_then(|f| f.warning()).map(|w| w.to_string());
    Err(PasswordError::TooWeak { score, min: min_score, hint })
}

/// A fresh random password for an account made in bulk (`rerod user
/// import`): 16 characters from an alphabet without look-alikes (no 0/O,
/// 1/l/I), about 92 bits.
pub fn generate_password() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut password = String::with_capacity(16);
    // Rejection sampling keeps every character equally likely.
    while password.len() < 16 {
        for byte in random_secret()? {
            let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
            if byte < limit && password.len() < 16 {
                password.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    Ok(password)
}

/// A bcrypt hash. Opaque so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn from_stored(hash: String) -> PasswordHash {
        PasswordHash(hash)
    }

    pub fn as_stored(&self) -> &str {
        &self.0
    }

    /// The bcrypt cost the hash was made with (`$2b$12$...` → 12).
    pub fn cost(&self) -> Option<u32> {
        self.0.split('$').nth(2)?.parse().ok()
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs bcrypt on a few dedicated threads.
///
/// bcrypt is deliberately slow (about 0.25 s at cost 12). On the async workers
/// it would stall every other request; on tokio's blocking pool any number of
/// logins would compete with the workers for the cores. Here logins queue for
/// a bounded number of threads (one per two cores, at least one), so hashing
/// can take at most that share of the host, and within it runs at the
/// requests' own priority: a student logging in is waiting too (see
/// [`crate::priority`]).
///
/// The queue is bounded: when it is full a check is refused at once
/// ([`HashError::Overloaded`]) rather than left waiting behind a flood.
#[derive(Clone)]
pub struct Hasher {
    jobs: mpsc::SyncSender<Job>,
    dummy: Arc<Mutex<Option<(u32, PasswordHash)>>>,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks are waiting; try again in a moment")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

impl Hasher {
    /// Starts `n_threads` hashing threads (at least one), with room for
    /// `max_queued` checks waiting for them.
    pub fn start(n_threads: usize, max_queued: usize) -> Hasher {
        let (tx, rx) = mpsc::sync_channel::<Job>(max_queued);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n_threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("rerod-bcrypt-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawning a hashing thread");
        }
        Hasher { jobs: tx, dummy: Arc::new(Mutex::new(None)) }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => HashError::Overloaded,
            mpsc::TrySendError::Disconnected(_) => HashError::Failed("hashing threads are gone".into()),
        })?;
        rx.await.map_err(|_| HashError::Failed("hashing thread stopped".into()))
    }

    /// [`check_password_strength`] on the hashing threads: estimating a long
    /// password can take tens of milliseconds, too long for an async worker,
    /// and a flood of them waits in the same bounded queue as bcrypt.
    pub async fn check_strength(
        &self,
        password: String,
        email: String,
        min_score: u8,
    ) -> Result<Result<(), PasswordError>, HashError> {
        self.run(move || check_password_strength(&password, &email, min_score)).await
    }

    pub async fn hash(&self, password: String, cost: u32) -> Result<PasswordHash, HashError> {
        self.run(move || bcrypt::hash(password, cost))
            .await?
            .map(PasswordHash)
            .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// Verifies `password` against `hash`. With no hash (unknown user) it
    /// verifies against a dummy hash of `dummy_cost` (that of the stored
    /// hashes) and answers `false`, so both cases take about the same time.
    ///
    /// bcrypt reads only the first 72 bytes and stops at a NUL: a password
    /// that long, or with a NUL, could never have been registered, and is
    /// refused here rather than checked as a shorter one.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<PasswordHash>,
        dummy_cost: u32,
    ) -> Result<bool, HashError> {
        let dummy = Arc::clone(&self.dummy);
        let acceptable = password.len() <= MAX_PASSWORD_BYTES && !password.contains('\0');
        self.run(move || {
            let (target, known) = match hash {
                Some(hash) if acceptable => (hash, true),
                _ => (dummy_hash(&dummy, dummy_cost)?, false),
            };
            let ok = bcrypt::verify(password, target.as_stored()).unwrap_or(false);
            Ok(ok && known)
        })
        .await?
    }
}

fn dummy_hash(cache: &Mutex<Option<(u32, PasswordHash)>>, cost: u32) -> Result<PasswordHash, HashError> {
    let mut cache = cache.lock().map_err(|_| HashError::Failed("dummy hash lock poisoned".into()))?;
    match &*cache {
        Some((c, hash)) if *c == cost => Ok(hash.clone()),
        _ => {
            let hash =
                PasswordHash(bcrypt::hash("rerod-dummy-password", cost).map_err(|e| HashError::Failed(e.to_string()))?);
            *cache = Some((cost, hash.clone()));
            Ok(hash)
        }
    }
}

/// What a token says. `gen` is the user's credential generation when it was
/// issued: changing the password or disabling the account bumps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default)]
    pub generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or its signature does not match")]
    Invalid,
    #[error("token has expired; log in again")]
    Expired,
}

/// The shared-secret algorithms tokens may be signed with (`auth.jwt_algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAlgorithm {
    Hs256,
    Hs384,
    Hs512,
}

impl TokenAlgorithm {
    /// Reads a name as the config spells it, in any case: `HS256`, `HS384` or `HS512`.
    pub fn parse(name: &str) -> Option<TokenAlgorithm> {
        match name.to_ascii_uppercase().as_str() {
            "HS256" => Some(TokenAlgorithm::Hs256),
            "HS384" => Some(TokenAlgorithm::Hs384),
            "HS512" => Some(TokenAlgorithm::Hs512),
            _ => None,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            TokenAlgorithm::Hs256 => Algorithm::HS256,
            TokenAlgorithm::Hs384 => Algorithm::HS384,
            TokenAlgorithm::Hs512 => Algorithm::HS512,
        }
    }
}

/// Signs and checks JWTs with the lab's secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    algorithm: Algorithm,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8], algorithm: TokenAlgorithm) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            algorithm: algorithm.jwt(),
        }
    }

    pub fn issue(&self, email: &str, generation: u32, now: Timestamp, lifetime: std::time::Duration) -> String {
        let iat = now.as_second();
        let claims = Claims {
            sub: email.to_owned(),
            iat,
            exp: iat.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
            generation,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .expect("HMAC signing of a small JSON claim set cannot fail")
    }

    /// Checks signature, algorithm and expiry against `now` (not the system clock).
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|_| TokenError::Invalid)?.claims;
        if claims.exp <= now.as_second() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Fresh random bytes for a generated secret.
pub fn random_secret() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut secret = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

/// How far the signer's clock may be from the owner's. Hosts of one lab
/// keep their clocks by NTP; a signature older than this is not believed.
pub const PEER_MAX_SKEW_SECS: i64 = 30;

/// The signed value of peer header (`x-rerod-peer`) for a request `method path` from
/// `client`, at `now` (unix seconds).
pub fn sign_peer(secret: &[u8], method: &str, path_and_query: &str, client: IpAddr, now: i64) -> String {
    let tag = peer_mac(secret, method, path_and_query, client, now).finalize().into_bytes();
    format!("{now};{client};{}", hex(&tag))
}

/// The client's address a peer header (`x-rerod-peer`) value vouches for, when its
/// signature is good and recent; `None` for anything else.
pub fn verify_peer(secret: &[u8], method: &str, path_and_query: &str, value: &str, now: i64) -> Option<IpAddr> {
    let mut parts = value.split(';');
    let (at, client, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let at: i64 = at.parse().ok()?;
    let client: IpAddr = client.parse().ok()?;
    if (now - at).abs() > PEER_MAX_SKEW_SECS {
        return None;
    }
    let tag = unhex(tag)?;
    // verify_slice compares in constant time.
    peer_mac(secret, method, path_and_query, client, at).verify_slice(&tag).ok()?;
    Some(client)
}

fn peer_mac(secret: &[u8], method: &str, path_and_query: &str, client: IpAddr, at: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    // Fields separated by a byte none of them can hold.
    for field in [method, path_and_query, &client.to_string(), &at.to_string()] {
        mac.update(field.as_bytes());
        mac.update(b"\n");
    }
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(normalize_email("  Ada@Example.ORG ").unwrap(), "ada@example.org");
        for bad in [
            "",
            "   ",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a da@example.org",
            "ada@@example.org",
            "ada@-x.org",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(normalize_email(&format!("{}@x.org", "a".repeat(300))), Err(EmailError::TooLong));
    }

    #[test]
    fn addresses_are_normalized_to_nfkc_before_lower_case() {
        // Full-width letters, the ligature "ﬁ" and a superscript two are compatibility forms.
        assert_eq!(normalize_email("ｌａｂ-ａｄｍｉｎ@uni.example").unwrap(), "lab-admin@uni.example");
        assert_eq!(normalize_email("ﬁona@x.org").unwrap(), "fiona@x.org");
        assert_eq!(normalize_email("ada²@x.org").unwrap(), "ada2@x.org");
        // Non-Latin addresses stay what they are: only look-alikes are refused (by skeleton).
        assert_eq!(normalize_email("Ärger@x.org").unwrap(), "ärger@x.org");
        assert_eq!(normalize_email("ДМИТРИЙ@x.org").unwrap(), "дмитрий@x.org");
    }

    #[test]
    fn format_and_direction_characters_are_refused_by_name() {
        for (raw, code) in [
            ("boss\u{200B}@x.org", 0x200B),
            ("\u{200B}boss@x.org", 0x200B),
            ("bo\u{200D}ss@x.org", 0x200D),
            ("\u{202E}gro.x@ssob", 0x202E),
            ("boss@x.org\u{202D}", 0x202D),
            ("bo\u{2066}ss@x.org", 0x2066),
            ("bo\u{00AD}ss@x.org", 0x00AD),
            ("\u{FEFF}boss@x.org", 0xFEFF),
            ("bo\u{E0041}ss@x.org", 0xE0041),
        ] {
            let error = normalize_email(raw).unwrap_err();
            assert_eq!(error, EmailError::InvisibleCharacter(code), "{raw:?}");
            assert!(error.to_string().contains("invisible"), "{error}");
        }
    }

    #[test]
    fn look_alike_addresses_share_a_skeleton() {
        let skeleton = |raw: &str| email_skeleton(&normalize_email(raw).unwrap());
        let admin = skeleton("lab-admin@uni.example");
        // Cyrillic а and е, Greek ο, "rn" for "m", "1" for "l", full-width letters.
        for copy in [
            "lab-\u{430}dmin@uni.example",
            "lab-admin@uni.\u{435}xample",
            "lab-admin@uni.example".replace('o', "\u{3BF}").as_str(),
            "lab-adrnin@uni.example",
            "1ab-admin@uni.example",
            "ＬＡＢ-admin@uni.example",
        ] {
            assert_eq!(skeleton(copy), admin, "{copy:?}");
        }
        // Case does not matter in addresses, so not in skeletons either.
        assert_eq!(skeleton("0tto@x.org"), skeleton("otto@x.org"));
        // Different addresses stay different.
        for other in ["lab-admins@uni.example", "lab-admin@uni.example.org", "bob@uni.example"] {
            assert_ne!(skeleton(other), admin, "{other:?}");
        }
    }

    #[test]
    fn the_address_and_common_passwords_are_refused() {
        let email = "ada.lovelace@uni.example";
        for same in ["ada.lovelace@uni.example", "ADA.Lovelace@uni.example", "ada.lovelace", " Ada.Lovelace "] {
            assert_eq!(check_password_strength(same, email, 0), Err(PasswordError::IsTheAddress), "{same:?}");
        }
        for common in ["password", "password1", "12345678", "qwertyuiop", "letmein1", "trustno1"] {
            assert!(
                matches!(check_password_strength(common, email, 1), Err(PasswordError::TooWeak { score: 0, .. })),
                "{common:?} accepted"
            );
        }
        // The address's own parts, with a digit, count as weak.
        assert!(check_password_strength("lovelace1", email, 2).is_err());
        // Lengthy, unrelated words pass at any level; no composition rules apply.
        for strong in ["correct horse battery staple", "plum-orbit-cactus-41"] {
            assert_eq!(check_password_strength(strong, email, 4), Ok(()), "{strong:?}");
        }
        // 0 turns the estimate off, but never the check against the address.
        assert_eq!(check_password_strength("password", email, 0), Ok(()));
    }

    #[test]
    fn the_old_backends_example_password_passes_the_default() {
        // The seed README's curl examples register test@example.com with testpass123.
        assert_eq!(check_password_strength("testpass123", "test@example.com", 1), Ok(()));
        assert!(check_password_strength("testpass123", "test@example.com", 2).is_err());
    }

    #[test]
    fn generated_passwords_are_strong_and_differ() {
        let (a, b) = (generate_password().unwrap(), generate_password().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!(check_password_strength(&a, "a@x.org", 4), Ok(()));
    }

    #[test]
    fn passwords_are_counted_in_characters_and_capped_at_72_bytes() {
        assert_eq!(check_new_password("", 6), Err(PasswordError::TooShort { min: 6 }));
        assert_eq!(check_new_password("12345", 6), Err(PasswordError::TooShort { min: 6 }));
        assert!(check_new_password("123456", 6).is_ok());
        // Six characters, eighteen bytes.
        assert!(check_new_password("ééééé€", 6).is_ok());
        assert!(check_new_password(&"x".repeat(72), 6).is_ok());
        assert_eq!(check_new_password(&"x".repeat(73), 6), Err(PasswordError::TooLong));
        // 25 three-byte characters: 75 bytes.
        assert_eq!(check_new_password(&"€".repeat(25), 6), Err(PasswordError::TooLong));
        assert_eq!(check_new_password("abc\0defg", 6), Err(PasswordError::ContainsNul));
    }

    #[test]
    fn tokens_round_trip_and_expire_on_the_injected_clock() {
        let keys = TokenKeys::new(b"secret", TokenAlgorithm::Hs256);
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let token = keys.issue("a@x.org", 3, now, std::time::Duration::from_secs(60));
        let claims = keys.verify(&token, now).unwrap();
        assert_eq!((claims.sub.as_str(), claims.generation, claims.exp - claims.iat), ("a@x.org", 3, 60));
        let later = now.checked_add(jiff::SignedDuration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token, later), Err(TokenError::Expired));
    }

    #[test]
    fn forged_and_unsigned_tokens_are_refused() {
        let keys = TokenKeys::new(b"secret", TokenAlgorithm::Hs256);
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let forged = TokenKeys::new(b"other", TokenAlgorithm::Hs256).issue(
            "a@x.org",
            0,
            now,
            std::time::Duration::from_secs(60),
        );
        assert_eq!(keys.verify(&forged, now), Err(TokenError::Invalid));
        let other_alg = TokenKeys::new(b"secret", TokenAlgorithm::Hs512).issue(
            "a@x.org",
            0,
            now,
            std::time::Duration::from_secs(60),
        );
        assert_eq!(keys.verify(&other_alg, now), Err(TokenError::Invalid));
        // {"alg":"none"} with the same claims and an empty signature.
        let token = keys.issue("a@x.org", 0, now, std::time::Duration::from_secs(60));
        let payload = token.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(keys.verify(&none, now), Err(TokenError::Invalid));
        assert_eq!(keys.verify("garbage", now), Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn hashing_verifies_and_unknown_users_never_match() {
        let hasher = Hasher::start(1, 8);
        let hash = hasher.hash("correct horse".into(), 4).await.unwrap();
        assert_eq!(hash.cost(), Some(4));
        assert!(hasher.verify("correct horse".into(), Some(hash.clone()), 4).await.unwrap());
        assert!(!hasher.verify("wrong horse".into(), Some(hash), 4).await.unwrap());
        assert!(!hasher.verify("rerod-dummy-password".into(), None, 4).await.unwrap());
    }

    #[tokio::test]
    async fn verification_never_truncates() {
        let hasher = Hasher::start(1, 8);
        // bcrypt itself reads 72 bytes, and stops at a NUL.
        let password = "x".repeat(72);
        let hash = hasher.hash(password.clone(), 4).await.unwrap();
        assert!(hasher.verify(password.clone(), Some(hash.clone()), 4).await.unwrap());
        assert!(!hasher.verify(format!("{password}anything"), Some(hash), 4).await.unwrap());
        let short = hasher.hash("abcdef".into(), 4).await.unwrap();
        assert!(!hasher.verify("abcdef\0ghi".into(), Some(short), 4).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        // One thread, held busy until released; room for one waiting check.
        let hasher = Hasher::start(1, 1);
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                hasher
                    .run(move || {
                        started_tx.send(()).unwrap();
                        released.recv().unwrap();
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        started.recv().unwrap();
        let waiting = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.hash("b".into(), 4).await }
        });
        tokio::task::yield_now().await;
        assert!(matches!(hasher.hash("c".into(), 4).await, Err(HashError::Overloaded)), "a full queue must refuse");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        waiting.await.unwrap().unwrap();
    }

    const PEER_SECRET: &[u8] = b"a-lab-secret-shared-by-every-host-of-it";
    const NOW: i64 = 1_800_000_000;

    fn client() -> std::net::IpAddr {
        "192.0.2.7".parse().unwrap()
    }

    #[test]
    fn a_signed_address_is_believed_for_its_own_request_only() {
        let value = sign_peer(PEER_SECRET, "POST", "/devices/upload/uno-b", client(), NOW);
        assert_eq!(verify_peer(PEER_SECRET, "POST", "/devices/upload/uno-b", &value, NOW + 5), Some(client()));
        // Another path, method or secret: not believed.
        assert_eq!(verify_peer(PEER_SECRET, "POST", "/devices/upload/uno-a", &value, NOW), None);
        assert_eq!(verify_peer(PEER_SECRET, "GET", "/devices/upload/uno-b", &value, NOW), None);
        assert_eq!(
            verify_peer(b"another-lab-secret-of-32-bytes-or-more", "POST", "/devices/upload/uno-b", &value, NOW),
            None
        );
    }

    #[test]
    fn an_old_or_altered_signature_is_ignored() {
        let value = sign_peer(PEER_SECRET, "GET", "/devices/read/uno-b", client(), NOW);
        assert_eq!(verify_peer(PEER_SECRET, "GET", "/devices/read/uno-b", &value, NOW + PEER_MAX_SKEW_SECS + 1), None);
        let other_address = value.replace("192.0.2.7", "192.0.2.8");
        assert_eq!(verify_peer(PEER_SECRET, "GET", "/devices/read/uno-b", &other_address, NOW), None);
        for forged in ["", "1;2;3", "x;192.0.2.7;00", &format!("{NOW};192.0.2.7;zz"), &format!("{value};extra")] {
            assert_eq!(verify_peer(PEER_SECRET, "GET", "/devices/read/uno-b", forged, NOW), None, "{forged}");
        }
    }
}
