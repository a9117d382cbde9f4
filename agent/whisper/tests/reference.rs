//! The CPU backend against faster-whisper 1.2.1 (CTranslate2 4.8.5, float32, greedy) on the committed espeak-ng
//! fixtures: same text, same tokens per window, word times within 60 ms. The JSON comes from
//! scripts/make_reference.py and scripts/dump_internals.py, run once; CI never needs Python for this.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use infergate_whisper::{ModelSize, Options, Whisper};

fn models_dir() -> PathBuf {
    std::env::var_os("INFERGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The tiny.en model, loaded once; `None` (printed) when the weights are not installed.
fn model() -> Option<&'static Whisper> {
    static MODEL: OnceLock<Option<Whisper>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = models_dir();
            if !dir.join("whisper/tiny.en/model.bin").exists() {
                eprintln!(
                    "SKIP: whisper tiny.en not installed under {} (tests/tools/install-whisper-weights.sh)",
                    dir.display()
                );
                return None;
            }
            Some(Whisper::load(&dir, ModelSize::TinyEn).expect("installed weights load"))
        })
        .as_ref()
}

/// 16-bit PCM mono WAV to floats (the fixtures are written by sox in exactly that format).
fn read_wav(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            return bytes[pos + 8..pos + 8 + len]
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect();
        }
        pos += 8 + len + (len & 1);
    }
    panic!("no data chunk in {}", path.display());
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap()).unwrap()
}

fn options() -> Options {
    Options { language: Some("en".into()), temperature: Some(0.0), word_timestamps: true, ..Options::default() }
}

fn check_file(name: &str) {
    let Some(model) = model() else { return };
    let reference = reference();
    let want = &reference["files"][name];
    let samples = read_wav(&fixtures().join(name));
    let got = model.transcribe(&samples, &options()).unwrap();
    let want_text = want["text"].as_str().unwrap().trim();
    assert_eq!(got.text, want_text, "{name}: transcript differs");
    let want_segments = want["segments"].as_array().unwrap();
    assert_eq!(got.segments.len(), want_segments.len(), "{name}: segment count");
    let mut worst = 0.0f64;
    for (g, w) in got.segments.iter().zip(want_segments) {
        let wtokens: Vec<u32> = w["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        assert_eq!(g.tokens, wtokens, "{name}: segment {} tokens", g.id);
        assert!(
            (g.start - w["start"].as_f64().unwrap()).abs() < 0.061,
            "{name}: segment start {} vs {}",
            g.start,
            w["start"]
        );
        assert!((g.end - w["end"].as_f64().unwrap()).abs() < 0.061, "{name}: segment end {} vs {}", g.end, w["end"]);
        let wwords = w["words"].as_array().unwrap();
        assert_eq!(g.words.len(), wwords.len(), "{name}: words in segment {}", g.id);
        for (gw, ww) in g.words.iter().zip(wwords) {
            assert_eq!(gw.word, ww["word"].as_str().unwrap(), "{name}: word text");
            for (a, b) in [(gw.start, &ww["start"]), (gw.end, &ww["end"])] {
                let d = (a - b.as_f64().unwrap()).abs();
                worst = worst.max(d);
                assert!(d <= 0.06, "{name}: word {:?} time {a} vs reference {b}", gw.word);
            }
        }
        let lp = w["avg_logprob"].as_f64().unwrap() as f32;
        assert!((g.avg_logprob - lp).abs() < 0.02, "{name}: avg_logprob {} vs {lp}", g.avg_logprob);
        let ns = w["no_speech_prob"].as_f64().unwrap() as f32;
        assert!((g.no_speech_prob - ns).abs() < 0.02, "{name}: no_speech_prob {} vs {ns}", g.no_speech_prob);
    }
    eprintln!("{name}: text and tokens identical; worst word-time difference {:.0} ms", worst * 1000.0);
}

#[test]
fn short_card_number() {
    check_file("short_01_card.wav");
}

#[test]
fn short_name() {
    check_file("short_02_name.wav");
}

#[test]
fn short_question() {
    check_file("short_03_question.wav");
}

#[test]
fn short_date() {
    check_file("short_04_date.wav");
}

#[test]
fn short_agent() {
    check_file("short_05_agent.wav");
}

#[test]
fn long_meeting_seeks_over_windows() {
    check_file("long_meeting.wav");
}

#[test]
fn front_end_and_encoder_match_the_reference() {
    let Some(_) = model() else { return };
    let internals: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("internals.json")).unwrap()).unwrap();
    let samples = read_wav(&fixtures().join(internals["wav"].as_str().unwrap()));
    let mel = infergate_whisper::mel::Frontend::new().log_mel(&samples);
    let first = &internals["encoder_input"]["first_5_frames"];
    for t in 0..5 {
        let want: Vec<f64> = first[t.to_string()].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (m, w) in want.iter().enumerate() {
            let got = f64::from(mel.data[m * mel.n_frames + t]);
            assert!((got - w).abs() < 2e-3, "mel frame {t} band {m}: {got} vs {w}");
        }
    }
    assert_eq!(mel.content_frames() as u64, internals["encoder_input"]["content_frames"].as_u64().unwrap());
}
