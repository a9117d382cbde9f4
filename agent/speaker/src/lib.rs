//! infergate's built-in speaker encoder, compatible with Resemblyzer 0.1.4's `VoiceEncoder`.
//!
//! ```text
//! pcm 16 kHz ─▶ frontend::prepare (checks, -30 dBFS gain, partial layout)
//!            ─▶ EmbeddingBackend::embed_prepared ─┬─ CpuEncoder  (reference, plain Rust)
//!                                                 └─ CudaEncoder (cuBLAS + NVRTC, batched windows)
//!            ─▶ 256-d unit embedding + measured compute time (what the limiter settles)
//! ```
//!
//! Weights come from `pretrained.pt` in the `resemblyzer==0.1.4` wheel, fetched and hash-checked by
//! tests/tools/install-speaker-weights.sh and checked again by [`EncoderWeights::load`]. Nothing biometric is
//! stored: embeddings are returned to the caller and dropped.
#![deny(rust_2018_idioms)]
// `deny` rather than `forbid` so two places can opt in, each `unsafe` with a SAFETY note: the CUDA wrapper module,
// and linalg's call into its FMA-compiled kernel (target features picked at run time need an `unsafe` call).
#![deny(unsafe_code)]

pub mod batcher;
mod cpu;
#[allow(unsafe_code)]
mod cuda;
mod error;
pub mod frontend;
mod linalg;
mod pickle;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod weights;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use batcher::{BatchConfig, Batcher};
pub use cpu::CpuEncoder;
pub use cuda::{CudaEncoder, cuda_available, guarded as cuda_guarded, nvrtc_arch};
pub use error::ModelError;
pub use frontend::{Limits, Prepared};
pub use weights::{EncoderWeights, PRETRAINED_SHA256};

/// Input sample rate the model was trained on.
pub const SAMPLE_RATE: usize = 16_000;
/// STFT size: 25 ms at 16 kHz.
pub const N_FFT: usize = 400;
/// STFT hop: 10 ms at 16 kHz.
pub const HOP: usize = 160;
pub const MEL_BANDS: usize = 40;
pub const HIDDEN: usize = 256;
pub const NUM_LAYERS: usize = 3;
pub const EMBEDDING_DIM: usize = 256;
/// Frames per partial window (1.6 s).
pub const PARTIAL_FRAMES: usize = 160;

/// A unit-length speaker embedding.
pub type Embedding = [f32; EMBEDDING_DIM];

/// Result of one batch: one embedding per utterance, the per-window embeddings behind it, and the compute time
/// the backend measured (wall time on CPU, CUDA events on GPU).
#[derive(Debug, Clone)]
pub struct BatchEmbeddings {
    pub embeddings: Vec<Embedding>,
    pub partial_embeddings: Vec<Vec<Embedding>>,
    pub compute: Duration,
}

/// One utterance's embedding and the compute time it cost.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub embedding: Embedding,
    pub compute: Duration,
}

/// A way to compute embeddings. Every implementation runs the same test body (tests/backends.rs).
pub trait EmbeddingBackend: Send + Sync {
    /// Short, stable name for logs and metric labels.
    fn name(&self) -> &'static str;

    /// Embeds checked, normalised utterances as one batch.
    fn embed_prepared(&self, batch: &[Prepared]) -> Result<BatchEmbeddings, ModelError>;

    /// Checks and embeds several 16 kHz utterances in one batch.
    fn embed_batch(&self, utterances: &[&[f32]], limits: &Limits) -> Result<BatchEmbeddings, ModelError> {
        if utterances.is_empty() {
            return Err(ModelError::EmptyBatch);
        }
        let prepared = utterances.iter().map(|u| frontend::prepare(u, limits)).collect::<Result<Vec<_>, _>>()?;
        self.embed_prepared(&prepared)
    }

    /// Checks and embeds one 16 kHz utterance.
    fn embed(&self, pcm16k: &[f32], limits: &Limits) -> Result<Embedded, ModelError> {
        let mut out = self.embed_batch(&[pcm16k], limits)?;
        Ok(Embedded { embedding: out.embeddings.remove(0), compute: out.compute })
    }
}

/// Cosine similarity; embeddings are unit length, but this does not rely on it.
pub fn cosine(a: &Embedding, b: &Embedding) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += f64::from(x) * f64::from(y);
        na += f64::from(x) * f64::from(x);
        nb += f64::from(y) * f64::from(y);
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { (dot / (na.sqrt() * nb.sqrt())) as f32 }
}

/// The encoder the agent uses: a backend plus request limits.
pub struct SpeakerEncoder {
    backend: Box<dyn EmbeddingBackend>,
    limits: Limits,
    cuda_fallback_reason: Option<String>,
}

impl std::fmt::Debug for SpeakerEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeakerEncoder").field("backend", &self.backend.name()).field("limits", &self.limits).finish()
    }
}

impl SpeakerEncoder {
    /// Loads the verified weights and uses the CPU reference backend.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let weights = Arc::new(EncoderWeights::load(path.as_ref())?);
        Ok(Self::with_backend(Box::new(CpuEncoder::new(weights))))
    }

    /// Loads the weights and uses the GPU when CUDA works on this node; otherwise the CPU, remembering why
    /// (see [`SpeakerEncoder::cuda_fallback_reason`]) so the caller can say it once at start-up.
    pub fn load_prefer_cuda(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let weights = Arc::new(EncoderWeights::load(path.as_ref())?);
        match CudaEncoder::new(weights.clone(), 0) {
            Ok(cuda) => Ok(Self::with_backend(Box::new(cuda))),
            Err(err) => {
                let mut encoder = Self::with_backend(Box::new(CpuEncoder::new(weights)));
                encoder.cuda_fallback_reason = Some(err.to_string());
                Ok(encoder)
            }
        }
    }

    pub fn with_backend(backend: Box<dyn EmbeddingBackend>) -> Self {
        Self { backend, limits: Limits::default(), cuda_fallback_reason: None }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Why [`SpeakerEncoder::load_prefer_cuda`] runs on the CPU, if it does.
    pub fn cuda_fallback_reason(&self) -> Option<&str> {
        self.cuda_fallback_reason.as_deref()
    }

    /// Embeds 16 kHz mono PCM (floats in [-1, 1]).
    pub fn embed(&self, pcm16k: &[f32]) -> Result<Embedded, ModelError> {
        self.backend.embed(pcm16k, &self.limits)
    }

    /// Embeds PCM after checking that it is at 16 kHz (the model has no resampler).
    pub fn embed_at(&self, samples: &[f32], sample_rate: u32) -> Result<Embedded, ModelError> {
        if sample_rate as usize != SAMPLE_RATE {
            return Err(ModelError::BadSampleRate { got: sample_rate });
        }
        self.embed(samples)
    }

    /// Embeds several utterances in one backend call (one GPU batch).
    pub fn embed_batch(&self, utterances: &[&[f32]]) -> Result<BatchEmbeddings, ModelError> {
        self.backend.embed_batch(utterances, &self.limits)
    }
}
