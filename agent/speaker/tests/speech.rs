//! Real speech from espeak-ng in several voices: utterances of one voice must be closer to each other than to
//! any other voice's. Needs `espeak-ng` and `sox` (tests/tools/setup.sh installs both) and the weights.

mod common;

use std::path::Path;
use std::process::Command;

use infergate_speaker::{CpuEncoder, EmbeddingBackend, Limits, cosine};

// Two male variants of similar timbre (m3, m1 with a British accent) make this a real test, not just pitch.
const VOICES: [&str; 3] = ["en-us+m3", "en-us+f3", "en-gb+m1"];
// Sentences of ~4 s: with short clips the words, not the voice, dominate the embedding.
const SENTENCES: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog, and then it runs back home.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
];
/// How much higher the mean same-voice cosine must be than the mean cosine to any other voice. Only pairs of
/// different sentences are compared, so shared words cannot make two voices look alike.
const MARGIN: f32 = 0.05;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// espeak-ng's 22.05 kHz WAV, resampled by sox to 16 kHz mono signed 16-bit, as floats in [-1, 1].
fn speak(voice: &str, text: &str, dir: &Path) -> Vec<f32> {
    let wav = dir.join("speech.wav");
    let raw = dir.join("speech.raw");
    let status = Command::new("espeak-ng").args(["-v", voice, "-s", "165", "-w"]).arg(&wav).arg(text).status().unwrap();
    assert!(status.success(), "espeak-ng -v {voice} failed");
    let status = Command::new("sox")
        .arg(&wav)
        .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-t", "raw"])
        .arg(&raw)
        .status()
        .unwrap();
    assert!(status.success(), "sox resampling failed");
    let bytes = std::fs::read(&raw).unwrap();
    bytes.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect()
}

#[test]
fn same_voice_is_closer_than_other_voices() {
    if !have("espeak-ng") || !have("sox") {
        eprintln!("SKIP: espeak-ng and sox are needed (tests/tools/setup.sh installs them)");
        return;
    }
    let Some(weights) = common::weights() else {
        return;
    };
    let encoder = CpuEncoder::new(weights);
    let dir = std::env::temp_dir().join(format!("infergate-speaker-speech-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let audio: Vec<Vec<f32>> =
        VOICES.iter().flat_map(|v| SENTENCES.iter().map(|s| speak(v, s, &dir)).collect::<Vec<_>>()).collect();
    std::fs::remove_dir_all(&dir).ok();
    let refs: Vec<&[f32]> = audio.iter().map(Vec::as_slice).collect();
    let out = encoder.embed_batch(&refs, &Limits::default()).unwrap();
    let emb = |voice: usize, sentence: usize| &out.embeddings[voice * SENTENCES.len() + sentence];

    let mean_cosine = |a: usize, b: usize| {
        let pairs: Vec<f32> = (0..SENTENCES.len())
            .flat_map(|s| (0..SENTENCES.len()).filter(move |&t| t != s).map(move |t| (s, t)))
            .map(|(s, t)| cosine(emb(a, s), emb(b, t)))
            .collect();
        pairs.iter().sum::<f32>() / pairs.len() as f32
    };
    for (v, voice) in VOICES.iter().enumerate() {
        let same = mean_cosine(v, v);
        for (o, other) in VOICES.iter().enumerate().filter(|&(o, _)| o != v) {
            let different = mean_cosine(v, o);
            println!("{voice}: same voice {same:.3}, vs {other} {different:.3}");
            assert!(
                same > different + MARGIN,
                "{voice}: mean same-voice cosine {same:.3} is not clearly above {other} ({different:.3})"
            );
        }
    }
}
