//! A deterministic simulation: scripted utilisation ramps up and down, three tiers with token buckets whose
//! refill is scaled by the policy's factor, saturating demand, a simulated clock stepping 100 ms. We assert
//! how admitted GPU-seconds per tier move over time. No wall-clock time is involved.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
use std::time::{Duration, Instant};

use infergate_gpu::{
    DynamicLimits, FakeTelemetry, LimitsConfig, Telemetry, TelemetryState, TierPolicy, reaction::step_reaction,
};

const STEP: Duration = Duration::from_millis(100);
const STEPS_PER_SECOND: usize = 10;
const SECONDS: usize = 60;
/// Every tier's nominal refill: 1 GPU-second per second, so admitted GPU-s per second reads as the factor.
const NOMINAL_REFILL: f64 = 1.0;
const BURST: f64 = 0.5;
/// Each request costs this much GPU time; demand is always more than the bucket holds.
const REQUEST_GPU_SECONDS: f64 = 0.01;

/// The simplest token bucket: refill × factor per second, capped at the burst.
struct Bucket {
    tokens: f64,
}

impl Bucket {
    /// Refills for `dt`, then admits as many requests as the tokens allow. Returns admitted GPU-seconds.
    fn tick(&mut self, factor: f64, dt: Duration) -> f64 {
        self.tokens = (self.tokens + NOMINAL_REFILL * factor * dt.as_secs_f64()).min(BURST);
        let mut admitted = 0.0;
        // The epsilon absorbs float error so a bucket holding exactly one request admits it.
        while self.tokens + 1e-9 >= REQUEST_GPU_SECONDS {
            self.tokens -= REQUEST_GPU_SECONDS;
            admitted += REQUEST_GPU_SECONDS;
        }
        admitted
    }
}

fn tiers() -> Vec<TierPolicy> {
    vec![
        TierPolicy::new("free", 10, 85.0, 0.1, 1.0),
        TierPolicy::new("standard", 100, 85.0, 0.25, 1.0),
        TierPolicy::new("premium", 1000, 85.0, 0.5, 1.0),
    ]
}

/// 40% for 10 s, up to 100% over 5 s, 100% for 20 s, down to 40% over 5 s, 40% for 20 s.
fn utilisation_at(step: u64) -> f64 {
    let t = step as f64 * STEP.as_secs_f64();
    match t {
        t if t < 10.0 => 40.0,
        t if t < 15.0 => 40.0 + (t - 10.0) / 5.0 * 60.0,
        t if t < 35.0 => 100.0,
        t if t < 40.0 => 100.0 - (t - 35.0) / 5.0 * 60.0,
        _ => 40.0,
    }
}

struct Run {
    /// `admitted[tier][second]`: GPU-seconds admitted in that second.
    admitted: Vec<Vec<f64>>,
    /// `factors[tier][step]`.
    factors: Vec<Vec<f64>>,
}

fn simulate() -> Run {
    let tiers = tiers();
    let limits = DynamicLimits::new(tiers.clone(), LimitsConfig::default()).unwrap();
    let mut telemetry = FakeTelemetry::from_fn(utilisation_at);
    let mut buckets: Vec<Bucket> = tiers.iter().map(|_| Bucket { tokens: BURST }).collect();
    let mut admitted = vec![vec![0.0; SECONDS]; tiers.len()];
    let mut factors = vec![Vec::new(); tiers.len()];
    let t0 = Instant::now();
    for step in 0..SECONDS * STEPS_PER_SECOND {
        let sample = telemetry.sample().unwrap();
        let snapshot = limits.update(&sample, t0 + STEP * step as u32);
        assert_eq!(snapshot.state, TelemetryState::Live);
        for (i, tier) in tiers.iter().enumerate() {
            let factor = limits.factor(&tier.name);
            assert!(
                factor >= tier.min_factor && factor <= tier.max_factor,
                "{} factor {factor} out of bounds at step {step}",
                tier.name
            );
            factors[i].push(factor);
            admitted[i][step / STEPS_PER_SECOND] += buckets[i].tick(factor, STEP);
        }
    }
    Run { admitted, factors }
}

const FREE: usize = 0;
const STANDARD: usize = 1;
const PREMIUM: usize = 2;

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn first_step_below(factors: &[f64], from: usize, level: f64) -> usize {
    factors.iter().skip(from).position(|f| *f < level).map(|p| p + from).expect("factor never dropped")
}

fn first_second_at_least(admitted: &[f64], from: usize, level: f64) -> usize {
    admitted.iter().skip(from).position(|a| *a >= level).map(|p| p + from).expect("never recovered")
}

#[test]
fn cool_gpus_admit_every_tier_at_its_nominal_rate() {
    let run = simulate();
    for tier in [FREE, STANDARD, PREMIUM] {
        // Skip second 0: it also drains the initial burst.
        let cool = mean(&run.admitted[tier][1..10]);
        assert!((cool - NOMINAL_REFILL).abs() <= 0.02, "tier {tier}: {cool}");
        let cooled_again = mean(&run.admitted[tier][45..60]);
        assert!((cooled_again - NOMINAL_REFILL).abs() <= 0.02, "tier {tier} after cooling: {cooled_again}");
    }
}

#[test]
fn lowest_priority_is_tightened_first_and_highest_last() {
    let run = simulate();
    let onset: Vec<usize> =
        [FREE, STANDARD, PREMIUM].iter().map(|&t| first_step_below(&run.factors[t], 0, 1.0)).collect();
    eprintln!("first step below max factor [free, standard, premium]: {onset:?}");
    assert!(onset[FREE] < onset[STANDARD] && onset[STANDARD] < onset[PREMIUM], "onset steps {onset:?}");
    // Nothing moves before utilisation crosses the 85% target (at 13.75 s, step 137).
    assert!(onset[FREE] >= 137, "free tightened at step {}", onset[FREE]);
    // A higher-priority tier starts only once the lower one has reached its minimum.
    assert!((run.factors[FREE][onset[STANDARD]] - 0.1).abs() < 1e-9);
    assert!((run.factors[STANDARD][onset[PREMIUM]] - 0.25).abs() < 1e-9);

    // Admitted GPU-seconds per second drop in the same order.
    let drop: Vec<usize> = [FREE, STANDARD, PREMIUM]
        .iter()
        .map(|&t| run.admitted[t].iter().position(|a| *a < 0.95 * NOMINAL_REFILL).unwrap())
        .collect();
    eprintln!("first second under 95% admitted: {drop:?}");
    assert!(drop[FREE] <= drop[STANDARD] && drop[STANDARD] <= drop[PREMIUM], "drop seconds {drop:?}");
    assert!(drop[FREE] < drop[PREMIUM], "drop seconds {drop:?}");
}

#[test]
fn saturated_gpus_hold_each_tier_at_its_minimum_and_never_below() {
    let run = simulate();
    let hot = |tier: usize| mean(&run.admitted[tier][20..35]);
    eprintln!("hot admitted GPU-s/s: free {} standard {} premium {}", hot(FREE), hot(STANDARD), hot(PREMIUM));
    assert!((hot(FREE) - 0.1).abs() <= 0.02, "free {}", hot(FREE));
    assert!((hot(STANDARD) - 0.25).abs() <= 0.02, "standard {}", hot(STANDARD));
    assert!((hot(PREMIUM) - 0.5).abs() <= 0.02, "premium {}", hot(PREMIUM));
    // Premium is squeezed the least and is never pushed below its floor.
    assert!(run.factors[PREMIUM].iter().all(|f| *f >= 0.5));
    assert!(run.admitted[PREMIUM].iter().all(|a| *a >= 0.5 * NOMINAL_REFILL - REQUEST_GPU_SECONDS));
}

#[test]
fn tiers_recover_when_the_gpus_cool_highest_priority_first() {
    let run = simulate();
    let ramp_down_step = 35 * STEPS_PER_SECOND;
    let recovered: Vec<usize> = [FREE, STANDARD, PREMIUM]
        .iter()
        .map(|&t| run.factors[t].iter().skip(ramp_down_step).position(|f| *f >= 1.0).unwrap() + ramp_down_step)
        .collect();
    eprintln!("first step back at max factor: {recovered:?}");
    assert!(
        recovered[PREMIUM] < recovered[STANDARD] && recovered[STANDARD] < recovered[FREE],
        "recovery steps {recovered:?}"
    );
    // Free is back at its nominal rate within a few seconds of utilisation falling under the target.
    let free_back = first_second_at_least(&run.admitted[FREE], 35, 0.95 * NOMINAL_REFILL);
    eprintln!("free back to 95% admitted in second {free_back}");
    assert!(free_back <= 40, "free admitted 95% again only in second {free_back}");
    // And the factor only ever rises during the ramp down (no flapping back and forth).
    for tier in [FREE, STANDARD, PREMIUM] {
        let window = &run.factors[tier][ramp_down_step..];
        assert!(window.windows(2).all(|w| w[1] >= w[0] - 1e-12), "tier {tier} tightened again while cooling");
    }
}

#[test]
fn factors_move_monotonically_during_the_ramp_up() {
    let run = simulate();
    for tier in [FREE, STANDARD, PREMIUM] {
        let window = &run.factors[tier][..35 * STEPS_PER_SECOND];
        assert!(window.windows(2).all(|w| w[1] <= w[0] + 1e-12), "tier {tier} relaxed while heating");
    }
}

#[test]
fn default_configuration_reacts_within_one_second() {
    // Simulated sampler ticks, not wall-clock time: 4 ticks at the default 250 ms interval is 1 s.
    let interval = infergate_gpu::DEFAULT_INTERVAL;
    let one = vec![TierPolicy::new("only", 100, 85.0, 0.25, 1.0)];
    for set in [tiers(), one] {
        for (from, to) in [(50.0, 100.0), (100.0, 50.0)] {
            let reactions = step_reaction(&set, LimitsConfig::default(), interval, from, to).unwrap();
            for r in &reactions {
                let time = r.time(interval).expect("factor did not move");
                assert!(time <= Duration::from_secs(1), "{from}% -> {to}%: {r:?}");
            }
        }
    }
    // The tier shed first reacts within two ticks.
    let reactions = step_reaction(&tiers(), LimitsConfig::default(), interval, 50.0, 100.0).unwrap();
    assert_eq!(reactions[FREE].ticks_to_90_percent, Some(2), "{reactions:?}");
}

/// Counts how often the factor changes direction (up after down or down after up).
fn direction_changes(factors: &[f64]) -> usize {
    let moves: Vec<f64> = factors.windows(2).map(|w| w[1] - w[0]).filter(|d| d.abs() > 1e-12).collect();
    moves.windows(2).filter(|m| m[0].signum() != m[1].signum()).count()
}

fn noisy_run(hysteresis_points: f64) -> Vec<f64> {
    let config = LimitsConfig {
        smoothing: infergate_gpu::SmoothingConfig { hysteresis_points, ..Default::default() },
        ..LimitsConfig::default()
    };
    let limits = DynamicLimits::new(tiers(), config).unwrap();
    // Utilisation hovering just above the target: 85, 89, 85, 89, ... (NVML reports whole percents).
    let mut telemetry = FakeTelemetry::from_fn(|step| if step % 2 == 0 { 85.0 } else { 89.0 });
    let t0 = Instant::now();
    (0..600u32)
        .map(|step| {
            limits.update(&telemetry.sample().unwrap(), t0 + STEP * step);
            limits.factor("free")
        })
        .collect()
}

#[test]
fn hysteresis_keeps_the_factor_from_flapping_around_the_target() {
    let with_band = noisy_run(2.0);
    // The noise stays inside the band: the factor never turns back, and once the EWMA has settled
    // (5 s) it holds still.
    assert_eq!(direction_changes(&with_band), 0, "{:?}", &with_band[..20]);
    let settled = &with_band[50..];
    let spread = settled.iter().copied().fold(f64::MIN, f64::max) - settled.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread < 1e-9, "factor still moves by {spread}");
    assert!(with_band[599] < 1.0, "utilisation above the target still tightens");
    // Without the band the same input flaps on every sample.
    let without = noisy_run(0.0);
    assert!(direction_changes(&without[10..]) > 500, "{}", direction_changes(&without[10..]));
}
