//! CPU reference backend: mel front end, 3-layer LSTM and head in plain Rust.
//!
//! All partial windows of a batch run through the LSTM together, layer by layer (as cuDNN does):
//!
//! ```text
//! mel [T][B][40] ─▶ G = X W_ihᵀ + b   (one GEMM over all T·B rows)
//!                   for t: G[t] += H[t-1] W_hhᵀ  (B rows) ; cell(G[t]) ─▶ H[t]
//!               ─▶ next layer's X = H ─▶ … ─▶ head(H[T-1])
//! ```
//!
//! Weights are stored transposed (`[K][N]`) so the GEMM's inner loop is a plain loop over output columns that
//! updates four rows from four weight rows at a time; that keeps the code portable (no intrinsics, no `unsafe`)
//! while the compiler vectorises it.

use std::sync::Arc;
use std::time::Instant;

use crate::error::ModelError;
use crate::frontend::{MelFrontend, Prepared};
use crate::linalg::{Init, TransposedMatrix, gemm_bt};
use crate::weights::EncoderWeights;
use crate::{
    BatchEmbeddings, EMBEDDING_DIM, Embedding, EmbeddingBackend, HIDDEN, MEL_BANDS, PARTIAL_FRAMES,
};

/// Partials per LSTM pass; bounds the gate buffer (CHUNK x 160 x 1024 floats = 15.7 MB).
const CHUNK_PARTIALS: usize = 24;
const GATES: usize = 4 * HIDDEN;

#[derive(Debug, Clone)]
struct PackedLayer {
    input_size: usize,
    w_ih: TransposedMatrix,
    w_hh: TransposedMatrix,
    /// `b_ih + b_hh`, added once in the input projection.
    bias: Vec<f32>,
}

/// The CPU reference implementation of [`EmbeddingBackend`].
#[derive(Debug, Clone)]
pub struct CpuEncoder {
    layers: Vec<PackedLayer>,
    linear_weight: Vec<f32>,
    linear_bias: Vec<f32>,
    frontend: MelFrontend,
}

impl CpuEncoder {
    pub fn new(weights: Arc<EncoderWeights>) -> Self {
        let layers = weights
            .lstm
            .iter()
            .map(|l| PackedLayer {
                input_size: l.input_size,
                w_ih: TransposedMatrix::new(&l.w_ih, GATES, l.input_size),
                w_hh: TransposedMatrix::new(&l.w_hh, GATES, HIDDEN),
                bias: l.b_ih.iter().zip(&l.b_hh).map(|(a, b)| a + b).collect(),
            })
            .collect();
        Self {
            layers,
            linear_weight: weights.linear_weight.clone(),
            linear_bias: weights.linear_bias.clone(),
            frontend: MelFrontend::new(),
        }
    }

    /// Mel frames `[frames][40]` of one prepared utterance (exposed for the golden tests).
    pub fn mel_frames(&self, utterance: &Prepared) -> Vec<f32> {
        self.frontend
            .mel_frames(&utterance.samples, utterance.frames_needed())
    }

    /// L2-normalised partial embeddings for windows given as `[T][B][40]` time-major mel input.
    fn run_partials(&self, mel_tb: &[f32], b: usize) -> Vec<Embedding> {
        let t_len = PARTIAL_FRAMES;
        let mut x = mel_tb.to_vec();
        let mut gates = vec![0.0f32; t_len * b * GATES];
        let mut cell = vec![0.0f32; b * HIDDEN];
        for layer in &self.layers {
            debug_assert_eq!(x.len(), t_len * b * layer.input_size);
            gemm_bt(
                &x,
                t_len * b,
                &layer.w_ih,
                &mut gates,
                Init::Bias(&layer.bias),
            );
            let mut h_seq = vec![0.0f32; t_len * b * HIDDEN];
            cell.fill(0.0);
            for t in 0..t_len {
                let g = &mut gates[t * b * GATES..(t + 1) * b * GATES];
                let (done, rest) = h_seq.split_at_mut(t * b * HIDDEN);
                if t > 0 {
                    gemm_bt(
                        &done[(t - 1) * b * HIDDEN..],
                        b,
                        &layer.w_hh,
                        g,
                        Init::Accumulate,
                    );
                }
                lstm_cell(g, &mut cell, &mut rest[..b * HIDDEN]);
            }
            x = h_seq;
        }
        let last = &x[(t_len - 1) * b * HIDDEN..];
        last.chunks_exact(HIDDEN).map(|h| self.head(h)).collect()
    }

    /// Linear + ReLU + L2 normalisation of one final hidden state.
    fn head(&self, h: &[f32]) -> Embedding {
        let mut e = [0.0f32; EMBEDDING_DIM];
        for (j, out) in e.iter_mut().enumerate() {
            let row = &self.linear_weight[j * HIDDEN..(j + 1) * HIDDEN];
            *out = (dot_f32(row, h) + self.linear_bias[j]).max(0.0);
        }
        normalize(&mut e);
        e
    }
}

impl EmbeddingBackend for CpuEncoder {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn embed_prepared(&self, batch: &[Prepared]) -> Result<BatchEmbeddings, ModelError> {
        if batch.is_empty() {
            return Err(ModelError::EmptyBatch);
        }
        let started = Instant::now();
        // (utterance, start frame) for every window, and each utterance's mel frames.
        let mels: Vec<Vec<f32>> = batch.iter().map(|u| self.mel_frames(u)).collect();
        let windows: Vec<(usize, usize)> = batch
            .iter()
            .enumerate()
            .flat_map(|(u, p)| p.partial_starts.iter().map(move |&s| (u, s)))
            .collect();
        let mut partial_embeddings = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(CHUNK_PARTIALS) {
            let b = chunk.len();
            let mut mel_tb = vec![0.0f32; PARTIAL_FRAMES * b * MEL_BANDS];
            for (bi, &(u, start)) in chunk.iter().enumerate() {
                for t in 0..PARTIAL_FRAMES {
                    let src = &mels[u][(start + t) * MEL_BANDS..(start + t + 1) * MEL_BANDS];
                    mel_tb[(t * b + bi) * MEL_BANDS..(t * b + bi + 1) * MEL_BANDS]
                        .copy_from_slice(src);
                }
            }
            partial_embeddings.extend(self.run_partials(&mel_tb, b));
        }
        let mut partials = Vec::with_capacity(batch.len());
        let mut rest = partial_embeddings.as_slice();
        for p in batch {
            let (mine, tail) = rest.split_at(p.partial_starts.len());
            partials.push(mine.to_vec());
            rest = tail;
        }
        let embeddings = partials.iter().map(|p| average_embedding(p)).collect();
        Ok(BatchEmbeddings {
            embeddings,
            partial_embeddings: partials,
            compute: started.elapsed(),
        })
    }
}

/// PyTorch's LSTM cell over `b` rows of gate pre-activations `[i | f | g | o]`; updates `c`, writes `h`.
fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    for ((g, c), h) in gates
        .chunks_exact(GATES)
        .zip(c.chunks_exact_mut(HIDDEN))
        .zip(h.chunks_exact_mut(HIDDEN))
    {
        let (gi, rest) = g.split_at(HIDDEN);
        let (gf, rest) = rest.split_at(HIDDEN);
        let (gg, go) = rest.split_at(HIDDEN);
        for j in 0..HIDDEN {
            let i = sigmoid(gi[j]);
            let f = sigmoid(gf[j]);
            let o = sigmoid(go[j]);
            c[j] = f * c[j] + i * tanh(gg[j]);
            h[j] = o * tanh(c[j]);
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `tanh` through one `expf`: several times faster than libm's `tanhf`, absolute error ~1e-7.
fn tanh(x: f32) -> f32 {
    // Clamp so exp cannot overflow; tanh(±15) is ±1 in f32 anyway.
    let e = (2.0 * x.clamp(-15.0, 15.0)).exp();
    1.0 - 2.0 / (e + 1.0)
}

/// Dot product with eight accumulators (vectorisable without reassociation).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scales to unit L2 norm; an all-zero vector (every ReLU output zero) stays zero instead of turning NaN.
pub(crate) fn normalize(e: &mut [f32]) {
    let norm = e
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for v in e.iter_mut() {
            *v = (f64::from(*v) / norm) as f32;
        }
    }
}

/// Resemblyzer's utterance embedding: the mean of the partial embeddings, re-normalised.
pub(crate) fn average_embedding(partials: &[Embedding]) -> Embedding {
    let mut mean = [0.0f32; EMBEDDING_DIM];
    for (d, slot) in mean.iter_mut().enumerate() {
        let sum: f64 = partials.iter().map(|p| f64::from(p[d])).sum();
        *slot = (sum / partials.len().max(1) as f64) as f32;
    }
    normalize(&mut mean);
    mean
}
