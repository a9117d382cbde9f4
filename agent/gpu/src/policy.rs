//! The dynamic-limit policy: utilisation in, one refill factor per tier out. Pure and synchronous.
//!
//! ```text
//!  factor                      3 priority levels, all with target 85%
//!  max ─────────────┐
//!                    \ low      low  (rank 0) tightens over 85..90%
//!                     └───┐
//!                          \ mid mid (rank 1) over 90..95%
//!                           └───┐
//!                                \ high (rank 2) over 95..100%
//!  min                            └── (each tier stops at its own min)
//!      0 ........... 85   90   95  100   utilisation (held)
//! ```
//!
//! A tier's *pressure* is how far the utilisation is into the headroom above the tier's target,
//! `(u - target) / (100 - target)`. The headroom is cut into one stage per distinct priority, lowest
//! priority first, and a tier's *tightening* is how far the pressure is through its stage. A tier is
//! never tightened more than any tier of lower priority (this is what keeps the order when tiers set
//! different targets). The factor is `max - (max - min) * tightening`, so it always lies in `[min, max]`
//! and comes back to `max` as the utilisation falls below the target.
use std::collections::BTreeSet;

/// The part of a tier the policy reads.
#[derive(Clone, Debug, PartialEq)]
pub struct TierPolicy {
    pub name: String,
    /// Higher is more important: tightened later, relaxed sooner.
    pub priority: u32,
    /// Node utilisation (percent) above which this tier may be tightened.
    pub target_percent: f64,
    pub min_factor: f64,
    pub max_factor: f64,
}

impl TierPolicy {
    pub fn new(name: impl Into<String>, priority: u32, target_percent: f64, min_factor: f64, max_factor: f64) -> Self {
        Self { name: name.into(), priority, target_percent, min_factor, max_factor }
    }

    /// The factor when nothing is known about the GPUs: the nominal rate, kept inside the tier's bounds.
    pub fn nominal_factor(&self) -> f64 {
        1.0_f64.clamp(self.min_factor, self.max_factor)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let bad = |what: &'static str| PolicyError::InvalidTier { tier: self.name.clone(), what };
        if self.name.is_empty() {
            return Err(bad("the tier name is empty"));
        }
        if !(self.target_percent.is_finite() && (1.0..=100.0).contains(&self.target_percent)) {
            return Err(bad("targetPercent must be between 1 and 100"));
        }
        if !(self.min_factor.is_finite() && self.min_factor >= 0.0) {
            return Err(bad("minFactor must be a number >= 0"));
        }
        if !(self.max_factor.is_finite() && self.max_factor >= 0.0) {
            return Err(bad("maxFactor must be a number >= 0"));
        }
        if self.min_factor > self.max_factor {
            return Err(bad("minFactor must not exceed maxFactor"));
        }
        Ok(())
    }
}

/// A tier set the policy cannot use. The message names the tier and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("tier {tier:?}: {what}")]
    InvalidTier { tier: String, what: &'static str },
    #[error("tier {0:?} is listed twice: tier names must be unique")]
    DuplicateTier(String),
}

impl PolicyError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidTier { .. } => "invalid_tier",
            Self::DuplicateTier(_) => "duplicate_tier",
        }
    }
}

/// Checks a tier set: bounds, targets and unique names.
pub fn validate_tiers(tiers: &[TierPolicy]) -> Result<(), PolicyError> {
    let mut names = BTreeSet::new();
    for tier in tiers {
        tier.validate()?;
        if !names.insert(tier.name.as_str()) {
            return Err(PolicyError::DuplicateTier(tier.name.clone()));
        }
    }
    Ok(())
}

/// How far each tier is tightened, in `0.0..=1.0` (0 = at `max_factor`, 1 = at `min_factor`),
/// in the order of `tiers`. `utilization` is the held node utilisation in percent.
pub fn tightening(utilization: f64, tiers: &[TierPolicy]) -> Vec<f64> {
    let utilization = if utilization.is_finite() { utilization.clamp(0.0, 100.0) } else { 0.0 };
    // Tier sets are a handful of entries: quadratic scans beat building a sorted set (no allocation).
    let distinct_below = |priority: u32| {
        tiers
            .iter()
            .enumerate()
            .filter(|(i, t)| t.priority < priority && !tiers[..*i].iter().any(|e| e.priority == t.priority))
            .count()
    };
    let stages = distinct_below(u32::MAX) + usize::from(tiers.iter().any(|t| t.priority == u32::MAX));
    let mut result: Vec<f64> = tiers
        .iter()
        .map(|tier| {
            let headroom = 100.0 - tier.target_percent;
            let pressure = if headroom <= 0.0 {
                // Target 100%: utilisation cannot exceed it, so the tier is never tightened.
                0.0
            } else {
                ((utilization - tier.target_percent) / headroom).clamp(0.0, 1.0)
            };
            let rank = distinct_below(tier.priority);
            (pressure * stages as f64 - rank as f64).clamp(0.0, 1.0)
        })
        .collect();
    // Order guarantee: never tighter than any tier of lower priority. Visiting tiers by ascending priority
    // lets each cap use its lower tiers' already-capped values, which equals capping by their raw minimum.
    let mut order: Vec<usize> = (0..tiers.len()).collect();
    order.sort_by_key(|&i| tiers[i].priority);
    for (position, &i) in order.iter().enumerate() {
        let cap = order[..position]
            .iter()
            .filter(|&&j| tiers[j].priority < tiers[i].priority)
            .map(|&j| result[j])
            .fold(f64::INFINITY, f64::min);
        result[i] = result[i].min(cap);
    }
    result
}

/// The refill factor of each tier, in the order of `tiers`: `max - (max - min) * tightening`.
pub fn tier_factors(utilization: f64, tiers: &[TierPolicy]) -> Vec<f64> {
    tiers
        .iter()
        .zip(tightening(utilization, tiers))
        // Written as a blend so the ends are exact: t = 0 gives max, t = 1 gives min, bit for bit.
        .map(|(tier, t)| (tier.max_factor * (1.0 - t) + tier.min_factor * t).clamp(tier.min_factor, tier.max_factor))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_tiers() -> Vec<TierPolicy> {
        vec![
            TierPolicy::new("premium", 1000, 85.0, 0.5, 1.0),
            TierPolicy::new("free", 10, 85.0, 0.0, 1.0),
            TierPolicy::new("standard", 100, 85.0, 0.25, 1.0),
        ]
    }

    fn approx(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn below_target_every_tier_is_at_max() {
        assert_eq!(tier_factors(0.0, &three_tiers()), vec![1.0, 1.0, 1.0]);
        assert_eq!(tier_factors(85.0, &three_tiers()), vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn stages_go_lowest_priority_first() {
        // [premium, free, standard]
        let cases = [
            (87.5, [1.0, 0.5, 1.0]),
            (90.0, [1.0, 0.0, 1.0]),
            (92.5, [1.0, 0.0, 0.625]),
            (95.0, [1.0, 0.0, 0.25]),
            (97.5, [0.75, 0.0, 0.25]),
            (100.0, [0.5, 0.0, 0.25]),
        ];
        for (u, expected) in cases {
            let got = tier_factors(u, &three_tiers());
            assert!(approx(&got, &expected), "at {u}%: {got:?} != {expected:?}");
        }
    }

    #[test]
    fn one_priority_level_uses_the_whole_headroom() {
        let tiers = vec![TierPolicy::new("only", 100, 80.0, 0.2, 1.0)];
        assert!(approx(&tier_factors(90.0, &tiers), &[0.6]));
        assert!(approx(&tier_factors(100.0, &tiers), &[0.2]));
    }

    #[test]
    fn higher_priority_with_a_lower_target_still_waits_for_lower_tiers() {
        let tiers = vec![TierPolicy::new("free", 10, 90.0, 0.0, 1.0), TierPolicy::new("gold", 20, 50.0, 0.5, 1.0)];
        // gold's own stage would already be tightening at 80%, but free has not started yet.
        assert_eq!(tier_factors(80.0, &tiers), vec![1.0, 1.0]);
        let t = tightening(96.0, &tiers);
        assert!(t[1] <= t[0], "{t:?}");
    }

    #[test]
    fn max_factor_above_one_lets_a_tier_use_idle_gpus() {
        let tiers = vec![TierPolicy::new("batch", 1, 70.0, 0.5, 2.0)];
        assert_eq!(tier_factors(10.0, &tiers), vec![2.0]);
        assert_eq!(tiers[0].nominal_factor(), 1.0);
        assert_eq!(tier_factors(100.0, &tiers), vec![0.5]);
    }

    #[test]
    fn target_of_100_is_never_tightened() {
        let tiers = vec![TierPolicy::new("vip", 1, 100.0, 0.1, 1.0)];
        assert_eq!(tier_factors(100.0, &tiers), vec![1.0]);
    }

    #[test]
    fn non_finite_utilisation_is_treated_as_idle() {
        assert_eq!(tier_factors(f64::NAN, &three_tiers()), vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn factors_stay_in_bounds_and_ordered_over_a_sweep() {
        let tiers = three_tiers();
        for step in 0..=1000 {
            let u = step as f64 / 10.0;
            let t = tightening(u, &tiers);
            for ((tier, f), tight) in tiers.iter().zip(tier_factors(u, &tiers)).zip(&t) {
                assert!(f >= tier.min_factor && f <= tier.max_factor, "{} at {u}: {f}", tier.name);
                for (other, other_tight) in tiers.iter().zip(&t) {
                    if other.priority < tier.priority {
                        assert!(tight <= other_tight, "{} tighter than {} at {u}", tier.name, other.name);
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_tiers_say_what_to_fix() {
        let err = validate_tiers(&[TierPolicy::new("free", 1, 85.0, 0.9, 0.5)]).unwrap_err();
        assert_eq!(err.to_string(), "tier \"free\": minFactor must not exceed maxFactor");
        let err = validate_tiers(&[TierPolicy::new("free", 1, 0.0, 0.1, 0.5)]).unwrap_err();
        assert_eq!(err.to_string(), "tier \"free\": targetPercent must be between 1 and 100");
        let err = validate_tiers(&[TierPolicy::new("a", 1, 85.0, 0.1, 1.0), TierPolicy::new("a", 2, 85.0, 0.1, 1.0)])
            .unwrap_err();
        assert_eq!(err.to_string(), "tier \"a\" is listed twice: tier names must be unique");
        assert_eq!(err.category(), "duplicate_tier");
        assert!(validate_tiers(&three_tiers()).is_ok());
    }
}
