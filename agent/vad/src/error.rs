//! Typed errors with stable labels. `category()` is what metrics and logs carry; the `Display` text is what a
//! user or operator reads, and says what to fix. Neither ever contains audio samples.

use std::path::PathBuf;

/// Everything that can go wrong loading the model or running it.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error(
        "sample rate {got} Hz is not supported: the built-in Silero VAD runs at 16000 Hz only; resample the audio to 16 kHz mono"
    )]
    BadSampleRate { got: u32 },

    #[error("a VAD chunk must hold exactly {expected} samples (32 ms at 16 kHz), got {got}")]
    BadChunkLength { expected: usize, got: usize },

    #[error("audio sample {index} is not a finite number (NaN or infinity); send PCM as finite floats in [-1, 1]")]
    NonFiniteAudio { index: usize },

    #[error("invalid segment parameters: {reason}")]
    BadParams { reason: &'static str },

    #[error(
        "VAD weights not found at {path}; run tests/tools/install-vad-weights.sh (fetches silero-vad==6.2.3 from PyPI)"
    )]
    WeightsMissing { path: PathBuf },

    #[error("VAD weights at {path} could not be read")]
    WeightsUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "VAD weights at {path} have sha256 {sha256}, not the pinned silero-vad 6.2.3 silero_vad.onnx; \
         rerun tests/tools/install-vad-weights.sh"
    )]
    WeightsMismatch { path: PathBuf, sha256: String },

    #[error(
        "VAD weights are not a valid ONNX protobuf ({reason}); delete the file and rerun tests/tools/install-vad-weights.sh"
    )]
    WeightsCorrupt { reason: String },

    #[error("the ONNX graph is not the Silero VAD v6 16 kHz model this crate implements: {reason}")]
    UnsupportedGraph { reason: String },
}

impl VadError {
    /// Fixed, bounded label for metrics (`infergate_*{error="..."}`) and structured logs.
    pub fn category(&self) -> &'static str {
        match self {
            VadError::BadSampleRate { .. } => "bad_sample_rate",
            VadError::BadChunkLength { .. } => "bad_chunk_length",
            VadError::NonFiniteAudio { .. } => "non_finite_audio",
            VadError::BadParams { .. } => "bad_params",
            VadError::WeightsMissing { .. } => "weights_missing",
            VadError::WeightsUnreadable { .. } => "weights_unreadable",
            VadError::WeightsMismatch { .. } => "weights_mismatch",
            VadError::WeightsCorrupt { .. } => "weights_corrupt",
            VadError::UnsupportedGraph { .. } => "unsupported_graph",
        }
    }

    /// True for errors caused by the caller's input (map to HTTP 400 / `InvalidArgument`); the rest are the
    /// node's fault (500 / `Internal` or `FailedPrecondition` when weights are absent).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            VadError::BadSampleRate { .. }
                | VadError::BadChunkLength { .. }
                | VadError::NonFiniteAudio { .. }
                | VadError::BadParams { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_stable_and_messages_say_what_to_do() {
        let e = VadError::BadSampleRate { got: 8000 };
        assert_eq!(e.category(), "bad_sample_rate");
        assert!(e.to_string().contains("resample"));
        assert!(e.is_client_error());

        let e = VadError::WeightsMissing { path: "/x/silero_vad.onnx".into() };
        assert_eq!(e.category(), "weights_missing");
        assert!(e.to_string().contains("install-vad-weights.sh"));
        assert!(!e.is_client_error());

        assert_eq!(VadError::WeightsMismatch { path: "x".into(), sha256: "y".into() }.category(), "weights_mismatch");
        assert_eq!(VadError::WeightsCorrupt { reason: "x".into() }.category(), "weights_corrupt");
        assert_eq!(VadError::UnsupportedGraph { reason: "x".into() }.category(), "unsupported_graph");
        assert_eq!(VadError::NonFiniteAudio { index: 3 }.category(), "non_finite_audio");
        assert_eq!(VadError::BadChunkLength { expected: 512, got: 3 }.category(), "bad_chunk_length");
        assert_eq!(VadError::BadParams { reason: "x" }.category(), "bad_params");
    }
}
