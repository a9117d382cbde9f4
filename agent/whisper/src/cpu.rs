//! The CPU reference backend: plain Rust over sgemm, f32 throughout.
use std::sync::Arc;

use crate::error::WhisperError;
use crate::linalg::{Mat, gelu, matmul_bt, sgemm, softmax};
use crate::model::{AlignPass, Decoder, Dims, WhisperBackend, WhisperWeights};

pub struct CpuWhisper {
    weights: Arc<WhisperWeights>,
}

impl CpuWhisper {
    pub fn new(weights: Arc<WhisperWeights>) -> Self {
        Self { weights }
    }
}

impl WhisperBackend for CpuWhisper {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn dims(&self) -> Dims {
        self.weights.dims
    }

    fn encode(&self, mel: &[f32]) -> Result<Box<dyn Decoder + '_>, WhisperError> {
        let encoded = encode(&self.weights, mel)?;
        Ok(Box::new(CpuDecoder::new(&self.weights, &encoded)))
    }
}

/// Same-padded 1-D convolution (kernel 3) over time-major input `x` `[t_in][c_in]`, as im2col + one GEMM.
fn conv3(x: &[f32], t_in: usize, c_in: usize, w: &[f32], b: &[f32], c_out: usize, stride: usize) -> Vec<f32> {
    let t_out = t_in.div_ceil(stride);
    // Column layout (c, k) matches the weight's `[c_out][c_in][3]` flattening.
    let mut cols = vec![0.0f32; t_out * c_in * 3];
    for t in 0..t_out {
        let row = &mut cols[t * c_in * 3..(t + 1) * c_in * 3];
        for k in 0..3 {
            let src = (t * stride + k) as isize - 1;
            if src < 0 || src as usize >= t_in {
                continue;
            }
            let src = &x[src as usize * c_in..(src as usize + 1) * c_in];
            for c in 0..c_in {
                row[c * 3 + k] = src[c];
            }
        }
    }
    let mut out = vec![0.0; t_out * c_out];
    matmul_bt(&cols, t_out, c_in * 3, w, c_out, Some(b), &mut out);
    out
}

/// Rows of a projection output: `rows` rows, `width` columns starting at column `col`, row stride `stride`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    rows: usize,
    stride: usize,
    col: usize,
}

/// Query rows per block of attention scores: 64 rows of the encoder's 1500 keys are 384 KB, which stay in L2
/// through the product, the softmax and the product with V. The whole 1500 x 1500 matrix (9 MB per head) went
/// to memory and back three times.
const QUERY_BLOCK: usize = 64;

/// Multi-head attention of `q` over `k`, `v` (each `d` wide), into `out` `[tq][d]`.
/// `causal_offset`: query `i` sees keys `0..=offset + i` (decoder self-attention); `None` sees all.
/// `keep(head, first_row, scores)` sees each block of a head's scaled scores before the softmax, heads in order
/// and each head's blocks in row order.
fn attention(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    d: usize,
    heads: usize,
    causal_offset: Option<usize>,
    out: &mut [f32],
    mut keep: impl FnMut(usize, usize, &[f32]),
) {
    let (tq, tk) = (q.rows, k.rows);
    let hd = d / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut block = vec![0.0f32; tq.min(QUERY_BLOCK) * tk];
    for h in 0..heads {
        let off = h * hd;
        // Kᵀ of this head: `hd` rows (stride 1 along the key vector), `tk` columns (stride: a key row).
        let kt = Mat { data: &k.data[k.col + off..], rows: hd, cols: tk, rs: 1, cs: k.stride };
        let vh = Mat { data: &v.data[v.col + off..], rows: tk, cols: hd, rs: v.stride, cs: 1 };
        for first in (0..tq).step_by(QUERY_BLOCK) {
            let rows = (tq - first).min(QUERY_BLOCK);
            let scores = &mut block[..rows * tk];
            let qh = Mat { data: &q.data[first * q.stride + q.col + off..], rows, cols: hd, rs: q.stride, cs: 1 };
            sgemm(scale, &qh, &kt, false, scores, tk);
            keep(h, first, scores);
            for (i, row) in scores.chunks_exact_mut(tk).enumerate() {
                if let Some(offset) = causal_offset {
                    row[offset + first + i + 1..].fill(f32::NEG_INFINITY);
                }
                softmax(row);
            }
            let p = Mat { data: scores, rows, cols: tk, rs: tk, cs: 1 };
            sgemm(1.0, &p, &vh, false, &mut out[first * d + off..], d);
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// Encoder output `[n_audio_ctx][d]` for one window of `[n_mels][2 × n_audio_ctx]` log-mel.
pub(crate) fn encode(w: &WhisperWeights, mel: &[f32]) -> Result<Vec<f32>, WhisperError> {
    let Dims { n_mels, n_audio_ctx, d_model: d, n_heads, .. } = w.dims;
    let frames = 2 * n_audio_ctx;
    if mel.len() != n_mels * frames {
        return Err(WhisperError::BadInput(format!(
            "a window holds {n_mels} x {frames} mel values, got {}",
            mel.len()
        )));
    }
    // [n_mels][frames] -> time-major [frames][n_mels].
    let mut x = vec![0.0f32; frames * n_mels];
    for m in 0..n_mels {
        for t in 0..frames {
            x[t * n_mels + m] = mel[m * frames + t];
        }
    }
    let mut h = conv3(&x, frames, n_mels, &w.conv1_w, &w.conv1_b, d, 1);
    gelu(&mut h);
    let mut x = conv3(&h, frames, d, &w.conv2_w, &w.conv2_b, d, 2);
    gelu(&mut x);
    add(&mut x, &w.encoder_positions);
    let t = n_audio_ctx;
    let mut attn = vec![0.0f32; t * d];
    for layer in &w.encoder {
        let qkv = layer.qkv.forward(&layer.attn_ln.forward(&x), t);
        let part = |col| Rows { data: &qkv, rows: t, stride: 3 * d, col };
        attention(part(0), part(d), part(2 * d), d, n_heads, None, &mut attn, |_, _, _| {});
        add(&mut x, &layer.attn_out.forward(&attn, t));
        let mut f = layer.fc1.forward(&layer.ffn_ln.forward(&x), t);
        gelu(&mut f);
        add(&mut x, &layer.fc2.forward(&f, t));
    }
    Ok(w.encoder_ln.forward(&x))
}

/// Per layer: the cross-attention keys and values over the window (`[n_audio_ctx][2d]`: K | V).
struct CrossKv {
    kv: Vec<f32>,
}

pub(crate) struct CpuDecoder<'w> {
    w: &'w WhisperWeights,
    cross: Vec<CrossKv>,
    /// Per layer: self-attention K | V of every fed token, `[tokens][2d]`.
    cache: Vec<Vec<f32>>,
    fed: usize,
}

impl<'w> CpuDecoder<'w> {
    fn new(w: &'w WhisperWeights, encoded: &[f32]) -> Self {
        let t = w.dims.n_audio_ctx;
        let cross = w.decoder.iter().map(|l| CrossKv { kv: l.cross_kv.forward(encoded, t) }).collect();
        Self { w, cross, cache: vec![Vec::new(); w.decoder.len()], fed: 0 }
    }

    /// Runs `tokens` at positions `fed..`, appending to `cache`; returns the final hidden states `[n][d]`.
    /// `keep(layer, head, first_row, scores [rows][frames])` sees each cross-attention head's scaled scores before
    /// the softmax, a block of rows at a time in row order.
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut [Vec<f32>],
        fed: usize,
        mut keep: impl FnMut(usize, usize, usize, &[f32]),
    ) -> Result<Vec<f32>, WhisperError> {
        let Dims { d_model: d, n_heads, n_audio_ctx, .. } = self.w.dims;
        self.w.dims.check_tokens(tokens, fed)?;
        let n = tokens.len();
        let mut x = vec![0.0f32; n * d];
        for (i, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            let row = &mut x[i * d..(i + 1) * d];
            row.copy_from_slice(&self.w.token_embedding[tok * d..(tok + 1) * d]);
            add(row, &self.w.decoder_positions[(fed + i) * d..(fed + i + 1) * d]);
        }
        let mut attn = vec![0.0f32; n * d];
        for (li, layer) in self.w.decoder.iter().enumerate() {
            // Self-attention over the cache plus the new tokens.
            let qkv = layer.self_qkv.forward(&layer.self_ln.forward(&x), n);
            let kv = &mut cache[li];
            for row in qkv.chunks_exact(3 * d) {
                kv.extend_from_slice(&row[d..3 * d]);
            }
            let total = fed + n;
            let q = Rows { data: &qkv, rows: n, stride: 3 * d, col: 0 };
            let cached = |col| Rows { data: &kv[..], rows: total, stride: 2 * d, col };
            attention(q, cached(0), cached(d), d, n_heads, Some(fed), &mut attn, |_, _, _| {});
            add(&mut x, &layer.self_out.forward(&attn, n));
            // Cross-attention over the window.
            let q = layer.cross_q.forward(&layer.cross_ln.forward(&x), n);
            let q = Rows { data: &q, rows: n, stride: d, col: 0 };
            let cross = |col| Rows { data: &self.cross[li].kv[..], rows: n_audio_ctx, stride: 2 * d, col };
            attention(q, cross(0), cross(d), d, n_heads, None, &mut attn, |h, first, weights| {
                keep(li, h, first, weights)
            });
            add(&mut x, &layer.cross_out.forward(&attn, n));
            let mut f = layer.fc1.forward(&layer.ffn_ln.forward(&x), n);
            gelu(&mut f);
            add(&mut x, &layer.fc2.forward(&f, n));
        }
        Ok(self.w.decoder_ln.forward(&x))
    }

    fn logits(&self, hidden: &[f32]) -> Vec<f32> {
        let Dims { d_model: d, n_vocab, .. } = self.w.dims;
        let emb = &self.w.token_embedding;
        let mut out = vec![0.0; n_vocab];
        matmul_bt(hidden, 1, d, emb, n_vocab, None, &mut out);
        out
    }
}

impl Decoder for CpuDecoder<'_> {
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, WhisperError> {
        if tokens.is_empty() {
            return Err(WhisperError::BadInput("a decoder step needs at least one token".into()));
        }
        let mut cache = std::mem::take(&mut self.cache);
        let result = self.forward(tokens, &mut cache, self.fed, |_, _, _, _| {});
        self.cache = cache;
        let hidden = result?;
        self.fed += tokens.len();
        let d = self.w.dims.d_model;
        Ok(self.logits(&hidden[(tokens.len() - 1) * d..]))
    }

    fn reset(&mut self) {
        self.cache.iter_mut().for_each(Vec::clear);
        self.fed = 0;
    }

    fn align(
        &mut self,
        tokens: &[u32],
        heads: &[(usize, usize)],
        n_frames: usize,
        text_vocab: usize,
    ) -> Result<AlignPass, WhisperError> {
        let Dims { d_model: d, n_audio_ctx, .. } = self.w.dims;
        let n_frames = n_frames.min(n_audio_ctx);
        let mut scores = vec![Vec::new(); heads.len()];
        let mut scratch = vec![Vec::new(); self.w.decoder.len()];
        let hidden = self.forward(tokens, &mut scratch, 0, |layer, head, _first, raw| {
            // Blocks arrive in row order, so appending rebuilds each head's [tokens][n_frames].
            if let Some(i) = heads.iter().position(|&(l, h)| l == layer && h == head) {
                scores[i].extend(raw.chunks_exact(n_audio_ctx).flat_map(|row| row[..n_frames].iter().copied()));
            }
        })?;
        let emb = &self.w.token_embedding;
        // Every position's text-vocabulary logits as one GEMM ([n][d] x [d][text_vocab]), not n row-dot passes
        // over the 77 MB embedding: the alignment pass covers a whole window's tokens at once.
        let rows = tokens.len().saturating_sub(1);
        let mut logits = vec![0.0f32; rows * text_vocab];
        matmul_bt(&hidden, rows, d, emb, text_vocab, None, &mut logits);
        let next_prob = logits
            .chunks_exact_mut(text_vocab.max(1))
            .zip(&tokens[1..])
            .map(|(row, &next)| {
                softmax(row);
                row.get(next as usize).copied().unwrap_or(0.0)
            })
            .collect();
        Ok(AlignPass { scores, next_prob })
    }
}
