//! Metrics hot-path benchmark: nanoseconds per `record_request` (route ×
//! method × status counter and the route's latency histogram, what every HTTP
//! request pays) and per booking counter increment, for rerod's own registry
//! (`rerod::metrics`) and for the same metrics kept with the Prometheus
//! project's Rust client (`prometheus-client`).
//!
//!     cargo bench -p rerod --bench metrics -- [--ops N]
//!
//! Both registries know every route of `rerod::http::ROUTES` up front, as
//! the daemon's does. Requests cycle through all routes with a realistic
//! spread of methods and statuses. Each case runs on one thread, then on two
//! threads at once against the shared registry (the daemon's worker threads
//! on this 2-core machine kind). The two registries alternate, two runs each,
//! so drift of the machine shows as a difference between runs of one
//! registry. Results are in tests/bench/RESULTS.md.

#![allow(clippy::unwrap_used)] // a benchmark: failures are panics with context

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rerod::metrics::{BookingAction, Metrics};

/// The latency buckets rerod's own registry uses, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)] // the label values are the method names
enum Method {
    GET,
    POST,
    DELETE,
    Other,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: Method,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(BUCKETS)
    }
}

/// The same metrics, kept the way prometheus-client is meant to be used: a
/// family per metric, labels as a derived label set, and the label-free
/// booking counters resolved once.
#[derive(Debug)]
struct ClientMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, LatencyBuckets>,
    bookings: [Counter; 2],
    _registry: Registry,
}

impl ClientMetrics {
    fn new(routes: &[&'static str]) -> ClientMetrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::new_with_constructor(LatencyBuckets);
        let bookings_family = Family::<ActionLabels, Counter>::default();
        registry.register("rerod_http_requests", "HTTP requests answered.", requests.clone());
        registry.register("rerod_http_request_duration_seconds", "Request latency.", latency.clone());
        registry.register("rerod_bookings", "Committed bookings and cancellations.", bookings_family.clone());
        for route in routes {
            let _ = latency.get_or_create(&RouteLabels { route });
        }
        let bookings = ["book", "cancel"].map(|action| bookings_family.get_or_create_owned(&ActionLabels { action }));
        ClientMetrics { requests, latency, bookings, _registry: registry }
    }

    fn record_request(&self, route: &'static str, method: &str, status: u16, elapsed: Duration) {
        let method = match method {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "DELETE" => Method::DELETE,
            _ => Method::Other,
        };
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
        self.latency.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    }

    fn record_booking(&self, action: BookingAction) {
        self.bookings[action as usize].inc();
    }
}

/// One recorded request: what `http::serve` passes after answering.
type Request = (&'static str, &'static str, u16, Duration);

/// Every route, mostly GET 200, with the odd POST, 4xx and slow answer.
fn requests(routes: &[&'static str]) -> Vec<Request> {
    let shapes = [
        ("GET", 200, 300),
        ("GET", 200, 800),
        ("POST", 200, 3_000),
        ("GET", 304, 200),
        ("POST", 400, 900),
        ("GET", 404, 150),
        ("POST", 401, 120),
        ("GET", 200, 40_000),
    ];
    let mut all = Vec::new();
    for (idx, route) in routes.iter().enumerate() {
        for (shift, _) in shapes.iter().enumerate().take(3) {
            let (method, status, micros) = shapes[(idx + shift) % shapes.len()];
            all.push((*route, method, status, Duration::from_micros(micros)));
        }
    }
    all
}

trait Recorder: Send + Sync {
    fn request(&self, request: &Request);
    fn booking(&self, action: BookingAction);
}

impl Recorder for Metrics {
    fn request(&self, &(route, method, status, elapsed): &Request) {
        self.record_request(route, method, status, elapsed);
    }
    fn booking(&self, action: BookingAction) {
        self.record_booking(action);
    }
}

impl Recorder for ClientMetrics {
    fn request(&self, &(route, method, status, elapsed): &Request) {
        self.record_request(route, method, status, elapsed);
    }
    fn booking(&self, action: BookingAction) {
        self.record_booking(action);
    }
}

/// Nanoseconds per operation on each of `threads` threads running `ops` each.
fn time(threads: usize, ops: usize, each: impl Fn(usize) + Send + Sync) -> f64 {
    let each = &each;
    let barrier = std::sync::Barrier::new(threads);
    let elapsed: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    for i in 0..ops {
                        each(black_box(i + t * 7));
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let slowest = elapsed.into_iter().max().unwrap_or_default();
    slowest.as_nanos() as f64 / ops as f64
}

fn bench(name: &str, recorder: &dyn Recorder, requests: &[Request], ops: usize) {
    // Warm up: every series exists and the caches are hot before timing.
    for request in requests {
        recorder.request(request);
    }
    let request = |i: usize| recorder.request(&requests[i % requests.len()]);
    let booking =
        |i: usize| recorder.booking(if i.is_multiple_of(4) { BookingAction::Cancel } else { BookingAction::Book });
    let (req1, req2) = (time(1, ops, request), time(2, ops, request));
    let (book1, book2) = (time(1, ops, booking), time(2, ops, booking));
    println!("| {name} | {req1:.1} | {req2:.1} | {book1:.1} | {book2:.1} |");
}

fn main() {
    let mut ops = 2_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ops" => ops = args.next().and_then(|n| n.parse().ok()).expect("--ops N"),
            "--bench" => {}
            other => panic!("unknown argument {other:?}; usage: [--ops N]"),
        }
    }
    let routes: Vec<&'static str> = rerod::http::ROUTES.iter().map(|r| r.pattern).collect();
    let requests = requests(&routes);
    println!("{} routes, {} request shapes, {ops} operations per thread and case\n", routes.len(), requests.len());
    println!(
        "| registry | record_request, 1 thread (ns) | record_request, 2 threads (ns) | booking, 1 thread (ns) | booking, 2 threads (ns) |"
    );
    println!("|---|---|---|---|---|");
    for run in 1..=2 {
        let own = Arc::new(Metrics::with_routes(routes.iter().copied()));
        bench(&format!("rerod::metrics, run {run}"), &*own, &requests, ops);
        let client = ClientMetrics::new(&routes);
        bench(&format!("prometheus-client, run {run}"), &client, &requests, ops);
    }
}
