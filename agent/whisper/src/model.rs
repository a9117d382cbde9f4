//! The Whisper network's parameters (read from a CTranslate2 `WhisperSpec`) and the backend trait.
//!
//! CTranslate2 fuses projections: self-attention `linear_0` is Q|K|V stacked (`[3d][d]`, the K bias is zero) and
//! `linear_1` the output; cross-attention (`attention`) `linear_0` is Q, `linear_1` is K|V stacked, `linear_2` the
//! output. `decoder/projection/weight` aliases the token embedding (tied output layer).
use crate::ct2::Ct2File;
use crate::error::WhisperError;

/// Sizes of one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub n_mels: usize,
    /// Encoder positions per window (1500 = 30 s at 20 ms).
    pub n_audio_ctx: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub n_vocab: usize,
    /// Most decoder positions (448).
    pub n_text_ctx: usize,
}

impl Dims {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// The refusals every decoder gives before any work: `tokens` after `fed` must fit the text context and
    /// the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32], fed: usize) -> Result<(), WhisperError> {
        if fed + tokens.len() > self.n_text_ctx {
            return Err(WhisperError::BadInput(format!("a window decodes at most {} tokens", self.n_text_ctx)));
        }
        if let Some(&tok) = tokens.iter().find(|&&t| t as usize >= self.n_vocab) {
            return Err(WhisperError::BadInput(format!("token {tok} is outside the vocabulary")));
        }
        Ok(())
    }
}

/// `y = x · Wᵀ + b` with `W` as stored (`[out][in]`, row-major).
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub out: usize,
    pub inp: usize,
}

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct EncoderLayer {
    pub attn_ln: LayerNorm,
    /// Q|K|V, `[3d][d]`.
    pub qkv: Linear,
    pub attn_out: Linear,
    pub ffn_ln: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub self_ln: LayerNorm,
    pub self_qkv: Linear,
    pub self_out: Linear,
    pub cross_ln: LayerNorm,
    pub cross_q: Linear,
    /// K|V over the encoder output, `[2d][d]`.
    pub cross_kv: Linear,
    pub cross_out: Linear,
    pub ffn_ln: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

/// Every parameter, as f32.
#[derive(Clone, Debug)]
pub struct WhisperWeights {
    pub dims: Dims,
    /// `[d][n_mels][3]`
    pub conv1_w: Vec<f32>,
    pub conv1_b: Vec<f32>,
    /// `[d][d][3]`
    pub conv2_w: Vec<f32>,
    pub conv2_b: Vec<f32>,
    /// Sinusoidal, `[n_audio_ctx][d]`.
    pub encoder_positions: Vec<f32>,
    pub encoder: Vec<EncoderLayer>,
    pub encoder_ln: LayerNorm,
    /// `[n_vocab][d]`, also the output projection.
    pub token_embedding: Vec<f32>,
    /// Learned, `[n_text_ctx][d]`.
    pub decoder_positions: Vec<f32>,
    pub decoder: Vec<DecoderLayer>,
    pub decoder_ln: LayerNorm,
}

impl WhisperWeights {
    /// Reads a `WhisperSpec` file, checking every shape and the architecture flags this implementation assumes.
    pub fn from_ct2(file: &Ct2File<'_>) -> Result<Self, String> {
        if file.spec != "WhisperSpec" {
            return Err(format!("the model is a {}, not a WhisperSpec", file.spec));
        }
        let shape = |name: &str| file.variable(name).map(|v| v.shape.clone()).ok_or_else(|| format!("no {name:?}"));
        let conv1 = shape("encoder/conv1/weight")?;
        let emb = shape("decoder/embeddings/weight")?;
        let dec_pos = shape("decoder/position_encodings/encodings")?;
        let enc_pos = shape("encoder/position_encodings/encodings")?;
        if conv1.len() != 3 || emb.len() != 2 || dec_pos.len() != 2 || enc_pos.len() != 2 {
            return Err("unexpected tensor ranks".into());
        }
        let count = |prefix: &str| {
            (0..).take_while(|i| file.variable(&format!("{prefix}/layer_{i}/ffn/linear_0/weight")).is_some()).count()
        };
        let n_heads = file.scalar("encoder/num_heads")? as usize;
        let dims = Dims {
            n_mels: conv1[1],
            n_audio_ctx: enc_pos[0],
            d_model: conv1[0],
            n_heads,
            encoder_layers: count("encoder"),
            decoder_layers: count("decoder"),
            n_vocab: emb[0],
            n_text_ctx: dec_pos[0],
        };
        if n_heads == 0 || dims.d_model % n_heads != 0 || file.scalar("decoder/num_heads")? as usize != n_heads {
            return Err(format!("{n_heads} heads do not divide d_model {}", dims.d_model));
        }
        // 3 = GELU (erf form), pre-norm, no ALiBi, unscaled embeddings: the layout OpenAI's Whisper converts to.
        for (flag, want) in
            [("decoder/activation", 3), ("decoder/pre_norm", 1), ("decoder/alibi", 0), ("decoder/scale_embeddings", 0)]
        {
            if let Ok(v) = file.scalar(flag) {
                if v != want {
                    return Err(format!("{flag} is {v}; this implementation needs {want}"));
                }
            }
        }
        let d = dims.d_model;
        let t = |name: &str, shape: &[usize]| file.f32(name, shape);
        let ln = |p: &str| -> Result<LayerNorm, String> {
            Ok(LayerNorm { gamma: t(&format!("{p}/gamma"), &[d])?, beta: t(&format!("{p}/beta"), &[d])? })
        };
        let lin = |p: &str, out: usize, inp: usize| -> Result<Linear, String> {
            Ok(Linear { w: t(&format!("{p}/weight"), &[out, inp])?, b: t(&format!("{p}/bias"), &[out])?, out, inp })
        };
        let ffn = 4 * d;
        let encoder = (0..dims.encoder_layers)
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                Ok(EncoderLayer {
                    attn_ln: ln(&format!("{p}/self_attention/layer_norm"))?,
                    qkv: lin(&format!("{p}/self_attention/linear_0"), 3 * d, d)?,
                    attn_out: lin(&format!("{p}/self_attention/linear_1"), d, d)?,
                    ffn_ln: ln(&format!("{p}/ffn/layer_norm"))?,
                    fc1: lin(&format!("{p}/ffn/linear_0"), ffn, d)?,
                    fc2: lin(&format!("{p}/ffn/linear_1"), d, ffn)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let decoder = (0..dims.decoder_layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                Ok(DecoderLayer {
                    self_ln: ln(&format!("{p}/self_attention/layer_norm"))?,
                    self_qkv: lin(&format!("{p}/self_attention/linear_0"), 3 * d, d)?,
                    self_out: lin(&format!("{p}/self_attention/linear_1"), d, d)?,
                    cross_ln: ln(&format!("{p}/attention/layer_norm"))?,
                    cross_q: lin(&format!("{p}/attention/linear_0"), d, d)?,
                    cross_kv: lin(&format!("{p}/attention/linear_1"), 2 * d, d)?,
                    cross_out: lin(&format!("{p}/attention/linear_2"), d, d)?,
                    ffn_ln: ln(&format!("{p}/ffn/layer_norm"))?,
                    fc1: lin(&format!("{p}/ffn/linear_0"), ffn, d)?,
                    fc2: lin(&format!("{p}/ffn/linear_1"), d, ffn)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            dims,
            conv1_w: t("encoder/conv1/weight", &[d, dims.n_mels, 3])?,
            conv1_b: t("encoder/conv1/bias", &[d])?,
            conv2_w: t("encoder/conv2/weight", &[d, d, 3])?,
            conv2_b: t("encoder/conv2/bias", &[d])?,
            encoder_positions: t("encoder/position_encodings/encodings", &[dims.n_audio_ctx, d])?,
            encoder,
            encoder_ln: ln("encoder/layer_norm")?,
            token_embedding: t("decoder/embeddings/weight", &[dims.n_vocab, d])?,
            decoder_positions: t("decoder/position_encodings/encodings", &[dims.n_text_ctx, d])?,
            decoder,
            decoder_ln: ln("decoder/layer_norm")?,
        })
    }
}

/// What the word-alignment pass needs from one forward run over a whole token sequence.
#[derive(Clone, Debug, Default)]
pub struct AlignPass {
    /// Per requested `(layer, head)`: the scaled attention scores (before softmax) `[tokens][n_frames]` over the
    /// first `n_frames` encoder positions (the softmax is taken over those only, as the reference does).
    pub scores: Vec<Vec<f32>>,
    /// `next_prob[i]`: probability of `tokens[i + 1]` at position `i`, softmax over the text tokens (ids below
    /// `text_vocab`) only.
    pub next_prob: Vec<f32>,
}

/// A decoder bound to one encoded window. Tokens fed accumulate in its key/value cache.
pub trait Decoder: Send {
    /// Feeds `tokens` after those already fed and returns the log-softmax-ready logits (`[n_vocab]`) of the last
    /// of them.
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, WhisperError>;
    /// Forgets every fed token (a retry at another temperature starts from the prompt again).
    fn reset(&mut self);
    /// Runs `tokens` from scratch, leaving the cache as it was: the word-alignment pass.
    fn align(
        &mut self,
        tokens: &[u32],
        heads: &[(usize, usize)],
        n_frames: usize,
        text_vocab: usize,
    ) -> Result<AlignPass, WhisperError>;
}

/// A way to run the network. Every implementation runs the same test body (tests/backends.rs).
pub trait WhisperBackend: Send + Sync {
    /// Short, stable name for logs and metric labels (`cpu`, `cuda`).
    fn name(&self) -> &'static str;
    fn dims(&self) -> Dims;
    /// Encodes one 30 s window of log-mel features (`[n_mels][3000]`, row-major) and returns a decoder over it.
    fn encode(&self, mel: &[f32]) -> Result<Box<dyn Decoder + '_>, WhisperError>;
}
