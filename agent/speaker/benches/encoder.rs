//! CPU throughput of the speaker encoder on 5 s utterances, single thread.
//!
//! Reports time per embedding; embeddings/s = 1 / time and the real-time factor per core = 5 s / time (printed
//! once at start). Inputs come from a fixed-seed generator so runs are comparable. Needs the weights
//! (tests/tools/install-speaker-weights.sh or INFERGATE_SPEAKER_WEIGHTS); without them it prints why and exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infergate_speaker::{CpuEncoder, EmbeddingBackend, EncoderWeights, Limits, SAMPLE_RATE};

const SECONDS: usize = 5;

fn weights_path() -> PathBuf {
    std::env::var_os("INFERGATE_SPEAKER_WEIGHTS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/speaker/pretrained.pt")
    })
}

/// Voiced-sounding test signal: harmonics of a wandering pitch plus seeded noise.
fn utterance(seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..SECONDS * SAMPLE_RATE)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = ((state >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 0.01;
            let t = i as f64 / SAMPLE_RATE as f64;
            let f0 = 120.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            let voice: f64 = (1..6).map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64).sum();
            (0.05 * voice + noise) as f32
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let path = weights_path();
    let weights = match EncoderWeights::load(&path) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("SKIP speaker bench: {e}");
            return;
        }
    };
    let encoder = CpuEncoder::new(weights);
    let limits = Limits::default();
    let one = utterance(1);
    let batch: Vec<Vec<f32>> = (0..4).map(utterance).collect();
    let batch_refs: Vec<&[f32]> = batch.iter().map(Vec::as_slice).collect();

    // One plain measurement so the headline numbers appear even without reading criterion's output.
    let runs = 5;
    let started = Instant::now();
    for _ in 0..runs {
        encoder.embed(&one, &limits).unwrap();
    }
    let per = started.elapsed().as_secs_f64() / runs as f64;
    println!(
        "speaker cpu: 5 s utterance in {:.1} ms -> {:.2} embeddings/s, {:.1}x real time per core",
        per * 1e3,
        1.0 / per,
        SECONDS as f64 / per
    );

    let mut group = c.benchmark_group("speaker_cpu");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("embed_5s", |b| b.iter(|| encoder.embed(&one, &limits).unwrap()));
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("embed_batch_4x5s", |b| b.iter(|| encoder.embed_batch(&batch_refs, &limits).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
