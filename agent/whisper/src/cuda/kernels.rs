//! The NVRTC kernels: everything the GEMMs do not do. Compiled once per [`super::CudaWhisper`] without fast
//! math, so GELU's `erff`, `expf` and the divisions match the CPU reference to rounding.
//!
//! fp16 values travel as `unsigned short` bit patterns converted with inline PTX (`cvt`), so NVRTC needs no
//! CUDA include directory. A GEMM input is written "split": `hi = fp16(v)` in the first half of the buffer and
//! `lo = fp16(v - hi)` in the second, so one fp16 GEMM over both halves (accumulating in fp32) and a sum of
//! the two product halves (`combine`) reproduce the fp32 product to about 1e-6 relative.
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use std::sync::Arc;

pub(super) const SOURCE: &str = r#"
typedef unsigned short half_bits;

__device__ __forceinline__ half_bits f2h(float x) {
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}

__device__ __forceinline__ float h2f(half_bits h) {
    float x;
    asm("cvt.f32.f16 %0, %1;" : "=f"(x) : "h"(h));
    return x;
}

// Writes v as hi (at idx) + lo (at half_len + idx).
__device__ __forceinline__ void put_split(half_bits* out, long long idx, long long half_len, float v) {
    const half_bits hi = f2h(v);
    out[idx] = hi;
    out[half_len + idx] = f2h(v - h2f(hi));
}

__device__ __forceinline__ float gelu(float v) {
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

#define GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// Sum over a block of 256 threads; every thread gets the result.
__device__ float block_sum(float v, float* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
        __syncthreads();
    }
    const float total = shared[0];
    __syncthreads();
    return total;
}

__device__ float block_max(float v, float* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + stride]);
        __syncthreads();
    }
    const float total = shared[0];
    __syncthreads();
    return total;
}

// Same-padded kernel-3 convolution input as rows [t_out][c_in * 3] (column c * 3 + k), split.
// x(t, c) = x[t * t_step + c * c_step].
extern "C" __global__ void im2col3(const float* x, int t_in, int c_in, long long t_step, long long c_step,
        int stride, int t_out, half_bits* cols) {
    const long long n = (long long)t_out * c_in * 3;
    GRID_STRIDE(idx, n) {
        const int k = (int)(idx % 3);
        const long long rest = idx / 3;
        const int c = (int)(rest % c_in);
        const int t = (int)(rest / c_in);
        const int src = t * stride + k - 1;
        const float v = (src >= 0 && src < t_in) ? x[src * t_step + c * c_step] : 0.0f;
        put_split(cols, idx, n, v);
    }
}

// product is [2][rows][n]: the GEMM of the hi and the lo halves. v = hi + lo + bias, then
// mode 0: out = v; 1: out += v; 2: out = gelu(v)   (out[r * ld_out + j])
// mode 3: out_split [2][rows][n] = split(gelu(v)).
extern "C" __global__ void combine(const float* product, const float* bias, int rows, int n, int mode,
        float* out, int ld_out, half_bits* out_split) {
    const long long total = (long long)rows * n;
    GRID_STRIDE(idx, total) {
        const int r = (int)(idx / n);
        const int j = (int)(idx - (long long)r * n);
        const float v = product[idx] + product[total + idx] + bias[j];
        if (mode == 3) {
            put_split(out_split, idx, total, gelu(v));
        } else {
            float* slot = out + (long long)r * ld_out + j;
            if (mode == 0) *slot = v;
            else if (mode == 1) *slot += v;
            else *slot = gelu(v);
        }
    }
}

extern "C" __global__ void add_inplace(float* x, const float* y, long long n) {
    GRID_STRIDE(i, n) x[i] += y[i];
}

// Layer norm (eps 1e-5, two-pass like the CPU) of each row of x [rows][d], written split to out [2][rows][d].
// One block of 256 threads per row.
extern "C" __global__ void layernorm_split(const float* x, const float* gamma, const float* beta, int rows, int d,
        half_bits* out) {
    __shared__ float shared[256];
    const int r = blockIdx.x;
    const float* row = x + (long long)r * d;
    float acc = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) acc += row[j];
    const float mean = block_sum(acc, shared) / (float)d;
    acc = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float c = row[j] - mean;
        acc += c * c;
    }
    const float var = block_sum(acc, shared) / (float)d;
    const float inv = 1.0f / sqrtf(var + 1e-5f);
    const long long half_len = (long long)rows * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        put_split(out, (long long)r * d + j, half_len, (row[j] - mean) * inv * gamma[j] + beta[j]);
    }
}

// x [rows][cols] with row stride ld, written split to out [2][rows][cols].
extern "C" __global__ void split_rows(const float* x, int rows, int cols, int ld, half_bits* out) {
    const long long total = (long long)rows * cols;
    GRID_STRIDE(idx, total) {
        const int r = (int)(idx / cols);
        const int j = (int)(idx - (long long)r * cols);
        put_split(out, idx, total, x[(long long)r * ld + j]);
    }
}

// In-place softmax of each row of scores [heads][tq][tk]; one block of 256 threads per row. With
// causal_offset >= 0, query i sees keys 0..=causal_offset + i only (the rest become 0).
extern "C" __global__ void softmax_rows(float* scores, int tq, int tk, int causal_offset) {
    __shared__ float shared[256];
    const long long row_index = blockIdx.x;
    const int i = (int)(row_index % tq);
    float* row = scores + row_index * tk;
    int limit = tk;
    if (causal_offset >= 0 && causal_offset + i + 1 < tk) limit = causal_offset + i + 1;
    float m = __int_as_float(0xff800000);  // -inf
    for (int j = threadIdx.x; j < limit; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, shared);
    float acc = 0.0f;
    for (int j = threadIdx.x; j < tk; j += blockDim.x) {
        const float e = j < limit ? expf(row[j] - m) : 0.0f;
        row[j] = e;
        acc += e;
    }
    const float inv = 1.0f / block_sum(acc, shared);
    for (int j = threadIdx.x; j < tk; j += blockDim.x) row[j] *= inv;
}

// out[i][j] = embedding[tokens[i]][j] + positions[first_position + i][j]
extern "C" __global__ void embed(const int* tokens, const half_bits* embedding, const float* positions,
        int first_position, int n, int d, float* out) {
    const long long total = (long long)n * d;
    GRID_STRIDE(idx, total) {
        const int i = (int)(idx / d);
        const int j = (int)(idx - (long long)i * d);
        out[idx] = h2f(embedding[(long long)tokens[i] * d + j]) + positions[(long long)(first_position + i) * d + j];
    }
}

// dst[r * ld_dst + j] = src[r * ld_src + j] for j < width.
extern "C" __global__ void copy_rows(const float* src, int ld_src, float* dst, int ld_dst, int rows, int width) {
    const long long total = (long long)rows * width;
    GRID_STRIDE(idx, total) {
        const int r = (int)(idx / width);
        const int j = (int)(idx - (long long)r * width);
        dst[(long long)r * ld_dst + j] = src[(long long)r * ld_src + j];
    }
}

// product [2][rows][cols] holds split logits; out[i] = softmax(row i)[targets[i]] (0 when the target is out of
// range). One block of 256 threads per row.
extern "C" __global__ void softmax_pick(const float* product, int rows, int cols, const int* targets, float* out) {
    __shared__ float shared[256];
    const int i = blockIdx.x;
    const float* hi = product + (long long)i * cols;
    const float* lo = product + ((long long)rows + i) * cols;
    float m = __int_as_float(0xff800000);  // -inf
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, hi[j] + lo[j]);
    m = block_max(m, shared);
    float acc = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) acc += expf(hi[j] + lo[j] - m);
    const float sum = block_sum(acc, shared);
    if (threadIdx.x == 0) {
        const int t = targets[i];
        out[i] = (t >= 0 && t < cols) ? expf(hi[t] + lo[t] - m) * (1.0f / sum) : 0.0f;
    }
}
"#;

/// Threads per block; the reductions in [`SOURCE`] assume exactly this.
pub(super) const BLOCK: u32 = 256;

pub(super) struct Kernels {
    pub im2col3: CudaFunction,
    pub combine: CudaFunction,
    pub add_inplace: CudaFunction,
    pub layernorm_split: CudaFunction,
    pub split_rows: CudaFunction,
    pub softmax_rows: CudaFunction,
    pub embed: CudaFunction,
    pub copy_rows: CudaFunction,
    pub softmax_pick: CudaFunction,
}

impl Kernels {
    pub(super) fn compile(ctx: &Arc<CudaContext>) -> Result<Self, String> {
        let arch = ctx.compute_capability().ok().and_then(|(major, minor)| infergate_speaker::nvrtc_arch(major, minor));
        let opts = CompileOptions { use_fast_math: Some(false), arch, ..Default::default() };
        let ptx = compile_ptx_with_opts(SOURCE, opts).map_err(|e| format!("NVRTC compiling the kernels: {e}"))?;
        let module = ctx.load_module(ptx).map_err(|e| format!("loading the kernels: {e}"))?;
        let load = |name: &str| module.load_function(name).map_err(|e| format!("kernel {name}: {e}"));
        Ok(Self {
            im2col3: load("im2col3")?,
            combine: load("combine")?,
            add_inplace: load("add_inplace")?,
            layernorm_split: load("layernorm_split")?,
            split_rows: load("split_rows")?,
            softmax_rows: load("softmax_rows")?,
            embed: load("embed")?,
            copy_rows: load("copy_rows")?,
            softmax_pick: load("softmax_pick")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: wherever libnvrtc loads, the kernel source must compile for every target we name.
    #[test]
    fn kernels_compile_with_nvrtc() {
        // SAFETY: a pure dlopen probe of cudarc's candidate library names; no preconditions.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("SKIP: NVRTC (libnvrtc.so.12) is not on the library path");
            return;
        }
        for arch in [None, Some("compute_70"), Some("compute_80"), Some("compute_90")] {
            let opts = CompileOptions { use_fast_math: Some(false), arch, ..Default::default() };
            if let Err(e) = compile_ptx_with_opts(SOURCE, opts) {
                panic!("kernels do not compile for {arch:?}: {e:?}");
            }
        }
    }
}
