//! The two GEMM shapes: fp16 weight products (cublasGemmEx, fp32 accumulation) and fp32 strided-batched
//! attention products, and multi-head attention built from them.
use cudarc::cublas::result::{gemm_ex, gemm_strided_batched_ex};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};

use super::ops::{Epilogue, Exec, Ptr, int};
use super::weights::DeviceLinear;
use crate::model::Dims;

impl Exec<'_> {
    /// `c [rows][n] = x [rows][k] · w [n][k]ᵀ`: fp16 operands, fp32 accumulation and output (cublasGemmEx).
    pub fn gemm_f16(
        &self,
        w: Ptr<u16>,
        x: Ptr<u16>,
        c: Ptr<f32>,
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<(), String> {
        let g = Batched::linear(rows, n, k);
        let (w_span, x_span, c_span) = g.spans();
        w.need(w_span, "GEMM weight")?;
        x.need(x_span, "GEMM input")?;
        c.need(c_span, "GEMM output")?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: `Batched::linear` is the row-major product in cuBLAS' terms (tested against it below);
        // `spans` is what each operand reaches and was checked against its buffer, and the buffers outlive the
        // call (it drains its stream). Alpha and beta are host f32s as CUBLAS_COMPUTE_32F requires; the handle is
        // this lane's, on its stream.
        unsafe {
            gemm_ex(
                *self.lane.blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                int(g.m, "GEMM n")?,
                int(g.n, "GEMM rows")?,
                int(g.k, "GEMM k")?,
                (&alpha as *const f32).cast(),
                w.addr as *const _,
                cudaDataType_t::CUDA_R_16F,
                int(g.lda, "GEMM k")?,
                x.addr as *const _,
                cudaDataType_t::CUDA_R_16F,
                int(g.ldb, "GEMM k")?,
                (&beta as *const f32).cast(),
                c.addr as *mut _,
                cudaDataType_t::CUDA_R_32F,
                int(g.ldc, "GEMM n")?,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| format!("fp16 GEMM ({rows} x {k} by {n}): {e}"))
    }

    /// fp32 strided-batched GEMM in cuBLAS' column-major terms (the attention products).
    fn sgemm_batched(&self, g: &Batched, a: Ptr<f32>, b: Ptr<f32>, c: Ptr<f32>) -> Result<(), String> {
        let (a_span, b_span, c_span) = g.spans();
        a.need(a_span, "SGEMM A")?;
        b.need(b_span, "SGEMM B")?;
        c.need(c_span, "SGEMM C")?;
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let beta = 0.0f32;
        // SAFETY: `spans` is the furthest element each operand reaches over the whole batch under these
        // transposes, leading dimensions and strides; all three were checked against their buffers, which
        // outlive the call. Scalars are host f32s as CUBLAS_COMPUTE_32F requires.
        unsafe {
            gemm_strided_batched_ex(
                *self.lane.blas.handle(),
                op(g.transa),
                op(g.transb),
                int(g.m, "SGEMM m")?,
                int(g.n, "SGEMM n")?,
                int(g.k, "SGEMM k")?,
                (&g.alpha as *const f32).cast(),
                a.addr as *const _,
                cudaDataType_t::CUDA_R_32F,
                int(g.lda, "SGEMM lda")?,
                g.stride_a as i64,
                b.addr as *const _,
                cudaDataType_t::CUDA_R_32F,
                int(g.ldb, "SGEMM ldb")?,
                g.stride_b as i64,
                (&beta as *const f32).cast(),
                c.addr as *mut _,
                cudaDataType_t::CUDA_R_32F,
                int(g.ldc, "SGEMM ldc")?,
                g.stride_c as i64,
                int(g.batch, "SGEMM batch")?,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| format!("attention SGEMM: {e}"))
    }

    /// A linear layer over split input rows, with its bias and epilogue.
    pub fn linear(
        &self,
        x_split: Ptr<u16>,
        rows: usize,
        lin: &DeviceLinear,
        product: Ptr<f32>,
        epilogue: Epilogue,
    ) -> Result<(), String> {
        self.gemm_f16(self.ptr(&lin.w), x_split, product, 2 * rows, lin.out, lin.inp)?;
        self.combine(product, self.ptr(&lin.b), rows, lin.out, epilogue)
    }

    /// Multi-head attention of `q` over `k`/`v` into `out` (`[tq][d]`), cpu.rs's `attention`: per head one
    /// strided-batched SGEMM for the scaled scores, the (masked) softmax, one for the weighted values.
    /// `keep` sees the scaled scores `[heads][tq][tk]` before the softmax (the alignment heads).
    pub fn attention(
        &self,
        a: &Attention,
        scores: Ptr<f32>,
        out: Ptr<f32>,
        keep: impl FnOnce(Ptr<f32>) -> Result<(), String>,
    ) -> Result<(), String> {
        let Dims { d_model: d, n_heads: heads, .. } = self.dims();
        let hd = d / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        // Row-major S[tq][tk] = Q·Kᵀ is column-major Sᵀ (tk x tq) = op_T(K) · Q.
        let qk = Batched {
            transa: true,
            transb: false,
            m: a.tk,
            n: a.tq,
            k: hd,
            lda: a.ldk,
            ldb: a.ldq,
            ldc: a.tk,
            stride_a: hd,
            stride_b: hd,
            stride_c: a.tq * a.tk,
            batch: heads,
            alpha: scale,
        };
        self.sgemm_batched(&qk, a.k, a.q, scores)?;
        keep(scores)?;
        self.softmax_rows(scores, heads, a.tq, a.tk, a.causal_offset)?;
        // Row-major O_h[tq][hd] = P·V is column-major O_hᵀ (hd x tq) = V_hᵀ · Pᵀ, written at column h·hd of out.
        let pv = Batched {
            transa: false,
            transb: false,
            m: hd,
            n: a.tq,
            k: a.tk,
            lda: a.ldv,
            ldb: a.tk,
            ldc: d,
            stride_a: hd,
            stride_b: a.tq * a.tk,
            stride_c: hd,
            batch: heads,
            alpha: 1.0,
        };
        self.sgemm_batched(&pv, a.v, scores, out)
    }
}

/// The operands of one multi-head attention: row-major `q` `[tq][·]`, `k`, `v` `[tk][·]` with their row
/// strides, each head's columns at `h · head_dim`.
pub(super) struct Attention {
    pub q: Ptr<f32>,
    pub ldq: usize,
    pub k: Ptr<f32>,
    pub ldk: usize,
    pub v: Ptr<f32>,
    pub ldv: usize,
    pub tq: usize,
    pub tk: usize,
    /// Query `i` sees keys `0..=offset + i` (decoder self-attention); `None` sees all.
    pub causal_offset: Option<usize>,
}

/// A strided-batched GEMM in cuBLAS' column-major terms.
#[derive(Clone, Copy, Debug)]
struct Batched {
    transa: bool,
    transb: bool,
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldb: usize,
    ldc: usize,
    stride_a: usize,
    stride_b: usize,
    stride_c: usize,
    batch: usize,
    alpha: f32,
}

impl Batched {
    /// Row-major `C[rows][n] = X[rows][k] · W[n][k]ᵀ` (a PyTorch-layout weight): column-major
    /// `Cᵀ (n x rows) = op_T(W) · Xᵀ`, W first.
    fn linear(rows: usize, n: usize, k: usize) -> Self {
        Self {
            transa: true,
            transb: false,
            m: n,
            n: rows,
            k,
            lda: k,
            ldb: k,
            ldc: n,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
            batch: 1,
            alpha: 1.0,
        }
    }

    /// Elements each operand reaches over the batch: a column-major `rows x cols` matrix with leading
    /// dimension `ld` reaches `(cols - 1) · ld + rows`.
    fn spans(&self) -> (usize, usize, usize) {
        let span = |rows: usize, cols: usize, ld: usize| cols.saturating_sub(1) * ld + rows;
        let over = |one: usize, stride: usize| self.batch.saturating_sub(1) * stride + one;
        let a = if self.transa { span(self.k, self.m, self.lda) } else { span(self.m, self.k, self.lda) };
        let b = if self.transb { span(self.n, self.k, self.ldb) } else { span(self.k, self.n, self.ldb) };
        (over(a, self.stride_a), over(b, self.stride_b), over(span(self.m, self.n, self.ldc), self.stride_c))
    }

    /// The reference semantics, for the tests: `C_i = alpha · op(A_i) · op(B_i)`.
    #[cfg(test)]
    fn run_on_host(&self, a: &[f32], b: &[f32], c: &mut [f32]) {
        for i in 0..self.batch {
            for col in 0..self.n {
                for row in 0..self.m {
                    let mut acc = 0.0f32;
                    for l in 0..self.k {
                        let av = if self.transa {
                            a[i * self.stride_a + l + row * self.lda]
                        } else {
                            a[i * self.stride_a + row + l * self.lda]
                        };
                        let bv = if self.transb {
                            b[i * self.stride_b + col + l * self.ldb]
                        } else {
                            b[i * self.stride_b + l + col * self.ldb]
                        };
                        acc += av * bv;
                    }
                    c[i * self.stride_c + row + col * self.ldc] = self.alpha * acc;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two attention GEMMs, run with cuBLAS' semantics on the host, give cpu.rs's per-head products,
    /// including the strided views into a fused Q|K|V buffer; and `spans` covers exactly what they touch.
    #[test]
    fn attention_gemm_configs_compute_per_head_products() {
        let (tq, tk, heads, hd) = (3usize, 5usize, 2usize, 4usize);
        let d = heads * hd;
        // Fused rows [Q | K | V] of width 3d, like the encoder's projection; keys/values use rows 0..tk.
        let rows = tq.max(tk);
        let qkv: Vec<f32> = (0..rows * 3 * d).map(|i| ((i * 7) % 11) as f32 * 0.25 - 1.0).collect();
        let scale = 0.5;
        let qk = Batched {
            transa: true,
            transb: false,
            m: tk,
            n: tq,
            k: hd,
            lda: 3 * d,
            ldb: 3 * d,
            ldc: tk,
            stride_a: hd,
            stride_b: hd,
            stride_c: tq * tk,
            batch: heads,
            alpha: scale,
        };
        let mut scores = vec![0.0f32; heads * tq * tk];
        qk.run_on_host(&qkv[d..], &qkv, &mut scores);
        for h in 0..heads {
            for i in 0..tq {
                for j in 0..tk {
                    let want: f32 =
                        (0..hd).map(|l| qkv[i * 3 * d + h * hd + l] * qkv[j * 3 * d + d + h * hd + l]).sum();
                    assert!((scores[(h * tq + i) * tk + j] - scale * want).abs() < 1e-5, "score h{h} q{i} k{j}");
                }
            }
        }
        let (a, b, c) = qk.spans();
        assert!(a <= qkv.len() - d && b <= qkv.len() && c == scores.len(), "{a} {b} {c}");

        let pv = Batched {
            transa: false,
            transb: false,
            m: hd,
            n: tq,
            k: tk,
            lda: 3 * d,
            ldb: tk,
            ldc: d,
            stride_a: hd,
            stride_b: tq * tk,
            stride_c: hd,
            batch: heads,
            alpha: 1.0,
        };
        let mut out = vec![0.0f32; tq * d];
        pv.run_on_host(&qkv[2 * d..], &scores, &mut out);
        for h in 0..heads {
            for i in 0..tq {
                for l in 0..hd {
                    let want: f32 =
                        (0..tk).map(|j| scores[(h * tq + i) * tk + j] * qkv[j * 3 * d + 2 * d + h * hd + l]).sum();
                    assert!((out[i * d + h * hd + l] - want).abs() < 1e-4, "out h{h} q{i} l{l}");
                }
            }
        }
        let (_, _, c) = pv.spans();
        assert_eq!(c, tq * d);
    }

    #[test]
    fn linear_config_computes_x_times_w_transposed() {
        let (rows, n, k) = (3, 5, 4);
        let x: Vec<f32> = (0..rows * k).map(|i| i as f32 - 4.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32).collect();
        let g = Batched::linear(rows, n, k);
        assert_eq!(g.spans(), (n * k, rows * k, rows * n));
        let mut c = vec![0.0f32; rows * n];
        g.run_on_host(&w, &x, &mut c);
        for r in 0..rows {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| x[r * k + l] * w[j * k + l]).sum();
                assert_eq!(c[r * n + j], want, "row {r} col {j}");
            }
        }
    }
}
