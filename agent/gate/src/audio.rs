//! Audio sizing: how many seconds a request holds, which sets its pre-charge and its `maxAudioSeconds` check.
//!
//! ```text
//!  RIFF/WAVE ─▶ data bytes / (sample rate x block align)      Measure::Exact   (a disagreeing header is a 400)
//!  .pcm      ─▶ bytes / 32,000                                 Measure::Exact
//!  FLAC, MP3, Ogg, WebM/Matroska ─▶ infergate_audio reads the container's own length (STREAMINFO, Xing/VBRI or
//!            frame headers, granule positions, segment info), decoding no audio   Measure::Declared
//!            └─ no length in the container ─▶ Measure::Unknown: the caller pre-charges the endpoint's maximum
//! ```
//! Every request is then settled against the backend's measured time.
use crate::refusal::{Refusal, RefusalCode};
use infergate_crds::endpoint::Codec;

/// Raw stream audio: 16 kHz mono little-endian 16-bit.
pub const PCM16_BYTES_PER_SECOND: f64 = 32_000.0;

/// How an [`AudioInfo`]'s length was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Counted from the samples (PCM, WAV).
    Exact,
    /// What the compressed container says about itself.
    Declared,
    /// The container does not say; `seconds` is 0 and the caller must assume the endpoint's maximum.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AudioInfo {
    pub codec: Codec,
    pub seconds: f64,
    pub measure: Measure,
}

/// Identifies the format from the bytes (magic numbers first, then the file name) and sizes it.
pub fn inspect(bytes: &[u8], filename: &str) -> Result<AudioInfo, Refusal> {
    if bytes.is_empty() {
        return Err(Refusal::bad_request("the audio file is empty; send a WAV, raw PCM16 or compressed audio file"));
    }
    if bytes.starts_with(b"RIFF") {
        return wav_seconds(bytes).map(|seconds| AudioInfo { codec: Codec::Wav, seconds, measure: Measure::Exact });
    }
    let compressed = if bytes.starts_with(b"fLaC") {
        Some(Codec::Flac)
    } else if bytes.starts_with(b"OggS") {
        Some(Codec::Ogg)
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(Codec::Webm)
    } else if bytes.get(4..8) == Some(b"ftyp") {
        Some(Codec::Mp4)
    } else if bytes.starts_with(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0) {
        Some(Codec::Mp3)
    } else {
        None
    };
    if let Some(codec) = compressed {
        return Ok(match declared_seconds(bytes, codec) {
            Some(seconds) => AudioInfo { codec, seconds, measure: Measure::Declared },
            None => AudioInfo { codec, seconds: 0.0, measure: Measure::Unknown },
        });
    }
    let lower = filename.to_ascii_lowercase();
    if lower.ends_with(".pcm") || lower.ends_with(".raw") || lower.ends_with(".s16le") {
        return Ok(AudioInfo { codec: Codec::Pcm16, seconds: pcm16_seconds(bytes.len()), measure: Measure::Exact });
    }
    Err(Refusal::new(
        RefusalCode::UnsupportedCodec,
        "unrecognised audio format: send WAV, FLAC, MP3, MP4/M4A, Ogg or WebM, or raw 16 kHz mono PCM16 with a .pcm file name",
    ))
}

/// The length a compressed container declares, read by `infergate_audio` (the decoder's own demuxers) without
/// decoding audio. `None` when the container does not say (a stream without a length header) or cannot be read.
fn declared_seconds(bytes: &[u8], codec: Codec) -> Option<f64> {
    // The hint only breaks ties: the bytes' magic already chose the codec.
    let filename = match codec {
        Codec::Flac => "upload.flac",
        Codec::Mp3 => "upload.mp3",
        Codec::Ogg => "upload.ogg",
        Codec::Webm => "upload.webm",
        Codec::Mp4 => "upload.mp4",
        Codec::Pcm16 | Codec::Wav => return None,
    };
    infergate_audio::declared_seconds(bytes, infergate_audio::Hint { filename: Some(filename), content_type: None })
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
        Codec::Mp4 => "mp4",
    }
}

/// The parts of a RIFF/WAVE file the agent reads: the `fmt ` fields and the `data` chunk.
pub struct Wav<'a> {
    pub format_tag: u16,
    pub channels: u16,
    pub sample_rate: u32,
    pub byte_rate: u32,
    pub block_align: u16,
    pub bits_per_sample: u16,
    pub data: &'a [u8],
}

/// Walks the RIFF chunks once. The error is the bare problem ("truncated fmt chunk"); each caller says what to do.
pub fn parse_wav(bytes: &[u8]) -> Result<Wav<'_>, &'static str> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("missing RIFF/WAVE header");
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let mut pos = 12;
    let mut fmt: Option<usize> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_at(pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            if size < 16 || body + 16 > bytes.len() {
                return Err("truncated fmt chunk");
            }
            fmt = Some(body);
        } else if id == b"data" {
            let f = fmt.ok_or("data chunk before fmt chunk")?;
            // Streaming writers put 0 or 0xFFFFFFFF here; then the data runs to the end of the file.
            let available = bytes.len() - body;
            let len = if size == 0 || size > available { available } else { size };
            return Ok(Wav {
                format_tag: u16_at(f),
                channels: u16_at(f + 2),
                sample_rate: u32_at(f + 4),
                byte_rate: u32_at(f + 8),
                block_align: u16_at(f + 12),
                bits_per_sample: u16_at(f + 14),
                data: &bytes[body..body + len],
            });
        }
        pos = body.saturating_add(size).saturating_add(size & 1);
    }
    Err("no data chunk")
}

/// WAVE format tags whose frames are fixed-size samples: integer PCM, IEEE float, and the extensible wrapper.
const UNCOMPRESSED_FORMATS: [u16; 3] = [1, 3, 0xFFFE];

/// Duration from a RIFF/WAVE header, measured, not declared: for uncompressed audio the `data` chunk size over
/// sample rate x channels x bytes per sample. A header whose `byteRate` or `blockAlign` disagrees with that is
/// refused, since a forged byte rate would otherwise bill 2 s of audio as 2 ms. Compressed WAVE payloads (ADPCM,
/// ...) fall back to the declared byte rate.
pub fn wav_seconds(bytes: &[u8]) -> Result<f64, Refusal> {
    let bad = |what: &str| Refusal::bad_request(format!("invalid WAV file: {what}; re-encode it as 16-bit PCM WAV"));
    let wav = parse_wav(bytes).map_err(bad)?;
    if !UNCOMPRESSED_FORMATS.contains(&wav.format_tag) {
        // IMA ADPCM (tag 0x11) says its length in blocks; some encoders (ffmpeg) leave its byteRate at zero.
        if wav.format_tag == 0x11 && wav.byte_rate == 0 && wav.channels > 0 && wav.sample_rate > 0 {
            let header = 4 * usize::from(wav.channels);
            let block = usize::from(wav.block_align);
            if block > header {
                let per_block = (block - header) * 2 / usize::from(wav.channels) + 1;
                let blocks = wav.data.len().div_ceil(block);
                return Ok((blocks * per_block) as f64 / f64::from(wav.sample_rate));
            }
        }
        if wav.byte_rate == 0 {
            return Err(bad("byte rate is zero"));
        }
        return Ok(wav.data.len() as f64 / f64::from(wav.byte_rate));
    }
    if wav.channels == 0 || wav.sample_rate == 0 || wav.bits_per_sample == 0 {
        return Err(bad("the fmt chunk declares zero channels, sample rate or bits per sample"));
    }
    let frame = u32::from(wav.channels) * u32::from(wav.bits_per_sample).div_ceil(8);
    if u32::from(wav.block_align) != frame {
        return Err(bad(&format!(
            "blockAlign is {} but {} channel(s) of {}-bit samples make {frame}-byte frames",
            wav.block_align, wav.channels, wav.bits_per_sample
        )));
    }
    let expected_rate = u64::from(wav.sample_rate) * u64::from(frame);
    if u64::from(wav.byte_rate) != expected_rate {
        return Err(bad(&format!(
            "byteRate is {} but sampleRate {} x blockAlign {frame} is {expected_rate}",
            wav.byte_rate, wav.sample_rate
        )));
    }
    Ok(wav.data.len() as f64 / expected_rate as f64)
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
        assert_eq!(
            inspect(&wav, "a.wav").unwrap(),
            AudioInfo { codec: Codec::Wav, seconds: 2.0, measure: Measure::Exact }
        );
        assert_eq!(inspect(&[0u8; 16_000], "a.pcm").unwrap().seconds, 0.5);
        assert_eq!(inspect(b"OggS....", "a.ogg").unwrap().codec, Codec::Ogg);
        assert_eq!(inspect(b"hello", "a.txt").unwrap_err().code, RefusalCode::UnsupportedCodec);
        assert_eq!(inspect(b"RIFF\0\0\0\0WAVX", "a.wav").unwrap_err().code, RefusalCode::BadRequest);
        assert_eq!(
            check_codec(&inspect(b"fLaC", "x").unwrap(), &[Codec::Wav]).unwrap_err().code,
            RefusalCode::UnsupportedCodec
        );
    }

    #[test]
    fn a_wav_header_that_disagrees_with_its_format_is_refused() {
        let forged = |offset: usize, value: &[u8]| {
            let mut wav = wav_header(64_000).to_vec();
            wav.extend(vec![0u8; 64_000]);
            wav[offset..offset + value.len()].copy_from_slice(value);
            wav_seconds(&wav).unwrap_err()
        };
        let byte_rate = forged(28, &(32_000u32 * 1000).to_le_bytes());
        assert_eq!(byte_rate.code, RefusalCode::BadRequest);
        assert!(byte_rate.message.contains("byteRate is 32000000 but sampleRate 16000 x blockAlign 2 is 32000"));
        let block_align = forged(32, &200u16.to_le_bytes());
        assert!(
            block_align.message.contains("blockAlign is 200 but 1 channel(s) of 16-bit samples make 2-byte frames")
        );
        assert!(forged(22, &0u16.to_le_bytes()).message.contains("zero channels"));
    }

    /// A FLAC stream whose STREAMINFO declares `seconds` of 16 kHz mono 16-bit audio and holds no frames.
    fn flac_declaring(seconds: f64) -> Vec<u8> {
        let total = (seconds * 16_000.0) as u64;
        let packed: u64 = (16_000u64 << 44) | (15 << 36) | total;
        let mut info = vec![0x10, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0];
        info.extend_from_slice(&packed.to_be_bytes());
        info.extend_from_slice(&[0; 16]);
        let mut flac = b"fLaC".to_vec();
        flac.extend_from_slice(&[0x00, 0x00, 0x00, 34]);
        flac.extend_from_slice(&info);
        flac.extend_from_slice(&[0x81, 0x00, 0x04, 0x00]);
        flac.extend_from_slice(&[0; 1024]);
        flac
    }

    #[test]
    fn a_compressed_upload_is_sized_by_what_its_container_declares() {
        let info = inspect(&flac_declaring(20.0), "a.flac").unwrap();
        assert_eq!(info, AudioInfo { codec: Codec::Flac, seconds: 20.0, measure: Measure::Declared });
        // An Ogg page that says nothing about its length: the caller must assume the endpoint's maximum.
        let info = inspect(b"OggS\0\x02garbage", "a.ogg").unwrap();
        assert_eq!(info, AudioInfo { codec: Codec::Ogg, seconds: 0.0, measure: Measure::Unknown });
    }
}
