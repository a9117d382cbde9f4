//! Typed errors with stable category labels (metrics and logs use the label, never the input).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error("Whisper weights not found at {path}: {source}")]
    WeightsMissing { path: PathBuf, source: std::io::Error },
    #[error("Whisper weights at {path} are not usable: {reason}")]
    WeightsCorrupt { path: PathBuf, reason: String },
    /// The request's audio or options cannot be transcribed; the message says what to change.
    #[error("{0}")]
    BadInput(String),
    /// The GPU path failed (driver, out of memory, kernel); the CPU path never returns this.
    #[error("CUDA: {0}")]
    Cuda(String),
}

impl WhisperError {
    pub fn category(&self) -> &'static str {
        match self {
            WhisperError::WeightsMissing { .. } => "weights_missing",
            WhisperError::WeightsCorrupt { .. } => "weights_corrupt",
            WhisperError::BadInput(_) => "bad_input",
            WhisperError::Cuda(_) => "cuda",
        }
    }

    pub fn is_bad_input(&self) -> bool {
        matches!(self, WhisperError::BadInput(_))
    }
}
