//! Silero VAD v6 voice activity detection on the CPU, in plain Rust.
//!
//! Weights come from `silero_vad/data/silero_vad.onnx` in the PyPI wheel `silero-vad==6.2.3` (MIT), fetched and
//! hash-checked by `tests/tools/install-vad-weights.sh`; the wheel's safetensors file holds older v5 weights,
//! so the ONNX file is the source. A small protobuf reader (`src/onnx.rs`) pulls the tensors out of the graph; there
//! is no ONNX runtime. Only the 16 kHz branch of the graph is implemented; other rates are refused with
//! [`VadError::BadSampleRate`].
//!
//! ```text
//!  pcm (16 kHz mono f32)
//!   | split into 512-sample chunks (last one zero-padded)
//!   v
//!  VadSession::process_chunk --- carries LSTM (h, c) and the last 64 samples between chunks
//!   |   [64 context | 512] -> reflect pad -> STFT conv (258x256, hop 128) -> |X| (129 x 4)
//!   |   -> 4 x (conv k3 + ReLU; strides 1,2,2,1) -> 128 -> LSTM cell -> ReLU -> conv k1 -> sigmoid
//!   v
//!  one speech probability per 32 ms chunk
//!   | segments_from_probabilities (silero's get_speech_timestamps rules)
//!   v
//!  speech segments -> trim_silence: only the speech samples go on to the speaker encoder
//! ```
//!
//! `trim_silence` is the data-minimisation step before speaker embedding: silence carries no voice, and what is
//! not kept cannot leak. The module docs of `src/model.rs` give the per-layer shapes.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod error;
mod model;
mod onnx;
mod segments;
mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use error::VadError;
pub use model::{CHUNK_SAMPLES, CONTEXT_SAMPLES, VadSession};
pub use segments::{SegmentParams, SpeechSegment, segments_from_probabilities};

/// The only rate the implemented branch of the model runs at.
pub const SAMPLE_RATE: u32 = 16_000;

/// sha256 of `silero_vad/data/silero_vad.onnx` in the silero-vad 6.2.3 wheel (from its RECORD). Also pinned in
/// `tests/tools/install-vad-weights.sh`.
pub const WEIGHTS_SHA256: &str = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3";

/// Where the weights are looked for when the caller has no explicit path: `$INFERGATE_VAD_WEIGHTS`, else
/// `$INFERGATE_CACHE/models/vad/silero_vad.onnx`, else `.cache/models/vad/silero_vad.onnx` under the working
/// directory (where the installer puts it).
pub fn default_weights_path() -> PathBuf {
    if let Some(p) = std::env::var_os("INFERGATE_VAD_WEIGHTS") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("INFERGATE_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("models").join("vad").join("silero_vad.onnx")
}

/// The loaded model: immutable weights behind an `Arc`, so clones and sessions are cheap and it can be shared
/// across threads. Each audio stream gets its own [`VadSession`].
#[derive(Clone)]
pub struct SileroVad {
    weights: Arc<weights::Weights>,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").field("sample_rate", &SAMPLE_RATE).finish_non_exhaustive()
    }
}

impl SileroVad {
    /// Loads `silero_vad.onnx` from disk and checks it is the pinned silero-vad 6.2.3 file ([`WEIGHTS_SHA256`]),
    /// the one the golden tests cover: another export with the same layout (the wheel's `silero_vad_half.onnx`
    /// holds different weights) would load and silently give other probabilities.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, VadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                VadError::WeightsMissing { path: path.to_path_buf() }
            } else {
                VadError::WeightsUnreadable { path: path.to_path_buf(), source }
            }
        })?;
        let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        if sha256 != WEIGHTS_SHA256 {
            return Err(VadError::WeightsMismatch { path: path.to_path_buf(), sha256 });
        }
        Self::from_onnx_bytes(&bytes)
    }

    /// Loads the model from the bytes of an ONNX file without the hash check: any Silero VAD export whose 16 kHz
    /// graph has the v6 layout is accepted (shapes, strides and paddings are checked).
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<Self, VadError> {
        Ok(SileroVad { weights: Arc::new(weights::from_onnx(bytes)?) })
    }

    /// A fresh streaming session (zero state) for audio at `sample_rate`, which must be 16000.
    pub fn session(&self, sample_rate: u32) -> Result<VadSession, VadError> {
        check_rate(sample_rate)?;
        Ok(VadSession::new(Arc::clone(&self.weights)))
    }

    /// One speech probability per 512-sample chunk of `pcm`, the last chunk zero-padded, as silero's
    /// `get_speech_timestamps` computes them (state carried from the first chunk to the last).
    pub fn probabilities(&self, pcm: &[f32], sample_rate: u32) -> Result<Vec<f32>, VadError> {
        let mut session = self.session(sample_rate)?;
        if let Some(index) = pcm.iter().position(|s| !s.is_finite()) {
            return Err(VadError::NonFiniteAudio { index });
        }
        let mut out = Vec::with_capacity(pcm.len().div_ceil(CHUNK_SAMPLES));
        let mut last = [0.0f32; CHUNK_SAMPLES];
        for chunk in pcm.chunks(CHUNK_SAMPLES) {
            let chunk = if chunk.len() == CHUNK_SAMPLES {
                chunk
            } else {
                last[..chunk.len()].copy_from_slice(chunk);
                &last[..]
            };
            out.push(session.process_chunk(chunk)?);
        }
        Ok(out)
    }

    /// Speech segments of `pcm` (silero's `get_speech_timestamps`, sample units, 16 kHz).
    pub fn speech_segments(
        &self,
        pcm: &[f32],
        sample_rate: u32,
        params: &SegmentParams,
    ) -> Result<Vec<SpeechSegment>, VadError> {
        params.validate()?;
        let probs = self.probabilities(pcm, sample_rate)?;
        segments_from_probabilities(&probs, pcm.len(), params)
    }

    /// The speech in `pcm` with the silence between and around it removed (default [`SegmentParams`], so each
    /// kept piece has 30 ms of padding). Empty when no speech is found.
    pub fn trim_silence(&self, pcm: &[f32], sample_rate: u32) -> Result<Vec<f32>, VadError> {
        let segments = self.speech_segments(pcm, sample_rate, &SegmentParams::default())?;
        Ok(keep_segments(pcm, &segments))
    }
}

/// Concatenates `pcm[s.start..s.end]` for each segment.
pub fn keep_segments(pcm: &[f32], segments: &[SpeechSegment]) -> Vec<f32> {
    let total = segments.iter().map(|s| s.end.saturating_sub(s.start)).sum();
    let mut out = Vec::with_capacity(total);
    for s in segments {
        out.extend_from_slice(&pcm[s.start.min(pcm.len())..s.end.min(pcm.len())]);
    }
    out
}

fn check_rate(sample_rate: u32) -> Result<(), VadError> {
    if sample_rate == SAMPLE_RATE { Ok(()) } else { Err(VadError::BadSampleRate { got: sample_rate }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_weights_say_how_to_install_them() {
        let err = SileroVad::load("/nonexistent/silero_vad.onnx").unwrap_err();
        assert_eq!(err.category(), "weights_missing");
        assert!(err.to_string().contains("install-vad-weights.sh"));
    }

    #[test]
    fn a_file_other_than_the_pinned_one_is_refused_by_load() {
        let path = std::env::temp_dir().join(format!("infergate-vad-test-{}.onnx", std::process::id()));
        std::fs::write(&path, b"not the model").unwrap();
        let err = SileroVad::load(&path).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert_eq!(err.category(), "weights_mismatch");
        assert!(err.to_string().contains("install-vad-weights.sh"));
    }

    #[test]
    fn garbage_weights_are_corrupt_not_a_panic() {
        let err = SileroVad::from_onnx_bytes(b"\x3a\x05abc").unwrap_err();
        assert_eq!(err.category(), "weights_corrupt");
        let err = SileroVad::from_onnx_bytes(b"").unwrap_err();
        assert_eq!(err.category(), "weights_corrupt");
    }

    #[test]
    fn keep_segments_concatenates_in_order() {
        let pcm: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let kept = keep_segments(&pcm, &[SpeechSegment { start: 1, end: 3 }, SpeechSegment { start: 7, end: 9 }]);
        assert_eq!(kept, vec![1.0, 2.0, 7.0, 8.0]);
    }
}
