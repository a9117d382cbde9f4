//! Telemetry and policy costs, and the factor's reaction time.
//!
//! `cargo bench -p infergate-gpu --bench telemetry`
//!
//! - one fake sample + policy update, over a scenario table of tier counts (fixed-seed utilisation);
//! - the gateway's hot-path read `DynamicLimits::factor`;
//! - one NVML utilisation sample and one full sample, when a driver is present (skipped with a message
//!   otherwise);
//! - reaction time (printed, simulated): sampler ticks for a tier's factor to cover 90% of its change after
//!   a 50% -> 100% utilisation step, in seconds at the default 250 ms interval, against DCGM exporter's
//!   30 s default collection interval.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use infergate_gpu::reaction::step_reaction;
use infergate_gpu::{
    DEFAULT_INTERVAL, DynamicLimits, FakeTelemetry, LimitsConfig, NvmlConfig, NvmlTelemetry, SampleFields,
    SmoothingConfig, Telemetry, TierPolicy, tier_factors,
};

const DCGM_EXPORTER_DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

fn tiers(count: u32) -> Vec<TierPolicy> {
    (0..count).map(|i| TierPolicy::new(format!("tier-{i}"), i * 10, 85.0, 0.1 + 0.05 * f64::from(i % 5), 1.0)).collect()
}

/// A fixed-seed LCG so every run sees the same utilisation sequence.
fn utilisation_sequence(len: usize) -> Vec<f64> {
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            60.0 + (state >> 33) as f64 / f64::from(u32::MAX) * 40.0
        })
        .collect()
}

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    for count in [1u32, 3, 10] {
        group.bench_with_input(BenchmarkId::new("fake_sample_and_update", count), &count, |b, &count| {
            let limits = DynamicLimits::new(tiers(count), LimitsConfig::default()).unwrap();
            let sequence = utilisation_sequence(4096);
            let mut telemetry = FakeTelemetry::from_fn(move |step| sequence[step as usize % 4096]);
            let t0 = Instant::now();
            let mut tick = 0u32;
            b.iter(|| {
                let sample = telemetry.sample().unwrap();
                tick = tick.wrapping_add(1);
                black_box(limits.update(&sample, t0 + DEFAULT_INTERVAL * tick));
            });
        });
        group.bench_with_input(BenchmarkId::new("tier_factors", count), &count, |b, &count| {
            let tiers = tiers(count);
            b.iter(|| black_box(tier_factors(black_box(93.0), &tiers)));
        });
    }
    group.bench_function("factor_read_3_tiers", |b| {
        let limits = DynamicLimits::new(tiers(3), LimitsConfig::default()).unwrap();
        b.iter(|| black_box(limits.factor(black_box("tier-1"))));
    });
    group.finish();
}

fn nvml(c: &mut Criterion) {
    let config = NvmlConfig { fields: SampleFields::default(), ..NvmlConfig::default() };
    let mut telemetry = match NvmlTelemetry::init(&config) {
        Ok(t) => t,
        Err(error) => {
            println!("nvml benches skipped: {error}");
            return;
        }
    };
    let mut group = c.benchmark_group("nvml");
    group.bench_function("utilization_only", |b| b.iter(|| black_box(telemetry.sample_utilization().unwrap())));
    group.bench_function("sample_default_fields", |b| b.iter(|| black_box(telemetry.sample().unwrap())));
    group.finish();
}

fn reaction_report() {
    println!(
        "\nreaction time: 50% -> 100% step, sampled every {:?}; 90% of each tier's factor change",
        DEFAULT_INTERVAL
    );
    let three = vec![
        TierPolicy::new("free", 10, 85.0, 0.1, 1.0),
        TierPolicy::new("standard", 100, 85.0, 0.25, 1.0),
        TierPolicy::new("premium", 1000, 85.0, 0.5, 1.0),
    ];
    let one = vec![TierPolicy::new("only", 100, 85.0, 0.25, 1.0)];
    for half_life_ms in [0u64, 125, 250, 500, 1000] {
        let config = LimitsConfig {
            smoothing: SmoothingConfig { half_life: Duration::from_millis(half_life_ms), ..SmoothingConfig::default() },
            ..LimitsConfig::default()
        };
        for (label, set) in [("3 tiers", &three), ("1 tier", &one)] {
            for (from, to, direction) in [(50.0, 100.0, "heat"), (100.0, 50.0, "cool")] {
                let reactions = step_reaction(set, config, DEFAULT_INTERVAL, from, to).unwrap();
                let cells: Vec<String> = reactions
                    .iter()
                    .map(|r| match r.time(DEFAULT_INTERVAL) {
                        Some(t) => {
                            format!("{}={} ticks/{:.2}s", r.tier, r.ticks_to_90_percent.unwrap_or(0), t.as_secs_f64())
                        }
                        None => format!("{}=unchanged", r.tier),
                    })
                    .collect();
                println!("  half-life {half_life_ms:>4} ms, {label}, {direction}: {}", cells.join(", "));
            }
        }
    }
    println!(
        "  (DCGM exporter's default collection interval alone is {:.0}s)\n",
        DCGM_EXPORTER_DEFAULT_INTERVAL.as_secs_f64()
    );
}

fn reaction(_: &mut Criterion) {
    reaction_report();
}

criterion_group!(benches, reaction, policy, nvml);
criterion_main!(benches);
