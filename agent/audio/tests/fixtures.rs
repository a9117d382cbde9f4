//! Real files in every accepted format (made by scripts/make_fixtures.py): each decodes to its length and its
//! tone, and no prefix of any of them panics the decoder.
use infergate_audio::{AudioError, Decoded, Hint, Limits, TARGET_RATE, decode};
use std::path::PathBuf;

/// Encoder delay and padding a container does not record (AAC priming, Opus frame padding) stay within this.
const DURATION_TOLERANCE_SECONDS: f64 = 0.030;

fn read(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode_file(name: &str, limits: Limits) -> Result<Decoded, AudioError> {
    decode(&read(name), Hint { filename: Some(name), content_type: None }, limits)
}

fn generous() -> Limits {
    Limits { max_seconds: 600.0 }
}

/// The strongest frequency in the middle half of `samples` (16 kHz): a Hann-windowed Goertzel scan in 10 Hz
/// steps, then 1 Hz steps around the best.
fn dominant_frequency(samples: &[f32]) -> f64 {
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    let n = middle.len() as f64;
    let power = |freq: f64| {
        let coefficient = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(TARGET_RATE)).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for (i, &x) in middle.iter().enumerate() {
            let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos();
            let s0 = f64::from(x) * hann + coefficient * s1 - s2;
            (s2, s1) = (s1, s0);
        }
        s1 * s1 + s2 * s2 - coefficient * s1 * s2
    };
    let best = |candidates: Vec<f64>| {
        candidates.into_iter().map(|f| (f, power(f))).fold((0.0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a }).0
    };
    let coarse = best((5..795).map(|k| f64::from(k) * 10.0).collect());
    best((-10..=10).map(|d| coarse + f64::from(d)).collect())
}

fn rms(samples: &[f32]) -> f64 {
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    (middle.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / middle.len() as f64).sqrt()
}

struct Expect {
    seconds: f64,
    tone_hz: f64,
    /// Peak amplitude after mixdown: 0.5 mono; (0.5 + 0.25) / 2 for the PyAV stereo files, whose right
    /// channel is half as loud.
    amplitude: f64,
    source_rate: u32,
    channels: u16,
    codec: &'static str,
}

fn check_decodes(name: &str, expect: Expect) {
    let decoded = decode_file(name, generous()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let seconds = decoded.samples.len() as f64 / f64::from(TARGET_RATE);
    assert!(
        (seconds - expect.seconds).abs() <= DURATION_TOLERANCE_SECONDS,
        "{name}: {seconds} s decoded, {} s encoded",
        expect.seconds
    );
    assert!((decoded.duration_seconds - seconds).abs() < 0.001, "{name}: duration_seconds disagrees with samples");
    let tone = dominant_frequency(&decoded.samples);
    assert!((tone - expect.tone_hz).abs() <= 2.0, "{name}: dominant {tone} Hz, encoded {} Hz", expect.tone_hz);
    let amplitude = rms(&decoded.samples) * std::f64::consts::SQRT_2;
    assert!(
        (amplitude / expect.amplitude - 1.0).abs() < 0.05,
        "{name}: amplitude {amplitude}, expected {}",
        expect.amplitude
    );
    assert!(decoded.samples.iter().all(|s| (-1.0..=1.0).contains(s)), "{name}: sample out of range");
    assert_eq!(
        (decoded.source_rate, decoded.channels, decoded.codec),
        (expect.source_rate, expect.channels, expect.codec),
        "{name}"
    );
}

/// Every prefix (each of the first 600 byte counts, then every 61st) decodes to a shorter result or a
/// 400/415-class error: never a panic, never more audio than the whole file.
fn check_prefixes(name: &str) {
    let bytes = read(name);
    let full = decode_file(name, generous()).unwrap().duration_seconds;
    let hint = Hint { filename: Some(name), content_type: None };
    let lengths = (0..600.min(bytes.len())).chain((600..bytes.len()).step_by(61));
    for length in lengths {
        match decode(&bytes[..length], hint, generous()) {
            Ok(decoded) => assert!(decoded.duration_seconds <= full + 0.05, "{name}[..{length}] grew"),
            Err(AudioError::Unsupported { .. } | AudioError::Corrupt { .. } | AudioError::Empty) => {}
            Err(e) => panic!("{name}[..{length}]: unexpected {e:?}"),
        }
    }
}

macro_rules! fixture {
    ($module:ident, $name:literal, $expect:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn decodes_to_its_length_and_tone() {
                check_decodes($name, $expect);
            }

            #[test]
            fn no_prefix_panics() {
                check_prefixes($name);
            }
        }
    };
}

const STEREO_MIX: f64 = 0.375;

fixture!(
    wav_s16_16k,
    "pcm_s16_16k.wav",
    Expect { seconds: 1.0, tone_hz: 440.0, amplitude: 0.5, source_rate: 16_000, channels: 1, codec: "pcm_s16le" }
);
fixture!(
    wav_s24_8k,
    "pcm_s24_8k.wav",
    Expect { seconds: 1.2, tone_hz: 1000.0, amplitude: 0.5, source_rate: 8_000, channels: 1, codec: "pcm_s24le" }
);
fixture!(
    wav_f32_8k,
    "pcm_f32_8k.wav",
    Expect { seconds: 1.0, tone_hz: 700.0, amplitude: 0.5, source_rate: 8_000, channels: 1, codec: "pcm_f32le" }
);
fixture!(
    wav_s16_44k_stereo,
    "pcm_s16_44k_stereo.wav",
    Expect {
        seconds: 0.2,
        tone_hz: 1000.0,
        amplitude: STEREO_MIX,
        source_rate: 44_100,
        channels: 2,
        codec: "pcm_s16le"
    }
);
fixture!(
    wav_adpcm_22k,
    "adpcm_ima_22k.wav",
    Expect {
        seconds: 16.0 * 2041.0 / 22_050.0,
        tone_hz: 500.0,
        amplitude: 0.5,
        source_rate: 22_050,
        channels: 1,
        codec: "adpcm_ima_wav"
    }
);
fixture!(
    raw_pcm_16k,
    "tone_16k.pcm",
    Expect { seconds: 0.8, tone_hz: 600.0, amplitude: 0.5, source_rate: 16_000, channels: 1, codec: "pcm_s16le" }
);
fixture!(
    flac_16k,
    "tone_16k.flac",
    Expect { seconds: 1.5, tone_hz: 440.0, amplitude: 0.5, source_rate: 16_000, channels: 1, codec: "flac" }
);
fixture!(
    mp3_44k,
    "tone_44k.mp3",
    Expect { seconds: 1.5, tone_hz: 1000.0, amplitude: 0.5, source_rate: 44_100, channels: 1, codec: "mp3" }
);
fixture!(
    m4a_aac_48k,
    "tone_48k_aac.m4a",
    Expect { seconds: 1.5, tone_hz: 880.0, amplitude: 0.5, source_rate: 48_000, channels: 1, codec: "aac" }
);
// sox's synth writes the same sine to both channels.
fixture!(
    ogg_vorbis_44k_stereo,
    "tone_44k_stereo_vorbis.ogg",
    Expect { seconds: 1.5, tone_hz: 660.0, amplitude: 0.5, source_rate: 44_100, channels: 2, codec: "vorbis" }
);
fixture!(
    ogg_opus_48k,
    "tone_48k_opus.ogg",
    Expect { seconds: 1.5, tone_hz: 1000.0, amplitude: 0.5, source_rate: 48_000, channels: 1, codec: "opus" }
);
fixture!(
    webm_opus_48k,
    "tone_48k_opus.webm",
    Expect { seconds: 1.5, tone_hz: 750.0, amplitude: 0.5, source_rate: 48_000, channels: 1, codec: "opus" }
);
fixture!(
    webm_opus_48k_stereo,
    "tone_48k_stereo_opus.webm",
    Expect { seconds: 1.0, tone_hz: 1200.0, amplitude: STEREO_MIX, source_rate: 48_000, channels: 2, codec: "opus" }
);
