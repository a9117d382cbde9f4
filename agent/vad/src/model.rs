//! The 16 kHz forward pass, one 512-sample chunk at a time, with the LSTM state and the 64-sample context
//! carried in a [`VadSession`]. Shapes per chunk (channels x frames):
//!
//! ```text
//! [64 context | 512 new] --reflect-pad right 64--> 640 samples
//!   STFT as conv1d (258 x 256 basis, hop 128)      -> 258 x 4   (129 real rows, 129 imaginary rows)
//!   magnitude sqrt(re^2 + im^2)                    -> 129 x 4
//!   conv k3 s1 + ReLU                              -> 128 x 4
//!   conv k3 s2 + ReLU                              ->  64 x 2
//!   conv k3 s2 + ReLU                              ->  64 x 1
//!   conv k3 s1 + ReLU                              -> 128 x 1
//!   LSTM cell (h, c carried across chunks)         -> h: 128
//!   ReLU, conv k1 (128 -> 1), sigmoid              -> speech probability
//! ```
//!
//! All buffers live in the session, so the per-chunk path allocates nothing. Dot products keep eight partial
//! sums so the compiler can vectorise them without `-ffast-math`-style reassociation.

use std::sync::Arc;

use crate::VadError;
use crate::weights::{ConvLayer, HIDDEN, HOP, KERNEL, N_BINS, N_FFT, Weights};

/// Samples per chunk at 16 kHz (32 ms). The ONNX model accepts exactly this many new samples per call.
pub const CHUNK_SAMPLES: usize = 512;
/// Samples of the previous chunk prepended to each new one.
pub const CONTEXT_SAMPLES: usize = 64;

const INPUT: usize = CONTEXT_SAMPLES + CHUNK_SAMPLES; // 576
/// The STFT module reflect-pads the right edge by n_fft / 4 samples.
const RIGHT_PAD: usize = 64;
const PADDED: usize = INPUT + RIGHT_PAD; // 640
const FRAMES: usize = (PADDED - N_FFT) / HOP + 1; // 4
const GATES: usize = 4 * HIDDEN;

/// Streaming state of one audio stream: LSTM `(h, c)`, the last 64 input samples and scratch buffers.
/// Cheap to create from a [`crate::SileroVad`]; one per stream, not shared between streams.
pub struct VadSession {
    weights: Arc<Weights>,
    h: [f32; HIDDEN],
    c: [f32; HIDDEN],
    context: [f32; CONTEXT_SAMPLES],
    scratch: Box<Scratch>,
}

// Hand-written so a debug print never shows the context samples (audio) or the state.
impl std::fmt::Debug for VadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VadSession").finish_non_exhaustive()
    }
}

struct Scratch {
    padded: [f32; PADDED],
    magnitude: Vec<f32>,
    act_a: Vec<f32>,
    act_b: Vec<f32>,
    columns: Vec<f32>,
    lstm_input: [f32; 2 * HIDDEN],
    gates: [f32; GATES],
}

impl VadSession {
    pub(crate) fn new(weights: Arc<Weights>) -> Self {
        let max_columns = weights.encoder.iter().map(|l| l.cin * KERNEL).max().unwrap_or(0) * FRAMES;
        VadSession {
            weights,
            h: [0.0; HIDDEN],
            c: [0.0; HIDDEN],
            context: [0.0; CONTEXT_SAMPLES],
            scratch: Box::new(Scratch {
                padded: [0.0; PADDED],
                magnitude: vec![0.0; N_BINS * FRAMES],
                act_a: Vec::with_capacity(128 * FRAMES),
                act_b: Vec::with_capacity(128 * FRAMES),
                columns: vec![0.0; max_columns],
                lstm_input: [0.0; 2 * HIDDEN],
                gates: [0.0; GATES],
            }),
        }
    }

    /// Forgets all history, as at the start of a new stream (silero's `reset_states`).
    pub fn reset(&mut self) {
        self.h = [0.0; HIDDEN];
        self.c = [0.0; HIDDEN];
        self.context = [0.0; CONTEXT_SAMPLES];
    }

    /// Speech probability of the next 512 samples (16 kHz, mono, floats in [-1, 1]).
    pub fn process_chunk(&mut self, chunk: &[f32]) -> Result<f32, VadError> {
        if chunk.len() != CHUNK_SAMPLES {
            return Err(VadError::BadChunkLength { expected: CHUNK_SAMPLES, got: chunk.len() });
        }
        if let Some(index) = chunk.iter().position(|s| !s.is_finite()) {
            return Err(VadError::NonFiniteAudio { index });
        }
        Ok(self.forward(chunk))
    }

    fn forward(&mut self, chunk: &[f32]) -> f32 {
        let w = &*self.weights;
        let s = &mut *self.scratch;

        s.padded[..CONTEXT_SAMPLES].copy_from_slice(&self.context);
        s.padded[CONTEXT_SAMPLES..INPUT].copy_from_slice(chunk);
        // Reflect padding mirrors around the last sample without repeating it: x[n + j] = x[n - 2 - j].
        for j in 0..RIGHT_PAD {
            s.padded[INPUT + j] = s.padded[INPUT - 2 - j];
        }
        self.context.copy_from_slice(&s.padded[INPUT - CONTEXT_SAMPLES..INPUT]);

        // Bins outer, frames inner: each 1 KB basis row is read from memory once and used for all four frames.
        for bin in 0..N_BINS {
            let re_row = &w.stft_basis[bin * N_FFT..(bin + 1) * N_FFT];
            let im_row = &w.stft_basis[(N_BINS + bin) * N_FFT..(N_BINS + bin + 1) * N_FFT];
            for frame in 0..FRAMES {
                let window = &s.padded[frame * HOP..frame * HOP + N_FFT];
                let (re, im) = (dot(re_row, window), dot(im_row, window));
                s.magnitude[bin * FRAMES + frame] = (re * re + im * im).sqrt();
            }
        }

        let [l0, l1, l2, l3] = &w.encoder;
        let t = conv_relu(l0, &s.magnitude, FRAMES, &mut s.act_a, &mut s.columns);
        let t = conv_relu(l1, &s.act_a, t, &mut s.act_b, &mut s.columns);
        let t = conv_relu(l2, &s.act_b, t, &mut s.act_a, &mut s.columns);
        let t = conv_relu(l3, &s.act_a, t, &mut s.act_b, &mut s.columns);
        debug_assert_eq!((t, s.act_b.len()), (1, HIDDEN), "the encoder reduces 4 frames to one 128-d vector");

        s.lstm_input[..HIDDEN].copy_from_slice(&s.act_b[..HIDDEN]);
        s.lstm_input[HIDDEN..].copy_from_slice(&self.h);
        for (g, gate) in s.gates.iter_mut().enumerate() {
            *gate = w.lstm_bias[g] + dot(&w.lstm_weight[g * 2 * HIDDEN..(g + 1) * 2 * HIDDEN], &s.lstm_input);
        }
        let (input_gate, rest) = s.gates.split_at(HIDDEN);
        let (forget_gate, rest) = rest.split_at(HIDDEN);
        let (cell_gate, output_gate) = rest.split_at(HIDDEN);
        for j in 0..HIDDEN {
            let c = sigmoid(forget_gate[j]) * self.c[j] + sigmoid(input_gate[j]) * cell_gate[j].tanh();
            self.c[j] = c;
            self.h[j] = sigmoid(output_gate[j]) * c.tanh();
        }

        let logit = w.head_bias + w.head_weight.iter().zip(&self.h).map(|(wj, hj)| wj * hj.max(0.0)).sum::<f32>();
        sigmoid(logit)
    }
}

/// `Conv1d(kernel 3, padding 1, stride s) + ReLU` over a `[cin][t_in]` input via im2col. Returns the output
/// frame count; `out` becomes `[cout][t_out]`. All (at most 4) im2col columns are built first so each weight
/// row is used for every frame while it is in cache.
fn conv_relu(layer: &ConvLayer, input: &[f32], t_in: usize, out: &mut Vec<f32>, columns: &mut [f32]) -> usize {
    const PAD: usize = 1;
    let t_out = (t_in + 2 * PAD - KERNEL) / layer.stride + 1;
    let width = layer.cin * KERNEL;
    let columns = &mut columns[..t_out * width];
    for (t, column) in columns.chunks_exact_mut(width).enumerate() {
        for (i, taps) in column.chunks_exact_mut(KERNEL).enumerate() {
            let row = &input[i * t_in..(i + 1) * t_in];
            for (k, tap) in taps.iter_mut().enumerate() {
                // Position in the unpadded input; the padded zeros sit at -1 and t_in.
                let pos = (t * layer.stride + k).checked_sub(PAD);
                *tap = pos.and_then(|p| row.get(p)).copied().unwrap_or(0.0);
            }
        }
    }
    out.clear();
    out.resize(layer.cout * t_out, 0.0);
    for (o, outputs) in out.chunks_exact_mut(t_out).enumerate() {
        let weights = &layer.weight[o * width..(o + 1) * width];
        for (value, column) in outputs.iter_mut().zip(columns.chunks_exact(width)) {
            *value = (layer.bias[o] + dot(weights, column)).max(0.0);
        }
    }
    t_out
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Dot product with eight independent partial sums, so it vectorises without reassociation flags (and rounds
/// more like BLAS than one long serial sum). 16 or 32 lanes measured no faster: the ~1 MB of weights streamed
/// per chunk, not add latency, is the limit.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..387).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..387).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4);
    }

    #[test]
    fn conv_pads_with_zeros_and_strides() {
        // One input channel [1, 2, 3, 4], kernel [1, 10, 100], stride 2 -> frames centred on 0 and 2.
        let layer = ConvLayer { cin: 1, cout: 1, stride: 2, weight: vec![1.0, 10.0, 100.0], bias: vec![0.5] };
        let mut out = Vec::new();
        let mut columns = vec![0.0; 2 * 3];
        let t = conv_relu(&layer, &[1.0, 2.0, 3.0, 4.0], 4, &mut out, &mut columns);
        assert_eq!(t, 2);
        assert_eq!(out, vec![0.0 + 10.0 + 200.0 + 0.5, 2.0 + 30.0 + 400.0 + 0.5]);
    }
}
