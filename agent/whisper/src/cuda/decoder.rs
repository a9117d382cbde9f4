//! The decoder over one encoded window: cached steps, the alignment pass and the tied-embedding logits.
use cudarc::driver::CudaSlice;

use super::gemm::Attention;
use super::ops::{Bufs, Epilogue, Exec, Ptr, ScratchKind};
use super::{CudaWhisper, guarded};
use crate::error::WhisperError;
use crate::model::{AlignPass, Decoder, Dims};

/// Rows of logits per GEMM in the alignment pass's next-token probabilities (bounds its extra memory to
/// `2 · ALIGN_ROWS · text_vocab` floats).
const ALIGN_ROWS: usize = 64;

/// A window's device state, per decoder layer.
pub(super) struct DecoderState {
    /// Cross-attention K|V over the window, `[n_audio_ctx][2d]`.
    pub cross: Vec<CudaSlice<f32>>,
    /// Self-attention K|V of the fed tokens, `[n_text_ctx][2d]`; rows `0..fed` are valid.
    pub cache: Vec<CudaSlice<f32>>,
}

pub(super) struct CudaDecoder<'m> {
    model: &'m CudaWhisper,
    state: DecoderState,
    fed: usize,
}

impl<'m> CudaDecoder<'m> {
    pub(super) fn new(model: &'m CudaWhisper, state: DecoderState) -> Self {
        Self { model, state, fed: 0 }
    }

    /// The same refusals as the CPU decoder, before any GPU work.
    fn check(&self, tokens: &[u32], fed: usize) -> Result<(), WhisperError> {
        self.model.gpu.dims.check_tokens(tokens, fed)
    }
}

impl Drop for CudaDecoder<'_> {
    fn drop(&mut self) {
        // The buffers are freed on their stream through the current context; this thread may never have had it.
        let _ = guarded("binding the CUDA context", || self.model.gpu.ctx.bind_to_thread().map_err(|e| e.to_string()));
    }
}

/// Which decoder layer's cross-attention scores to look at, with the exec to download them.
type Keep<'k> = dyn FnMut(&Exec<'_>, usize, Ptr<f32>) -> Result<(), String> + 'k;

impl Exec<'_> {
    /// Runs `tokens` at positions `fed..`, writing their self-attention K|V into `cache` rows `fed..`; leaves the
    /// final hidden states (before the last layer norm) in `b.x` `[n][d]`.
    fn decoder_forward(
        &self,
        b: Bufs,
        tokens: &[u32],
        cache: &[Ptr<f32>],
        cross: &[Ptr<f32>],
        fed: usize,
        keep: &mut Keep<'_>,
    ) -> Result<(), String> {
        let Dims { d_model: d, n_audio_ctx, .. } = self.dims();
        let n = tokens.len();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        self.upload(&ids, b.tokens)?;
        self.embed(b.tokens, n, fed, b.x)?;
        for (li, layer) in self.gpu.weights.decoder.iter().enumerate() {
            // Self-attention over the cache plus the new tokens.
            self.layernorm_split(b.x, &layer.self_ln, n, b.split)?;
            self.linear(b.split, n, &layer.self_qkv, b.product, Epilogue::Write(b.act, 3 * d))?;
            let kv = cache[li];
            self.copy_rows(b.act.at(d)?, 3 * d, kv.at(fed * 2 * d)?, 2 * d, n, 2 * d)?;
            let attention = Attention {
                q: b.act,
                ldq: 3 * d,
                k: kv,
                ldk: 2 * d,
                v: kv.at(d)?,
                ldv: 2 * d,
                tq: n,
                tk: fed + n,
                causal_offset: Some(fed),
            };
            self.attention(&attention, b.scores, b.attn, |_| Ok(()))?;
            self.split_rows(b.attn, n, d, d, b.split)?;
            self.linear(b.split, n, &layer.self_out, b.product, Epilogue::Add(b.x, d))?;
            // Cross-attention over the window.
            self.layernorm_split(b.x, &layer.cross_ln, n, b.split)?;
            self.linear(b.split, n, &layer.cross_q, b.product, Epilogue::Write(b.act, d))?;
            let attention = Attention {
                q: b.act,
                ldq: d,
                k: cross[li],
                ldk: 2 * d,
                v: cross[li].at(d)?,
                ldv: 2 * d,
                tq: n,
                tk: n_audio_ctx,
                causal_offset: None,
            };
            self.attention(&attention, b.scores, b.attn, |scores| keep(self, li, scores))?;
            self.split_rows(b.attn, n, d, d, b.split)?;
            self.linear(b.split, n, &layer.cross_out, b.product, Epilogue::Add(b.x, d))?;
            self.layernorm_split(b.x, &layer.ffn_ln, n, b.split)?;
            self.linear(b.split, n, &layer.fc1, b.product, Epilogue::GeluSplit(b.split))?;
            self.linear(b.split, n, &layer.fc2, b.product, Epilogue::Add(b.x, d))?;
        }
        Ok(())
    }

    /// Logits `[n_vocab]` of hidden row `row` of `b.x`: final layer norm, then the tied embedding.
    fn logits(&self, b: Bufs, row: usize) -> Result<Vec<f32>, String> {
        let Dims { d_model: d, n_vocab, .. } = self.dims();
        let w = &self.gpu.weights;
        self.layernorm_split(b.x.at(row * d)?, &w.decoder_ln, 1, b.split)?;
        self.gemm_f16(self.ptr(&w.token_embedding), b.split, b.product, 2, n_vocab, d)?;
        self.combine(b.product, self.ptr(&w.zeros), 1, n_vocab, Epilogue::Write(b.input, n_vocab))?;
        self.download(b.input, n_vocab)
    }

    /// `probs[i]` = probability of `tokens[i + 1]` after row `i` of `b.x`, softmax over the first `text_vocab`
    /// logits (cpu.rs's `next_prob`), in chunks of [`ALIGN_ROWS`] rows.
    fn next_token_probs(&self, b: Bufs, tokens: &[u32], text_vocab: usize) -> Result<Vec<f32>, String> {
        let d = self.dims().d_model;
        let rows = tokens.len().saturating_sub(1);
        if rows == 0 || text_vocab == 0 {
            return Ok(vec![0.0; rows]);
        }
        let w = &self.gpu.weights;
        let targets: Vec<i32> = tokens[1..].iter().map(|&t| t as i32).collect();
        // The forward pass has read `b.tokens` already (same stream), so it can hold the targets.
        self.upload(&targets, b.tokens)?;
        let probs = self.alloc_f32(rows)?;
        let chunk = self.alloc_f32(2 * ALIGN_ROWS.min(rows) * text_vocab)?;
        let (probs_ptr, chunk_ptr) = (self.ptr(&probs), self.ptr(&chunk));
        let embedding = self.ptr(&w.token_embedding);
        for start in (0..rows).step_by(ALIGN_ROWS) {
            let r = ALIGN_ROWS.min(rows - start);
            self.layernorm_split(b.x.at(start * d)?, &w.decoder_ln, r, b.split)?;
            self.gemm_f16(embedding, b.split, chunk_ptr, 2 * r, text_vocab, d)?;
            self.softmax_pick(chunk_ptr, r, text_vocab, b.tokens.at(start)?, probs_ptr.at(start)?)?;
        }
        self.download(probs_ptr, rows)
    }
}

impl Decoder for CudaDecoder<'_> {
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, WhisperError> {
        if tokens.is_empty() {
            return Err(WhisperError::BadInput("a decoder step needs at least one token".into()));
        }
        self.check(tokens, self.fed)?;
        let (state, fed) = (&self.state, self.fed);
        let logits = self.model.on_lane("CUDA decoder step", |exec| {
            let b = exec.scratch(ScratchKind::Decode)?;
            let cache: Vec<Ptr<f32>> = state.cache.iter().map(|c| exec.ptr(c)).collect();
            let cross: Vec<Ptr<f32>> = state.cross.iter().map(|c| exec.ptr(c)).collect();
            exec.decoder_forward(b, tokens, &cache, &cross, fed, &mut |_, _, _| Ok(()))?;
            exec.logits(b, tokens.len() - 1)
        })?;
        self.fed += tokens.len();
        Ok(logits)
    }

    fn reset(&mut self) {
        // Rows past `fed` are overwritten before they are read.
        self.fed = 0;
    }

    fn align(
        &mut self,
        tokens: &[u32],
        heads: &[(usize, usize)],
        n_frames: usize,
        text_vocab: usize,
    ) -> Result<AlignPass, WhisperError> {
        let Dims { d_model: d, n_heads, n_audio_ctx, n_vocab, .. } = self.model.gpu.dims;
        self.check(tokens, 0)?;
        let n = tokens.len();
        if n == 0 {
            return Ok(AlignPass { scores: vec![Vec::new(); heads.len()], next_prob: Vec::new() });
        }
        let n_frames = n_frames.min(n_audio_ctx);
        let text_vocab = text_vocab.min(n_vocab);
        let state = &self.state;
        self.model.on_lane("CUDA alignment pass", |exec| {
            let b = exec.scratch(ScratchKind::Decode)?;
            // A cache of its own, so the decoder's stays as it was.
            let scratch_cache =
                (0..state.cache.len()).map(|_| exec.alloc_f32(n * 2 * d)).collect::<Result<Vec<_>, _>>()?;
            let cache: Vec<Ptr<f32>> = scratch_cache.iter().map(|c| exec.ptr(c)).collect();
            let cross: Vec<Ptr<f32>> = state.cross.iter().map(|c| exec.ptr(c)).collect();
            let mut scores = vec![Vec::new(); heads.len()];
            exec.decoder_forward(b, tokens, &cache, &cross, 0, &mut |exec, layer, raw| {
                for head in 0..n_heads {
                    // Like cpu.rs: the first request naming (layer, head) gets its scores.
                    let Some(i) = heads.iter().position(|&(l, h)| l == layer && h == head) else { continue };
                    let all = exec.download(raw.at(head * n * n_audio_ctx)?, n * n_audio_ctx)?;
                    scores[i] = all.chunks_exact(n_audio_ctx).flat_map(|row| row[..n_frames].iter().copied()).collect();
                }
                Ok(())
            })?;
            let next_prob = exec.next_token_probs(b, tokens, text_vocab)?;
            Ok(AlignPass { scores, next_prob })
        })
    }
}
