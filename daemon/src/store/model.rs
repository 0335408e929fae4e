//! The store against a model: random sequences of writes go through the real
//! `Store` (redb in a temporary directory) and through a few `BTreeMap`s, and
//! after every step each read the store offers must answer what the model does.
//!
//! The sequences mix single writes, batches submitted at once (which the
//! writer applies in one transaction, each write seeing the ones before it)
//! and reopening the store (every acknowledged write must survive it). The
//! model is the store's contract written as plainly as possible: if the two
//! disagree, either the writer or the contract is wrong.

use std::collections::BTreeMap;

use futures_util::future::{BoxFuture, FutureExt as _, join_all};
use jiff::Timestamp;
use jiff::civil::Date;
use proptest::prelude::*;

use super::{
    Admit, AuditEntry, BookError, CancelError, CreateUserError, MaintenanceRecord, MoveError, SetDisabledError,
    SlotKey, Store, User,
};
use crate::auth::PasswordHash;
use crate::booking::BookingError;

/// Few accounts, devices, dates and slots, so that random writes collide often.
const EMAILS: [&str; 4] = ["ann@lab.org", "bob@lab.org", "cy@lab.org", "dee@lab.org"];
const DEVICES: [&str; 2] = ["arm-1", "arm-2"];
const N_DATES: usize = 2;
const N_SLOTS: u16 = 4;

fn date(n: usize) -> Date {
    Date::new(2026, 12, 1 + n as i8).unwrap()
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    device: usize,
    date: usize,
    slot: u16,
}

impl Key {
    fn slot_key(&self) -> SlotKey {
        SlotKey { device: DEVICES[self.device].to_owned(), date: date(self.date), slot: self.slot }
    }
}

/// One write, as a client of the store would ask for it.
#[derive(Clone, Debug)]
enum Op {
    Register {
        user: usize,
    },
    /// Admitted only while the user holds fewer than `cap` bookings: the
    /// admission check runs inside the transaction, on what it has written.
    Book {
        user: usize,
        key: Key,
        cap: usize,
    },
    /// Cancelling one's own booking.
    Cancel {
        user: usize,
        key: Key,
    },
    /// An admin's cancel: whoever holds it.
    AdminCancel {
        key: Key,
    },
    /// Disabling removes the account's bookings from slot `doomed_from` on.
    Disable {
        user: usize,
        doomed_from: u16,
    },
    Enable {
        user: usize,
    },
    Move {
        key: Key,
        to_device: usize,
    },
    Maintenance {
        device: usize,
        on: bool,
    },
}

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Step {
    One(Op),
    /// Submitted together, in this order; the writer groups them.
    Batch(Vec<Op>),
    /// Close the store and open its file again.
    Reopen,
}

fn key() -> impl Strategy<Value = Key> {
    (0..DEVICES.len(), 0..N_DATES, 0..N_SLOTS).prop_map(|(device, date, slot)| Key { device, date, slot })
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..EMAILS.len();
    prop_oneof![
        2 => user.clone().prop_map(|user| Op::Register { user }),
        6 => (user.clone(), key(), 1..4usize).prop_map(|(user, key, cap)| Op::Book { user, key, cap }),
        2 => (user.clone(), key()).prop_map(|(user, key)| Op::Cancel { user, key }),
        1 => key().prop_map(|key| Op::AdminCancel { key }),
        1 => (user.clone(), 0..N_SLOTS + 1).prop_map(|(user, doomed_from)| Op::Disable { user, doomed_from }),
        1 => user.prop_map(|user| Op::Enable { user }),
        1 => (key(), 0..DEVICES.len()).prop_map(|(key, to_device)| Op::Move { key, to_device }),
        1 => (0..DEVICES.len(), any::<bool>()).prop_map(|(device, on)| Op::Maintenance { device, on }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => op().prop_map(Step::One),
        2 => proptest::collection::vec(op(), 2..8).prop_map(Step::Batch),
        1 => Just(Step::Reopen),
    ]
}

/// What a write answered, in terms both the store and the model can give.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Registered,
    Exists,
    Booked,
    Taken,
    OverCap,
    Disabled,
    Cancelled { holder: String },
    NotBooked,
    Account { disabled: bool, generation: u32, cancelled: Vec<SlotKey> },
    NoSuchUser,
    Moved { moved_from: Option<String> },
    TargetTaken,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelBooking {
    email: String,
    booked_at: Timestamp,
    moved_from: Option<String>,
}

/// The store's contract, in memory.
#[derive(Clone, Debug, Default)]
struct Model {
    /// E-mail → (disabled, credential generation).
    users: BTreeMap<String, (bool, u32)>,
    /// E-mail → the account's number: 1, 2, ... in the order accounts were
    /// created (no account is ever deleted), kept across reopens.
    ids: BTreeMap<String, u64>,
    bookings: BTreeMap<SlotKey, ModelBooking>,
    /// Device → reason.
    maintenance: BTreeMap<String, String>,
    /// Actions, oldest first.
    audit: Vec<String>,
}

impl Model {
    fn held_by(&self, email: &str) -> usize {
        self.bookings.values().filter(|b| b.email == email).count()
    }

    fn apply(&mut self, op: &Op, at: Timestamp) -> Answer {
        match op {
            Op::Register { user } => {
                let email = EMAILS[*user].to_owned();
                if self.users.contains_key(&email) {
                    return Answer::Exists;
                }
                self.ids.insert(email.clone(), self.ids.len() as u64 + 1);
                self.users.insert(email, (false, 0));
                Answer::Registered
            }
            Op::Book { user, key, cap } => {
                let email = EMAILS[*user];
                let key = key.slot_key();
                if self.bookings.contains_key(&key) {
                    Answer::Taken
                } else if self.users.get(email).is_some_and(|(disabled, _)| *disabled) {
                    Answer::Disabled
                } else if self.held_by(email) >= *cap {
                    Answer::OverCap
                } else {
                    self.bookings
                        .insert(key, ModelBooking { email: email.to_owned(), booked_at: at, moved_from: None });
                    Answer::Booked
                }
            }
            Op::Cancel { user, key } => self.cancel(key.slot_key(), Some(EMAILS[*user])),
            Op::AdminCancel { key } => self.cancel(key.slot_key(), None),
            Op::Disable { user, doomed_from } => {
                let email = EMAILS[*user];
                let Some((disabled, generation)) = self.users.get_mut(email) else { return Answer::NoSuchUser };
                if !*disabled {
                    *generation += 1;
                }
                *disabled = true;
                let generation = *generation;
                let cancelled: Vec<SlotKey> = self
                    .bookings
                    .iter()
                    .filter(|(key, b)| b.email == email && key.slot >= *doomed_from)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in &cancelled {
                    self.bookings.remove(key);
                }
                Answer::Account { disabled: true, generation, cancelled }
            }
            Op::Enable { user } => {
                let Some((disabled, generation)) = self.users.get_mut(EMAILS[*user]) else {
                    return Answer::NoSuchUser;
                };
                *disabled = false;
                Answer::Account { disabled: false, generation: *generation, cancelled: Vec::new() }
            }
            Op::Move { key, to_device } => {
                let from = key.slot_key();
                let to = SlotKey { device: DEVICES[*to_device].to_owned(), ..from.clone() };
                if !self.bookings.contains_key(&from) {
                    return Answer::NotBooked;
                }
                if self.bookings.contains_key(&to) {
                    return Answer::TargetTaken;
                }
                let mut booking = self.bookings.remove(&from).expect("checked above");
                booking.moved_from = Some(booking.moved_from.unwrap_or(from.device));
                let moved_from = booking.moved_from.clone();
                self.bookings.insert(to, booking);
                Answer::Moved { moved_from }
            }
            Op::Maintenance { device, on } => {
                let device = DEVICES[*device].to_owned();
                if *on {
                    self.maintenance.insert(device, format!("reason at {at}"));
                    self.audit.push("maintenance_set".into());
                } else {
                    self.maintenance.remove(&device);
                    self.audit.push("maintenance_cleared".into());
                }
                Answer::Done
            }
        }
    }

    fn cancel(&mut self, key: SlotKey, requester: Option<&str>) -> Answer {
        match self.bookings.get(&key) {
            Some(booking) if requester.is_none_or(|r| r == booking.email) => {
                let booking = self.bookings.remove(&key).expect("just found");
                Answer::Cancelled { holder: booking.email }
            }
            _ => Answer::NotBooked,
        }
    }
}

fn user(email: &str, at: Timestamp) -> User {
    User {
        id: 0,
        email: email.to_owned(),
        password_hash: PasswordHash::from_stored("$2b$04$x".into()),
        created_at: at,
        disabled: false,
        credential_generation: 0,
        last_login: None,
        admin: false,
    }
}

/// Sends `op` to the store, and turns its answer into an [`Answer`]; an
/// error the model has no place for (a storage failure) fails the test.
fn submit(store: &Store, op: &Op, at: Timestamp) -> BoxFuture<'static, Answer> {
    let store = store.clone();
    let op = op.clone();
    async move {
        match op {
            Op::Register { user: n } => match store.create_user(user(EMAILS[n], at)).await {
                Ok(_) => Answer::Registered,
                Err(CreateUserError::Exists) => Answer::Exists,
                Err(e) => panic!("register: {e}"),
            },
            Op::Book { user, key, cap } => {
                let admit: Admit = Box::new(move |held| {
                    if held.len() < cap { Ok(()) } else { Err(BookingError::ActiveLimit { max: cap as u32 }) }
                });
                match store.book(key.slot_key(), EMAILS[user].to_owned(), at, admit).await {
                    Ok(_) => Answer::Booked,
                    Err(BookError::Rule(BookingError::Taken { .. })) => Answer::Taken,
                    Err(BookError::Rule(BookingError::ActiveLimit { .. })) => Answer::OverCap,
                    Err(BookError::AccountDisabled) => Answer::Disabled,
                    Err(e) => panic!("book: {e}"),
                }
            }
            Op::Cancel { user, key } => cancelled(store.cancel(key.slot_key(), Some(EMAILS[user].to_owned())).await),
            Op::AdminCancel { key } => cancelled(store.cancel(key.slot_key(), None).await),
            Op::Disable { user, doomed_from } => {
                let doomed = Box::new(move |key: &SlotKey| key.slot >= doomed_from);
                account(store.set_disabled(EMAILS[user].to_owned(), true, doomed).await)
            }
            Op::Enable { user } => {
                account(store.set_disabled(EMAILS[user].to_owned(), false, Box::new(|_| true)).await)
            }
            Op::Move { key, to_device } => {
                match store.move_booking(key.slot_key(), DEVICES[to_device].to_owned()).await {
                    Ok(moved) => Answer::Moved { moved_from: moved.moved_from },
                    Err(MoveError::NotBooked) => Answer::NotBooked,
                    Err(MoveError::Taken(_)) => Answer::TargetTaken,
                    Err(e) => panic!("move: {e}"),
                }
            }
            Op::Maintenance { device, on } => {
                let device = DEVICES[device].to_owned();
                let action = if on { "maintenance_set" } else { "maintenance_cleared" };
                let record = on.then(|| MaintenanceRecord {
                    reason: format!("reason at {at}"),
                    set_by: "admin@lab.org".into(),
                    set_at_us: at.as_microsecond(),
                });
                let audit = AuditEntry {
                    at_us: at.as_microsecond(),
                    actor: "admin@lab.org".into(),
                    device: device.clone(),
                    action: action.into(),
                    detail: String::new(),
                    user: None,
                    address: None,
                };
                store.set_maintenance(device, record, audit).await.expect("maintenance");
                Answer::Done
            }
        }
    }
    .boxed()
}

fn cancelled(result: Result<super::Booking, CancelError>) -> Answer {
    match result {
        Ok(booking) => Answer::Cancelled { holder: booking.email },
        Err(CancelError::NotBooked) => Answer::NotBooked,
        Err(e) => panic!("cancel: {e}"),
    }
}

fn account(result: Result<super::AccountChange, SetDisabledError>) -> Answer {
    match result {
        Ok(change) => {
            let mut cancelled: Vec<SlotKey> = change.cancelled.into_iter().map(|b| b.key).collect();
            // The model lists them in key order; the store in its index's.
            cancelled.sort();
            Answer::Account { disabled: change.user.disabled, generation: change.user.credential_generation, cancelled }
        }
        Err(SetDisabledError::NoSuchUser) => Answer::NoSuchUser,
        Err(e) => panic!("disable: {e}"),
    }
}

/// Every read the store offers, compared with the model.
fn assert_agrees(store: &Store, model: &Model, after: &str) {
    for device in DEVICES {
        for n in 0..N_DATES {
            let stored: Vec<(u16, String, Timestamp, Option<String>)> = store
                .bookings_on(device, date(n))
                .unwrap()
                .into_iter()
                .map(|b| (b.key.slot, b.email, b.booked_at, b.moved_from))
                .collect();
            let expected: Vec<_> = model
                .bookings
                .iter()
                .filter(|(key, _)| key.device == device && key.date == date(n))
                .map(|(key, b)| (key.slot, b.email.clone(), b.booked_at, b.moved_from.clone()))
                .collect();
            assert_eq!(stored, expected, "bookings of {device} on {} after {after}", date(n));
        }
    }
    for email in EMAILS {
        let stored: Vec<SlotKey> = store.bookings_of(email).unwrap().into_iter().map(|b| b.key).collect();
        // Documented order: by date, then device, then slot.
        let mut expected: Vec<SlotKey> =
            model.bookings.iter().filter(|(_, b)| b.email == email).map(|(key, _)| key.clone()).collect();
        expected.sort_by(|a, b| (a.date, &a.device, a.slot).cmp(&(b.date, &b.device, b.slot)));
        assert_eq!(stored, expected, "{email}'s bookings after {after}");
        let account = store.user(email).unwrap().map(|u| (u.disabled, u.credential_generation));
        assert_eq!(account, model.users.get(email).copied(), "{email}'s account after {after}");
        let id = store.user(email).unwrap().map(|u| u.id);
        assert_eq!(id, model.ids.get(email).copied(), "{email}'s id after {after}");
    }
    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.users, counts.bookings),
        (model.users.len() as u64, model.bookings.len() as u64),
        "counts after {after}"
    );
    let maintenance: BTreeMap<String, String> =
        store.maintenance().unwrap().into_iter().map(|(device, record)| (device, record.reason)).collect();
    assert_eq!(maintenance, model.maintenance, "maintenance after {after}");
    let mut audit: Vec<String> = store.audit_log(None, usize::MAX).unwrap().into_iter().map(|e| e.action).collect();
    audit.reverse();
    assert_eq!(audit, model.audit, "audit log after {after}");
}

/// Which backend a run of the model test drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Redb,
    /// A database of its own on the test server (`postgres/testing.rs`).
    Postgres,
}

/// Runs `steps` against a fresh store and the model, comparing after each.
async fn check(steps: Vec<Step>, backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rerod.redb");
    let url = (backend == Backend::Postgres).then(super::postgres::testing::database);
    let open = || match &url {
        Some(url) => Store::open_postgres(url, &path).unwrap(),
        None => Store::open(&path).unwrap(),
    };
    let mut store = open();
    let mut model = Model::default();
    // Each write gets its own time, so a booking's `booked_at` tells which write made it.
    let mut clock = Timestamp::from_second(1_800_000_000).unwrap();
    let mut tick = || {
        clock += jiff::SignedDuration::from_secs(1);
        clock
    };
    for (n, step) in steps.iter().enumerate() {
        let after = format!("step {n} ({step:?})");
        match step {
            Step::One(op) => {
                let at = tick();
                let answer = submit(&store, op, at).await;
                assert_eq!(answer, model.apply(op, at), "the answer to {after}");
            }
            Step::Batch(ops) => {
                // join_all polls the writes in order, and each is queued on its
                // first poll, so the writer sees them in this order, mostly in
                // one transaction; each must see the ones before it.
                let times: Vec<Timestamp> = ops.iter().map(|_| tick()).collect();
                let answers = match backend {
                    Backend::Redb => join_all(ops.iter().zip(&times).map(|(op, at)| submit(&store, op, *at))).await,
                    // PostgreSQL runs writes sent together on several
                    // connections, in no set order (the database keeps them
                    // consistent, not ordered): the batch goes one by one.
                    Backend::Postgres => {
                        let mut answers = Vec::new();
                        for (op, at) in ops.iter().zip(&times) {
                            answers.push(submit(&store, op, *at).await);
                        }
                        answers
                    }
                };
                let expected: Vec<Answer> = ops.iter().zip(&times).map(|(op, at)| model.apply(op, *at)).collect();
                assert_eq!(answers, expected, "the answers to {after}");
            }
            Step::Reopen => {
                store.close().await;
                drop(store);
                store = open();
            }
        }
        assert_agrees(&store, &model, &after);
    }
}

proptest! {
    // Each case opens a store and commits (fsyncs) a few dozen times: 64
    // cases keep the test within seconds.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_store_answers_what_the_model_does(steps in proptest::collection::vec(step(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check(steps, Backend::Redb));
    }
}

proptest! {
    // Each case makes a database and opens it at every reopen step: fewer cases.
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_postgres_store_answers_what_the_model_does(steps in proptest::collection::vec(step(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(check(steps, Backend::Postgres));
    }
}
