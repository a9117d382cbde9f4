//! The check run when a GPU node is lent: CPU vs CUDA on the reference fixtures, then CUDA throughput and
//! latency. One JSON object per line on stdout.
//!
//! ```text
//! cargo run -p infergate-whisper --example gpu_check --release
//! ```
//!
//! Loads whisper tiny.en from `$INFERGATE_MODELS_DIR` (default `.cache/models`, then the workspace's). Checks,
//! per fixture: identical transcript and tokens, word times within 60 ms, first-step logits (first window, the
//! start-of-transcript token) within 1e-2 of the CPU's. Then: N concurrent 30 s clips (1, 8, 64 threads, each
//! with its own decoder; the backend runs each call on its own stream) in audio seconds per second, and the
//! p50/p99 latency of a 1 s clip over 50 runs.
//!
//! Exit status: 0 when every check passes, and on a node without CUDA (after `{"cuda": "unavailable", ...}`);
//! 1 on a mismatch or a CUDA failure; 2 when the model or the fixtures cannot be read.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use infergate_whisper::mel::Frontend;
use infergate_whisper::model::{Decoder, WhisperWeights};
use infergate_whisper::{
    CHUNK_FRAMES, CpuWhisper, CudaWhisper, Dims, ModelFiles, ModelSize, Options, SAMPLE_RATE, Transcript, Whisper,
    WhisperBackend, WhisperError, ct2, cuda_available,
};
use serde_json::json;

const MAX_LOGIT_DIFF: f32 = 1e-2;
const MAX_WORD_TIME_DIFF: f64 = 0.06;
const CONCURRENCY: [usize; 3] = [1, 8, 64];
const LATENCY_RUNS: usize = 50;

/// Lends one backend to several `Whisper`s (the weights are uploaded once).
struct Shared<B>(Arc<B>);

impl<B: WhisperBackend> WhisperBackend for Shared<B> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn dims(&self) -> Dims {
        self.0.dims()
    }

    fn encode(&self, mel: &[f32]) -> Result<Box<dyn Decoder + '_>, WhisperError> {
        self.0.encode(mel)
    }
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFERGATE_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from(".cache/models");
    if local.join("whisper").exists() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models")
}

/// 16-bit PCM mono WAV (the fixtures' format) to floats.
fn read_wav(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]) as usize;
        if &bytes[pos..pos + 4] == b"data" {
            let data = bytes.get(pos + 8..pos + 8 + len).ok_or_else(|| format!("{}: truncated", path.display()))?;
            return Ok(data.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect());
        }
        pos += 8 + len + (len & 1);
    }
    Err(format!("{}: no data chunk", path.display()))
}

fn options(word_timestamps: bool) -> Options {
    Options { language: Some("en".into()), temperature: Some(0.0), word_timestamps, ..Options::default() }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Max |cpu - cuda| over the logits of the first decoder step on the first window, and whether the argmax agrees.
fn first_step_logits(
    cpu: &CpuWhisper,
    cuda: &CudaWhisper,
    samples: &[f32],
    token: u32,
) -> Result<(f32, bool), WhisperError> {
    let mel = Frontend::new().log_mel(samples);
    let window = mel.window(0, CHUNK_FRAMES.min(mel.content_frames()));
    let on_cpu = cpu.encode(&window)?.step(&[token])?;
    let on_gpu = cuda.encode(&window)?.step(&[token])?;
    let diff = on_cpu.iter().zip(&on_gpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    Ok((diff, argmax(&on_cpu) == argmax(&on_gpu)))
}

fn word_time_diff(cpu: &Transcript, gpu: &Transcript) -> Option<f64> {
    let words = |t: &Transcript| t.segments.iter().flat_map(|s| s.words.clone()).collect::<Vec<_>>();
    let (a, b) = (words(cpu), words(gpu));
    if a.len() != b.len() {
        return None;
    }
    Some(a.iter().zip(&b).map(|(x, y)| (x.start - y.start).abs().max((x.end - y.end).abs())).fold(0.0, f64::max))
}

/// Compares both backends on one fixture; `Ok(pass)`.
fn check_fixture(
    name: &str,
    samples: &[f32],
    models: (&Whisper, &Whisper),
    backends: (&CpuWhisper, &CudaWhisper),
) -> Result<bool, WhisperError> {
    let (cpu_model, cuda_model) = models;
    let started = Instant::now();
    let on_cpu = cpu_model.transcribe(samples, &options(true))?;
    let cpu_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let on_gpu = cuda_model.transcribe(samples, &options(true))?;
    let cuda_s = started.elapsed().as_secs_f64();
    let sot = cuda_model.tokenizer().sot;
    let (logit_diff, argmax_equal) = first_step_logits(backends.0, backends.1, samples, sot)?;
    let text_equal = on_cpu.text == on_gpu.text;
    let tokens = |t: &Transcript| t.segments.iter().flat_map(|s| s.tokens.clone()).collect::<Vec<_>>();
    let tokens_equal = tokens(&on_cpu) == tokens(&on_gpu);
    let word_diff = word_time_diff(&on_cpu, &on_gpu);
    let pass = text_equal
        && tokens_equal
        && logit_diff <= MAX_LOGIT_DIFF
        && word_diff.is_some_and(|d| d <= MAX_WORD_TIME_DIFF);
    let mut line = json!({
        "check": "fixture",
        "file": name,
        "audio_s": samples.len() as f64 / SAMPLE_RATE as f64,
        "text_equal": text_equal,
        "tokens_equal": tokens_equal,
        "first_step_token": sot,
        "logits_max_abs_diff": logit_diff,
        "logits_argmax_equal": argmax_equal,
        "word_time_max_diff_s": word_diff,
        "cpu_s": cpu_s,
        "cuda_s": cuda_s,
        "cuda_compute_s": on_gpu.compute.as_secs_f64(),
        "pass": pass,
    });
    if !text_equal {
        // Synthetic fixture speech, not user audio: the texts are what a developer needs to see.
        line["cpu_text"] = json!(on_cpu.text);
        line["cuda_text"] = json!(on_gpu.text);
    }
    emit(line);
    Ok(pass)
}

/// `n` threads each transcribe `clip` once; audio seconds per wall second.
fn throughput(model: &Whisper, clip: &[f32], n: usize) -> Result<f64, WhisperError> {
    let started = Instant::now();
    let results: Vec<Result<Transcript, WhisperError>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..n).map(|_| scope.spawn(|| model.transcribe(clip, &options(false)))).collect::<Vec<_>>();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(WhisperError::Cuda("a transcription thread panicked".into()))))
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    Ok(n as f64 * clip.len() as f64 / SAMPLE_RATE as f64 / wall)
}

fn main() -> ExitCode {
    if let Err(reason) = cuda_available() {
        emit(json!({"cuda": "unavailable", "reason": reason}));
        return ExitCode::SUCCESS;
    }
    let dir = models_dir();
    let loaded = ModelFiles::load(&dir, ModelSize::TinyEn).and_then(|files| {
        let corrupt = |reason: String| WhisperError::WeightsCorrupt { path: files.dir.join("model.bin"), reason };
        let weights = ct2::parse(&files.model_bin).and_then(|f| WhisperWeights::from_ct2(&f)).map_err(corrupt)?;
        Ok((files, Arc::new(weights)))
    });
    let (files, weights) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            emit(json!({"error": format!("whisper tiny.en under {}: {e}", dir.display())}));
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let cuda = match CudaWhisper::new(weights.clone(), 0) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            emit(json!({"cuda": "error", "reason": e.to_string()}));
            return ExitCode::from(1);
        }
    };
    emit(
        json!({"cuda": "ok", "device": cuda.device_name(), "model": "tiny.en", "init_s": started.elapsed().as_secs_f64()}),
    );
    let cpu = Arc::new(CpuWhisper::new(weights));
    let build = |backend: Box<dyn WhisperBackend>| Whisper::with_backend(&files, backend);
    let (cpu_model, cuda_model) = match (build(Box::new(Shared(cpu.clone()))), build(Box::new(Shared(cuda.clone())))) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            emit(json!({"error": e.to_string()}));
            return ExitCode::from(2);
        }
    };

    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut wavs: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "wav")).collect()
        })
        .unwrap_or_default();
    wavs.sort();
    let mut clips = Vec::new();
    for path in &wavs {
        match read_wav(path) {
            Ok(samples) => clips.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), samples)),
            Err(e) => {
                emit(json!({"error": e}));
                return ExitCode::from(2);
            }
        }
    }
    if clips.is_empty() {
        emit(json!({"error": format!("no WAV fixtures in {}", fixtures.display())}));
        return ExitCode::from(2);
    }

    let mut ok = true;
    for (name, samples) in &clips {
        match check_fixture(name, samples, (&cpu_model, &cuda_model), (&cpu, &cuda)) {
            Ok(pass) => ok &= pass,
            Err(e) => {
                emit(json!({"check": "fixture", "file": name, "error": e.to_string(), "pass": false}));
                ok = false;
            }
        }
    }

    // 30 s of speech: the fixtures end to end, repeated.
    let clip30: Vec<f32> = clips.iter().flat_map(|(_, s)| s.iter().copied()).cycle().take(30 * SAMPLE_RATE).collect();
    let cpu_rate = throughput(&cpu_model, &clip30, 1);
    emit(json!({"check": "throughput", "backend": "cpu", "concurrent": 1, "clip_s": 30,
        "audio_s_per_s": cpu_rate.as_ref().ok(), "error": cpu_rate.as_ref().err().map(|e| e.to_string())}));
    if let Err(e) = throughput(&cuda_model, &clip30, 1) {
        emit(json!({"check": "warmup", "error": e.to_string()}));
        ok = false;
    }
    for n in CONCURRENCY {
        let rate = throughput(&cuda_model, &clip30, n);
        ok &= rate.is_ok();
        emit(json!({"check": "throughput", "backend": "cuda", "concurrent": n, "clip_s": 30,
            "audio_s_per_s": rate.as_ref().ok(), "error": rate.as_ref().err().map(|e| e.to_string())}));
    }

    let one_second = &clips[0].1[..SAMPLE_RATE.min(clips[0].1.len())];
    let mut latencies = Vec::with_capacity(LATENCY_RUNS);
    let mut failure = None;
    for run in 0..LATENCY_RUNS + 3 {
        let started = Instant::now();
        if let Err(e) = cuda_model.transcribe(one_second, &options(false)) {
            failure = Some(e.to_string());
            break;
        }
        if run >= 3 {
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    if let Some(e) = failure {
        emit(json!({"check": "latency", "error": e}));
        ok = false;
    } else {
        emit(json!({"check": "latency", "clip_s": 1, "runs": LATENCY_RUNS,
            "p50_ms": percentile(&latencies, 50.0), "p99_ms": percentile(&latencies, 99.0)}));
    }
    emit(json!({"check": "summary", "pass": ok}));
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
