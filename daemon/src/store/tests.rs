//! Unit tests of the store: uniqueness, batching, admission inside the transaction, disabling, backups and the schema check.

use super::*;
use jiff::civil::date;

/// An account as the tests make it (the PostgreSQL backend's tests too).
pub(super) fn user(email: &str) -> User {
    User {
        id: 0,
        last_login: None,
        admin: false,
        email: email.into(),
        password_hash: PasswordHash::from_stored("$2b$04$x".into()),
        created_at: Timestamp::from_second(1_700_000_000).unwrap(),
        disabled: false,
        credential_generation: 0,
    }
}

fn key(device: &str, slot: u16) -> SlotKey {
    SlotKey { device: device.into(), date: date(2026, 11, 24), slot }
}

fn admit_all() -> Admit {
    Box::new(|_| Ok(()))
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("sub/rerod.redb")).unwrap();
    (dir, store)
}

/// Runs each test on both backends, as `NAME::redb` and `NAME::postgres`
/// (a database of its own on the test server, see `postgres/testing.rs`).
macro_rules! on_both_backends {
    ($(async fn $name:ident($store:ident: Store) $body:block)*) => {$(
        mod $name {
            use super::*;

            async fn run($store: Store) $body

            #[tokio::test]
            async fn redb() {
                let (_dir, store) = temp_store();
                run(store).await;
            }

            #[tokio::test]
            async fn postgres() {
                run(pg_store()).await;
            }
        }
    )*};
}

/// A PostgreSQL store on a fresh database.
fn pg_store() -> Store {
    Store::open_postgres(&super::postgres::testing::database(), Path::new("unused.redb")).unwrap()
}

on_both_backends! {
    async fn users_are_unique_by_email(store: Store) {
        store.create_user(user("a@x.org")).await.unwrap();
        assert!(matches!(store.create_user(user("a@x.org")).await, Err(CreateUserError::Exists)));
        assert_eq!(store.user("a@x.org").unwrap().unwrap(), User { id: 1, ..user("a@x.org") });
        assert_eq!(store.user("b@x.org").unwrap(), None);
    }

    async fn concurrent_bookings_of_one_slot_yield_exactly_one(store: Store) {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.book(key("d", 5), format!("u{i}@x.org"), Timestamp::now(), admit_all()).await },
                )
            })
            .collect();
        let mut n_ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => n_ok += 1,
                Err(BookError::Rule(BookingError::Taken { id: 5 })) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(n_ok, 1);
        assert_eq!(store.bookings_on("d", date(2026, 11, 24)).unwrap().len(), 1);
    }

    async fn admission_sees_the_users_bookings_including_the_same_batch(store: Store) {
        // Allow one booking per user: of ten concurrent requests by one user, one wins.
        let tasks: Vec<_> = (0..10)
            .map(|slot| {
                let store = store.clone();
                let admit: Admit = Box::new(|existing| match existing.len() {
                    0 => Ok(()),
                    _ => Err(BookingError::ActiveLimit { max: 1 }),
                });
                tokio::spawn(async move { store.book(key("d", slot), "a@x.org".into(), Timestamp::now(), admit).await })
            })
            .collect();
        let mut n_ok = 0;
        for task in tasks {
            n_ok += usize::from(task.await.unwrap().is_ok());
        }
        assert_eq!(n_ok, 1);
        assert_eq!(store.bookings_of("a@x.org").unwrap().len(), 1);
    }

    async fn cancel_only_by_the_owner_unless_forced(store: Store) {
        store.book(key("d", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        assert!(matches!(store.cancel(key("d", 1), Some("b@x.org".into())).await, Err(CancelError::NotBooked)));
        assert!(matches!(store.cancel(key("d", 2), Some("a@x.org".into())).await, Err(CancelError::NotBooked)));
        let cancelled = store.cancel(key("d", 1), None).await.unwrap();
        assert_eq!(cancelled.email, "a@x.org");
        assert!(store.bookings_of("a@x.org").unwrap().is_empty());
        assert!(store.bookings_on("d", date(2026, 11, 24)).unwrap().is_empty());
    }

    async fn disabling_removes_the_picked_bookings_and_refuses_new_ones(store: Store) {
        store.create_user(user("a@x.org")).await.unwrap();
        store.create_user(user("b@x.org")).await.unwrap();
        for slot in [1, 2, 3] {
            store.book(key("d", slot), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        }
        store.book(key("d", 4), "b@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();

        // Slot 1 stands for one that has ended: it stays, as history.
        let change = store.set_disabled("a@x.org".into(), true, Box::new(|k| k.slot != 1)).await.unwrap();
        assert!(change.user.disabled);
        assert_eq!(change.user.credential_generation, 1, "tokens issued before are refused");
        let mut cancelled: Vec<u16> = change.cancelled.iter().map(|b| b.key.slot).collect();
        cancelled.sort_unstable();
        assert_eq!(cancelled, [2, 3]);
        let left: Vec<(String, u16)> =
            store.bookings_on("d", date(2026, 11, 24)).unwrap().into_iter().map(|b| (b.email, b.key.slot)).collect();
        assert_eq!(left, [("a@x.org".to_owned(), 1), ("b@x.org".to_owned(), 4)]);
        assert_eq!(store.bookings_of("a@x.org").unwrap().len(), 1, "the per-user index agrees");
        assert!(store.user("a@x.org").unwrap().unwrap().disabled);

        // A booking authenticated before the disabling cannot commit after it.
        let late = store.book(key("d", 5), "a@x.org".into(), Timestamp::now(), admit_all()).await;
        assert!(matches!(late, Err(BookError::AccountDisabled)), "{late:?}");

        // Disabling twice does not bump the generation again; enabling keeps it.
        store.set_disabled("a@x.org".into(), true, Box::new(|k| k.slot != 1)).await.unwrap();
        let enabled = store.set_disabled("a@x.org".into(), false, Box::new(|_| true)).await.unwrap();
        assert!(!enabled.user.disabled && enabled.cancelled.is_empty());
        assert_eq!(enabled.user.credential_generation, 1);
        assert_eq!(store.bookings_of("a@x.org").unwrap().len(), 1, "enabling cancels nothing");
        store.book(key("d", 5), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();

        let unknown = store.set_disabled("c@x.org".into(), true, Box::new(|_| true)).await;
        assert!(matches!(unknown, Err(SetDisabledError::NoSuchUser)));
        let emails: Vec<String> = store.users().unwrap().into_iter().map(|u| u.email).collect();
        assert_eq!(emails, ["a@x.org", "b@x.org"]);
    }

    async fn bookings_of_a_user_do_not_leak_into_a_prefix_sharing_user(store: Store) {
        store.book(key("d", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        store.book(key("d", 2), "a@x.org.uk".into(), Timestamp::now(), admit_all()).await.unwrap();
        store.book(key("e", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        let mine: Vec<_> = store.bookings_of("a@x.org").unwrap().into_iter().map(|b| (b.key.device, b.key.slot)).collect();
        assert_eq!(mine, [("d".to_owned(), 1), ("e".to_owned(), 1)]);
    }

    async fn a_look_alike_of_an_account_is_refused_in_the_transaction(store: Store) {
        store.create_user(user("lab-admin@x.org")).await.unwrap();
        // A Cyrillic "а", and "rn" for "m".
        for copy in ["lab-\u{430}dmin@x.org", "lab-adrnin@x.org"] {
            assert!(matches!(store.create_user(user(copy)).await, Err(CreateUserError::LooksLikeAnother)), "{copy}");
        }
        // Of two look-alikes sent at once, one is created.
        let (a, b) = tokio::join!(store.create_user(user("bob@x.org")), store.create_user(user("b\u{43E}b@x.org")));
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        store.create_user(user("carol@x.org")).await.unwrap();
    }
}

#[tokio::test]
async fn data_and_secret_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rerod.redb");
    let secret = {
        let store = Store::open(&path).unwrap();
        store.book(key("d", 3), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
        let secret = store.jwt_secret_or_insert(|| Ok(vec![7; 32])).unwrap();
        store.close().await;
        secret
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.jwt_secret_or_insert(|| Ok(vec![9; 32])).unwrap(), secret);
    assert_eq!(store.bookings_on("d", date(2026, 11, 24)).unwrap().len(), 1);
}

#[tokio::test]
async fn backups_are_consistent_copies_taken_while_the_store_is_open() {
    let (dir, store) = temp_store();
    store.create_user(user("a@x.org")).await.unwrap();
    store.book(key("d", 1), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
    let secret = store.jwt_secret_or_insert(|| Ok(vec![5; 32])).unwrap();
    let audit = AuditEntry {
        at_us: 1,
        actor: "admin@x.org".into(),
        device: "d".into(),
        action: "maintenance_set".into(),
        detail: String::new(),
        user: None,
        address: None,
    };
    let record = MaintenanceRecord { reason: "motor".into(), set_by: "admin@x.org".into(), set_at_us: 1 };
    store.set_maintenance("d".into(), Some(record), audit).await.unwrap();
    let out = dir.path().join("backup.redb");
    // The open store is held: another opener is told so, and the store copies itself.
    assert!(backup(store.path(), &out).unwrap_err().is_held(), "the file is held by its store");
    assert!(snapshot(store.path()).unwrap_err().is_held());
    assert_eq!(store.backup_to(&out).unwrap(), Counts { users: 1, bookings: 1 });
    assert!(store.backup_to(&out).is_err(), "an existing file is never overwritten");
    // Writes after the backup are not in it.
    store.book(key("d", 2), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
    let all = store.snapshot().unwrap();
    assert_eq!((all.users.len(), all.bookings.len()), (1, 2));
    store.close().await;
    drop(store);
    // A file no store holds is read directly.
    assert_eq!(snapshot(&out).unwrap().bookings.len(), 1);
    let restored = Store::open(&out).unwrap();
    assert_eq!(restored.bookings_of("a@x.org").unwrap().len(), 1);
    assert_eq!(restored.user("a@x.org").unwrap(), Some(User { id: 1, ..user("a@x.org") }));
    assert_eq!(restored.jwt_secret_or_insert(|| Ok(vec![9; 32])).unwrap(), secret);
    // Maintenance and the audit log come back too.
    assert_eq!(restored.maintenance().unwrap()[0].1.reason, "motor");
    let actions: Vec<_> = restored.audit_log(Some("d"), 10).unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["maintenance_set"]);
}

/// Writes to the store file at `path` by hand, in one transaction, to make
/// it what another rerod (an older one, a newer one) might have left.
fn edit_file(path: &Path, edit: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    edit(&txn);
    txn.commit().unwrap();
}

#[test]
fn a_store_written_before_the_later_tables_is_backed_up_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    edit_file(&path, |txn| {
        txn.open_table(META).unwrap().insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice()).unwrap();
        txn.open_table(USERS).unwrap();
        txn.open_table(USER_BOOKINGS).unwrap();
        txn.open_table(BOOKINGS).unwrap().insert(("d", "2026-11-24", 3), b"".as_slice()).unwrap();
    });
    let out = dir.path().join("copy.redb");
    assert_eq!(backup(&path, &out).unwrap(), Counts { users: 0, bookings: 1 });
}

#[test]
fn a_store_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rerod.redb");
    edit_file(&path, |txn| {
        txn.open_table(META).unwrap().insert(META_SCHEMA_VERSION, 99u32.to_le_bytes().as_slice()).unwrap();
    });
    assert!(matches!(Store::open(&path), Err(StoreError::SchemaMismatch { found: 99, .. })));
}

/// A file on a disk that can fill up, the way tmpfs does: a full disk
/// refuses writes to bytes the file has never held, while bytes it already
/// holds may be written over.
#[derive(Debug)]
struct FillingDisk {
    file: std::fs::File,
    full: Arc<std::sync::atomic::AtomicBool>,
    /// The bytes the file holds: everything below is backed by the disk.
    held: std::sync::atomic::AtomicU64,
}

impl redb::StorageBackend for FillingDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.file.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        // A longer file is sparse: growing it takes no room yet.
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        let end = offset + data.len() as u64;
        if self.full.load(SeqCst) && end > self.held.load(SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset)?;
        self.held.fetch_max(end, SeqCst);
        Ok(())
    }
}

/// A store whose disk fills up when the returned flag is set.
fn store_on_filling_disk(path: &Path) -> (Store, Arc<std::sync::atomic::AtomicBool>) {
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let disk = Arc::clone(&full);
    let opener: Opener = Box::new(move |path| {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let held = std::sync::atomic::AtomicU64::new(file.metadata()?.len());
        // This backend takes no file locks, which only the exclusive mode does without.
        Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::ExclusiveWriter)
            .create_with_backend(FillingDisk { file, full: Arc::clone(&disk), held })
    });
    (Store::open_with(path, opener).unwrap(), full)
}

#[tokio::test]
async fn a_full_disk_fails_writes_keeps_reads_and_recovers_when_room_returns() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let (store, full) = store_on_filling_disk(&dir.path().join("rerod.redb"));
    store.create_user(user("a@x.org")).await.unwrap();
    store.book(key("d", 0), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();

    full.store(true, SeqCst);
    // A commit that fits in bytes the file already holds still succeeds;
    // book until one needs more.
    let mut refused = None;
    for slot in 1..200 {
        match store.book(key("d", slot), "a@x.org".into(), Timestamp::now(), admit_all()).await {
            Ok(_) => {}
            Err(error) => {
                refused = Some((slot, error));
                break;
            }
        }
    }
    let (slot, error) = refused.expect("every booking committed on a full disk");
    assert!(matches!(error, BookError::Store(StoreError::Unavailable(_))), "{error}");
    let failure = store.write_failure().expect("the failure is recorded");
    assert!(failure.contains("No space left"), "{failure}");
    // Reads go on: redb latched the failed handle, and the store opened the file again.
    let booked = store.bookings_of("a@x.org").unwrap();
    assert_eq!(booked.len(), usize::from(slot));
    assert!(store.check().is_ok());

    full.store(false, SeqCst);
    store.book(key("d", slot), "a@x.org".into(), Timestamp::now(), admit_all()).await.unwrap();
    assert_eq!(store.write_failure(), None);
    assert_eq!(store.bookings_of("a@x.org").unwrap().len(), usize::from(slot) + 1);
}

#[tokio::test]
async fn a_store_from_before_the_skeleton_index_gets_it_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rerod.redb");
    {
        let store = Store::open(&path).unwrap();
        store.create_user(user("lab-admin@x.org")).await.unwrap();
        store.create_user(user("ada@x.org")).await.unwrap();
        store.close().await;
    }
    // Make it what an older rerod left: accounts, no index, no version.
    edit_file(&path, |txn| {
        assert!(txn.delete_table(EMAIL_SKELETONS).unwrap());
        txn.open_table(META).unwrap().remove(META_SKELETON_VERSION).unwrap();
    });
    let store = Store::open(&path).unwrap();
    let copy = user("lab-\u{430}dmin@x.org");
    assert!(matches!(store.create_user(copy).await, Err(CreateUserError::LooksLikeAnother)));
    assert!(matches!(store.create_user(user("\u{430}da@x.org")).await, Err(CreateUserError::LooksLikeAnother)));
    store.create_user(user("bob@x.org")).await.unwrap();
    store.close().await;
    drop(store);
    // An account an older rerod added without indexing it is found too.
    edit_file(&path, |txn| {
        let record = records::encode_user(&user("eve@x.org"));
        txn.open_table(USERS).unwrap().insert("eve@x.org", record.as_slice()).unwrap();
    });
    let store = Store::open(&path).unwrap();
    assert!(matches!(store.create_user(user("\u{435}ve@x.org")).await, Err(CreateUserError::LooksLikeAnother)));
}

#[tokio::test]
async fn accounts_are_numbered_for_good_and_old_accounts_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::open(&path).unwrap();
    let a = store.create_user(user("a@x.org")).await.unwrap();
    let b = store.create_user(user("b@x.org")).await.unwrap();
    assert_eq!((a.id, b.id), (1, 2));
    assert_eq!(store.user("b@x.org").unwrap().unwrap().id, 2);
    store.close().await;
    drop(store);
    // An account written by an older rerod has no id: it gets the next one at open, and keeps it.
    edit_file(&path, |txn| {
        let old = br#"{"password_hash":"$2b$04$x","created_at_us":1700000000000000}"#;
        txn.open_table(USERS).unwrap().insert("old@x.org", old.as_slice()).unwrap();
    });
    let store = Store::open(&path).unwrap();
    assert_eq!(store.user("old@x.org").unwrap().unwrap().id, 3);
    assert_eq!(store.user("a@x.org").unwrap().unwrap().id, 1, "numbered accounts keep theirs");
    let c = store.create_user(user("c@x.org")).await.unwrap();
    assert_eq!(c.id, 4, "ids are never given twice");
    store.close().await;
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.user("old@x.org").unwrap().unwrap().id, 3);
}
