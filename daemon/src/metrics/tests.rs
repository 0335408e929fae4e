//! Unit tests of the metrics registry and its text rendering.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A rendered exposition, parsed back: series (name plus labels, as
/// written) → value, and family name → type. Panics on any line that is
/// not a comment or a well-formed sample, so the format is checked too.
#[derive(Debug)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

fn scrape(metrics: &Metrics) -> Scrape {
    let text = metrics.render();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap();
            assert!(helped.insert(name.to_owned()), "one HELP per family: {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.contains(name), "HELP comes before TYPE: {name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "one TYPE per family: {name}");
        } else {
            // The value follows the last space; label values here hold no spaces.
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram")))
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before its TYPE: {line}");
            assert!(samples.insert(series.to_owned(), value).is_none(), "duplicate series {series}");
        }
    }
    Scrape { samples, types }
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| panic!("no series {series} in {:#?}", self.samples))
    }
}

#[test]
fn every_family_is_declared_from_the_start() {
    let s = scrape(&Metrics::new());
    for (name, kind) in [
        ("rerod_http_requests_total", "counter"),
        ("rerod_http_request_duration_seconds", "histogram"),
        ("rerod_websocket_connections", "gauge"),
        ("rerod_compiles", "gauge"),
        ("rerod_bookings_total", "counter"),
        ("rerod_logins_total", "counter"),
        ("rerod_uploads_total", "counter"),
        ("rerod_serial_bytes_total", "counter"),
        ("rerod_config_reloads_total", "counter"),
        ("rerod_health_checks_total", "counter"),
        ("rerod_board_failures_total", "counter"),
        ("rerod_device_health", "gauge"),
        ("rerod_build_info", "gauge"),
    ] {
        assert_eq!(s.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(s.get(&format!("rerod_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    assert_eq!(s.get("rerod_bookings_total{action=\"book\"}"), 0.0);
    assert_eq!(s.get("rerod_uploads_total{result=\"aborted\"}"), 0.0);
}

#[test]
fn requests_count_by_route_method_and_exact_status() {
    let metrics = Metrics::with_routes(["/slots", "/book-slot"]);
    let ms = Duration::from_millis(1);
    metrics.record_request("/slots", "GET", 200, ms);
    metrics.record_request("/slots", "GET", 200, ms);
    metrics.record_request("/slots", "POST", 405, ms);
    metrics.record_request("/book-slot", "POST", 400, ms);
    metrics.record_request("/book-slot", "BREW", 405, ms);
    let s = scrape(&metrics);
    assert_eq!(s.get(r#"rerod_http_requests_total{route="/slots",method="GET",status="200"}"#), 2.0);
    assert_eq!(s.get(r#"rerod_http_requests_total{route="/slots",method="POST",status="405"}"#), 1.0);
    assert_eq!(s.get(r#"rerod_http_requests_total{route="/book-slot",method="POST",status="400"}"#), 1.0);
    // Extension methods are client text: they share one label value.
    assert_eq!(s.get(r#"rerod_http_requests_total{route="/book-slot",method="other",status="405"}"#), 1.0);
    let n_request_series = s.samples.keys().filter(|k| k.starts_with("rerod_http_requests_total")).count();
    assert_eq!(n_request_series, 4);
}

#[test]
fn histograms_are_cumulative_and_end_in_inf() {
    let metrics = Metrics::with_routes(["/health"]);
    let zero = scrape(&metrics);
    assert_eq!(zero.get(r#"rerod_http_request_duration_seconds_count{route="/health"}"#), 0.0);
    assert_eq!(zero.get(r#"rerod_http_request_duration_seconds_bucket{route="/health",le="+Inf"}"#), 0.0);

    for micros in [100, 500, 501, 30_000, 20_000_000] {
        metrics.record_request("/health", "GET", 200, Duration::from_micros(micros));
    }
    let s = scrape(&metrics);
    let bucket =
        |le: &str| s.get(&format!(r#"rerod_http_request_duration_seconds_bucket{{route="/health",le="{le}"}}"#));
    // Bounds are inclusive: 500 µs is in the 0.0005 bucket, 501 µs is not.
    assert_eq!(bucket("0.0005"), 2.0);
    assert_eq!(bucket("0.001"), 3.0);
    assert_eq!(bucket("0.025"), 3.0);
    assert_eq!(bucket("0.05"), 4.0);
    assert_eq!(bucket("10"), 4.0);
    assert_eq!(bucket("+Inf"), 5.0);
    assert_eq!(s.get(r#"rerod_http_request_duration_seconds_count{route="/health"}"#), 5.0);
    let sum = s.get(r#"rerod_http_request_duration_seconds_sum{route="/health"}"#);
    assert!((sum - 20.031101).abs() < 1e-9, "{sum}");
    let mut previous = 0.0;
    for (_, text) in LATENCY_BUCKETS {
        assert!(bucket(text) >= previous, "buckets never decrease");
        previous = bucket(text);
    }
}

#[test]
fn domain_counters_move() {
    let metrics = Metrics::new();
    metrics.record_booking(BookingAction::Book);
    metrics.record_booking(BookingAction::Book);
    metrics.record_booking(BookingAction::Cancel);
    metrics.record_login(Outcome::Failed);
    metrics.record_upload(UploadResult::Refused);
    metrics.record_serial_bytes(Direction::In, 1000);
    metrics.record_serial_bytes(Direction::Out, 3);
    metrics.record_serial_bytes(Direction::In, 24);
    metrics.record_config_reload(Outcome::Ok);
    metrics.websocket_opened();
    metrics.websocket_opened();
    metrics.websocket_closed();
    let s = scrape(&metrics);
    assert_eq!(s.get(r#"rerod_bookings_total{action="book"}"#), 2.0);
    assert_eq!(s.get(r#"rerod_bookings_total{action="cancel"}"#), 1.0);
    assert_eq!(s.get(r#"rerod_logins_total{result="ok"}"#), 0.0);
    assert_eq!(s.get(r#"rerod_logins_total{result="failed"}"#), 1.0);
    assert_eq!(s.get(r#"rerod_uploads_total{result="refused"}"#), 1.0);
    assert_eq!(s.get(r#"rerod_serial_bytes_total{direction="in"}"#), 1024.0);
    assert_eq!(s.get(r#"rerod_serial_bytes_total{direction="out"}"#), 3.0);
    assert_eq!(s.get(r#"rerod_config_reloads_total{result="ok"}"#), 1.0);
    assert_eq!(s.get("rerod_websocket_connections"), 1.0);
    metrics.set_websocket_connections(7);
    assert_eq!(scrape(&metrics).get("rerod_websocket_connections"), 7.0);
}

#[test]
fn full_tables_overflow_instead_of_growing() {
    let metrics = Metrics::new();
    // Leaked strings stand in for a router with very many patterns.
    for n in 0..MAX_ROUTES + 3 {
        let route: &'static str = Box::leak(format!("/r{n}").into_boxed_str());
        metrics.record_request(route, "GET", 200, Duration::ZERO);
    }
    for status in 100..100 + MAX_STATUSES as u16 + 2 {
        metrics.record_request("/r0", "GET", status, Duration::ZERO);
    }
    let s = scrape(&metrics);
    assert_eq!(s.get(r#"rerod_http_requests_total{route="(overflow)",method="GET",status="200"}"#), 3.0);
    assert_eq!(s.get(r#"rerod_http_request_duration_seconds_count{route="(overflow)"}"#), 3.0);
    // /r0 already holds 200, so of the 26 new codes 23 fit and 3 overflow.
    assert_eq!(s.get(r#"rerod_http_requests_total{route="/r0",method="GET",status="other"}"#), 3.0);
}

#[test]
fn concurrent_recording_loses_nothing() {
    let metrics = Metrics::new();
    std::thread::scope(|scope| {
        for thread in 0..4u16 {
            let metrics = &metrics;
            scope.spawn(move || {
                for i in 0..1000u16 {
                    let route = if i % 2 == 0 { "/a" } else { "/b" };
                    metrics.record_request(route, "GET", 200 + (i + thread) % 3, Duration::from_micros(10));
                }
            });
        }
    });
    let s = scrape(&metrics);
    let total: f64 = s.samples.iter().filter(|(k, _)| k.starts_with("rerod_http_requests_total")).map(|(_, v)| v).sum();
    assert_eq!(total, 4000.0);
    assert_eq!(s.samples.keys().filter(|k| k.starts_with("rerod_http_requests_total")).count(), 6);
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(labels(&[("route", "a\"b\\c\nd")]), r#"{route="a\"b\\c\nd"}"#);
    assert_eq!(labels(&[]), "");
    let mut out = String::new();
    family(&mut out, "x", "counter", "back\\slash\nnewline \"quotes\"");
    assert_eq!(out, "# HELP x back\\\\slash\\nnewline \"quotes\"\n# TYPE x counter\n");
}

#[test]
fn upload_result_labels_are_the_words_of_the_upload_log() {
    for result in UploadResult::ALL {
        assert_eq!(serde_json::to_value(result).unwrap(), result.label(), "{result:?}");
    }
}
