//! Why an upload could not be turned into samples, with the HTTP status each reason maps to.
//!
//! Messages name the problem and the fix; none carries a byte of the upload (only container and codec names,
//! lengths and limits).

/// The formats [`crate::decode`] turns into samples, as a user would name them. Every `Unsupported` message
/// lists them, so a refused client knows what to send instead.
pub const DECODABLE_FORMATS: &str = "wav (PCM, float or IMA ADPCM), flac, mp3, mp4/m4a (AAC), ogg (Vorbis, Opus or \
     FLAC), webm/mkv (Opus or Vorbis), or raw 16 kHz mono 16-bit little-endian .pcm";

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The container or codec is not one this crate decodes.
    #[error("cannot decode this audio: {what}; send {DECODABLE_FORMATS}")]
    Unsupported { what: String },
    /// The file claims a format it decodes but its data is broken.
    #[error("the audio file is damaged and could not be decoded ({what}); re-export or re-record it")]
    Corrupt { what: String },
    /// `seconds` is how far decoding got (or the length the container declares) when the cap was crossed: a
    /// lower bound on the real length, since decoding stops there.
    #[error(
        "the audio is longer than the {max:.0} s this endpoint accepts (at least {seconds:.1} s); split it \
             into shorter files"
    )]
    TooLong { seconds: f64, max: f64 },
    #[error("the audio file has no samples; send a recording with sound in it")]
    Empty,
}

impl AudioError {
    /// Fixed label for metrics and logs: never the message, whose `what` varies.
    pub fn category(&self) -> &'static str {
        match self {
            AudioError::Unsupported { .. } => "unsupported",
            AudioError::Corrupt { .. } => "corrupt",
            AudioError::TooLong { .. } => "too_long",
            AudioError::Empty => "empty",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            // The media type is the problem, not the request: a different file would be accepted.
            AudioError::Unsupported { .. } => 415,
            // The format is accepted but these bytes are not valid in it.
            AudioError::Corrupt { .. } => 400,
            // Payload Too Large: the limit is on content length (seconds), the closest status to it.
            AudioError::TooLong { .. } => 413,
            // A valid request shape with nothing in it to transcribe.
            AudioError::Empty => 400,
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> Self {
        AudioError::Unsupported { what: what.into() }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        AudioError::Corrupt { what: what.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_names_the_formats_that_decode() {
        let message = AudioError::unsupported("codec ALAC").to_string();
        assert_eq!(
            message,
            "cannot decode this audio: codec ALAC; send wav (PCM, float or IMA ADPCM), flac, mp3, mp4/m4a (AAC), \
             ogg (Vorbis, Opus or FLAC), webm/mkv (Opus or Vorbis), or raw 16 kHz mono 16-bit little-endian .pcm"
        );
    }

    #[test]
    fn statuses_and_labels() {
        let cases = [
            (AudioError::unsupported("x"), 415, "unsupported"),
            (AudioError::corrupt("x"), 400, "corrupt"),
            (AudioError::TooLong { seconds: 31.0, max: 30.0 }, 413, "too_long"),
            (AudioError::Empty, 400, "empty"),
        ];
        for (error, status, label) in cases {
            assert_eq!((error.http_status(), error.category()), (status, label), "{error}");
        }
    }

    #[test]
    fn too_long_says_the_limit_and_the_fix() {
        let message = AudioError::TooLong { seconds: 31.25, max: 30.0 }.to_string();
        assert_eq!(
            message,
            "the audio is longer than the 30 s this endpoint accepts (at least 31.2 s); split it into shorter files"
        );
    }
}
