//! Audio sizing: how many seconds a request holds, which sets its pre-charge and its `maxAudioSeconds` check.
//! Raw PCM16 and WAV are measured exactly from their headers; compressed formats cannot be measured without
//! decoding, so they are estimated at [`COMPRESSED_BYTES_PER_SECOND`] (a low bitrate, so the estimate errs
//! high) and settled against the backend's measured time.
use crate::refusal::{Refusal, RefusalCode};
use infergate_crds::endpoint::Codec;

/// Raw stream audio: 16 kHz mono little-endian 16-bit.
pub const PCM16_BYTES_PER_SECOND: f64 = 32_000.0;
/// 32 kbit/s, the low end of speech codecs.
pub const COMPRESSED_BYTES_PER_SECOND: f64 = 4_000.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AudioInfo {
    pub codec: Codec,
    pub seconds: f64,
    /// False for compressed formats, whose length is an estimate.
    pub exact: bool,
}

/// Identifies the format from the bytes (magic numbers first, then the file name) and sizes it.
pub fn inspect(bytes: &[u8], filename: &str) -> Result<AudioInfo, Refusal> {
    if bytes.is_empty() {
        return Err(Refusal::bad_request("the audio file is empty; send a WAV, raw PCM16 or compressed audio file"));
    }
    if bytes.starts_with(b"RIFF") {
        return wav_seconds(bytes).map(|seconds| AudioInfo { codec: Codec::Wav, seconds, exact: true });
    }
    let compressed = if bytes.starts_with(b"fLaC") {
        Some(Codec::Flac)
    } else if bytes.starts_with(b"OggS") {
        Some(Codec::Ogg)
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(Codec::Webm)
    } else if bytes.starts_with(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0) {
        Some(Codec::Mp3)
    } else {
        None
    };
    if let Some(codec) = compressed {
        return Ok(AudioInfo { codec, seconds: bytes.len() as f64 / COMPRESSED_BYTES_PER_SECOND, exact: false });
    }
    let lower = filename.to_ascii_lowercase();
    if lower.ends_with(".pcm") || lower.ends_with(".raw") || lower.ends_with(".s16le") {
        return Ok(AudioInfo { codec: Codec::Pcm16, seconds: pcm16_seconds(bytes.len()), exact: true });
    }
    Err(Refusal::new(
        RefusalCode::UnsupportedCodec,
        "unrecognised audio format: send WAV, FLAC, MP3, Ogg or WebM, or raw 16 kHz mono PCM16 with a .pcm file name",
    ))
}

pub fn pcm16_seconds(bytes: usize) -> f64 {
    bytes as f64 / PCM16_BYTES_PER_SECOND
}

/// Checks the format against the endpoint's accepted codecs.
pub fn check_codec(info: &AudioInfo, accepted: &[Codec]) -> Result<(), Refusal> {
    if accepted.contains(&info.codec) {
        Ok(())
    } else {
        Err(Refusal::new(
            RefusalCode::UnsupportedCodec,
            format!(
                "this endpoint does not accept {}; it accepts: {}",
                codec_name(info.codec),
                accepted.iter().map(|c| codec_name(*c)).collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

pub fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Pcm16 => "pcm16",
        Codec::Wav => "wav",
        Codec::Flac => "flac",
        Codec::Mp3 => "mp3",
        Codec::Ogg => "ogg",
        Codec::Webm => "webm",
    }
}

/// Duration from a RIFF/WAVE header: the `data` chunk size over the `fmt ` chunk's byte rate.
pub fn wav_seconds(bytes: &[u8]) -> Result<f64, Refusal> {
    let bad = |what: &str| Refusal::bad_request(format!("invalid WAV file: {what}; re-encode it as 16-bit PCM WAV"));
    if bytes.len() < 12 || &bytes[8..12] != b"WAVE" {
        return Err(bad("missing RIFF/WAVE header"));
    }
    let mut pos = 12;
    let mut byte_rate = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            if size < 16 || body + 16 > bytes.len() {
                return Err(bad("truncated fmt chunk"));
            }
            let rate = u32::from_le_bytes(bytes[body + 8..body + 12].try_into().expect("4 bytes"));
            if rate == 0 {
                return Err(bad("byte rate is zero"));
            }
            byte_rate = Some(f64::from(rate));
        } else if id == b"data" {
            let rate = byte_rate.ok_or_else(|| bad("data chunk before fmt chunk"))?;
            // Streaming writers put 0 or 0xFFFFFFFF here; then the data runs to the end of the file.
            let available = bytes.len() - body;
            let data = if size == 0 || size > available { available } else { size };
            return Ok(data as f64 / rate);
        }
        pos = body + size + (size & 1);
    }
    Err(bad("no data chunk"))
}

/// A WAV header for `data_len` bytes of 16 kHz mono PCM16, so stream segments can go to WAV-only upstreams.
pub fn wav_header(data_len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes());
    h[24..28].copy_from_slice(&16_000u32.to_le_bytes());
    h[28..32].copy_from_slice(&32_000u32.to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_and_pcm_are_measured_exactly() {
        let mut wav = wav_header(64_000).to_vec();
        wav.extend(vec![0u8; 64_000]);
        assert_eq!(inspect(&wav, "a.wav").unwrap(), AudioInfo { codec: Codec::Wav, seconds: 2.0, exact: true });
        assert_eq!(inspect(&[0u8; 16_000], "a.pcm").unwrap().seconds, 0.5);
        assert_eq!(inspect(b"OggS....", "a.ogg").unwrap().codec, Codec::Ogg);
        assert_eq!(inspect(b"hello", "a.txt").unwrap_err().code, RefusalCode::UnsupportedCodec);
        assert_eq!(inspect(b"RIFF\0\0\0\0WAVX", "a.wav").unwrap_err().code, RefusalCode::BadRequest);
        assert_eq!(
            check_codec(&inspect(b"fLaC", "x").unwrap(), &[Codec::Wav]).unwrap_err().code,
            RefusalCode::UnsupportedCodec
        );
    }
}
