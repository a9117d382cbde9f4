//! What the decoder refuses, and how: the length cap (declared and while decoding), garbage, truncation.
use infergate_audio::{AudioError, Hint, Limits, decode};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn read(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn named(name: &str) -> Hint<'_> {
    Hint { filename: Some(name), content_type: None }
}

fn limits(max_seconds: f64) -> Limits {
    Limits { max_seconds }
}

/// The 3-minute silent FLAC with its STREAMINFO total-samples field (36 bits from byte 21's low nibble) set to
/// 0, "unknown", as a streaming encoder writes it: only decoding can find the length.
fn silence_without_declared_length() -> Vec<u8> {
    let mut bytes = read("silence_16k_3min.flac");
    assert_eq!(&bytes[..4], b"fLaC");
    bytes[21] &= 0xF0;
    bytes[22..26].fill(0);
    bytes
}

#[test]
fn a_declared_length_over_the_cap_is_refused_before_decoding() {
    let error = decode(&read("silence_16k_3min.flac"), named("s.flac"), limits(30.0)).unwrap_err();
    match error {
        // The whole declared length is reported: nothing was decoded.
        AudioError::TooLong { seconds, max } => assert_eq!((seconds, max), (180.0, 30.0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_undeclared_length_is_capped_while_decoding() {
    let started = Instant::now();
    let error = decode(&silence_without_declared_length(), named("s.flac"), limits(30.0)).unwrap_err();
    match error {
        // Stops within one FLAC block (4608 frames here) of the cap: 3 min of samples are never held.
        AudioError::TooLong { seconds, max } => {
            assert!(seconds > 30.0 && seconds < 30.0 + 4608.0 / 16_000.0 + 1e-9, "{seconds}");
            assert_eq!(max, 30.0);
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn an_undeclared_length_under_the_cap_decodes() {
    let decoded = decode(&silence_without_declared_length(), named("s.flac"), limits(200.0)).unwrap();
    assert_eq!(decoded.samples.len(), 180 * 16_000);
}

#[test]
fn a_short_cap_refuses_a_compressed_tone_with_413() {
    let error = decode(&read("tone_44k.mp3"), named("t.mp3"), limits(0.5)).unwrap_err();
    assert_eq!((error.category(), error.http_status()), ("too_long", 413));
}

#[test]
fn an_opus_stream_over_the_cap_is_too_long() {
    let error = decode(&read("tone_48k_opus.webm"), named("t.webm"), limits(0.25)).unwrap_err();
    assert_eq!(error.category(), "too_long");
}

#[test]
fn random_bytes_are_unsupported_or_corrupt() {
    // A fixed xorshift stream: the same "garbage" every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for hint in [Hint::default(), named("x.mp3"), named("x.wav"), named("x.webm")] {
        let error = decode(&bytes, hint, limits(600.0)).unwrap_err();
        assert!(matches!(error, AudioError::Unsupported { .. } | AudioError::Corrupt { .. }), "{hint:?}: {error:?}");
    }
}

#[test]
fn text_is_unsupported_with_the_list_of_formats() {
    let error = decode(b"this is a transcript, not a recording", named("notes.txt"), limits(600.0)).unwrap_err();
    assert_eq!(error.http_status(), 415);
    assert!(error.to_string().contains("flac, mp3, mp4/m4a (AAC), ogg"), "{error}");
}

#[test]
fn an_aiff_file_is_unsupported() {
    let mut bytes = b"FORM\0\0\x10\0AIFFCOMM\0\0\0\x12".to_vec();
    bytes.resize(4096, 0);
    assert_eq!(decode(&bytes, named("a.aiff"), limits(600.0)).unwrap_err().category(), "unsupported");
}

/// A truncated MP3 is not an error: the frames before the cut decode, as any player would play them.
#[test]
fn a_truncated_mp3_decodes_to_the_audio_before_the_cut() {
    let bytes = read("tone_44k.mp3");
    let decoded = decode(&bytes[..bytes.len() / 2], named("t.mp3"), limits(600.0)).unwrap();
    assert!((decoded.duration_seconds - 0.75).abs() < 0.06, "{}", decoded.duration_seconds);
}

#[test]
fn a_wav_header_alone_is_empty_or_corrupt() {
    let bytes = read("pcm_s16_16k.wav");
    let error = decode(&bytes[..44], named("t.wav"), limits(600.0)).unwrap_err();
    assert!(matches!(error, AudioError::Empty | AudioError::Corrupt { .. }), "{error:?}");
}

#[test]
fn messages_never_carry_the_upload() {
    // A recognisable marker inside otherwise undecodable bytes must not come back in the message.
    let mut bytes = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    bytes.extend_from_slice(b"SECRET-MARKER-SECRET-MARKER");
    let error = decode(&bytes, named("x.wav"), limits(600.0)).unwrap_err();
    assert!(!error.to_string().contains("SECRET"), "{error}");
}
