//! CUDA backend (cudarc 0.19, libraries loaded at run time). The crate's only `unsafe` lives here.
//!
//! One call embeds the windows of every utterance in the batch together (rows are `t * P + p` for window `p`):
//!
//! ```text
//! pcm (all utterances) ─frame_window─▶ frames [160P][400] ─SGEMM DFT─▶ spectrum [160P][402]
//!   ─power_mel─▶ X [160][P][40] ─SGEMM─▶ G = X W_ihᵀ ─┐
//!            for t: G[t] += H[t-1] W_hhᵀ (SGEMM, β=1) ; lstm_cell ─▶ H[t]   (× 3 layers)
//!   ─head─▶ unit partial embeddings [P][256] ─host─▶ mean + normalise per utterance
//! ```
//!
//! cudarc panics when a CUDA library or symbol is missing, so every entry point first checks
//! `is_culib_present()` for the driver, cuBLAS and NVRTC, and GPU work additionally runs under `catch_unwind`:
//! a node without a usable GPU gets `ModelError::CudaUnavailable`, never a panic. Compute time is measured with
//! CUDA events on the stream (uploads, kernels and the download of the embeddings).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::cpu::average_embedding;
use crate::error::ModelError;
use crate::frontend::{MelFrontend, N_BINS};
use crate::weights::EncoderWeights;
use crate::{
    BatchEmbeddings, EMBEDDING_DIM, Embedding, EmbeddingBackend, HIDDEN, MEL_BANDS, N_FFT, PARTIAL_FRAMES, Prepared,
};

const GATES: usize = 4 * HIDDEN;
/// Windows per GPU pass; bounds device memory (~1.6 MB per window, so ~3.3 GB at 2048).
const MAX_WINDOWS_PER_PASS: usize = 2048;

const KERNELS: &str = r#"
extern "C" __global__ void frame_window(const float* __restrict__ pcm, const long long* __restrict__ utt_offset,
        const int* __restrict__ utt_len, const int* __restrict__ start_frame, const float* __restrict__ window,
        float* __restrict__ frames, int n_windows) {
    const int row = blockIdx.x;               // t * n_windows + p
    const int t = row / n_windows;
    const int p = row - t * n_windows;
    const long long base = utt_offset[p];
    const long long len = utt_len[p];
    const long long first = (long long)(start_frame[p] + t) * 160 - 200;   // center=True, zero padding
    for (int i = threadIdx.x; i < 400; i += blockDim.x) {
        const long long at = first + i;
        const float x = (at >= 0 && at < len) ? pcm[base + at] : 0.0f;
        frames[(long long)row * 400 + i] = x * window[i];
    }
}

extern "C" __global__ void power_mel(const float* __restrict__ spectrum, const float* __restrict__ mel_basis,
        float* __restrict__ mel) {
    __shared__ float power[201];
    const long long row = blockIdx.x;
    const float* s = spectrum + row * 402;
    for (int k = threadIdx.x; k < 201; k += blockDim.x) {
        const float re = s[k];
        const float im = s[201 + k];
        power[k] = re * re + im * im;
    }
    __syncthreads();
    for (int m = threadIdx.x; m < 40; m += blockDim.x) {
        float acc = 0.0f;
        for (int k = 0; k < 201; ++k) acc += mel_basis[m * 201 + k] * power[k];
        mel[row * 40 + m] = acc;
    }
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// One time step of PyTorch's LSTM cell for all windows; gates are [i | f | g | o], biases b_ih + b_hh.
extern "C" __global__ void lstm_cell(const float* __restrict__ gates, const float* __restrict__ bias,
        float* __restrict__ cell, float* __restrict__ h_seq, int t, int n_windows) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_windows * 256) return;
    const int p = idx / 256;
    const int j = idx - p * 256;
    const float* g = gates + ((long long)t * n_windows + p) * 1024;
    const float i = sigmoidf(g[j] + bias[j]);
    const float f = sigmoidf(g[256 + j] + bias[256 + j]);
    const float c_in = tanhf(g[512 + j] + bias[512 + j]);
    const float o = sigmoidf(g[768 + j] + bias[768 + j]);
    const float c = (t == 0 ? 0.0f : f * cell[idx]) + i * c_in;
    cell[idx] = c;
    h_seq[((long long)t * n_windows + p) * 256 + j] = o * tanhf(c);
}

// Linear(256 -> 256) + ReLU + L2 normalisation of each window's last hidden state; one block per window.
extern "C" __global__ void head(const float* __restrict__ h_last, const float* __restrict__ weight,
        const float* __restrict__ bias, float* __restrict__ out) {
    __shared__ float h[256];
    __shared__ float partial[256];
    const int p = blockIdx.x;
    const int j = threadIdx.x;
    h[j] = h_last[p * 256 + j];
    __syncthreads();
    float e = bias[j];
    for (int k = 0; k < 256; ++k) e += weight[j * 256 + k] * h[k];
    e = fmaxf(e, 0.0f);
    partial[j] = e * e;
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (j < stride) partial[j] += partial[j + stride];
        __syncthreads();
    }
    const float norm = sqrtf(partial[0]);
    out[p * 256 + j] = norm > 0.0f ? e / norm : 0.0f;
}
"#;

/// Checks that the driver, cuBLAS and NVRTC libraries can be loaded and that a device exists, without letting
/// cudarc panic. `Err` says which piece is missing and what to install.
pub fn cuda_available() -> Result<(), String> {
    // SAFETY: `is_culib_present` only tries `dlopen` on cudarc's candidate library names and drops the handle;
    // it has no preconditions and touches no CUDA state.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    if !driver {
        return Err("the NVIDIA driver library (libcuda.so) is not installed on this node; running on CPU".into());
    }
    // SAFETY: as above, a pure dlopen probe.
    let cublas = unsafe { cudarc::cublas::sys::is_culib_present() };
    if !cublas {
        return Err("cuBLAS 12 (libcublas.so.12) is not on the library path; install the CUDA 12 runtime \
                    libraries or add them to LD_LIBRARY_PATH"
            .into());
    }
    // SAFETY: as above, a pure dlopen probe.
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !nvrtc {
        return Err("NVRTC 12 (libnvrtc.so.12) is not on the library path; install the CUDA 12 runtime \
                    libraries or add them to LD_LIBRARY_PATH"
            .into());
    }
    let count = guarded("cuDeviceGetCount", || CudaContext::device_count().map_err(|e| e.to_string()))?;
    if count < 1 {
        return Err("the NVIDIA driver is installed but no CUDA device is visible (check CUDA_VISIBLE_DEVICES)".into());
    }
    Ok(())
}

/// Runs `f`, turning a cudarc panic (missing symbol, library mismatch) into an error message.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(format!("{what}: CUDA library problem: {detail}"))
        }
    }
}

struct Kernels {
    frame_window: CudaFunction,
    power_mel: CudaFunction,
    lstm_cell: CudaFunction,
    head: CudaFunction,
}

struct DeviceLayer {
    input_size: usize,
    w_ih: CudaSlice<f32>,
    w_hh: CudaSlice<f32>,
    bias: CudaSlice<f32>,
}

/// Everything that must not be used from two threads at once (a cuBLAS handle is not thread-safe).
struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    window: CudaSlice<f32>,
    dft: CudaSlice<f32>,
    mel_basis: CudaSlice<f32>,
    layers: Vec<DeviceLayer>,
    linear_weight: CudaSlice<f32>,
    linear_bias: CudaSlice<f32>,
}

/// The CUDA implementation of [`EmbeddingBackend`]. Concurrent callers are serialised; batch their windows
/// into one `embed_prepared` call to use the GPU well.
pub struct CudaEncoder {
    gpu: Mutex<Gpu>,
    device_name: String,
}

impl std::fmt::Debug for CudaEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaEncoder").field("device", &self.device_name).finish()
    }
}

fn cuda_err(stage: &'static str) -> impl Fn(String) -> ModelError {
    move |message| ModelError::Cuda { stage, message }
}

impl CudaEncoder {
    /// Uploads the weights to GPU `ordinal` and compiles the kernels. Fails with `CudaUnavailable` (and a
    /// message naming what is missing) on nodes without a working CUDA setup.
    pub fn new(weights: Arc<EncoderWeights>, ordinal: usize) -> Result<Self, ModelError> {
        cuda_available().map_err(ModelError::CudaUnavailable)?;
        let gpu =
            guarded("CUDA initialisation", || Gpu::new(&weights, ordinal)).map_err(ModelError::CudaUnavailable)?;
        let device_name = guarded("device name", || gpu.ctx.name().map_err(|e| e.to_string())).unwrap_or_default();
        Ok(Self { gpu: Mutex::new(gpu), device_name })
    }

    pub fn device_name(&self) -> &str {
        &self.device_name
    }
}

impl Gpu {
    fn new(weights: &EncoderWeights, ordinal: usize) -> Result<Self, String> {
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("cannot open GPU {ordinal}: {e}"))?;
        let stream = ctx.new_stream().map_err(|e| e.to_string())?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS: {e}"))?;
        // SAFETY: `blas.handle()` is the live handle owned by `blas`; setting its math mode has no other
        // precondition. Default math keeps SGEMM in full FP32 (no TF32), which the 1e-4 CPU match needs.
        unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
        }
        .result()
        .map_err(|e| format!("cuBLAS math mode: {e}"))?;

        // No fast math: the kernels must agree with the CPU reference to 1e-4.
        let arch = ctx.compute_capability().ok().and_then(|(major, minor)| nvrtc_arch(major, minor));
        let opts = CompileOptions { use_fast_math: Some(false), arch, ..Default::default() };
        let ptx = compile_ptx_with_opts(KERNELS, opts).map_err(|e| format!("NVRTC: {e}"))?;
        let module = ctx.load_module(ptx).map_err(|e| format!("loading kernels: {e}"))?;
        let load = |name: &str| module.load_function(name).map_err(|e| format!("kernel {name}: {e}"));
        let kernels = Kernels {
            frame_window: load("frame_window")?,
            power_mel: load("power_mel")?,
            lstm_cell: load("lstm_cell")?,
            head: load("head")?,
        };

        let up = |data: &[f32]| stream.clone_htod(data).map_err(|e| format!("uploading weights: {e}"));
        let frontend = MelFrontend::new();
        let window: Vec<f32> = frontend.window.iter().map(|&w| w as f32).collect();
        let layers = weights
            .lstm
            .iter()
            .map(|l| {
                let bias: Vec<f32> = l.b_ih.iter().zip(&l.b_hh).map(|(a, b)| a + b).collect();
                Ok(DeviceLayer { input_size: l.input_size, w_ih: up(&l.w_ih)?, w_hh: up(&l.w_hh)?, bias: up(&bias)? })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            window: up(&window)?,
            dft: up(frontend.dft_matrix_f32())?,
            mel_basis: up(&frontend.mel_basis)?,
            layers,
            linear_weight: up(&weights.linear_weight)?,
            linear_bias: up(&weights.linear_bias)?,
            ctx,
            stream,
            blas,
            kernels,
        })
    }

    /// Row-major `C[rows][n] = A[rows][k] · B` where `B` is `[n][k]` row-major (a PyTorch weight), or, with
    /// `b_is_weight = false`, `B` is `[k][n]` row-major (the DFT matrix). Expressed in cuBLAS' column-major terms.
    #[allow(clippy::too_many_arguments)]
    fn sgemm<A, B, C>(
        &self,
        a: &A,
        b: &B,
        c: &mut C,
        rows: usize,
        n: usize,
        k: usize,
        b_is_weight: bool,
        beta: f32,
    ) -> Result<(), String>
    where
        A: cudarc::driver::DevicePtr<f32>,
        B: cudarc::driver::DevicePtr<f32>,
        C: cudarc::driver::DevicePtrMut<f32>,
    {
        let cfg = gemm_config(rows, n, k, b_is_weight, beta);
        // SAFETY: the caller passes buffers of at least rows*k (a), n*k (b) and rows*n (c) floats, which is
        // exactly what this configuration reads and writes; all live on `self.stream`, which cuBLAS uses.
        unsafe { self.blas.gemm(cfg, b, a, c) }.map_err(|e| format!("SGEMM: {e}"))
    }

    /// Unit partial embeddings `[windows][256]` for windows `(utterance, start frame)` of `batch`.
    fn run_windows(
        &self,
        batch: &[Prepared],
        windows: &[(usize, usize)],
        pcm: &CudaSlice<f32>,
        offsets: &[i64],
    ) -> Result<Vec<f32>, String> {
        let s = &self.stream;
        let e = |what: &'static str| move |err: cudarc::driver::DriverError| format!("{what}: {err}");
        let p = windows.len();
        let rows = PARTIAL_FRAMES * p;
        let utt_offset: Vec<i64> = windows.iter().map(|&(u, _)| offsets[u]).collect();
        let utt_len: Vec<i32> = windows.iter().map(|&(u, _)| batch[u].samples.len() as i32).collect();
        let start_frame: Vec<i32> = windows.iter().map(|&(_, start)| start as i32).collect();
        let utt_offset = s.clone_htod(&utt_offset).map_err(e("upload"))?;
        let utt_len = s.clone_htod(&utt_len).map_err(e("upload"))?;
        let start_frame = s.clone_htod(&start_frame).map_err(e("upload"))?;

        let n_windows = p as i32;
        let mut frames = s.alloc_zeros::<f32>(rows * N_FFT).map_err(e("alloc frames"))?;
        let mut launch = s.launch_builder(&self.kernels.frame_window);
        launch
            .arg(pcm)
            .arg(&utt_offset)
            .arg(&utt_len)
            .arg(&start_frame)
            .arg(&self.window)
            .arg(&mut frames)
            .arg(&n_windows);
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument order and types match `frame_window`; the grid has one block per frame row and the
        // kernel bounds every index by n_windows, utt_len and 400.
        unsafe { launch.launch(cfg) }.map_err(e("frame_window"))?;

        let mut spectrum = s.alloc_zeros::<f32>(rows * 2 * N_BINS).map_err(e("alloc spectrum"))?;
        self.sgemm(&frames, &self.dft, &mut spectrum, rows, 2 * N_BINS, N_FFT, false, 0.0)?;
        drop(frames);

        let mut x = s.alloc_zeros::<f32>(rows * MEL_BANDS).map_err(e("alloc mel"))?;
        let mut launch = s.launch_builder(&self.kernels.power_mel);
        launch.arg(&spectrum).arg(&self.mel_basis).arg(&mut x);
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (64, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: one block per spectrum row; the kernel reads 402 floats of its row and writes 40 mel values.
        unsafe { launch.launch(cfg) }.map_err(e("power_mel"))?;
        drop(spectrum);

        let mut gates = s.alloc_zeros::<f32>(rows * GATES).map_err(e("alloc gates"))?;
        let mut cell = s.alloc_zeros::<f32>(p * HIDDEN).map_err(e("alloc cell"))?;
        let cell_cfg = LaunchConfig {
            grid_dim: ((p * HIDDEN).div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        for layer in &self.layers {
            // Input projection for all time steps at once; biases are added in the cell kernel.
            self.sgemm(&x, &layer.w_ih, &mut gates, rows, GATES, layer.input_size, true, 0.0)?;
            let mut h_seq = s.alloc_zeros::<f32>(rows * HIDDEN).map_err(e("alloc hidden"))?;
            for t in 0..PARTIAL_FRAMES {
                if t > 0 {
                    let h_prev = h_seq.slice((t - 1) * p * HIDDEN..t * p * HIDDEN);
                    let mut g_t = gates.slice_mut(t * p * GATES..(t + 1) * p * GATES);
                    self.sgemm(&h_prev, &layer.w_hh, &mut g_t, p, GATES, HIDDEN, true, 1.0)?;
                }
                let t_arg = t as i32;
                let mut launch = s.launch_builder(&self.kernels.lstm_cell);
                launch.arg(&gates).arg(&layer.bias).arg(&mut cell).arg(&mut h_seq).arg(&t_arg).arg(&n_windows);
                // SAFETY: one thread per (window, unit), bounds-checked against n_windows * 256; gates holds
                // 160 * p rows of 1024, h_seq 160 * p rows of 256, cell p rows of 256.
                unsafe { launch.launch(cell_cfg) }.map_err(e("lstm_cell"))?;
            }
            x = h_seq;
        }

        let h_last = x.slice((PARTIAL_FRAMES - 1) * p * HIDDEN..rows * HIDDEN);
        let mut out = s.alloc_zeros::<f32>(p * EMBEDDING_DIM).map_err(e("alloc embeddings"))?;
        let mut launch = s.launch_builder(&self.kernels.head);
        launch.arg(&h_last).arg(&self.linear_weight).arg(&self.linear_bias).arg(&mut out);
        let cfg = LaunchConfig { grid_dim: (p as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: one block of 256 threads per window; reads that window's 256 hidden units and the 256x256
        // linear layer, writes 256 floats.
        unsafe { launch.launch(cfg) }.map_err(e("head"))?;
        s.clone_dtoh(&out).map_err(e("download embeddings"))
    }

    fn embed(&self, batch: &[Prepared]) -> Result<(Vec<Embedding>, Duration), String> {
        let s = &self.stream;
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = s.record_event(timing).map_err(|e| format!("event: {e}"))?;

        let mut offsets = Vec::with_capacity(batch.len());
        let mut pcm = Vec::with_capacity(batch.iter().map(|u| u.samples.len()).sum());
        for u in batch {
            offsets.push(pcm.len() as i64);
            pcm.extend_from_slice(&u.samples);
        }
        let pcm = s.clone_htod(&pcm).map_err(|e| format!("upload audio: {e}"))?;
        let windows: Vec<(usize, usize)> =
            batch.iter().enumerate().flat_map(|(u, prep)| prep.partial_starts.iter().map(move |&st| (u, st))).collect();
        let mut partials = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(MAX_WINDOWS_PER_PASS) {
            let flat = self.run_windows(batch, chunk, &pcm, &offsets)?;
            partials.extend(flat.chunks_exact(EMBEDDING_DIM).map(|c| {
                let mut emb = [0.0f32; EMBEDDING_DIM];
                emb.copy_from_slice(c);
                emb
            }));
        }
        let end = s.record_event(timing).map_err(|e| format!("event: {e}"))?;
        let ms = start.elapsed_ms(&end).map_err(|e| format!("event timing: {e}"))?;
        self.ctx.check_err().map_err(|e| format!("asynchronous CUDA error: {e}"))?;
        Ok((partials, Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3)))
    }
}

/// NVRTC target for the device, so the driver need not JIT from NVRTC's (old) default architecture. Unknown
/// devices get NVRTC's default PTX, which newer drivers still JIT-compile.
pub fn nvrtc_arch(major: i32, minor: i32) -> Option<&'static str> {
    Some(match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        _ => return None,
    })
}

/// cuBLAS is column-major: a row-major `[r][c]` buffer is a column-major `c x r` matrix. So the row-major
/// product `C[rows][n] = A[rows][k] · op(B)` is computed as the column-major `Cᵀ (n x rows) = op(B)ᵀ · Aᵀ`,
/// i.e. cuBLAS' first operand is `B` (transposed when it is a `[n][k]` PyTorch weight) and its second is `A`.
fn gemm_config(rows: usize, n: usize, k: usize, b_is_weight: bool, beta: f32) -> GemmConfig<f32> {
    GemmConfig {
        transa: if b_is_weight { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N },
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: rows as i32,
        k: k as i32,
        alpha: 1.0,
        lda: if b_is_weight { k as i32 } else { n as i32 },
        ldb: k as i32,
        beta,
        ldc: n as i32,
    }
}

impl EmbeddingBackend for CudaEncoder {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn embed_prepared(&self, batch: &[Prepared]) -> Result<BatchEmbeddings, ModelError> {
        if batch.is_empty() {
            return Err(ModelError::EmptyBatch);
        }
        // A poisoned lock only means an earlier call panicked inside cudarc; the GPU state itself is reset by
        // every call (fresh buffers), so keep serving.
        let gpu = self.gpu.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (flat, compute) = guarded("CUDA embedding", || gpu.embed(batch)).map_err(cuda_err("embed"))?;
        let mut partial_embeddings = Vec::with_capacity(batch.len());
        let mut rest = flat.as_slice();
        for prep in batch {
            let (mine, tail) = rest.split_at(prep.partial_starts.len());
            partial_embeddings.push(mine.to_vec());
            rest = tail;
        }
        let embeddings = partial_embeddings.iter().map(|p| average_embedding(p)).collect();
        Ok(BatchEmbeddings { embeddings, partial_embeddings, compute })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference column-major SGEMM with cuBLAS' argument semantics.
    fn cublas_sgemm(cfg: &GemmConfig<f32>, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = (cfg.m as usize, cfg.n as usize, cfg.k as usize);
        let at = |i: usize, l: usize| match cfg.transa {
            cublasOperation_t::CUBLAS_OP_N => a[i + l * cfg.lda as usize],
            _ => a[l + i * cfg.lda as usize],
        };
        let bt = |l: usize, j: usize| match cfg.transb {
            cublasOperation_t::CUBLAS_OP_N => b[l + j * cfg.ldb as usize],
            _ => b[j + l * cfg.ldb as usize],
        };
        for j in 0..n {
            for i in 0..m {
                let dot: f32 = (0..k).map(|l| at(i, l) * bt(l, j)).sum();
                let slot = &mut c[i + j * cfg.ldc as usize];
                *slot = cfg.alpha * dot + cfg.beta * *slot;
            }
        }
    }

    #[test]
    fn gemm_config_computes_row_major_products() {
        let (rows, n, k) = (3, 5, 4);
        let act: Vec<f32> = (0..rows * k).map(|i| i as f32 - 4.0).collect();
        let weight: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32).collect(); // [n][k], PyTorch layout
        let dft: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect(); // [k][n]

        let mut c = vec![1.0f32; rows * n];
        cublas_sgemm(&gemm_config(rows, n, k, true, 1.0), &weight, &act, &mut c);
        for r in 0..rows {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|l| act[r * k + l] * weight[j * k + l]).sum::<f32>();
                assert_eq!(c[r * n + j], want, "weight product row {r} col {j}");
            }
        }
        let mut c = vec![7.0f32; rows * n];
        cublas_sgemm(&gemm_config(rows, n, k, false, 0.0), &dft, &act, &mut c);
        for r in 0..rows {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| act[r * k + l] * dft[l * n + j]).sum();
                assert_eq!(c[r * n + j], want, "dft product row {r} col {j}");
            }
        }
    }
}
