//! Real-time factor of the CPU backend on the reference fixtures, printed as JSON lines in the shape
//! tests/bench/whisper_peer.py prints for faster-whisper, so tests/bench/whisper.sh can put them side by side.
//! One thread: the CPU backend never spawns any (matrixmultiply without its threading feature).
//!
//! `cargo run --release -p infergate-whisper --example rtf -- [--runs 3] [--words] [fixtures...]`
use std::path::PathBuf;
use std::time::Instant;

use infergate_whisper::{ModelSize, Options, Whisper};

fn read_wav(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("fixture");
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if &bytes[pos..pos + 4] == b"data" {
            return bytes[pos + 8..pos + 8 + len]
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect();
        }
        pos += 8 + len + (len & 1);
    }
    panic!("no data chunk");
}

fn main() {
    let mut runs = 3;
    let mut words = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(3),
            "--words" => words = true,
            other => files.push(PathBuf::from(other)),
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if files.is_empty() {
        files = ["long_meeting.wav", "short_01_card.wav", "short_02_name.wav"]
            .iter()
            .map(|f| root.join("tests/fixtures").join(f))
            .collect();
    }
    let models =
        std::env::var_os("INFERGATE_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("../../.cache/models"));
    let model =
        Whisper::load(&models, ModelSize::TinyEn).expect("tiny.en installed (tests/tools/install-whisper-weights.sh)");
    let options =
        Options { language: Some("en".into()), temperature: Some(0.0), word_timestamps: words, ..Options::default() };
    for file in files {
        let samples = read_wav(&file);
        let audio = samples.len() as f64 / 16_000.0;
        // One untimed run first, as the peer script does: first-touch page faults in the weights and first-call
        // allocations are not what a serving process pays per request.
        model.transcribe(&samples, &options).expect("transcribes");
        let mut times = Vec::new();
        let mut text = String::new();
        for _ in 0..runs {
            let start = Instant::now();
            let t = model.transcribe(&samples, &options).expect("transcribes");
            times.push(start.elapsed().as_secs_f64());
            text = t.text;
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{}",
            serde_json::json!({"engine": "infergate", "compute_type": "float32", "file": file.file_name().unwrap().to_string_lossy(),
                "word_timestamps": words, "audio_seconds": audio, "median_seconds": median, "rtf": audio / median, "chars": text.len()})
        );
    }
}
