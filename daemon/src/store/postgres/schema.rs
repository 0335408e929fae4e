//! The tables in PostgreSQL, versioned: each host migrates the database to
//! the version it knows when it starts, one migration at a time, under an
//! advisory lock so hosts starting together take turns. A database whose
//! version is newer than this binary knows (another host was upgraded
//! first) is refused: this host would not know what the new tables mean.

use tokio_postgres::Client;

use super::{StoreError, pg};

/// The newest schema this rerod knows: the number of [`MIGRATIONS`].
pub(super) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Taken while migrating (an arbitrary number: "rerod" in ASCII).
const MIGRATION_LOCK: i64 = 0x72_6572_6f64;

/// Migration n (from 1) takes the schema from version n - 1 to n.
const MIGRATIONS: [&str; 4] = [
    r#"
CREATE TABLE users (
    email text PRIMARY KEY,
    id bigint NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at_us bigint NOT NULL,
    disabled boolean NOT NULL DEFAULT false,
    credential_generation bigint NOT NULL DEFAULT 0,
    last_login_us bigint,
    admin boolean NOT NULL DEFAULT false
);
-- The confusable skeleton of every account's address: finds a look-alike of
-- a new address without reading every account.
CREATE TABLE email_skeletons (
    skeleton text NOT NULL,
    email text NOT NULL REFERENCES users (email),
    PRIMARY KEY (skeleton, email)
);
-- One booking per (device, date, slot): the database refuses a second one,
-- whatever a host checked before.
CREATE TABLE bookings (
    device text NOT NULL,
    date date NOT NULL,
    slot integer NOT NULL CHECK (slot BETWEEN 0 AND 65535),
    email text NOT NULL,
    booked_at_us bigint NOT NULL,
    moved_from text,
    CONSTRAINT bookings_one_per_slot PRIMARY KEY (device, date, slot)
);
CREATE INDEX bookings_by_holder ON bookings (email, date, device, slot);
CREATE TABLE maintenance (
    device text PRIMARY KEY,
    reason text NOT NULL,
    set_by text NOT NULL,
    set_at_us bigint NOT NULL
);
CREATE TABLE audit (
    seq bigserial PRIMARY KEY,
    at_us bigint NOT NULL,
    actor text NOT NULL,
    device text NOT NULL,
    action text NOT NULL,
    detail text NOT NULL DEFAULT '',
    account text,
    address text
);
-- Wrong passwords per account, shared by every host.
CREATE TABLE login_failures (
    email text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_by_account ON login_failures (email, at);
CREATE INDEX login_failures_by_time ON login_failures (at);
INSERT INTO rerod_meta (key, value) VALUES ('next_user_id', '1');
"#,
    r#"
-- Each host of the lab, renewed every few seconds while it runs, with the
-- boards of its own config (JSON).
CREATE TABLE hosts (
    name text PRIMARY KEY,
    advertise text NOT NULL,
    renewed_at timestamptz NOT NULL,
    boards text NOT NULL DEFAULT '[]'
);
"#,
    r#"
-- A booking in one round trip (one statement, its own transaction). The
-- host ran the admission check on the account's bookings as its copy of the
-- tables has them, `held`: `date slot` of each, in (date, device, slot)
-- order, comma-separated. Here, under the account's lock, the booking is
-- made only if the account's bookings are still exactly those, so the check
-- holds as if it had run inside this transaction; 'stale' otherwise (the
-- host then checks again in a transaction of its own). The primary key
-- still refuses a second booking of the slot, and the notification is sent
-- on commit with the booking. Each statement in the function reads what
-- was committed before it, so the reads after the lock see every booking of
-- the account that held the lock before.
CREATE FUNCTION rerod_book(
    p_device text, p_date date, p_slot integer, p_email text, p_booked_at_us bigint,
    p_held text, p_channel text, p_payload text
) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('account ' || p_email));
    IF EXISTS (SELECT 1 FROM bookings WHERE device = p_device AND date = p_date AND slot = p_slot) THEN
        RETURN 'taken';
    END IF;
    IF EXISTS (SELECT 1 FROM users WHERE email = p_email AND disabled) THEN
        RETURN 'disabled';
    END IF;
    -- Devices in byte order ("C"), as the host orders them, whatever the database's collation.
    IF (SELECT coalesce(string_agg(to_char(date, 'YYYY-MM-DD') || ' ' || slot, ','
                                   ORDER BY date, device COLLATE "C", slot), '')
        FROM bookings WHERE email = p_email) <> p_held THEN
        RETURN 'stale';
    END IF;
    INSERT INTO bookings (device, date, slot, email, booked_at_us)
        VALUES (p_device, p_date, p_slot, p_email, p_booked_at_us)
        ON CONFLICT ON CONSTRAINT bookings_one_per_slot DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'taken';
    END IF;
    PERFORM pg_notify(p_channel, p_payload);
    RETURN 'booked';
END
$$;
"#,
    r#"
-- Bookings and cancellations in batches, one statement and its own
-- transaction per batch: a host gathers the writes its clients send while
-- its previous batch commits. A transaction that notifies holds the
-- database's notification lock from its commit until the commit is flushed
-- to the WAL, so such transactions commit one at a time, one flush each,
-- whatever the number of connections; a batch shares one commit, one flush
-- and one notification among its writes. (rerod_book stays for hosts of the
-- previous version during an upgrade.)
--
-- Entry i is p_kind[i]:
-- * 'book': as rerod_book, without its notification: 'booked', 'taken',
--   'disabled' or 'stale';
-- * 'cancel': the booking removed (p_email[i]: only if it is this account's,
--   NULL for any), 'cancelled' with its holder, time and origin, or 'none'.
-- Every account booked for is locked first, in the order of their
-- addresses, and the host sends the entries in the order of their slots, so
-- that two batches (of one host or of two) take their locks in the same
-- order and never wait for each other in a cycle.
-- If anything changed, one notification: p_notify_head, then the distinct
-- p_note[i] of the entries that changed, comma-separated, then ']}'.
CREATE FUNCTION rerod_write(
    p_kind text[], p_device text[], p_date date[], p_slot integer[], p_email text[],
    p_booked_at_us bigint[], p_held text[], p_note text[], p_channel text, p_notify_head text
) RETURNS TABLE (o_outcome text, o_email text, o_booked_at_us bigint, o_moved_from text)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_kind, 1), 0);
    changed text[] := '{}';
    gone bookings%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('account ' || e))
        FROM (SELECT DISTINCT p_email[i] AS e FROM generate_subscripts(p_kind, 1) AS i
              WHERE p_kind[i] = 'book' ORDER BY 1) AS accounts;
    FOR i IN 1 .. n LOOP
        o_email := NULL;
        o_booked_at_us := NULL;
        o_moved_from := NULL;
        IF p_kind[i] = 'book' THEN
            IF EXISTS (SELECT 1 FROM bookings b
                       WHERE b.device = p_device[i] AND b.date = p_date[i] AND b.slot = p_slot[i]) THEN
                o_outcome := 'taken';
            ELSIF EXISTS (SELECT 1 FROM users u WHERE u.email = p_email[i] AND u.disabled) THEN
                o_outcome := 'disabled';
            ELSIF (SELECT coalesce(string_agg(to_char(b.date, 'YYYY-MM-DD') || ' ' || b.slot, ','
                                              ORDER BY b.date, b.device COLLATE "C", b.slot), '')
                   FROM bookings b WHERE b.email = p_email[i]) <> p_held[i] THEN
                o_outcome := 'stale';
            ELSE
                INSERT INTO bookings (device, date, slot, email, booked_at_us)
                    VALUES (p_device[i], p_date[i], p_slot[i], p_email[i], p_booked_at_us[i])
                    ON CONFLICT ON CONSTRAINT bookings_one_per_slot DO NOTHING;
                IF FOUND THEN
                    o_outcome := 'booked';
                    changed := changed || p_note[i];
                ELSE
                    o_outcome := 'taken';
                END IF;
            END IF;
        ELSE
            DELETE FROM bookings b
                WHERE b.device = p_device[i] AND b.date = p_date[i] AND b.slot = p_slot[i]
                  AND (p_email[i] IS NULL OR b.email = p_email[i])
                RETURNING b.* INTO gone;
            IF FOUND THEN
                o_outcome := 'cancelled';
                o_email := gone.email;
                o_booked_at_us := gone.booked_at_us;
                o_moved_from := gone.moved_from;
                changed := changed || p_note[i];
            ELSE
                o_outcome := 'none';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF cardinality(changed) > 0 THEN
        PERFORM pg_notify(p_channel, p_notify_head
            || array_to_string(ARRAY(SELECT DISTINCT c FROM unnest(changed) AS c), ',') || ']}');
    END IF;
END
$$;
"#,
];

/// Brings the database to [`SCHEMA_VERSION`], or refuses a newer one. Also
/// rebuilds the look-alike index when this binary's Unicode data differs.
pub(super) async fn migrate(client: &mut Client, url: &str) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS rerod_meta (key text PRIMARY KEY, value text NOT NULL)")
        .await
        .or_else(|e| if is_race_on_create(&e) { Ok(()) } else { Err(pg(e)) })?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    let result = migrate_locked(client, url).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    result?;
    unlocked.map_err(pg)?;
    Ok(())
}

/// Two hosts creating the meta table at once: one of them gets a unique
/// violation on the catalog, and the table is there all the same.
fn is_race_on_create(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

async fn migrate_locked(client: &mut Client, url: &str) -> Result<(), StoreError> {
    let found = read_version(client).await?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { database: redacted(url), found, known: SCHEMA_VERSION });
    }
    for version in found + 1..=SCHEMA_VERSION {
        let txn = client.transaction().await.map_err(pg)?;
        txn.batch_execute(MIGRATIONS[version as usize - 1]).await.map_err(pg)?;
        txn.execute(
            "INSERT INTO rerod_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&version.to_string()],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        tracing::info!(version, "migrated the database's schema");
    }
    index_skeletons(client).await
}

async fn read_version(client: &Client) -> Result<u32, StoreError> {
    let row = client.query_opt("SELECT value FROM rerod_meta WHERE key = 'schema_version'", &[]).await.map_err(pg)?;
    match row {
        None => Ok(0),
        Some(row) => {
            let text: String = row.get(0);
            text.parse().map_err(|_| StoreError::Corrupt(format!("schema_version {text:?} is not a number")))
        }
    }
}

/// Computes every account's skeleton afresh unless they were computed with
/// this binary's Unicode data.
async fn index_skeletons(client: &mut Client) -> Result<(), StoreError> {
    let version = crate::auth::skeleton_version();
    let txn = client.transaction().await.map_err(pg)?;
    let stored = txn
        .query_opt("SELECT value FROM rerod_meta WHERE key = 'email_skeleton_version' FOR UPDATE", &[])
        .await
        .map_err(pg)?
        .map(|row| row.get::<_, String>(0));
    if stored.as_deref() == Some(version.as_str()) {
        return Ok(());
    }
    txn.execute("DELETE FROM email_skeletons", &[]).await.map_err(pg)?;
    let emails: Vec<String> =
        txn.query("SELECT email FROM users", &[]).await.map_err(pg)?.iter().map(|r| r.get(0)).collect();
    for email in &emails {
        txn.execute(
            "INSERT INTO email_skeletons (skeleton, email) VALUES ($1, $2)",
            &[&crate::auth::email_skeleton(email), email],
        )
        .await
        .map_err(pg)?;
    }
    txn.execute(
        "INSERT INTO rerod_meta (key, value) VALUES ('email_skeleton_version', $1) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&version],
    )
    .await
    .map_err(pg)?;
    txn.commit().await.map_err(pg)?;
    tracing::info!(accounts = emails.len(), "indexed the look-alike skeletons of the accounts' addresses");
    Ok(())
}

/// `url` without its password, for messages.
pub(super) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
