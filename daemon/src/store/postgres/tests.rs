//! Unit tests of what only the PostgreSQL backend does: a booking is
//! admitted against the account's bookings in the database, even where this
//! host's copy of the tables differs from it (another host's commit whose
//! notification has not arrived yet).

use std::path::Path;

use jiff::Timestamp;
use jiff::civil::{Date, date};
use tokio_postgres::NoTls;

use super::super::tests::user;
use super::super::{Admit, BookError, Booking, SlotKey, Store};
use crate::booking::BookingError;

const EMAIL: &str = "a@x.org";

fn key(slot: u16) -> SlotKey {
    SlotKey { device: "d".into(), date: date(2026, 11, 24), slot }
}

/// At most `cap` bookings per account.
fn cap(cap: usize) -> Admit {
    Box::new(move |held| if held.len() < cap { Ok(()) } else { Err(BookingError::ActiveLimit { max: cap as u32 }) })
}

/// A store on a fresh database with one account, and a connection of the
/// test's own to that database: what it writes sends no notification, so
/// the store's copy does not see it, as it would not yet see another host's.
async fn store_and_behind_its_back() -> (Store, tokio_postgres::Client) {
    let url = super::testing::database();
    let store = Store::open_postgres(&url, Path::new("unused.redb")).unwrap();
    store.create_user(user(EMAIL)).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    (store, client)
}

/// The same with the backend itself, to look inside it.
async fn backend_and_behind_its_back() -> (super::Postgres, tokio_postgres::Client) {
    let url = super::testing::database();
    let pg = super::Postgres::open(&url, Path::new("unused.redb")).unwrap();
    pg.create_user(user(EMAIL)).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    (pg, client)
}

async fn rows(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM bookings", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_booking_the_copy_has_not_seen_counts_against_the_cap() {
    let (store, db) = store_and_behind_its_back().await;
    db.execute(
        "INSERT INTO bookings (device, date, slot, email, booked_at_us) VALUES ('d', '2026-11-24', 1, $1, 0)",
        &[&EMAIL],
    )
    .await
    .unwrap();
    assert!(store.bookings_of(EMAIL).unwrap().is_empty(), "the copy has not seen it");

    let refused = store.book(key(2), EMAIL.into(), Timestamp::now(), cap(1)).await;
    assert!(matches!(refused, Err(BookError::Rule(BookingError::ActiveLimit { max: 1 }))), "{refused:?}");
    assert_eq!(rows(&db).await, 1);

    store.book(key(2), EMAIL.into(), Timestamp::now(), cap(2)).await.unwrap();
    assert_eq!(rows(&db).await, 2);
}

#[tokio::test]
async fn a_cancellation_the_copy_has_not_seen_frees_the_cap() {
    let (store, db) = store_and_behind_its_back().await;
    store.book(key(1), EMAIL.into(), Timestamp::now(), cap(1)).await.unwrap();
    db.execute("DELETE FROM bookings", &[]).await.unwrap();
    assert_eq!(store.bookings_of(EMAIL).unwrap().len(), 1, "the copy has not seen it");

    store.book(key(2), EMAIL.into(), Timestamp::now(), cap(1)).await.unwrap();
    assert_eq!(rows(&db).await, 1);
}

#[tokio::test]
async fn rerod_write_books_only_against_the_bookings_it_is_told() {
    let (_store, db) = store_and_behind_its_back().await;
    // `held` as the host writes it: the batch depends on both sides agreeing.
    let write = |entries: &[(&str, i32, Option<&str>, &[u16])]| {
        let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for &(kind, slot, email, held) in entries {
            let held: Vec<(Date, u16)> = held.iter().map(|&s| (date(2026, 11, 24), s)).collect();
            columns.0.push(kind.to_owned());
            columns.1.push("d".to_owned());
            columns.2.push("2026-11-24".to_owned());
            columns.3.push(slot);
            columns.4.push(email.map(str::to_owned));
            columns.5.push(0i64);
            columns.6.push(super::held_text(&held));
            columns.7.push(format!(r#"{{"Day":["d","{slot}"]}}"#));
        }
        let db = &db;
        async move {
            let sql = "SELECT o_outcome, o_email FROM rerod_write($1, $2, $3::text[]::date[], $4, $5, $6, $7, $8, 'rerod', '{\"origin\":1,\"notes\":[')";
            let c = &columns;
            let rows = db.query(sql, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7]).await.unwrap();
            rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1))).collect::<Vec<_>>()
        }
    };
    let outcome = |o: &str| (o.to_owned(), None);
    assert_eq!(write(&[("book", 1, Some(EMAIL), &[7])]).await, [outcome("stale")]);
    assert_eq!(rows(&db).await, 0);
    assert_eq!(write(&[("book", 1, Some(EMAIL), &[])]).await, [outcome("booked")]);
    assert_eq!(write(&[("book", 1, Some(EMAIL), &[1])]).await, [outcome("taken")]);
    assert_eq!(write(&[("book", 2, Some(EMAIL), &[])]).await, [outcome("stale")]);
    // In one batch: each entry sees the ones before it.
    assert_eq!(
        write(&[("book", 2, Some(EMAIL), &[1]), ("book", 3, Some(EMAIL), &[1]), ("book", 2, Some(EMAIL), &[1, 2])])
            .await,
        [outcome("booked"), outcome("stale"), outcome("taken")]
    );
    assert_eq!(rows(&db).await, 2);
    assert_eq!(
        write(&[("cancel", 2, Some("b@x.org"), &[]), ("cancel", 2, Some(EMAIL), &[]), ("cancel", 2, None, &[])]).await,
        [outcome("none"), ("cancelled".to_owned(), Some(EMAIL.to_owned())), outcome("none")]
    );
    assert_eq!(write(&[("cancel", 1, None, &[])]).await, [("cancelled".to_owned(), Some(EMAIL.to_owned()))]);
    assert_eq!(rows(&db).await, 0);
    db.execute("UPDATE users SET disabled = true", &[]).await.unwrap();
    assert_eq!(write(&[("book", 3, Some(EMAIL), &[])]).await, [outcome("disabled")]);
    assert_eq!(rows(&db).await, 0);
}

#[tokio::test]
async fn concurrent_bookings_of_the_same_slots_book_each_once_and_answer_each_writer() {
    let (pg, db) = backend_and_behind_its_back().await;
    let pg = std::sync::Arc::new(pg);
    // 48 writes at once: bookings of 24 slots, and 24 more of the same slots.
    let tasks: Vec<_> = (0..48u16)
        .map(|i| {
            let pg = std::sync::Arc::clone(&pg);
            tokio::spawn(async move { pg.book(key(i % 24), EMAIL.into(), Timestamp::now(), cap(100)).await })
        })
        .collect();
    let mut booked = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => booked += 1,
            Err(BookError::Rule(BookingError::Taken { .. })) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(booked, 24, "each slot booked once");
    assert_eq!(rows(&db).await, 24);
    assert_eq!(pg.bookings_of(EMAIL).len(), 24, "the copy has every booking");
}

#[test]
fn the_held_bookings_are_written_date_and_slot_comma_separated() {
    let held = [(date(2026, 1, 2), 0), (date(2026, 1, 2), 23), (date(2026, 11, 24), 7)];
    assert_eq!(super::held_text(&held), "2026-01-02 0,2026-01-02 23,2026-11-24 7");
    assert_eq!(super::held_text(&[]), "");
}

#[tokio::test]
async fn dates_read_back_whatever_the_databases_date_style() {
    let url = super::testing::database();
    let (db, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let name: String = db.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    // A server, database or role set up to write dates the German way: 24.11.2026.
    db.execute(&format!("ALTER DATABASE {name} SET DateStyle = 'German, DMY'"), &[]).await.unwrap();
    let store = Store::open_postgres(&url, Path::new("unused.redb")).unwrap();
    store.create_user(user(EMAIL)).await.unwrap();
    store.book(key(1), EMAIL.into(), Timestamp::now(), cap(4)).await.unwrap();
    drop(store);
    // A host starting now reads every booking back from the database.
    let again = Store::open_postgres(&url, Path::new("unused.redb")).unwrap();
    let held: Vec<Date> = again.bookings_of(EMAIL).unwrap().iter().map(|b| b.key.date).collect();
    assert_eq!(held, [date(2026, 11, 24)]);
}

#[tokio::test]
async fn an_own_write_that_raced_a_read_of_its_day_has_the_day_read_again() {
    let url = super::testing::database();
    let pg = super::Postgres::open(&url, Path::new("unused.redb")).unwrap();
    let mut changes = pg.subscribe();
    let (slot, day) = (key(1), key(1).date);
    let booking =
        Booking { key: slot.clone(), email: EMAIL.into(), booked_at: Timestamp::UNIX_EPOCH, moved_from: None };
    // A booking of this host's is in flight (committed, the copy not told yet)
    // when the listener reads its day again and finds the slot free: another
    // host cancelled it a moment after the commit. The database holds no booking.
    let since = pg.shared.days_read();
    pg.shared.mirror().replace_day("d", day, Vec::new());
    // The write is applied as it returns, undoing the cancel in the copy...
    pg.shared.apply_own(since, &[&slot], |m| m.put_booking(booking.clone()));
    // ...and the day is read again, as another host's change, so this host's
    // clients hear of it and the copy ends up with the database's.
    let change = tokio::time::timeout(std::time::Duration::from_secs(30), changes.recv()).await.unwrap().unwrap();
    assert!(matches!(&change, super::super::Change::Slots { device, date, .. } if device == "d" && *date == day));
    assert!(pg.shared.mirror.read().unwrap().day("d", day).is_empty(), "the cancel stands in the copy");
}

/// Waits for this host's clients to be told of a change to `day` of board "d".
async fn told_of(changes: &mut tokio::sync::broadcast::Receiver<super::super::Change>, day: Date) {
    loop {
        let change = tokio::time::timeout(std::time::Duration::from_secs(30), changes.recv()).await.unwrap().unwrap();
        if matches!(&change, super::super::Change::Slots { device, date, .. } if device == "d" && *date == day) {
            return;
        }
    }
}

#[tokio::test]
async fn own_bookings_and_cancellations_are_not_read_back() {
    let (pg, db) = backend_and_behind_its_back().await;
    let store = &pg;
    let mut changes = pg.subscribe();
    let read_before = pg.shared.days_read();
    store.book(key(1), EMAIL.into(), Timestamp::now(), cap(4)).await.unwrap();
    store.cancel(key(1), None).await.unwrap();
    store.book(key(2), EMAIL.into(), Timestamp::now(), cap(4)).await.unwrap();
    // Another host's change, committed after them: once it is read, the
    // listener has had this host's three notifications, in commit order.
    let other_day = date(2026, 11, 25);
    db.execute(
        "SELECT pg_notify('rerod', json_build_object('origin', 7, 'notes', json_build_array(json_build_object('Day', json_build_array('d', $1::text))))::text)",
        &[&other_day.to_string()],
    )
    .await
    .unwrap();
    told_of(&mut changes, other_day).await;
    assert_eq!(pg.shared.days_read(), read_before + 1, "only the other host's day was read");
    let held: Vec<u16> = store.bookings_of(EMAIL).iter().map(|b| b.key.slot).collect();
    assert_eq!(held, [2]);
}

#[tokio::test]
async fn an_own_write_whose_answer_was_lost_has_its_day_read_again() {
    let (pg, db) = backend_and_behind_its_back().await;
    let mut changes = pg.subscribe();
    // A booking that committed, but whose answer never came back (the
    // connection dropped, or the operation timed out): the copy lacks it.
    db.execute(
        "INSERT INTO bookings (device, date, slot, email, booked_at_us) VALUES ('d', '2026-11-24', 1, $1, 0)",
        &[&EMAIL],
    )
    .await
    .unwrap();
    drop(super::OwnWrite::new(&pg.shared, key(1)));
    told_of(&mut changes, key(1).date).await;
    assert_eq!(pg.bookings_of(EMAIL).len(), 1, "the copy has the database's booking");
}
