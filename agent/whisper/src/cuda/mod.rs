//! The CUDA backend: cudarc 0.19 with the libraries loaded at run time, fp16 weights, fp16 cuBLAS GEMMs that
//! accumulate in fp32, NVRTC kernels for the rest, a KV cache per decoder. The crate's only `unsafe` lives here.
//!
//! ```text
//!  encode (one lane):  mel ─im2col─▶ conv1 GEMM ─gelu─▶ im2col ─▶ conv2 GEMM ─gelu─▶ + positions
//!                      ─▶ per layer: LN ▶ QKV GEMM ▶ per-head SGEMMs + softmax ▶ out GEMM (+x) ▶ LN ▶ fc1 ▶ gelu ▶ fc2 (+x)
//!                      ─▶ LN ─▶ per decoder layer: cross K|V GEMM ─▶ CudaDecoder { cross K|V, self K|V cache }
//!  step (any lane):    embed + positions ─▶ per layer: self-attn over the cache, cross-attn, FFN ─▶ LN ─▶ tied logits
//!                      ─▶ download f32 [n_vocab]
//! ```
//!
//! Numerics follow cpu.rs: pre-LN, eps 1e-5, exact erf GELU, softmax attention scaled by 1/sqrt(head_dim), tied
//! output projection. Weights are fp16 (the checkpoint's own precision, so the upload is exact). Every GEMM input
//! is written as two fp16 halves (see kernels.rs), which makes the fp16 GEMMs agree with the fp32 reference to
//! about 1e-6 relative; attention products (no weights) run as fp32 strided-batched SGEMMs. The split doubles the
//! rows of each weight GEMM: free in decoder steps (bound by reading the weights), 2x FLOPs in the encoder.
//!
//! Concurrency: a *lane* is a stream, a cuBLAS handle and scratch memory. Each call (`encode`, `step`, `align`)
//! takes a free lane from a pool (creating one when all are busy), runs on it and ends by synchronizing its
//! stream, so concurrent requests run on separate streams. That end-of-call synchronization is the invariant
//! that makes cudarc's per-buffer event tracking unnecessary (it is switched off): no buffer is ever used by two
//! streams at once, nor freed while in use.
//!
//! cudarc panics when a CUDA library or symbol is missing, so `new` first probes the libraries
//! ([`cuda_available`]) and every GPU call runs under `catch_unwind`: a node without a usable GPU gets
//! `WhisperError::Cuda`, never a panic.
mod decoder;
mod encoder;
mod gemm;
mod kernels;
mod launch;
mod ops;
mod weights;

use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaStream};

use crate::error::WhisperError;
use crate::model::{Decoder, Dims, WhisperBackend, WhisperWeights};

use self::decoder::CudaDecoder;
use self::kernels::Kernels;
use self::ops::{Exec, Scratch};
use self::weights::DeviceWeights;

/// Whether the CUDA libraries load on this node (the speaker encoder's probe: driver, cuBLAS, NVRTC, a device).
pub fn cuda_available() -> Result<(), String> {
    infergate_speaker::cuda_available()
}

/// Runs `f`, turning a cudarc panic (missing symbol, library mismatch) into an error message.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    // The speaker encoder's guard (a CUDA library panic becomes an error), with the stage named on every error.
    infergate_speaker::cuda_guarded(what, || f().map_err(|e| format!("{what}: {e}")))
}

/// One stream with its cuBLAS handle (not thread-safe, hence one per lane) and working memory, allocated on
/// first use at the size of the largest call of each kind.
struct Lane {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    encode: Option<Scratch>,
    decode: Option<Scratch>,
}

impl Lane {
    fn new(ctx: &Arc<CudaContext>) -> Result<Self, String> {
        let stream = ctx.new_stream().map_err(|e| format!("creating a stream: {e}"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("creating a cuBLAS handle: {e}"))?;
        // SAFETY: `blas.handle()` is the live handle owned by `blas`; setting its math mode has no other
        // precondition. Default math keeps the fp32 attention SGEMMs in full fp32 (no TF32).
        unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
        }
        .result()
        .map_err(|e| format!("cuBLAS math mode: {e}"))?;
        Ok(Self { stream, blas, encode: None, decode: None })
    }
}

/// What every lane shares: the context, the compiled kernels and the weights.
struct Gpu {
    ctx: Arc<CudaContext>,
    dims: Dims,
    kernels: Kernels,
    weights: DeviceWeights,
}

/// The CUDA implementation of [`WhisperBackend`].
pub struct CudaWhisper {
    gpu: Gpu,
    /// Idle lanes. Held only to push or pop, never during GPU work.
    lanes: Mutex<Vec<Lane>>,
    device_name: String,
}

impl std::fmt::Debug for CudaWhisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaWhisper").field("device", &self.device_name).field("dims", &self.gpu.dims).finish()
    }
}

impl CudaWhisper {
    /// Compiles the kernels and uploads the weights (fp16) to GPU `device`. Fails with `WhisperError::Cuda`
    /// saying what is missing on nodes without a working CUDA setup.
    pub fn new(weights: Arc<WhisperWeights>, device: usize) -> Result<Self, WhisperError> {
        cuda_available().map_err(WhisperError::Cuda)?;
        let gpu = guarded("CUDA initialisation", || Gpu::new(&weights, device)).map_err(WhisperError::Cuda)?;
        let device_name = guarded("device name", || gpu.ctx.name().map_err(|e| e.to_string())).unwrap_or_default();
        Ok(Self { gpu, lanes: Mutex::new(Vec::new()), device_name })
    }

    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Runs `f` on an idle lane (or a new one) and puts the lane back once its stream has drained. A lane whose
    /// call failed and whose stream then cannot be synchronized is dropped rather than reused.
    fn on_lane<T>(&self, what: &str, f: impl FnOnce(&mut Exec<'_>) -> Result<T, String>) -> Result<T, WhisperError> {
        let idle = self.lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut lane = match idle {
            Some(lane) => lane,
            None => guarded(what, || Lane::new(&self.gpu.ctx)).map_err(WhisperError::Cuda)?,
        };
        let result = guarded(what, || {
            let mut exec = Exec::new(&self.gpu, &mut lane);
            exec.bind()?;
            let out = f(&mut exec);
            // Drain the stream whatever happened, so nothing of this call is in flight once it returns.
            let drained = exec.finish();
            let out = out?;
            drained?;
            Ok(out)
        });
        let lane_ok = result.is_ok() || guarded(what, || lane.stream.synchronize().map_err(|e| e.to_string())).is_ok();
        if lane_ok {
            self.lanes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(lane);
        }
        result.map_err(WhisperError::Cuda)
    }
}

impl Drop for CudaWhisper {
    fn drop(&mut self) {
        // The weights and lanes are freed through the current context; this thread may never have had it.
        let _ = guarded("binding the CUDA context", || self.gpu.ctx.bind_to_thread().map_err(|e| e.to_string()));
    }
}

impl Gpu {
    fn new(weights: &WhisperWeights, ordinal: usize) -> Result<Self, String> {
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("cannot open GPU {ordinal}: {e}"))?;
        // SAFETY: called before this context allocates anything, so no buffer has half its events. From here on
        // synchronization is ours: every call drains its lane's stream before returning (see the module doc),
        // and the weights are uploaded and synchronized before any lane exists.
        unsafe { ctx.disable_event_tracking() };
        let kernels = Kernels::compile(&ctx)?;
        let upload = ctx.new_stream().map_err(|e| format!("creating the upload stream: {e}"))?;
        let device_weights = DeviceWeights::upload(&upload, weights)?;
        upload.synchronize().map_err(|e| format!("uploading the weights: {e}"))?;
        Ok(Self { ctx, dims: weights.dims, kernels, weights: device_weights })
    }
}

impl WhisperBackend for CudaWhisper {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn dims(&self) -> Dims {
        self.gpu.dims
    }

    fn encode(&self, mel: &[f32]) -> Result<Box<dyn Decoder + '_>, WhisperError> {
        let Dims { n_mels, n_audio_ctx, .. } = self.gpu.dims;
        let frames = 2 * n_audio_ctx;
        if mel.len() != n_mels * frames {
            return Err(WhisperError::BadInput(format!(
                "a window holds {n_mels} x {frames} mel values, got {}",
                mel.len()
            )));
        }
        let state = self.on_lane("CUDA encode", |exec| exec.encode(mel))?;
        Ok(Box::new(CudaDecoder::new(self, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DecoderLayer, EncoderLayer, LayerNorm, Linear};

    /// A two-layer model with every shape right and arbitrary values: enough for `new` to get past parsing.
    fn toy_weights() -> WhisperWeights {
        let dims = Dims {
            n_mels: 4,
            n_audio_ctx: 6,
            d_model: 8,
            n_heads: 2,
            encoder_layers: 1,
            decoder_layers: 1,
            n_vocab: 11,
            n_text_ctx: 5,
        };
        let d = dims.d_model;
        let lin = |out: usize, inp: usize| Linear { w: vec![0.01; out * inp], b: vec![0.0; out], out, inp };
        let ln = || LayerNorm { gamma: vec![1.0; d], beta: vec![0.0; d] };
        WhisperWeights {
            dims,
            conv1_w: vec![0.1; d * dims.n_mels * 3],
            conv1_b: vec![0.0; d],
            conv2_w: vec![0.1; d * d * 3],
            conv2_b: vec![0.0; d],
            encoder_positions: vec![0.0; dims.n_audio_ctx * d],
            encoder: vec![EncoderLayer {
                attn_ln: ln(),
                qkv: lin(3 * d, d),
                attn_out: lin(d, d),
                ffn_ln: ln(),
                fc1: lin(4 * d, d),
                fc2: lin(d, 4 * d),
            }],
            encoder_ln: ln(),
            token_embedding: vec![0.02; dims.n_vocab * d],
            decoder_positions: vec![0.0; dims.n_text_ctx * d],
            decoder: vec![DecoderLayer {
                self_ln: ln(),
                self_qkv: lin(3 * d, d),
                self_out: lin(d, d),
                cross_ln: ln(),
                cross_q: lin(d, d),
                cross_kv: lin(2 * d, d),
                cross_out: lin(d, d),
                ffn_ln: ln(),
                fc1: lin(4 * d, d),
                fc2: lin(d, 4 * d),
            }],
            decoder_ln: ln(),
        }
    }

    /// On a node without a GPU (CI, developers' machines) `new` reports why as an error and never panics.
    #[test]
    fn new_fails_cleanly_without_a_gpu() {
        if cuda_available().is_ok() {
            eprintln!("SKIP: a CUDA device is present; this test covers GPU-less nodes");
            return;
        }
        let err = CudaWhisper::new(Arc::new(toy_weights()), 0).expect_err("no GPU here");
        assert_eq!(err.category(), "cuda");
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn guarded_turns_a_panic_into_an_error() {
        let err = guarded("probe", || -> Result<(), String> { panic!("symbol cuFoo not found") }).unwrap_err();
        assert!(err.contains("probe") && err.contains("cuFoo"), "{err}");
    }
}
