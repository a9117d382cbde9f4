//! Helpers shared by the speaker-encoder integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use infergate_speaker::EncoderWeights;

/// `INFERGATE_SPEAKER_WEIGHTS`, else the file tests/tools/install-speaker-weights.sh installs.
pub fn weights_path() -> PathBuf {
    std::env::var_os("INFERGATE_SPEAKER_WEIGHTS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/speaker/pretrained.pt")
    })
}

/// The verified weights, loaded once per test binary; `None` (with the reason printed) when not installed.
pub fn weights() -> Option<Arc<EncoderWeights>> {
    static WEIGHTS: OnceLock<Option<Arc<EncoderWeights>>> = OnceLock::new();
    WEIGHTS
        .get_or_init(|| {
            let path = weights_path();
            if !path.exists() {
                eprintln!(
                    "SKIP: speaker weights not installed at {} (run tests/tools/install-speaker-weights.sh)",
                    path.display()
                );
                return None;
            }
            Some(Arc::new(EncoderWeights::load(&path).expect("installed weights must load")))
        })
        .clone()
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn read_json(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// The input generator of agent/speaker/scripts/make_golden.py: 64-bit LCG noise plus sines, computed in f64
/// (glibc `sin`, as Python's `math.sin`) and rounded to f32, optionally with a tremolo.
pub fn synth(generator: &serde_json::Value) -> Vec<f32> {
    let seconds = generator["seconds"].as_f64().unwrap();
    let mut state = generator["seed"].as_u64().unwrap();
    let noise_amp = generator["noise_amp"].as_f64().unwrap();
    let tremolo = generator["tremolo_hz"].as_f64().unwrap();
    let sines: Vec<(f64, f64, f64)> = generator["sines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap(), s[2].as_f64().unwrap()))
        .collect();
    let n = (seconds * 16_000.0).round() as usize;
    let sr = 16_000.0;
    let tau = 2.0 * std::f64::consts::PI;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let uniform = (state >> 40) as f64 / (1u64 << 24) as f64;
            let mut x = noise_amp * (2.0 * uniform - 1.0);
            for &(freq, amp, phase) in &sines {
                x += amp * (tau * freq * i as f64 / sr + phase).sin();
            }
            if tremolo > 0.0 {
                x *= 0.75 + 0.25 * (tau * tremolo * i as f64 / sr).sin();
            }
            x as f32
        })
        .collect()
}
