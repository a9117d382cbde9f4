//! CPU reference backend: mel front end, 3-layer LSTM and head in plain Rust.
//!
//! All partial windows of a batch run through the LSTM together, layer by layer (as cuDNN does):
//!
//! ```text
//! mel [T][B][40] ─▶ G = X W_ihᵀ + b   (one GEMM over all T·B rows)
//!                   for t: G[t] += H[t-1] W_hhᵀ  (B rows, linalg::recurrent_accumulate) ; cell(G[t]) ─▶ H[t]
//!               ─▶ next layer's X = H ─▶ … ─▶ head(H[T-1])
//! ```
//!
//! Every other product, including the head over all partials, is one `linalg::gemm_bt` call (matrixmultiply's
//! sgemm with run-time AVX/FMA dispatch). The recurrent step has its own kernel over weights packed once: sgemm
//! repacked `W_hh` (1 MB) on each of the 480 steps of a window.

use std::sync::Arc;
use std::time::Instant;

use crate::error::ModelError;
use crate::frontend::{MelFrontend, Prepared};
use crate::linalg::{Init, RecurrentMatrix, TransposedMatrix, gemm_bt, recurrent_accumulate};
use crate::weights::EncoderWeights;
use crate::{BatchEmbeddings, EMBEDDING_DIM, Embedding, EmbeddingBackend, HIDDEN, MEL_BANDS, PARTIAL_FRAMES};

/// Partials per LSTM pass; bounds the gate buffer (CHUNK x 160 x 1024 floats = 15.7 MB).
const CHUNK_PARTIALS: usize = 24;
const GATES: usize = 4 * HIDDEN;

#[derive(Debug, Clone)]
struct PackedLayer {
    input_size: usize,
    w_ih: TransposedMatrix,
    /// Packed once for the per-time-step kernel (see [`recurrent_accumulate`]).
    w_hh: RecurrentMatrix,
    /// `b_ih + b_hh`, added once in the input projection.
    bias: Vec<f32>,
}

/// The CPU reference implementation of [`EmbeddingBackend`].
#[derive(Debug, Clone)]
pub struct CpuEncoder {
    layers: Vec<PackedLayer>,
    linear_weight: TransposedMatrix,
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
                w_hh: RecurrentMatrix::new(&l.w_hh, GATES, HIDDEN),
                bias: l.b_ih.iter().zip(&l.b_hh).map(|(a, b)| a + b).collect(),
            })
            .collect();
        Self {
            layers,
            linear_weight: TransposedMatrix::new(&weights.linear_weight, EMBEDDING_DIM, HIDDEN),
            linear_bias: weights.linear_bias.clone(),
            frontend: MelFrontend::new(),
        }
    }

    /// Mel frames `[frames][40]` of one prepared utterance (exposed for the golden tests).
    pub fn mel_frames(&self, utterance: &Prepared) -> Vec<f32> {
        self.frontend.mel_frames(&utterance.samples, utterance.frames_needed())
    }

    /// L2-normalised partial embeddings for windows given as `[T][B][40]` time-major mel input.
    fn run_partials(&self, mel_tb: &[f32], b: usize) -> Vec<Embedding> {
        let t_len = PARTIAL_FRAMES;
        let mut x = mel_tb.to_vec();
        let mut gates = vec![0.0f32; t_len * b * GATES];
        let mut cell = vec![0.0f32; b * HIDDEN];
        for layer in &self.layers {
            debug_assert_eq!(x.len(), t_len * b * layer.input_size);
            gemm_bt(&x, t_len * b, &layer.w_ih, &mut gates, Init::Bias(&layer.bias));
            let mut h_seq = vec![0.0f32; t_len * b * HIDDEN];
            cell.fill(0.0);
            for t in 0..t_len {
                let g = &mut gates[t * b * GATES..(t + 1) * b * GATES];
                let (done, rest) = h_seq.split_at_mut(t * b * HIDDEN);
                if t > 0 {
                    recurrent_accumulate(&done[(t - 1) * b * HIDDEN..], b, &layer.w_hh, g);
                }
                lstm_cell(g, &mut cell, &mut rest[..b * HIDDEN]);
            }
            x = h_seq;
        }
        let last = &x[(t_len - 1) * b * HIDDEN..];
        self.head(last, b)
    }

    /// Linear + ReLU + L2 normalisation of the `b` final hidden states `[b][HIDDEN]`, as one GEMM.
    fn head(&self, last: &[f32], b: usize) -> Vec<Embedding> {
        let mut out = vec![0.0f32; b * EMBEDDING_DIM];
        gemm_bt(last, b, &self.linear_weight, &mut out, Init::Bias(&self.linear_bias));
        out.chunks_exact(EMBEDDING_DIM)
            .map(|row| {
                let mut e = [0.0f32; EMBEDDING_DIM];
                for (slot, &v) in e.iter_mut().zip(row) {
                    *slot = v.max(0.0);
                }
                normalize(&mut e);
                e
            })
            .collect()
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
        let windows: Vec<(usize, usize)> =
            batch.iter().enumerate().flat_map(|(u, p)| p.partial_starts.iter().map(move |&s| (u, s))).collect();
        let mut partial_embeddings = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(CHUNK_PARTIALS) {
            let b = chunk.len();
            let mut mel_tb = vec![0.0f32; PARTIAL_FRAMES * b * MEL_BANDS];
            for (bi, &(u, start)) in chunk.iter().enumerate() {
                for t in 0..PARTIAL_FRAMES {
                    let src = &mels[u][(start + t) * MEL_BANDS..(start + t + 1) * MEL_BANDS];
                    mel_tb[(t * b + bi) * MEL_BANDS..(t * b + bi + 1) * MEL_BANDS].copy_from_slice(src);
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
        Ok(BatchEmbeddings { embeddings, partial_embeddings: partials, compute: started.elapsed() })
    }
}

/// PyTorch's LSTM cell over `b` rows of gate pre-activations `[i | f | g | o]`; updates `c`, writes `h`.
fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    for ((g, c), h) in gates.chunks_exact(GATES).zip(c.chunks_exact_mut(HIDDEN)).zip(h.chunks_exact_mut(HIDDEN)) {
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
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh` through one exponential: several times faster than libm's `tanhf`, absolute error ~1e-7.
fn tanh(x: f32) -> f32 {
    // Clamp so exp cannot overflow; tanh(±15) is ±1 in f32 anyway.
    let e = exp_f32(2.0 * x.clamp(-15.0, 15.0));
    1.0 - 2.0 / (e + 1.0)
}

/// `e^x` in plain f32 arithmetic (Cephes `expf`: range reduction by ln 2, degree-6 polynomial, exponent by bit
/// arithmetic), relative error ~2e-7. Unlike a call into libm this inlines, so the cell loop vectorises; the
/// cell's exponentials were the largest cost once the GEMMs got fast. Inputs are clamped to the range where the
/// result is a normal f32 (`e^±88`), far beyond where sigmoid and tanh saturate.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer (no SSE4.1 `round` needed) and leaves it in the low
    // mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    let exponent = (shifted.to_bits() as i32 - ROUNDER.to_bits() as i32 + 127) as u32;
    y * f32::from_bits(exponent << 23)
}

/// Scales to unit L2 norm; an all-zero vector (every ReLU output zero) stays zero instead of turning NaN.
pub(crate) fn normalize(e: &mut [f32]) {
    let norm = e.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_activations_match_f64() {
        let mut worst = (0.0f64, 0.0f64, 0.0f64);
        for i in -200_000..=200_000 {
            let x = i as f32 * 4.4e-4; // -88 ..= 88
            if x.abs() <= 87.0 {
                // exp_f32 clamps below -87.
                let exact = f64::from(x).exp();
                let rel = (f64::from(exp_f32(x)) - exact).abs() / exact;
                worst.0 = worst.0.max(rel);
            }
            let sig = 1.0 / (1.0 + (-f64::from(x)).exp());
            worst.1 = worst.1.max((f64::from(sigmoid(x)) - sig).abs());
            worst.2 = worst.2.max((f64::from(tanh(x)) - f64::from(x).tanh()).abs());
        }
        assert!(worst.0 < 5e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 2e-7, "sigmoid absolute error {}", worst.1);
        assert!(worst.2 < 5e-7, "tanh absolute error {}", worst.2);
    }
}
