//! Prometheus metrics. Labels are bounded by the config (tier names, endpoint `namespace/name`) or by the code
//! (refusal codes, doors); key ids never appear in a label. Per-key usage is on the admin `/usage` view.
use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Per door and route: requests by outcome (`ok` or the refusal code) and their duration. A stream counts once,
/// when it ends. Every label is bounded by code.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// The children already resolved, by the addresses of their (static) label strings: `with_label_values`
    /// SipHashes every label and looks the child up under a lock twice per request (~70 ns of the authenticated
    /// HTTP route); this map is a pointer-hash lookup under one uncontended read lock. Bounded: the labels are.
    resolved: RwLock<HashMap<LabelRefs, (IntCounter, Histogram), BuildHasherDefault<AddressHasher>>>,
}

/// `(door, route, outcome)` by address and length. The same text at two addresses only costs a second entry for
/// the same children; the same address and length is always the same text.
type LabelRefs = [(usize, usize); 3];

/// Multiply-rotate over the words of [`LabelRefs`]: addresses are not attacker-chosen, so no keyed hash is needed.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|b| self.write_usize(usize::from(*b)));
    }
    fn write_usize(&mut self, word: usize) {
        self.0 = (self.0.rotate_left(5) ^ word as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl RequestMetrics {
    fn register(registry: &Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests and streams finished, by door, route and outcome (ok or refusal code)",
            ),
            &["door", "route", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time from the door's first look to the last byte")
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0]),
            &["door", "route"],
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("metric names are unique");
        registry.register(Box::new(duration.clone())).expect("metric names are unique");
        RequestMetrics { requests, duration, resolved: RwLock::default() }
    }

    pub fn finished(&self, door: &'static str, route: &'static str, outcome: &'static str, duration: Duration) {
        let refs = [door, route, outcome].map(|label| (label.as_ptr() as usize, label.len()));
        let seconds = duration.as_secs_f64();
        if let Some((count, time)) = self.resolved.read().unwrap_or_else(|e| e.into_inner()).get(&refs) {
            count.inc();
            time.observe(seconds);
            return;
        }
        let (count, time) =
            (self.requests.with_label_values(&[door, route, outcome]), self.duration.with_label_values(&[door, route]));
        count.inc();
        time.observe(seconds);
        self.resolved.write().unwrap_or_else(|e| e.into_inner()).insert(refs, (count, time));
    }
}

pub struct Metrics {
    pub registry: Registry,
    admissions: IntCounterVec,
    gpu_seconds: CounterVec,
    pub open_streams: IntGauge,
    pub open_connections: IntGaugeVec,
    pub queue_depth: IntGauge,
    pub queue_wait: Histogram,
    streams_closed: IntCounterVec,
    pub snapshot_swaps: IntCounter,
    pub snapshot_keys: IntGauge,
    pub config_errors: IntCounter,
    pub backend_seconds: Histogram,
    pub refunded_gpu_seconds: Counter,
    /// Shared by every request record (one reference count per request, not one per inner metric).
    pub requests: Arc<RequestMetrics>,
    /// TCP connections the HTTP/WebSocket listener closed at accept, by cap (`listener_full`, `per_ip_full`).
    pub http_connections_refused: IntCounterVec,
    counter_store_up: IntGauge,
    counter_store_agents: IntGauge,
    counter_store_fallback: IntGaugeVec,
    /// Redacted spans by entity type (a fixed set of names: `CREDIT_CARD`, `PERSON`, ...).
    redactions: IntCounterVec,
    /// Time spent redacting one stream segment or one-shot answer (patterns + NER).
    pub redaction_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("infergate".into()), None).expect("valid prefix");
        infergate_runtime::admin::register_build_info(&registry, "infergate-agent", env!("CARGO_PKG_VERSION"))
            .expect("build_info registers once");
        let requests = Arc::new(RequestMetrics::register(&registry));
        let http_connections_refused = IntCounterVec::new(
            Opts::new("http_connections_refused_total", "TCP connections closed at accept by a listener cap"),
            &["reason"],
        )
        .expect("valid metric");
        registry.register(Box::new(http_connections_refused.clone())).expect("metric names are unique");
        let admissions = IntCounterVec::new(
            Opts::new("admissions_total", "Admission decisions by outcome, refusal code, tier and endpoint"),
            &["decision", "reason", "tier", "endpoint"],
        )
        .expect("valid metric");
        let gpu_seconds = CounterVec::new(
            Opts::new("gpu_seconds_charged_total", "GPU-seconds charged to keys after settlement"),
            &["tier", "endpoint"],
        )
        .expect("valid metric");
        let open_streams =
            IntGauge::new("open_streams", "Open audio streams (WebSocket and gRPC)").expect("valid metric");
        let open_connections =
            IntGaugeVec::new(Opts::new("open_connections", "Open long-lived connections by door"), &["door"])
                .expect("valid metric");
        let queue_depth =
            IntGauge::new("queue_depth", "Requests waiting for GPU-second capacity").expect("valid metric");
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new("queue_wait_seconds", "Time requests spent waiting for capacity")
                .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0]),
        )
        .expect("valid metric");
        let streams_closed =
            IntCounterVec::new(Opts::new("streams_closed_total", "Streams closed, by reason"), &["reason"])
                .expect("valid metric");
        let snapshot_swaps = IntCounter::new("config_swaps_total", "Config snapshots applied").expect("valid metric");
        let snapshot_keys =
            IntGauge::new("config_keys", "Keys (active and revoked) in the running snapshot").expect("valid metric");
        let config_errors =
            IntCounter::new("config_errors_total", "Config shards or manifests that could not be applied")
                .expect("valid metric");
        let backend_seconds = Histogram::with_opts(
            HistogramOpts::new("backend_request_seconds", "Wall time of backend calls")
                .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        let refunded_gpu_seconds = Counter::new(
            "gpu_seconds_refunded_total",
            "GPU-seconds returned when the measured time was below the pre-charge",
        )
        .expect("valid metric");
        let counter_store_up = IntGauge::new(
            "counter_store_up",
            "1 while the counter store answers (always 1 in memory); 0: tiers apply their onStoreFailure policy",
        )
        .expect("valid metric");
        let counter_store_agents =
            IntGauge::new("counter_store_agents", "Agents sharing the counter store, as last seen")
                .expect("valid metric");
        // A gauge mirroring the limiter's monotonic counts (read at scrape), so it behaves as a counter.
        let counter_store_fallback = IntGaugeVec::new(
            Opts::new(
                "counter_store_fallback_decisions",
                "Admissions and stream slots decided without the shared counter store since start, by policy",
            ),
            &["policy"],
        )
        .expect("valid metric");
        let redactions = IntCounterVec::new(
            Opts::new("redactions_total", "Spans of personal data redacted from transcripts, by entity type"),
            &["entity"],
        )
        .expect("valid metric");
        let redaction_seconds = Histogram::with_opts(
            HistogramOpts::new("redaction_seconds", "Time to redact one answer or stream segment")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5]),
        )
        .expect("valid metric");
        for c in [
            Box::new(counter_store_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(redactions.clone()),
            Box::new(redaction_seconds.clone()),
            Box::new(counter_store_agents.clone()),
            Box::new(counter_store_fallback.clone()),
            Box::new(admissions.clone()),
            Box::new(gpu_seconds.clone()),
            Box::new(open_streams.clone()),
            Box::new(open_connections.clone()),
            Box::new(queue_depth.clone()),
            Box::new(queue_wait.clone()),
            Box::new(streams_closed.clone()),
            Box::new(snapshot_swaps.clone()),
            Box::new(snapshot_keys.clone()),
            Box::new(config_errors.clone()),
            Box::new(backend_seconds.clone()),
            Box::new(refunded_gpu_seconds.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            admissions,
            gpu_seconds,
            open_streams,
            open_connections,
            queue_depth,
            queue_wait,
            streams_closed,
            snapshot_swaps,
            snapshot_keys,
            config_errors,
            backend_seconds,
            refunded_gpu_seconds,
            requests,
            http_connections_refused,
            counter_store_up,
            counter_store_agents,
            counter_store_fallback,
            redactions,
            redaction_seconds,
        }
    }

    pub fn redacted(&self, counts: &crate::redaction::Counts) {
        for (entity, n) in counts {
            self.redactions.with_label_values(&[entity.name()]).inc_by(u64::from(*n));
        }
    }

    /// Reads the counter store's health and the limiter's fallback counts (at scrape time).
    pub fn observe_counter_store(&self, limiter: &infergate_gate::limiter::Limiter) {
        use std::sync::atomic::Ordering::Relaxed;
        let store = limiter.store();
        self.counter_store_up.set(i64::from(store.is_up()));
        self.counter_store_agents.set(i64::from(store.agents()));
        let f = limiter.store_failures();
        for (policy, n) in [("local", &f.local), ("failOpen", &f.fail_open), ("failClosed", &f.fail_closed)] {
            self.counter_store_fallback.with_label_values(&[policy]).set(n.load(Relaxed) as i64);
        }
    }

    pub fn admitted(&self, tier: &str, endpoint: &str) {
        self.admissions.with_label_values(&["admit", "ok", tier, endpoint]).inc();
    }

    /// `tier`/`endpoint` are empty when the refusal came before they were known (e.g. unknown key).
    pub fn refused(&self, code: &str, tier: &str, endpoint: &str) {
        self.admissions.with_label_values(&["refuse", code, tier, endpoint]).inc();
    }

    pub fn charged(&self, tier: &str, endpoint: &str, gpu_seconds: f64) {
        if gpu_seconds > 0.0 {
            self.gpu_seconds.with_label_values(&[tier, endpoint]).inc_by(gpu_seconds);
        }
    }

    pub fn stream_closed(&self, reason: &str) {
        self.streams_closed.with_label_values(&[reason]).inc();
    }

    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
