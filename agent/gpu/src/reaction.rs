//! How fast the factors react to a utilisation step, in sampler ticks: a deterministic simulation used by
//! the bench (which reports it in seconds) and by a test (which pins the default configuration's figure).
use std::time::{Duration, Instant};

use crate::limits::{DynamicLimits, LimitsConfig};
use crate::policy::{PolicyError, TierPolicy};
use crate::telemetry::{GpuSample, NodeSample, UtilizationSource};

/// Ticks to settle before the step and to reach the new steady state after it.
const SETTLE_TICKS: u32 = 400;

/// One tier's reaction to a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Reaction {
    pub tier: String,
    pub factor_before: f64,
    pub factor_after: f64,
    /// Sampler ticks after the step until the factor has covered 90% of its change; `None` if it did not
    /// change.
    pub ticks_to_90_percent: Option<u32>,
}

impl Reaction {
    /// The reaction time at `interval` per tick.
    pub fn time(&self, interval: Duration) -> Option<Duration> {
        self.ticks_to_90_percent.map(|ticks| interval * ticks)
    }
}

/// Steps the node's utilisation from `from` to `to` percent, sampled every `interval`, and reports per tier
/// how many ticks the factor needs to move past 90% of its change.
pub fn step_reaction(
    tiers: &[TierPolicy],
    config: LimitsConfig,
    interval: Duration,
    from: f64,
    to: f64,
) -> Result<Vec<Reaction>, PolicyError> {
    let limits = DynamicLimits::new(tiers.to_vec(), config)?;
    let sample =
        |percent: f64| NodeSample { gpus: vec![GpuSample::utilization(0, Some(percent), UtilizationSource::Scripted)] };
    let start = Instant::now();
    let mut tick = 0u32;
    let mut advance = |percent: f64| {
        let snapshot = limits.update(&sample(percent), start + interval * tick);
        tick += 1;
        snapshot.tiers.iter().map(|t| t.factor).collect::<Vec<f64>>()
    };
    let mut before = Vec::new();
    for _ in 0..SETTLE_TICKS {
        before = advance(from);
    }
    let trace: Vec<Vec<f64>> = (0..SETTLE_TICKS).map(|_| advance(to)).collect();
    let after = trace.last().cloned().unwrap_or_default();
    Ok(tiers
        .iter()
        .enumerate()
        .map(|(i, tier)| {
            let change = after[i] - before[i];
            let ticks = (change.abs() > 1e-12)
                .then(|| {
                    trace.iter().position(|f| (f[i] - before[i]).abs() >= 0.9 * change.abs()).map(|p| p as u32 + 1)
                })
                .flatten();
            Reaction {
                tier: tier.name.clone(),
                factor_before: before[i],
                factor_after: after[i],
                ticks_to_90_percent: ticks,
            }
        })
        .collect())
}
