//! The records directory: ids that cannot leave it, modes, the transcript
//! limit and retention.

use super::*;

fn meta(device: &str, slot: u16, holder: &str) -> SessionMeta {
    SessionMeta {
        device: device.into(),
        date: jiff::civil::date(2026, 11, 24),
        first_slot: slot,
        holder: holder.into(),
        started_at_us: i64::from(slot) * 1_000_000,
        booked_at_us: Some(1_000),
    }
}

fn out(text: &str) -> TranscriptLine {
    TranscriptLine {
        at: "2026-11-24T10:30:00.000000Z".into(),
        dir: Direction::Out,
        text: text.into(),
        base64: None,
        truncated: false,
    }
}

#[test]
fn ids_round_trip_and_nothing_else_parses() {
    let date = jiff::civil::date(2026, 11, 24);
    let id = SessionId { device: "arm_1".into(), date, first_slot: 9, tag: Some(0xabc) };
    assert_eq!(id.to_string(), "arm_1_2026-11-24_9_00000000000000000000000000000abc");
    assert_eq!(SessionId::parse(&id.to_string()), Some(id));
    let old = SessionId { device: "arm_1".into(), date, first_slot: 9, tag: None };
    assert_eq!(SessionId::parse("arm_1_2026-11-24_9"), Some(old), "records from before tags");
    for bad in [
        "",
        "..",
        "../etc_2026-11-24_9",
        "arm-1_2026-11-24_9/../../x",
        "arm-1_2026-11-24_09",
        "arm-1_2026-13-24_9",
        "arm-1_2026-11-24_",
        "_2026-11-24_9",
        "arm-1_2026-11-24_9\0",
        "arm%2F1_2026-11-24_9",
        "arm.1_2026-11-24_9",
        "/tmp_2026-11-24_9",
        "arm-1_2026-11-24_9_00000000000000000000000000000ABC",
        "arm-1_2026-11-24_9_0000000000000000000000000000abc",
        "arm-1_2026-11-24_9_0000000000000000000000000000zabc",
        "arm-1_2026-11-24_9_+0000000000000000000000000000abc",
    ] {
        assert_eq!(SessionId::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn a_slot_booked_again_is_a_new_record_that_no_one_can_name_from_the_calendar() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let first = meta("arm-1", 10, "a@x.org");
    let a = records.begin(&first).unwrap();
    assert_eq!(records.begin(&first).unwrap(), a, "the same booking goes on in its record");
    assert_eq!(records.find(&first).unwrap(), Some(a.clone()));
    // Cancelled, then booked again: by someone else, or by the same holder.
    let other = SessionMeta { holder: "b@x.org".into(), booked_at_us: Some(2_000), ..first.clone() };
    let again = SessionMeta { booked_at_us: Some(3_000), ..first.clone() };
    let b = records.begin(&other).unwrap();
    let c = records.begin(&again).unwrap();
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    assert_eq!(records.meta(&b).unwrap().unwrap().holder, "b@x.org");
    for id in [&a, &b, &c] {
        assert!(id.to_string().starts_with("arm-1_2026-11-24_10_"), "{id}");
        assert_ne!(id.tag, None);
    }
    assert_eq!(records.list().unwrap().len(), 3);
    // A record from before tags is never taken up by a new session.
    let legacy = SessionId { tag: None, ..a.clone() };
    fs::create_dir(records.path().join(legacy.to_string())).unwrap();
    fs::write(records.path().join(legacy.to_string()).join(SESSION_FILE), serde_json::to_vec(&other).unwrap()).unwrap();
    assert_eq!(records.find(&other).unwrap(), Some(b));
}

#[test]
fn records_are_private_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(&dir.path().join("records")).unwrap();
    let m = meta("arm-1", 10, "a@x.org");
    let id = records.begin(&m).unwrap();
    assert_eq!(records.meta(&id).unwrap(), Some(m.clone()));
    let mut transcript = records.transcript(&id, 1 << 20).unwrap();
    transcript.write(&out("hello\n")).unwrap();
    let entry = UploadEntry {
        at: "2026-11-24T10:31:00.000000Z".into(),
        by: "a@x.org".into(),
        sha256: sha256_hex(b"x"),
        bytes: 1,
        method: UploadMethod::Firmware,
        result: UploadResult::Ok,
        detail: String::new(),
        duration_ms: 5,
    };
    records.log_upload(&id, &entry).unwrap();
    assert_eq!(records.uploads(&id).unwrap(), vec![entry]);
    // Logs written before these were enums read back the same words.
    let line = fs::read_to_string(records.path().join(id.to_string()).join(UPLOADS_FILE)).unwrap();
    assert!(line.contains(r#""method":"firmware","result":"ok""#), "{line}");
    let text = String::from_utf8(records.read_transcript(&id).unwrap()).unwrap();
    assert_eq!(serde_json::from_str::<TranscriptLine>(text.trim_end()).unwrap(), out("hello\n"));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(records.path()), 0o700);
    let session = records.path().join(id.to_string());
    assert_eq!(mode(&session), 0o700);
    for file in [SESSION_FILE, TRANSCRIPT_FILE, UPLOADS_FILE] {
        assert_eq!(mode(&session.join(file)), 0o600, "{file}");
    }
    let listed = records.list().unwrap();
    assert_eq!((listed.len(), listed[0].n_uploads), (1, 1));
    assert_eq!(records.meta(&SessionId::parse("arm-1_2026-11-24_10").unwrap()).unwrap(), None);
}

#[test]
fn a_transcript_stops_at_its_limit_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let id = records.begin(&meta("arm-1", 10, "a@x.org")).unwrap();
    let mut transcript = records.transcript(&id, 300).unwrap();
    for _ in 0..20 {
        transcript.write(&out("0123456789")).unwrap();
    }
    assert!(transcript.is_full());
    let bytes = records.read_transcript(&id).unwrap();
    let lines: Vec<TranscriptLine> =
        bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert!(lines.last().unwrap().truncated);
    assert!(lines[..lines.len() - 1].iter().all(|l| !l.truncated));
    // The marker may pass the limit by its own length, never more.
    assert!(bytes.len() < 300 + 200, "{}", bytes.len());
    // Opened again (a new lookup of the same session), it stays cut.
    let mut again = records.transcript(&id, 300).unwrap();
    assert!(again.is_full());
    again.write(&out("x")).unwrap();
    assert_eq!(records.read_transcript(&id).unwrap(), bytes);
}

#[test]
fn retention_removes_the_oldest_and_keeps_sessions_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let now = SystemTime::now();
    let mut ids = Vec::new();
    for slot in [8u16, 9, 10] {
        let id = records.begin(&meta("arm-1", slot, "a@x.org")).unwrap();
        let mut transcript = records.transcript(&id, 1 << 20).unwrap();
        transcript.write(&out(&"x".repeat(1000))).unwrap();
        // Each record last changed a minute after the one before.
        let changed = now - Duration::from_secs(60 * u64::from(11 - slot));
        for file in fs::read_dir(records.path().join(id.to_string())).unwrap() {
            File::options().append(true).open(file.unwrap().path()).unwrap().set_modified(changed).unwrap();
        }
        ids.push(id);
    }
    // Nothing is too old or too big.
    assert_eq!(records.enforce_retention(now, Duration::from_secs(3600), 1 << 20, &[]).unwrap(), 0);
    // Over the size: the oldest go first, but not one still in progress.
    assert_eq!(records.enforce_retention(now, Duration::from_secs(3600), 1500, &[ids[0].clone()]).unwrap(), 2);
    let left: Vec<u16> = records.list().unwrap().iter().map(|r| r.meta.first_slot).collect();
    assert_eq!(left, vec![8]);
    // Too old.
    let later = now + Duration::from_secs(7200);
    assert_eq!(records.enforce_retention(later, Duration::from_secs(3600), 1 << 20, &[]).unwrap(), 1);
    assert!(records.list().unwrap().is_empty());
}

#[test]
fn base64_matches_the_rfc_examples() {
    for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
        assert_eq!(base64(input.as_bytes()), expected);
    }
    assert_eq!(base64(&[0xFF, 0xFE]), "//4=");
}

/// The digest is written as `sha256sum` prints it: 64 lower-case hex digits.
#[test]
fn digests_read_like_sha256sum() {
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn camera_pictures_are_kept_with_their_record_and_names_cannot_leave_it() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let id = records.begin(&meta("arm-1", 9, "a@x.org")).unwrap();
    let sink = records.snapshot_sink(&id);
    sink.save("upload-20261124T093000Z", b"\xff\xd8one\xff\xd9").unwrap();
    sink.save("session-end", b"\xff\xd8two\xff\xd9").unwrap();
    for bad in ["", "../x", "a/b", "a.jpg", &"x".repeat(65)] {
        assert!(sink.save(bad, b"x").is_err(), "{bad:?}");
        assert_eq!(records.read_snapshot(&id, bad).unwrap(), None, "{bad:?}");
    }
    assert_eq!(
        records.snapshots(&id).unwrap(),
        [("session-end".to_owned(), 7), ("upload-20261124T093000Z".to_owned(), 7)]
    );
    assert_eq!(records.read_snapshot(&id, "session-end").unwrap().as_deref(), Some(&b"\xff\xd8two\xff\xd9"[..]));
    assert_eq!(records.read_snapshot(&id, "nothing").unwrap(), None);
    let mode = std::fs::metadata(dir.path().join(id.to_string()).join("snapshot-session-end.jpg")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    // Retention removes them with their record.
    let far = std::time::SystemTime::now() + Duration::from_secs(86_400 * 400);
    assert_eq!(records.enforce_retention(far, Duration::from_secs(86_400), u64::MAX, &[]).unwrap(), 1);
    assert!(records.snapshots(&id).unwrap().is_empty());
}
