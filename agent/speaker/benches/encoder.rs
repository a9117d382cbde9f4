//! CPU throughput of the speaker encoder on 5 s utterances, single thread.
//!
//! Reports time per embedding; embeddings/s = 1 / time and the real-time factor per core = 5 s / time (printed
//! once at start, by wall clock and by this thread's CPU time). The default build targets baseline x86-64
//! (SSE2); `RUSTFLAGS="-C target-cpu=native"` lets the compiler use AVX2/FMA for the same portable code. Inputs come from a fixed-seed generator so runs are comparable. Needs the weights
//! (tests/tools/install-speaker-weights.sh or INFERGATE_SPEAKER_WEIGHTS); without them it prints why and exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infergate_speaker::testing::voice_like;
use infergate_speaker::{CpuEncoder, EmbeddingBackend, EncoderWeights, Limits};

const SECONDS: f64 = 5.0;

fn weights_path() -> PathBuf {
    std::env::var_os("INFERGATE_SPEAKER_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/speaker/pretrained.pt"))
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
    let one = voice_like(1, SECONDS);
    let batch: Vec<Vec<f32>> = (0..4).map(|seed| voice_like(seed, SECONDS)).collect();
    let batch_refs: Vec<&[f32]> = batch.iter().map(Vec::as_slice).collect();

    // One plain measurement so the headline numbers appear even without reading criterion's output. On a shared
    // machine wall time includes waiting for a core, so the CPU time this thread actually ran is reported too.
    let runs = 5;
    let cpu_before = thread_cpu_ns();
    let started = Instant::now();
    for _ in 0..runs {
        encoder.embed(&one, &limits).unwrap();
    }
    let per = started.elapsed().as_secs_f64() / runs as f64;
    println!(
        "speaker cpu (wall): 5 s utterance in {:.1} ms -> {:.2} embeddings/s, {:.1}x real time per core",
        per * 1e3,
        1.0 / per,
        SECONDS / per
    );
    if let (Some(before), Some(after)) = (cpu_before, thread_cpu_ns()) {
        let per_cpu = (after - before) as f64 / 1e9 / runs as f64;
        println!(
            "speaker cpu (thread CPU time): 5 s utterance in {:.1} ms -> {:.2} embeddings/s, {:.1}x real time per core",
            per_cpu * 1e3,
            1.0 / per_cpu,
            SECONDS / per_cpu
        );
    }

    let mut group = c.benchmark_group("speaker_cpu");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("embed_5s", |b| b.iter(|| encoder.embed(&one, &limits).unwrap()));
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("embed_batch_4x5s", |b| b.iter(|| encoder.embed_batch(&batch_refs, &limits).unwrap()));
    group.finish();
}

/// Nanoseconds this thread has run on a CPU (Linux `/proc/thread-self/schedstat`), if available.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

criterion_group!(benches, bench);
criterion_main!(benches);
