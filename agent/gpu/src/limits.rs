//! `DynamicLimits`: the published factor table. One writer (the sampler) updates it; the gateway's hot path
//! reads it without locks.
//!
//! ```text
//!  sampler thread ── update(sample, now) ──> [Mutex: smoother + tiers] ──store──> ArcSwap<FactorSnapshot>
//!  request path ───────────────────────────────────────── factor("free") ──load──┘  (no lock, no allocation)
//! ```
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::policy::{PolicyError, TierPolicy, tier_factors, validate_tiers};
use crate::smoothing::{Smoother, SmoothingConfig};
use crate::telemetry::{NodeAggregate, NodeSample, TelemetryError, UtilizationSource};

/// Policy settings that are not per tier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimitsConfig {
    pub smoothing: SmoothingConfig,
    pub aggregate: NodeAggregate,
    /// With no usable utilisation for this long, factors return to nominal: limits tightened on data that
    /// no longer arrives would otherwise stay tight forever.
    pub stale_after: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            smoothing: SmoothingConfig::default(),
            aggregate: NodeAggregate::Max,
            stale_after: Duration::from_secs(5),
        }
    }
}

/// Where the factors come from right now (for status and a metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelemetryState {
    /// No sample yet: factors are nominal.
    Waiting,
    /// Factors follow live utilisation.
    Live,
    /// Utilisation has been missing or failing for longer than `stale_after`: factors are nominal.
    Stale,
    /// No GPU telemetry on this node (CPU mode): factors are nominal.
    Disabled,
}

impl TelemetryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Live => "live",
            Self::Stale => "stale",
            Self::Disabled => "disabled",
        }
    }
}

/// One tier's current factor and bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct TierFactor {
    pub name: String,
    pub priority: u32,
    pub factor: f64,
    pub min_factor: f64,
    pub max_factor: f64,
}

/// Everything status and metrics show about the policy, as of the last update.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorSnapshot {
    pub tiers: Vec<TierFactor>,
    pub state: TelemetryState,
    /// The node's utilisation in the last sample that had one.
    pub raw_utilization: Option<f64>,
    pub smoothed_utilization: Option<f64>,
    /// After hysteresis: what the factors were computed from.
    pub held_utilization: Option<f64>,
    pub utilization_source: UtilizationSource,
    /// Category of the last telemetry error, if the last update was a failure.
    pub last_error: Option<&'static str>,
    pub updated_at: Option<Instant>,
    /// The last successful sample, per GPU (memory, temperature, power) for status and metrics.
    pub last_sample: Option<NodeSample>,
}

impl FactorSnapshot {
    fn nominal(tiers: &[TierPolicy], state: TelemetryState) -> Self {
        Self {
            tiers: tiers
                .iter()
                .map(|t| TierFactor {
                    name: t.name.clone(),
                    priority: t.priority,
                    factor: t.nominal_factor(),
                    min_factor: t.min_factor,
                    max_factor: t.max_factor,
                })
                .collect(),
            state,
            raw_utilization: None,
            smoothed_utilization: None,
            held_utilization: None,
            utilization_source: UtilizationSource::Unavailable,
            last_error: None,
            updated_at: None,
            last_sample: None,
        }
    }

    /// The factor of a tier by name.
    pub fn factor(&self, tier: &str) -> Option<f64> {
        self.tiers.iter().find(|t| t.name == tier).map(|t| t.factor)
    }
}

struct UpdateState {
    tiers: Vec<TierPolicy>,
    smoother: Smoother,
    /// When the last usable utilisation arrived (or when we started waiting for one).
    last_good: Option<Instant>,
}

/// The live factor table the gateway multiplies into each tier's refill rate.
pub struct DynamicLimits {
    config: LimitsConfig,
    state: Mutex<UpdateState>,
    published: ArcSwap<FactorSnapshot>,
}

impl std::fmt::Debug for DynamicLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicLimits").field("config", &self.config).field("snapshot", &self.snapshot()).finish()
    }
}

impl DynamicLimits {
    /// Starts with every tier at its nominal factor until the first sample.
    pub fn new(tiers: Vec<TierPolicy>, config: LimitsConfig) -> Result<Self, PolicyError> {
        validate_tiers(&tiers)?;
        let published = ArcSwap::from_pointee(FactorSnapshot::nominal(&tiers, TelemetryState::Waiting));
        let state = UpdateState { tiers, smoother: Smoother::new(config.smoothing), last_good: None };
        Ok(Self { config, state: Mutex::new(state), published })
    }

    pub fn config(&self) -> LimitsConfig {
        self.config
    }

    /// The refill factor of `tier`. A tier the policy does not know (a config reload that has not reached
    /// `set_tiers` yet) runs at its nominal rate, 1.0. Lock-free and allocation-free.
    pub fn factor(&self, tier: &str) -> f64 {
        self.published.load().factor(tier).unwrap_or(1.0)
    }

    /// The smallest factor among tiers with this priority (tiers sharing a priority share a stage and differ
    /// only by their own bounds); 1.0 when no tier has it.
    pub fn factor_for_priority(&self, priority: u32) -> f64 {
        let snapshot = self.published.load();
        snapshot.tiers.iter().filter(|t| t.priority == priority).map(|t| t.factor).reduce(f64::min).unwrap_or(1.0)
    }

    /// `(tier, factor)` for every tier, for metrics and status.
    pub fn factors(&self) -> Vec<(String, f64)> {
        self.published.load().tiers.iter().map(|t| (t.name.clone(), t.factor)).collect()
    }

    /// The whole published state.
    pub fn snapshot(&self) -> Arc<FactorSnapshot> {
        self.published.load_full()
    }

    /// Folds in one sample taken at `now` and publishes the new factors.
    pub fn update(&self, sample: &NodeSample, now: Instant) -> Arc<FactorSnapshot> {
        let mut state = self.lock();
        if state.last_good.is_none() {
            state.last_good = Some(now);
        }
        let Some(raw) = sample.utilization(self.config.aggregate) else {
            return self.publish_missing(&mut state, now, None);
        };
        let smoothed = state.smoother.update(raw, now);
        state.last_good = Some(now);
        let factors = tier_factors(smoothed.held, &state.tiers);
        let snapshot = FactorSnapshot {
            tiers: state
                .tiers
                .iter()
                .zip(factors)
                .map(|(t, factor)| TierFactor {
                    name: t.name.clone(),
                    priority: t.priority,
                    factor,
                    min_factor: t.min_factor,
                    max_factor: t.max_factor,
                })
                .collect(),
            state: TelemetryState::Live,
            raw_utilization: Some(raw),
            smoothed_utilization: Some(smoothed.smoothed),
            held_utilization: Some(smoothed.held),
            utilization_source: sample.utilization_source(),
            last_error: None,
            updated_at: Some(now),
            last_sample: Some(sample.clone()),
        };
        self.store(snapshot)
    }

    /// Records a failed sample. Factors hold until `stale_after`, then return to nominal.
    pub fn update_failed(&self, error: &TelemetryError, now: Instant) -> Arc<FactorSnapshot> {
        let mut state = self.lock();
        if state.last_good.is_none() {
            state.last_good = Some(now);
        }
        self.publish_missing(&mut state, now, Some(error.category()))
    }

    /// Marks the node as running without GPU telemetry: nominal factors, state `Disabled`.
    pub fn disable(&self) {
        let mut state = self.lock();
        state.smoother.reset();
        self.store(FactorSnapshot::nominal(&state.tiers, TelemetryState::Disabled));
    }

    /// Replaces the tier set (config reload). Smoothing history is kept, so new factors apply at once.
    pub fn set_tiers(&self, tiers: Vec<TierPolicy>) -> Result<(), PolicyError> {
        validate_tiers(&tiers)?;
        let mut state = self.lock();
        state.tiers = tiers;
        let previous = self.published.load_full();
        let snapshot = match (previous.state, state.smoother.current()) {
            (TelemetryState::Live, Some(current)) => FactorSnapshot {
                tiers: state
                    .tiers
                    .iter()
                    .zip(tier_factors(current.held, &state.tiers))
                    .map(|(t, factor)| TierFactor {
                        name: t.name.clone(),
                        priority: t.priority,
                        factor,
                        min_factor: t.min_factor,
                        max_factor: t.max_factor,
                    })
                    .collect(),
                ..(*previous).clone()
            },
            (kept, _) => {
                FactorSnapshot { updated_at: previous.updated_at, ..FactorSnapshot::nominal(&state.tiers, kept) }
            }
        };
        self.store(snapshot);
        Ok(())
    }

    fn publish_missing(
        &self,
        state: &mut UpdateState,
        now: Instant,
        error: Option<&'static str>,
    ) -> Arc<FactorSnapshot> {
        let previous = self.published.load_full();
        let since = state.last_good.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let snapshot = if since >= self.config.stale_after && previous.state != TelemetryState::Disabled {
            // Start afresh when data returns: blending with an old value would misreport the present.
            state.smoother.reset();
            FactorSnapshot {
                last_error: error,
                updated_at: Some(now),
                ..FactorSnapshot::nominal(&state.tiers, TelemetryState::Stale)
            }
        } else {
            FactorSnapshot { last_error: error, updated_at: Some(now), ..(*previous).clone() }
        };
        self.store(snapshot)
    }

    fn store(&self, snapshot: FactorSnapshot) -> Arc<FactorSnapshot> {
        let snapshot = Arc::new(snapshot);
        self.published.store(Arc::clone(&snapshot));
        snapshot
    }

    fn lock(&self) -> MutexGuard<'_, UpdateState> {
        // A panic in another updater cannot leave the state half-written (each field is replaced whole),
        // so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::GpuSample;

    fn sample(percent: Option<f64>) -> NodeSample {
        NodeSample { gpus: vec![GpuSample::utilization(0, percent, UtilizationSource::Scripted)] }
    }

    fn limits() -> DynamicLimits {
        let tiers = vec![TierPolicy::new("free", 10, 85.0, 0.0, 1.0), TierPolicy::new("gold", 100, 85.0, 0.5, 1.0)];
        let config = LimitsConfig {
            smoothing: SmoothingConfig { half_life: Duration::ZERO, hysteresis_points: 0.0 },
            ..LimitsConfig::default()
        };
        DynamicLimits::new(tiers, config).unwrap()
    }

    #[test]
    fn starts_nominal_and_follows_samples() {
        let l = limits();
        let t0 = Instant::now();
        assert_eq!(l.snapshot().state, TelemetryState::Waiting);
        assert_eq!(l.factors(), vec![("free".to_owned(), 1.0), ("gold".to_owned(), 1.0)]);
        l.update(&sample(Some(100.0)), t0);
        assert_eq!(l.factors(), vec![("free".to_owned(), 0.0), ("gold".to_owned(), 0.5)]);
        assert_eq!(l.factor("free"), 0.0);
        assert_eq!(l.factor_for_priority(100), 0.5);
        assert_eq!(l.factor("unknown"), 1.0);
        assert_eq!(l.factor_for_priority(7), 1.0);
        assert_eq!(l.snapshot().state, TelemetryState::Live);
        assert_eq!(l.snapshot().utilization_source, UtilizationSource::Scripted);
    }

    #[test]
    fn missing_utilisation_holds_then_goes_nominal_after_stale_after() {
        let l = limits();
        let t0 = Instant::now();
        l.update(&sample(Some(100.0)), t0);
        let held = l.update(&sample(None), t0 + Duration::from_secs(4));
        assert_eq!(held.state, TelemetryState::Live);
        assert_eq!(l.factor("free"), 0.0);
        let stale = l.update_failed(&TelemetryError::GpuLost { index: 0 }, t0 + Duration::from_secs(5));
        assert_eq!(stale.state, TelemetryState::Stale);
        assert_eq!(stale.last_error, Some("gpu_lost"));
        assert_eq!(l.factors(), vec![("free".to_owned(), 1.0), ("gold".to_owned(), 1.0)]);
        // Data returns: live again.
        l.update(&sample(Some(100.0)), t0 + Duration::from_secs(6));
        assert_eq!(l.factor("free"), 0.0);
    }

    #[test]
    fn set_tiers_applies_at_once_and_rejects_bad_sets() {
        let l = limits();
        let t0 = Instant::now();
        l.update(&sample(Some(100.0)), t0);
        l.set_tiers(vec![TierPolicy::new("free", 10, 85.0, 0.3, 1.0)]).unwrap();
        assert_eq!(l.factors(), vec![("free".to_owned(), 0.3)]);
        let err = l.set_tiers(vec![TierPolicy::new("x", 1, 85.0, 2.0, 1.0)]).unwrap_err();
        assert_eq!(err.category(), "invalid_tier");
        assert_eq!(l.factors(), vec![("free".to_owned(), 0.3)]);
    }

    #[test]
    fn disabled_stays_nominal() {
        let l = limits();
        l.disable();
        let s = l.snapshot();
        assert_eq!(s.state, TelemetryState::Disabled);
        assert!(s.tiers.iter().all(|t| t.factor == 1.0));
    }
}
