//! Real-time factor of the CPU VAD on one core: `cargo bench -p infergate-vad --bench vad`.
//!
//! The work per chunk does not depend on the signal, so the input is fixed-seed noise. Criterion reports
//! element throughput in samples/s; real-time factor = samples/s / 16000, printed directly at the end as well.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infergate_vad::{CHUNK_SAMPLES, SileroVad};

fn noise(seconds: usize) -> Vec<f32> {
    let mut state = 0x5eed_u64;
    (0..seconds * 16_000)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u32 << 23) as f32 - 1.0) * 0.1
        })
        .collect()
}

fn load() -> Option<SileroVad> {
    let path = std::env::var_os("INFERGATE_VAD_WEIGHTS").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/vad/silero_vad.onnx")
    });
    match SileroVad::load(&path) {
        Ok(vad) => Some(vad),
        Err(e) => {
            eprintln!("SKIP vad bench: {e}");
            None
        }
    }
}

fn bench(c: &mut Criterion) {
    let Some(vad) = load() else { return };

    let mut group = c.benchmark_group("silero_vad_cpu");
    let chunk = noise(1)[..CHUNK_SAMPLES].to_vec();
    let mut session = vad.session(16_000).unwrap();
    group.throughput(Throughput::Elements(CHUNK_SAMPLES as u64));
    group.bench_function("process_chunk_32ms", |b| b.iter(|| session.process_chunk(black_box(&chunk)).unwrap()));

    let audio = noise(10);
    group.throughput(Throughput::Elements(audio.len() as u64));
    group.sample_size(20);
    group.bench_function("probabilities_10s", |b| b.iter(|| vad.probabilities(black_box(&audio), 16_000).unwrap()));
    group.finish();

    // A direct number for the report: seconds of audio processed per wall second on this one thread.
    let mut session = vad.session(16_000).unwrap();
    let start = Instant::now();
    let mut processed = 0usize;
    while start.elapsed() < Duration::from_secs(3) {
        for chunk in audio.chunks_exact(CHUNK_SAMPLES) {
            black_box(session.process_chunk(chunk).unwrap());
        }
        processed += audio.len() / CHUNK_SAMPLES * CHUNK_SAMPLES;
    }
    let rtf = processed as f64 / 16_000.0 / start.elapsed().as_secs_f64();
    println!(
        "silero_vad_cpu: real-time factor on one core = {rtf:.0}x ({:.1} us per 32 ms chunk)",
        start.elapsed().as_secs_f64() * 1e6 / (processed / CHUNK_SAMPLES) as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
