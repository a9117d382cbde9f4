//! The one dense kernel of the CPU path: `out = init + A · Wᵀ` with PyTorch-layout weights.

/// Output columns handled per pass; one `[K][NC]` slice of the weights (256 KB for K = 256) stays in L2 while
/// every row block uses it.
const NC: usize = 256;
/// A `[N][K]` row-major weight matrix (PyTorch layout) stored transposed as `[K][N]`, so the inner loop is a
/// long, contiguous, reduction-free loop over output columns that the compiler vectorises reliably.
#[derive(Debug, Clone)]
pub(crate) struct TransposedMatrix {
    n: usize,
    k: usize,
    wt: Vec<f32>,
}

impl TransposedMatrix {
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert!(k % 4 == 0 && w.len() == n * k, "weight matrix shape");
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
pub(crate) fn gemm_bt(
    a: &[f32],
    rows: usize,
    w: &TransposedMatrix,
    out: &mut [f32],
    init: Init<'_>,
) {
    let (k, n) = (w.k, w.n);
    assert!(
        a.len() >= rows * k && out.len() >= rows * n,
        "gemm operand sizes"
    );
    if let Init::Bias(bias) = init {
        for row in out[..rows * n].chunks_exact_mut(n) {
            row.copy_from_slice(bias);
        }
    }
    for col in (0..n).step_by(NC) {
        let cols = NC.min(n - col);
        let mut m = 0;
        while m < rows {
            if rows - m >= 4 {
                let (o0, rest) = out[m * n..(m + 4) * n].split_at_mut(n);
                let (o1, rest) = rest.split_at_mut(n);
                let (o2, o3) = rest.split_at_mut(n);
                let outs = [
                    &mut o0[col..col + cols],
                    &mut o1[col..col + cols],
                    &mut o2[col..col + cols],
                    &mut o3[col..col + cols],
                ];
                let a_rows = [
                    &a[m * k..(m + 1) * k],
                    &a[(m + 1) * k..(m + 2) * k],
                    &a[(m + 2) * k..(m + 3) * k],
                    &a[(m + 3) * k..(m + 4) * k],
                ];
                let [o0, o1, o2, o3] = outs;
                for kb in (0..k).step_by(4) {
                    let ws = weight_rows(w, kb, col, cols);
                    let c = |r: usize| {
                        [
                            a_rows[r][kb],
                            a_rows[r][kb + 1],
                            a_rows[r][kb + 2],
                            a_rows[r][kb + 3],
                        ]
                    };
                    rows4(o0, o1, o2, o3, ws, [c(0), c(1), c(2), c(3)]);
                }
                m += 4;
            } else {
                let o = &mut out[m * n + col..m * n + col + cols];
                let a_row = &a[m * k..(m + 1) * k];
                for kb in (0..k).step_by(4) {
                    rows1(
                        o,
                        weight_rows(w, kb, col, cols),
                        [a_row[kb], a_row[kb + 1], a_row[kb + 2], a_row[kb + 3]],
                    );
                }
                m += 1;
            }
        }
    }
}

/// Rows `kb..kb + 4` of the transposed weights, restricted to columns `col..col + cols`.
fn weight_rows(w: &TransposedMatrix, kb: usize, col: usize, cols: usize) -> [&[f32]; 4] {
    let row = |i: usize| &w.wt[(kb + i) * w.n + col..(kb + i) * w.n + col + cols];
    [row(0), row(1), row(2), row(3)]
}

/// Four output rows += their 4 coefficients times four weight rows. Separate arguments (not an array of slices)
/// so the compiler knows none of them alias and vectorises the loop without runtime checks.
#[inline(always)]
fn rows4(
    o0: &mut [f32],
    o1: &mut [f32],
    o2: &mut [f32],
    o3: &mut [f32],
    w: [&[f32]; 4],
    c: [[f32; 4]; 4],
) {
    let len = o0.len();
    let (o1, o2, o3) = (&mut o1[..len], &mut o2[..len], &mut o3[..len]);
    let (w0, w1, w2, w3) = (&w[0][..len], &w[1][..len], &w[2][..len], &w[3][..len]);
    for j in 0..len {
        let (v0, v1, v2, v3) = (w0[j], w1[j], w2[j], w3[j]);
        o0[j] += c[0][0] * v0 + c[0][1] * v1 + c[0][2] * v2 + c[0][3] * v3;
        o1[j] += c[1][0] * v0 + c[1][1] * v1 + c[1][2] * v2 + c[1][3] * v3;
        o2[j] += c[2][0] * v0 + c[2][1] * v1 + c[2][2] * v2 + c[2][3] * v3;
        o3[j] += c[3][0] * v0 + c[3][1] * v1 + c[3][2] * v2 + c[3][3] * v3;
    }
}

#[inline(always)]
fn rows1(o: &mut [f32], w: [&[f32]; 4], c: [f32; 4]) {
    let len = o.len();
    let (w0, w1, w2, w3) = (&w[0][..len], &w[1][..len], &w[2][..len], &w[3][..len]);
    for j in 0..len {
        o[j] += c[0] * w0[j] + c[1] * w1[j] + c[2] * w2[j] + c[3] * w3[j];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_gemm_matches_naive() {
        let (rows, n, k) = (13, 600, 12);
        let a: Vec<f32> = (0..rows * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0)
            .collect();
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
