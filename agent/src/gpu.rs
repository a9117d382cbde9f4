//! GPU-driven limits in the gateway: the node's GPU utilisation scales each tier's refill rate.
//!
//! ```text
//!  start-up: DynamicLimits(tiers of the first snapshot) ─▶ Controller::start_nvml ─┬─ ok: sampler thread
//!                                                                                  └─ no driver: CPU mode,
//!                                                                                     nominal factors
//!  limiter.params(grant) ─▶ GpuRefill::refill_factor(tier name) ─▶ limits.factor(name)   (lock-free)
//!  gateway.apply(snapshot) ─▶ Gpu::set_tiers(tiers of the snapshot)
//!  admin /status, Lease annotation ◀── Gpu::status_json()
//! ```
use infergate_gate::limiter::RefillFactor;
use infergate_gate::snapshot::Snapshot;
use infergate_gpu::{Controller, DynamicLimits, LimitsConfig, NvmlConfig, TierPolicy};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The limiter's refill hook backed by the GPU policy: a tier's factor, by name.
pub struct GpuRefill(pub Arc<DynamicLimits>);

impl RefillFactor for GpuRefill {
    fn refill_factor(&self, tier_name: &str, _tier_priority: u32) -> f64 {
        self.0.factor(tier_name)
    }
}

/// The policy's view of the snapshot's tiers, one entry per tier name (policies of one tier share it).
pub fn tier_policies(snapshot: &Snapshot) -> Vec<TierPolicy> {
    let mut seen = BTreeSet::new();
    snapshot
        .policies()
        .iter()
        .filter(|p| seen.insert(p.tier.name.clone()))
        .map(|p| {
            let t = &p.tier;
            TierPolicy::new(
                t.name.clone(),
                t.priority,
                f64::from(t.target_utilization_percent),
                t.min_factor,
                t.max_factor,
            )
        })
        .collect()
}

/// How the node runs its models and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// NVML sampling drives the factors.
    Gpu,
    /// No usable NVIDIA driver: nominal factors, models on the CPU. The reason is the one-line message.
    Cpu { reason: String },
}

/// The agent's GPU side: the factor table, and the sampler while it runs (dropping it stops the thread).
pub struct Gpu {
    pub limits: Arc<DynamicLimits>,
    pub mode: Mode,
    controller: Mutex<Option<Controller>>,
}

impl Gpu {
    /// Factors start nominal for no tiers; the first snapshot sets them. Starts NVML sampling, or logs the
    /// single CPU-mode line and carries on.
    pub fn start() -> Self {
        let limits =
            Arc::new(DynamicLimits::new(Vec::new(), LimitsConfig::default()).expect("an empty tier set is valid"));
        match Controller::start_nvml(&NvmlConfig::default(), Arc::clone(&limits), infergate_gpu::DEFAULT_INTERVAL) {
            Ok(controller) => {
                tracing::info!(
                    backend = controller.backend(),
                    "GPU telemetry running: tier refill rates follow GPU utilisation"
                );
                Gpu { limits, mode: Mode::Gpu, controller: Mutex::new(Some(controller)) }
            }
            Err(error) => {
                let reason = error.to_string();
                if error.is_cpu_mode() {
                    tracing::info!(category = error.category(), "{reason}");
                } else {
                    tracing::warn!(
                        category = error.category(),
                        "GPU telemetry did not start ({reason}): running in CPU mode with nominal limits"
                    );
                }
                Gpu { limits, mode: Mode::Cpu { reason }, controller: Mutex::new(None) }
            }
        }
    }

    /// A policy with no telemetry at all (tests, and agents built without a GPU side).
    pub fn with_limits(limits: Arc<DynamicLimits>, mode: Mode) -> Self {
        Gpu { limits, mode, controller: Mutex::new(None) }
    }

    pub fn refill(&self) -> Arc<dyn RefillFactor> {
        Arc::new(GpuRefill(Arc::clone(&self.limits)))
    }

    /// Follows a config swap. A tier set the policy rejects (bad bounds) keeps the previous tiers: the
    /// operator validates tiers, so this is a safety net, logged once per swap.
    pub fn set_tiers(&self, snapshot: &Snapshot) {
        if let Err(error) = self.limits.set_tiers(tier_policies(snapshot)) {
            tracing::warn!(category = error.category(), error = %error, "GPU limit policy kept its previous tiers");
        }
    }

    pub fn stop(&self) {
        if let Some(controller) = self.controller.lock().unwrap_or_else(|p| p.into_inner()).take() {
            controller.stop();
        }
    }

    /// For admin `/status` and the Lease annotation.
    pub fn status_json(&self) -> serde_json::Value {
        let snapshot = self.limits.snapshot();
        let tiers: serde_json::Map<String, serde_json::Value> =
            snapshot.tiers.iter().map(|t| (t.name.clone(), serde_json::json!(t.factor))).collect();
        serde_json::json!({
            "mode": match &self.mode { Mode::Gpu => "gpu", Mode::Cpu { .. } => "cpu" },
            "reason": match &self.mode { Mode::Gpu => None, Mode::Cpu { reason } => Some(reason.as_str()) },
            "telemetry": snapshot.state.as_str(),
            "utilizationPercent": snapshot.held_utilization,
            "refillFactors": tiers,
        })
    }
}
