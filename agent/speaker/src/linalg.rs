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

/// Columns per tile of [`RecurrentMatrix`]: two AVX vectors.
const TILE: usize = 16;
/// Rows per pass of the recurrent kernel: 6 rows x 2 vectors = 12 accumulators, within x86-64's 16 registers.
const ROWS: usize = 6;

/// `Wᵀ` of a recurrent weight (`[N][K]` PyTorch layout) re-laid once, at load, as column tiles of `[K][16]`, so
/// the recurrent kernel reads each tile as one sequential run of cache lines.
#[derive(Debug, Clone)]
pub(crate) struct RecurrentMatrix {
    n: usize,
    k: usize,
    tiles: Vec<f32>,
}

impl RecurrentMatrix {
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() == n * k && n % TILE == 0, "recurrent weight shape");
        let mut tiles = vec![0.0; n * k];
        for (t, tile) in tiles.chunks_exact_mut(k * TILE).enumerate() {
            for kk in 0..k {
                for c in 0..TILE {
                    tile[kk * TILE + c] = w[(t * TILE + c) * k + kk];
                }
            }
        }
        Self { n, k, tiles }
    }
}

/// `out[m][n] += Σ_k a[m][k] · w[n][k]` for the few rows of an LSTM time step (one per partial window).
///
/// Why not [`gemm_bt`]: sgemm packs its whole right-hand operand on every call (1 MB for `W_hh`), as much work as
/// the product itself at these row counts, and each recurrent layer calls it once per time step (160 per
/// window). Here the weights are packed once ([`RecurrentMatrix`]) and streamed; the kernel uses FMA where the
/// CPU has it (detected at run time: the portable build targets baseline x86-64).
pub(crate) fn recurrent_accumulate(a: &[f32], rows: usize, w: &RecurrentMatrix, out: &mut [f32]) {
    assert!(a.len() >= rows * w.k && out.len() >= rows * w.n, "recurrent operand sizes");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: `recurrent_fma` only differs from the portable body in the target features it is compiled
        // for, and both were just detected on this CPU. Every index is bounds-checked slice access.
        #[allow(unsafe_code)]
        unsafe {
            recurrent_fma(a, rows, w, out)
        };
        return;
    }
    recurrent_body::<false>(a, rows, w, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)] // `unsafe fn`, not a safe target-feature fn (Rust 1.86+): the workspace builds on 1.85.
unsafe fn recurrent_fma(a: &[f32], rows: usize, w: &RecurrentMatrix, out: &mut [f32]) {
    recurrent_body::<true>(a, rows, w, out);
}

#[inline(always)]
fn recurrent_body<const FMA: bool>(a: &[f32], rows: usize, w: &RecurrentMatrix, out: &mut [f32]) {
    let mut m0 = 0;
    while m0 < rows {
        let mr = (rows - m0).min(ROWS);
        // One monomorphised pass per row count, so the accumulators stay in registers.
        match mr {
            1 => pass::<1, FMA>(a, m0, w, out),
            2 => pass::<2, FMA>(a, m0, w, out),
            3 => pass::<3, FMA>(a, m0, w, out),
            4 => pass::<4, FMA>(a, m0, w, out),
            5 => pass::<5, FMA>(a, m0, w, out),
            _ => pass::<ROWS, FMA>(a, m0, w, out),
        }
        m0 += mr;
    }
}

#[inline(always)]
fn pass<const R: usize, const FMA: bool>(a: &[f32], m0: usize, w: &RecurrentMatrix, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    let a_rows: [&[f32]; R] = std::array::from_fn(|r| &a[(m0 + r) * k..(m0 + r + 1) * k]);
    for (t, tile) in w.tiles.chunks_exact(k * TILE).enumerate() {
        let mut acc = [[0.0f32; TILE]; R];
        for (kk, wrow) in tile.chunks_exact(TILE).enumerate() {
            let wrow: &[f32; TILE] = wrow.try_into().expect("tile width");
            for r in 0..R {
                let x = a_rows[r][kk];
                for c in 0..TILE {
                    acc[r][c] = if FMA { x.mul_add(wrow[c], acc[r][c]) } else { acc[r][c] + x * wrow[c] };
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let o = &mut out[(m0 + r) * n + t * TILE..(m0 + r) * n + (t + 1) * TILE];
            for (slot, v) in o.iter_mut().zip(row) {
                *slot += v;
            }
        }
    }
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

    #[test]
    fn recurrent_kernel_matches_naive_for_every_row_count() {
        // Integers small enough that every sum is exact in f32, with or without FMA.
        let (n, k) = (64, 37);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let packed = RecurrentMatrix::new(&w, n, k);
        for rows in 1..=14 {
            let a: Vec<f32> = (0..rows * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let mut out: Vec<f32> = (0..rows * n).map(|i| (i % 3) as f32).collect();
            recurrent_accumulate(&a, rows, &packed, &mut out);
            for r in 0..rows {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|kk| a[r * k + kk] * w[j * k + kk]).sum();
                    assert_eq!(out[r * n + j], ((r * n + j) % 3) as f32 + dot, "rows {rows}: row {r} col {j}");
                }
            }
        }
    }
}
