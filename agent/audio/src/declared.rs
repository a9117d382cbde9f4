//! The length an upload's container declares, read without decoding any audio: what the gate bills before a
//! request runs (and refuses when it is past the endpoint's cap).
//!
//! ```text
//!  FLAC  ─▶ STREAMINFO, read directly (it counts even when no frame follows)
//!  else  ─▶ symphonia's probe ─▶ first decodable audio track ─▶ demux::stated_seconds
//! ```
use crate::{Hint, demux};

/// Seconds the container states; `None` when it does not say (a stream without a length header) or cannot be
/// read. Never panics and never allocates what a header merely claims. A length past what a time value holds is
/// also `None` here (the gate then pre-charges the endpoint's maximum); the decoder refuses it as too long.
pub fn declared_seconds(bytes: &[u8], hint: Hint<'_>) -> Option<f64> {
    if bytes.starts_with(b"fLaC") {
        return flac_streaminfo_seconds(bytes);
    }
    // symphonia's demuxers have asserted on malformed input and overflowed on hostile headers (found by the
    // audio_inspect fuzz target; regressions in fuzz/artifacts/audio_inspect): a damaged upload reads as "does not
    // say", never a crashed request. Nothing outside the closure is touched. (symphonia 0.5 also allocated any
    // length a header declared before reading it, 284 TB from a 130-byte Matroska file: an abort, which no
    // catch_unwind stops. 0.6 grows such buffers only as bytes arrive.)
    let probe = || -> Option<f64> {
        let format = demux::open(bytes, &hint).ok()?;
        let (track, params) = demux::pick_track(format.tracks()).ok()?;
        demux::stated_seconds(format.as_ref(), track, params.sample_rate)
    };
    let seconds = std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)).ok().flatten()?;
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
}

/// FLAC's length from STREAMINFO, the first metadata block (the spec requires it there): total samples over the
/// sample rate. Read directly, because it must count even when no audio frame follows (a header that declares an
/// hour in 2 KiB is billed as an hour, or refused as too long). `None` when the stream leaves the total unset.
fn flac_streaminfo_seconds(bytes: &[u8]) -> Option<f64> {
    // "fLaC", then a 4-byte block header (type 0 = STREAMINFO, length 34), then the 34-byte body.
    let header = bytes.get(4..8)?;
    if header[0] & 0x7F != 0 || u32::from_be_bytes([0, header[1], header[2], header[3]]) != 34 {
        return None;
    }
    let body = bytes.get(8..42)?;
    // Bytes 10..18 of the body: sample rate (20 bits), channels-1 (3), bits-1 (5), total samples (36).
    let packed = u64::from_be_bytes(body[10..18].try_into().ok()?);
    let sample_rate = (packed >> 44) as u32;
    let total_samples = packed & ((1 << 36) - 1);
    (sample_rate > 0 && total_samples > 0).then(|| total_samples as f64 / f64::from(sample_rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// The fixtures were encoded by FFmpeg: the length billed is the length FFmpeg wrote.
    #[test]
    fn each_compressed_format_declares_its_encoded_length() {
        for (name, seconds) in [
            ("tone_44k.mp3", 1.5),
            ("tone_44k_stereo_vorbis.ogg", 1.5),
            ("tone_48k_opus.ogg", 1.5),
            ("tone_48k_aac.m4a", 1.5),
            ("tone_48k_opus.webm", 1.5),
            ("tone_48k_stereo_opus.webm", 1.0),
            ("silence_16k_3min.flac", 180.0),
        ] {
            let declared = declared_seconds(&read(name), Hint { filename: Some(name), content_type: None });
            let declared = declared.unwrap_or_else(|| panic!("{name}: no length declared"));
            assert!((declared - seconds).abs() < 0.1, "{name}: {declared} s declared, {seconds} s encoded");
        }
    }

    #[test]
    fn a_container_that_does_not_say_is_none() {
        assert_eq!(declared_seconds(b"OggS\0\x02garbage", Hint::default()), None);
        assert_eq!(declared_seconds(b"fLaC", Hint::default()), None);
    }
}
