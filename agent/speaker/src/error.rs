//! The one error type of the speaker encoder. `category()` is the stable label for metrics and logs; the
//! `Display` text says what to fix and never contains audio or embedding values.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("audio is {seconds:.2} s long; the speaker encoder needs at least {min_seconds:.2} s of 16 kHz speech")]
    TooShort { seconds: f32, min_seconds: f32 },
    #[error("audio is {seconds:.1} s long; the limit is {max_seconds:.1} s per request, split it into shorter parts")]
    TooLong { seconds: f32, max_seconds: f32 },
    #[error("audio is sampled at {got} Hz; resample it to 16000 Hz mono before embedding")]
    BadSampleRate { got: u32 },
    #[error("audio sample {index} is not a finite number; send PCM as finite floats in [-1, 1]")]
    NonFiniteSample { index: usize },
    #[error("audio is digital silence (all samples zero); nothing to embed")]
    Silent,
    #[error("the batch is empty; pass at least one utterance")]
    EmptyBatch,
    #[error("speaker-encoder weights not found at {path}: run tests/tools/install-speaker-weights.sh")]
    WeightsMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("speaker-encoder weights at {path} are not the Resemblyzer 0.1.4 pretrained.pt: {reason}")]
    WeightsCorrupt { path: PathBuf, reason: String },
    #[error("CUDA path unavailable: {0}")]
    CudaUnavailable(String),
    #[error("CUDA call failed during {stage}: {message}")]
    Cuda { stage: &'static str, message: String },
}

impl ModelError {
    /// Stable, bounded label for metrics (`infergate_speaker_errors_total{category=...}`).
    pub fn category(&self) -> &'static str {
        match self {
            ModelError::TooShort { .. } => "too_short",
            ModelError::TooLong { .. } => "too_long",
            ModelError::BadSampleRate { .. } => "bad_sample_rate",
            ModelError::NonFiniteSample { .. } => "non_finite_sample",
            ModelError::Silent => "silent",
            ModelError::EmptyBatch => "empty_batch",
            ModelError::WeightsMissing { .. } => "weights_missing",
            ModelError::WeightsCorrupt { .. } => "weights_corrupt",
            ModelError::CudaUnavailable(_) => "cuda_unavailable",
            ModelError::Cuda { .. } => "cuda_error",
        }
    }

    /// The same error for each member of a failed batch (errors hold an `io::Error`, so they are not `Clone`).
    pub fn for_batch_member(&self) -> ModelError {
        match self {
            ModelError::CudaUnavailable(msg) => ModelError::CudaUnavailable(msg.clone()),
            ModelError::Cuda { stage, message } => ModelError::Cuda { stage, message: message.clone() },
            ModelError::EmptyBatch => ModelError::EmptyBatch,
            other => ModelError::Cuda { stage: "batch", message: other.to_string() },
        }
    }

    /// True for errors caused by the caller's audio (the edge maps these to 400), false for server-side ones.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ModelError::TooShort { .. }
                | ModelError::TooLong { .. }
                | ModelError::BadSampleRate { .. }
                | ModelError::NonFiniteSample { .. }
                | ModelError::Silent
                | ModelError::EmptyBatch
        )
    }
}
