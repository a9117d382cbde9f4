//! CPU vs CUDA on the same batch, then GPU throughput. Run on a GPU node:
//!
//! ```text
//! cargo run -p infergate-speaker --example gpu_check --release -- \
//!     .cache/models/speaker/pretrained.pt \
//!     agent/speaker/tests/golden/{noise_sines_2s,quiet_chirpish_3s,loud_no_gain_2_5s,short_0_8s}.json
//! ```
//!
//! Exit status: 0 when every utterance matches (max |diff| <= 1e-4 per dimension and cosine >= 0.99999),
//! 1 on a mismatch, 2 when CUDA is unavailable (the reason is printed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use infergate_speaker::testing::{golden_signal, voice_like};
use infergate_speaker::{CpuEncoder, CudaEncoder, EmbeddingBackend, EncoderWeights, Limits, SAMPLE_RATE, cosine};

const MAX_ABS_DIFF: f32 = 1e-4;
const MIN_COSINE: f32 = 0.99999;

fn golden_input(path: &str) -> Result<(Vec<f32>, Vec<f32>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let g = &doc["generator"];
    let sines: Vec<(f64, f64, f64)> = g["sines"]
        .as_array()
        .ok_or("generator.sines")?
        .iter()
        .map(|s| (s[0].as_f64().unwrap_or(0.0), s[1].as_f64().unwrap_or(0.0), s[2].as_f64().unwrap_or(0.0)))
        .collect();
    let pcm = golden_signal(
        g["seconds"].as_f64().ok_or("generator.seconds")?,
        g["seed"].as_u64().ok_or("generator.seed")?,
        g["noise_amp"].as_f64().ok_or("generator.noise_amp")?,
        &sines,
        g["tremolo_hz"].as_f64().ok_or("generator.tremolo_hz")?,
    );
    let want =
        doc["embedding"].as_array().ok_or("embedding")?.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect();
    Ok((pcm, want))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(weights_path) = args.first().map(PathBuf::from) else {
        eprintln!("usage: gpu_check <pretrained.pt> [golden.json ...]");
        return ExitCode::from(2);
    };
    let weights = match EncoderWeights::load(&weights_path) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cpu = CpuEncoder::new(weights.clone());
    let cuda = match CudaEncoder::new(weights, 0) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!("GPU: {}", cuda.device_name());
    let limits = Limits { min_samples: 1, ..Limits::default() };

    // 1. Agreement on one mixed batch: synthetic voices of several lengths plus the golden inputs.
    let mut names = Vec::new();
    let mut inputs = Vec::new();
    let mut goldens = Vec::new();
    for (i, seconds) in [1.0, 1.7, 2.4, 3.3, 5.0, 7.5, 10.0, 16.0].into_iter().enumerate() {
        names.push(format!("voice_like seed {i}, {seconds} s"));
        inputs.push(voice_like(i as u64, seconds));
        goldens.push(None);
    }
    for path in &args[1..] {
        match golden_input(path) {
            Ok((pcm, want)) => {
                names.push(path.clone());
                inputs.push(pcm);
                goldens.push(Some(want));
            }
            Err(e) => {
                eprintln!("cannot read golden file: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let on_cpu = cpu.embed_batch(&refs, &limits).expect("CPU embedding");
    let on_gpu = match cuda.embed_batch(&refs, &limits) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("CUDA embedding failed: {e}");
            return ExitCode::from(1);
        }
    };
    let mut ok = true;
    println!("{:<48} {:>8} {:>12} {:>12} {:>10}", "utterance", "windows", "max|diff|", "partial max", "cosine");
    for (i, name) in names.iter().enumerate() {
        let diff = max_abs_diff(&on_gpu.embeddings[i], &on_cpu.embeddings[i]);
        let partial_diff = on_gpu.partial_embeddings[i]
            .iter()
            .zip(&on_cpu.partial_embeddings[i])
            .map(|(g, c)| max_abs_diff(g, c))
            .fold(0.0, f32::max);
        let cos = cosine(&on_gpu.embeddings[i], &on_cpu.embeddings[i]);
        let pass = diff <= MAX_ABS_DIFF && partial_diff <= MAX_ABS_DIFF && cos >= MIN_COSINE;
        ok &= pass;
        println!(
            "{name:<48} {:>8} {diff:>12.3e} {partial_diff:>12.3e} {cos:>10.7} {}",
            on_cpu.partial_embeddings[i].len(),
            if pass { "ok" } else { "MISMATCH" }
        );
        if let Some(want) = &goldens[i] {
            let golden_diff = max_abs_diff(&on_gpu.embeddings[i], want);
            ok &= golden_diff <= MAX_ABS_DIFF;
            println!("{:<48} cuda vs Python golden max|diff| {golden_diff:.3e}", "");
        }
    }

    // 2. Throughput: batches of 5 s utterances; real-time factor from the CUDA-event compute time.
    for batch_size in [64usize, 256, 1024] {
        let audio: Vec<Vec<f32>> = (0..batch_size).map(|i| voice_like(i as u64, 5.0)).collect();
        let refs: Vec<&[f32]> = audio.iter().map(Vec::as_slice).collect();
        if let Err(e) = cuda.embed_batch(&refs, &limits) {
            eprintln!("batch {batch_size}: {e}");
            return ExitCode::from(1);
        }
        let runs = 3;
        let (mut gpu_seconds, started) = (0.0f64, Instant::now());
        for _ in 0..runs {
            gpu_seconds += cuda.embed_batch(&refs, &limits).expect("CUDA batch").compute.as_secs_f64();
        }
        let wall = started.elapsed().as_secs_f64() / runs as f64;
        let gpu = gpu_seconds / runs as f64;
        let audio_seconds = (batch_size * 5 * SAMPLE_RATE) as f64 / SAMPLE_RATE as f64;
        println!(
            "batch {batch_size:>5} x 5 s: GPU {:.2} ms ({:.0} embeddings/s, {:.0}x real time); wall incl. host prep {:.2} ms ({:.0}x)",
            gpu * 1e3,
            batch_size as f64 / gpu,
            audio_seconds / gpu,
            wall * 1e3,
            audio_seconds / wall
        );
    }
    println!("{}", if ok { "CUDA matches CPU within 1e-4 per dimension" } else { "MISMATCH between CUDA and CPU" });
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
