//! The operator's Prometheus metrics, all under `infergate_operator_`. Label values come from fixed sets
//! (`kind` is one of three CRD kinds, `category` comes from [`crate::reconcile::ReconcileError::category`],
//! `state` is a key state): never an object name, a key id or an error string, so cardinality stays bounded.
use prometheus::{Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// Keys accepted by the gateway config, by state (`current`, `retiring`), plus `revoked` ones still listed.
    pub keys: IntGaugeVec,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: IntGauge,
    /// Revocation propagation, read at scrape time from the policies' status (see [`Metrics::observe_revocations`]).
    revocations_unenforced: IntGauge,
    revocation_oldest_unenforced: Gauge,
    revocation_agents_enforcing: IntGauge,
    revocation_agents_total: IntGauge,
    /// The leader's policy cache, once its controllers run.
    policies: Arc<Mutex<Option<kube::runtime::reflector::Store<infergate_crds::ApiKeyPolicy>>>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("infergate_operator".to_string()), None)
            .expect("the metric prefix is a valid name");
        let reconciles =
            IntCounterVec::new(Opts::new("reconciles_total", "Reconciles started, by CRD kind"), &["kind"])
                .expect("valid metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconciles that failed, by CRD kind and fixed error category"),
            &["kind", "category"],
        )
        .expect("valid metric");
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time spent in one reconcile, by CRD kind")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["kind"],
        )
        .expect("valid metric");
        let keys =
            IntGaugeVec::new(Opts::new("keys", "API keys in the published gateway config, by state"), &["state"])
                .expect("valid metric");
        let leader = IntGauge::new("leader", "1 while this replica is the leader and runs the controllers")
            .expect("valid metric");
        let revocations_unenforced = IntGauge::new(
            "revocations_unenforced",
            "Revocations (matching an issued key) that not every reporting agent enforces yet",
        )
        .expect("valid metric");
        let revocation_oldest_unenforced = Gauge::new(
            "revocation_oldest_unenforced_seconds",
            "Age of the oldest revocation not every reporting agent enforces yet (0: none)",
        )
        .expect("valid metric");
        let revocation_agents_enforcing = IntGauge::new(
            "revocation_agents_enforcing",
            "Agents enforcing every revocation (the fewest over pending revocations; all reporting agents when none is pending)",
        )
        .expect("valid metric");
        let revocation_agents_total =
            IntGauge::new("revocation_agents_total", "Agents reporting the config revision they run")
                .expect("valid metric");
        infergate_runtime::admin::register_build_info(&registry, "operator", env!("CARGO_PKG_VERSION"))
            .expect("build_info is registered once");
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(keys.clone()),
            Box::new(leader.clone()),
            Box::new(revocations_unenforced.clone()),
            Box::new(revocation_oldest_unenforced.clone()),
            Box::new(revocation_agents_enforcing.clone()),
            Box::new(revocation_agents_total.clone()),
        ] {
            registry.register(collector).expect("each metric is registered once");
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            keys,
            leader,
            revocations_unenforced,
            revocation_oldest_unenforced,
            revocation_agents_enforcing,
            revocation_agents_total,
            policies: Arc::default(),
        }
    }

    /// Called by the leader once its policy cache exists: the revocation gauges are read from it.
    pub fn watch_policies(&self, store: kube::runtime::reflector::Store<infergate_crds::ApiKeyPolicy>) {
        *self.policies.lock().unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    /// Revocation propagation from the policies' status (what the operator last wrote there): how many
    /// revocations some reporting agent still lacks, how old the oldest is, and agents enforcing / reporting.
    /// A standby (no cache) reports zeros.
    pub fn observe_revocations(&self) {
        let store = self.policies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (mut pending, mut oldest, mut enforcing, mut total) = (0i64, None, None::<u32>, 0u32);
        if let Some(store) = store {
            for policy in store.state() {
                for r in policy.status.iter().flat_map(|s| s.revocations.iter()).filter(|r| r.matched) {
                    let reporting = r.agents_total.unwrap_or(0);
                    total = total.max(reporting);
                    let agents = r.agents_enforcing.unwrap_or(0);
                    if agents < reporting {
                        pending += 1;
                        enforcing = Some(enforcing.map_or(agents, |e| e.min(agents)));
                        oldest =
                            Some(oldest.map_or(r.revoked_at, |o: chrono::DateTime<chrono::Utc>| o.min(r.revoked_at)));
                    }
                }
            }
        }
        self.revocations_unenforced.set(pending);
        let age = oldest.map_or(0.0, |at| (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1e3);
        self.revocation_oldest_unenforced.set(age);
        self.revocation_agents_total.set(i64::from(total));
        self.revocation_agents_enforcing.set(i64::from(enforcing.unwrap_or(total)));
    }

    /// Counts a reconcile and returns a guard that records its duration when dropped, whatever the outcome.
    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[kind]).inc();
        ReconcileTimer { histogram: self.reconcile_duration.clone(), kind, started: Instant::now() }
    }

    pub fn reconcile_failed(&self, kind: &'static str, category: &'static str) {
        self.reconcile_errors.with_label_values(&[kind, category]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding gathered metrics into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Records a reconcile's duration on drop.
pub struct ReconcileTimer {
    histogram: HistogramVec,
    kind: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.with_label_values(&[self.kind]).observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_fixed_labels() {
        let m = Metrics::new();
        drop(m.reconcile_started("apikeypolicy"));
        m.reconcile_failed("apikeypolicy", "key_secret_write");
        m.keys.with_label_values(&["current"]).set(3);
        m.leader.set(1);
        let text = m.render();
        for needle in [
            "infergate_operator_reconciles_total{kind=\"apikeypolicy\"} 1",
            "infergate_operator_reconcile_errors_total{category=\"key_secret_write\",kind=\"apikeypolicy\"} 1",
            "infergate_operator_reconcile_duration_seconds_count{kind=\"apikeypolicy\"} 1",
            "infergate_operator_keys{state=\"current\"} 3",
            "infergate_operator_leader 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
