//! Uploaded audio to what the built-in models read: 16 kHz mono f32 in [-1, 1].
//!
//! ```text
//!  upload bytes + Hint (file name, Content-Type)
//!    ├─ raw .pcm/.raw/.s16le (no container magic) ─▶ s16le 16 kHz mono, converted directly
//!    └─ anything else ─▶ demux: symphonia probe ─▶ track ─▶ packets ─┬─ symphonia codecs (PCM, ADPCM, FLAC,
//!                                                                   │   MP3, AAC, Vorbis)
//!                                                                   └─ Opus: pure-Rust opus-pure, 48 kHz
//!                                  ─▶ sink: average channels ─▶ length cap ─▶ resample to 16 kHz
//! ```
//! The formats are OpenAI's upload list (wav, flac, mp3, mp4/m4a, ogg, webm) plus raw PCM for streams. The
//! length cap is enforced as packets decode, so a small file that expands to hours is refused after at most
//! `max_seconds` of 16 kHz samples, never after allocating the whole of it. Errors carry names and numbers,
//! never audio bytes.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod declared;
mod demux;
mod error;
mod opus;
mod resample;
mod sink;

pub use declared::declared_seconds;

pub use error::{AudioError, DECODABLE_FORMATS};

/// The rate every model input is converted to.
pub const TARGET_RATE: u32 = 16_000;

/// Raw uploads are this: 16 kHz, mono, signed 16-bit little-endian (the streaming endpoints' wire format).
const RAW_EXTENSIONS: [&str; 4] = ["pcm", "raw", "s16le", "s16"];
const RAW_CONTENT_TYPES: [&str; 2] = ["audio/pcm", "audio/x-pcm"];

/// What the client said about the upload. Only a tie-breaker: magic bytes decide wherever the format has them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hint<'a> {
    /// The multipart file name, e.g. `speech.m4a`.
    pub filename: Option<&'a str>,
    /// The part's `Content-Type`, e.g. `audio/webm;codecs=opus`.
    pub content_type: Option<&'a str>,
}

impl Hint<'_> {
    /// Lower-case extension of the file name, if it has one.
    fn extension(&self) -> Option<String> {
        let name = self.filename?;
        let (_, extension) = name.rsplit_once('.')?;
        (!extension.is_empty()).then(|| extension.to_ascii_lowercase())
    }

    fn says_raw_pcm(&self) -> bool {
        let by_name = self.extension().is_some_and(|e| RAW_EXTENSIONS.contains(&e.as_str()));
        let by_type = self.content_type.is_some_and(|t| {
            let essence = t.split(';').next().unwrap_or("").trim();
            RAW_CONTENT_TYPES.iter().any(|raw| essence.eq_ignore_ascii_case(raw))
        });
        by_name || by_type
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest audio accepted; longer is [`AudioError::TooLong`], found while decoding. Also bounds memory:
    /// at most `max_seconds * 16 000` samples are ever held.
    pub max_seconds: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// 16 kHz mono, each in [-1, 1].
    pub samples: Vec<f32>,
    /// The stream's own rate before conversion (48 000 for all Opus).
    pub source_rate: u32,
    pub channels: u16,
    /// Short codec name: `pcm_s16le`, `flac`, `mp3`, `aac`, `vorbis`, `opus`, `adpcm_ima_wav`, ...
    pub codec: &'static str,
    /// Length of the decoded audio.
    pub duration_seconds: f64,
}

/// Decodes an upload to 16 kHz mono. See the module docs for the formats and [`AudioError`] for the refusals.
pub fn decode(bytes: &[u8], hint: Hint<'_>, limits: Limits) -> Result<Decoded, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    if hint.says_raw_pcm() && !has_container_magic(bytes) {
        return decode_raw_pcm(bytes, limits);
    }
    // symphonia has had `expect`s on malformed input (0.5's Matroska reader panicked on a file cut inside its
    // header): a damaged upload is the client's 400, never a crashed request. Everything the closure touches is
    // its own, so nothing half-updated survives the unwind. Needs panic=unwind, the workspace default.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| demux::decode_container(bytes, &hint, &limits)))
        .unwrap_or_else(|_| Err(AudioError::corrupt("the demuxer failed on malformed data")))
}

/// Magic numbers of the containers that also arrive named `.pcm` by mistake; MP3 frame sync is left out since
/// raw samples can start with it by chance.
fn has_container_magic(bytes: &[u8]) -> bool {
    const MAGICS: [&[u8]; 5] = [b"RIFF", b"fLaC", b"OggS", b"ID3", &[0x1A, 0x45, 0xDF, 0xA3]];
    MAGICS.iter().any(|magic| bytes.starts_with(magic)) || bytes.get(4..8) == Some(b"ftyp")
}

fn decode_raw_pcm(bytes: &[u8], limits: Limits) -> Result<Decoded, AudioError> {
    if bytes.len() % 2 != 0 {
        return Err(AudioError::corrupt(format!(
            "raw PCM is 16-bit samples but the upload is {} bytes, an odd number",
            bytes.len()
        )));
    }
    let seconds = (bytes.len() / 2) as f64 / f64::from(TARGET_RATE);
    if seconds > limits.max_seconds {
        return Err(AudioError::TooLong { seconds, max: limits.max_seconds });
    }
    let samples =
        bytes.chunks_exact(2).map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0).collect();
    Ok(Decoded { samples, source_rate: TARGET_RATE, channels: 1, codec: "pcm_s16le", duration_seconds: seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_seconds: 60.0 }
    }

    #[test]
    fn raw_pcm_by_extension_is_read_directly() {
        let bytes = [0x00, 0x40, 0x00, 0xC0];
        let hint = Hint { filename: Some("chunk.PCM"), content_type: None };
        let decoded = decode(&bytes, hint, limits()).unwrap();
        assert_eq!(decoded.samples, vec![0.5, -0.5]);
        assert_eq!((decoded.codec, decoded.source_rate, decoded.channels), ("pcm_s16le", 16_000, 1));
    }

    #[test]
    fn raw_pcm_by_content_type_with_parameters() {
        let hint = Hint { filename: None, content_type: Some("Audio/PCM; rate=16000") };
        assert_eq!(decode(&[0, 0], hint, limits()).unwrap().samples, vec![0.0]);
    }

    #[test]
    fn an_odd_byte_count_is_corrupt_raw_pcm() {
        let hint = Hint { filename: Some("a.raw"), content_type: None };
        assert_eq!(decode(&[0, 0, 0], hint, limits()).unwrap_err().category(), "corrupt");
    }

    #[test]
    fn raw_pcm_over_the_cap_is_too_long() {
        let hint = Hint { filename: Some("a.pcm"), content_type: None };
        let error = decode(&vec![0; 64_002], hint, Limits { max_seconds: 2.0 }).unwrap_err();
        assert!(matches!(error, AudioError::TooLong { max: 2.0, .. }), "{error:?}");
    }

    #[test]
    fn empty_bytes_are_empty() {
        assert!(matches!(decode(&[], Hint::default(), limits()), Err(AudioError::Empty)));
    }

    #[test]
    fn a_container_named_pcm_is_still_demuxed() {
        assert!(has_container_magic(b"RIFF\0\0\0\0WAVE"));
        assert!(has_container_magic(b"\0\0\0\x20ftypM4A "));
        assert!(!has_container_magic(&[0xFF, 0xFB, 0x90, 0x00]));
    }

    #[test]
    fn extension_is_lower_cased_and_optional() {
        let hint = |name| Hint { filename: Some(name), content_type: None };
        assert_eq!(hint("a.Tar.WEBM").extension().as_deref(), Some("webm"));
        assert_eq!(hint("noext").extension(), None);
        assert_eq!(hint("trailing.").extension(), None);
    }
}
