//! The encoder pass and the cross-attention keys/values it leaves for the decoder.
use super::decoder::DecoderState;
use super::gemm::Attention;
use super::ops::{Epilogue, Exec, ScratchKind};
use crate::model::Dims;

impl Exec<'_> {
    /// Encodes one window of log-mel (`[n_mels][2 · n_audio_ctx]`, checked by the caller) and returns the decoder
    /// state: per decoder layer the cross-attention K|V `[n_audio_ctx][2d]` and an empty self-attention cache.
    pub(super) fn encode(&mut self, mel: &[f32]) -> Result<DecoderState, String> {
        let Dims { n_mels, n_audio_ctx: ctx, d_model: d, n_text_ctx, .. } = self.dims();
        let frames = 2 * ctx;
        let b = self.scratch(ScratchKind::Encode)?;
        let gpu = self.gpu;
        let w = &gpu.weights;
        self.upload(mel, b.input)?;
        // conv1 reads the mel channel-major: x(t, c) = mel[c · frames + t].
        let t1 = self.im2col3(b.input, frames, n_mels, 1, frames, 1, b.split)?;
        self.linear(b.split, t1, &w.conv1, b.product, Epilogue::Gelu(b.act))?;
        let t2 = self.im2col3(b.act, t1, d, d, 1, 2, b.split)?;
        if t2 != ctx {
            return Err(format!("the convolutions give {t2} positions, the model has {ctx}"));
        }
        self.linear(b.split, ctx, &w.conv2, b.product, Epilogue::Gelu(b.x))?;
        self.add_inplace(b.x, self.ptr(&w.encoder_positions), ctx * d)?;
        for layer in &w.encoder {
            self.layernorm_split(b.x, &layer.attn_ln, ctx, b.split)?;
            self.linear(b.split, ctx, &layer.qkv, b.product, Epilogue::Write(b.act, 3 * d))?;
            let attention = Attention {
                q: b.act,
                ldq: 3 * d,
                k: b.act.at(d)?,
                ldk: 3 * d,
                v: b.act.at(2 * d)?,
                ldv: 3 * d,
                tq: ctx,
                tk: ctx,
                causal_offset: None,
            };
            self.attention(&attention, b.scores, b.attn, |_| Ok(()))?;
            self.split_rows(b.attn, ctx, d, d, b.split)?;
            self.linear(b.split, ctx, &layer.attn_out, b.product, Epilogue::Add(b.x, d))?;
            self.layernorm_split(b.x, &layer.ffn_ln, ctx, b.split)?;
            // The GEMM has consumed `split` before the epilogue overwrites it (same stream).
            self.linear(b.split, ctx, &layer.fc1, b.product, Epilogue::GeluSplit(b.split))?;
            self.linear(b.split, ctx, &layer.fc2, b.product, Epilogue::Add(b.x, d))?;
        }
        self.layernorm_split(b.x, &w.encoder_ln, ctx, b.split)?;
        let mut cross = Vec::with_capacity(w.decoder.len());
        for layer in &w.decoder {
            let kv = self.alloc_f32(ctx * 2 * d)?;
            self.linear(b.split, ctx, &layer.cross_kv, b.product, Epilogue::Write(self.ptr(&kv), 2 * d))?;
            cross.push(kv);
        }
        let cache = (0..w.decoder.len()).map(|_| self.alloc_f32(n_text_ctx * 2 * d)).collect::<Result<_, _>>()?;
        Ok(DecoderState { cross, cache })
    }
}
