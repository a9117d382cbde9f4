//! The one dense kernel of the CPU path: `out = init + A · Wᵀ` with PyTorch-layout weights.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// A `[N][K]` row-major weight matrix (PyTorch layout) stored transposed as `[K][N]`: the layout the CUDA path
/// uploads, and a plain row-major right-hand operand for the GEMM below.
#[derive(Debug, Clone)]
pub(crate) struct TransposedMatrix {
    n: usize,
    k: usize,
    wt: Vec<f32>,
}

impl TransposedMatrix {
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() == n * k, "weight matrix shape");
        let mut wt = vec![0.0; n * k];
        for j in 0..n {
            for kk in 0..k {
                wt[kk * n + j] = w[j * k + kk];
            }
        }
        Self { n, k, wt }
    }

    /// The `[K][N]` data.
    pub(crate) fn transposed(&self) -> &[f32] {
        &self.wt
    }
}

pub(crate) enum Init<'a> {
    /// Start each output row from this bias vector.
    Bias(&'a [f32]),
    /// Add onto what `out` already holds.
    Accumulate,
}

/// `out[m][n] = init + sum_k a[m][k] * w[n][k]` for `rows` rows of `a` (row stride `w.k`).
///
/// The product runs in `matrixmultiply`'s sgemm (through ndarray, whose wrapper is safe): it picks an AVX/FMA
/// kernel at run time, which a baseline x86-64 build cannot do in safe code of its own.
pub(crate) fn gemm_bt(a: &[f32], rows: usize, w: &TransposedMatrix, out: &mut [f32], init: Init<'_>) {
    let (k, n) = (w.k, w.n);
    assert!(a.len() >= rows * k && out.len() >= rows * n, "gemm operand sizes");
    let out = &mut out[..rows * n];
    if let Init::Bias(bias) = init {
        for row in out.chunks_exact_mut(n) {
            row.copy_from_slice(bias);
        }
    }
    // The shapes match the slice lengths by the assertion above, so these cannot fail.
    let a = ArrayView2::from_shape((rows, k), &a[..rows * k]).expect("lhs shape");
    let b = ArrayView2::from_shape((k, n), &w.wt[..]).expect("rhs shape");
    let mut c = ArrayViewMut2::from_shape((rows, n), out).expect("out shape");
    general_mat_mul(1.0, &a, &b, 1.0, &mut c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_gemm_matches_naive() {
        // k = 13: the kernel has no alignment or multiple-of-four requirement.
        let (rows, n, k) = (13, 600, 13);
        let a: Vec<f32> = (0..rows * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let packed = TransposedMatrix::new(&w, n, k);
        let mut out = vec![0.0; rows * n];
        gemm_bt(&a, rows, &packed, &mut out, Init::Bias(&bias));
        gemm_bt(&a, rows, &packed, &mut out, Init::Accumulate);
        for r in 0..rows {
            for j in 0..n {
                let dot: f32 = (0..k).map(|kk| a[r * k + kk] * w[j * k + kk]).sum();
                assert_eq!(out[r * n + j], bias[j] + 2.0 * dot, "row {r} col {j}");
            }
        }
    }
}
