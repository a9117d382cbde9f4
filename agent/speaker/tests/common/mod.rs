//! Helpers shared by the speaker-encoder integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use infergate_speaker::EncoderWeights;

/// `INFERGATE_SPEAKER_WEIGHTS`, else the file tests/tools/install-speaker-weights.sh installs.
pub fn weights_path() -> PathBuf {
    std::env::var_os("INFERGATE_SPEAKER_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/speaker/pretrained.pt"))
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

/// The golden input described by a golden file's `generator` object (see scripts/make_golden.py).
pub fn synth(generator: &serde_json::Value) -> Vec<f32> {
    let sines: Vec<(f64, f64, f64)> = generator["sines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap(), s[2].as_f64().unwrap()))
        .collect();
    infergate_speaker::testing::golden_signal(
        generator["seconds"].as_f64().unwrap(),
        generator["seed"].as_u64().unwrap(),
        generator["noise_amp"].as_f64().unwrap(),
        &sines,
        generator["tremolo_hz"].as_f64().unwrap(),
    )
}
