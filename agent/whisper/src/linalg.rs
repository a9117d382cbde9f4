//! The dense kernels of the CPU path.
//!
//! Matrices with many rows (the encoder: 1500-3000 rows per window) go through the `gemm` crate's sgemm, which
//! picks AVX2/FMA or SSE kernels at run time. Its AVX-512 kernels sit behind its `nightly` feature (it still
//! declares the once-unstable AVX-512 target features), which a stable toolchain cannot build, so on AVX-512
//! machines the encoder runs the AVX2 kernel (a profile of a 5 s clip: ~41% of the time in it). A decoder step
//! has one row per token: there packing the whole weight matrix would cost more than the product, so a row-dot
//! loop streams the weights once instead. The element-wise loops are compiled twice ([`dispatch!`]).

use crate::model::{LayerNorm, Linear};

/// Rows below this use the dot-product path.
const SMALL_M: usize = 8;

/// Whether the CPU runs AVX2 and FMA (std caches the answer after the first check).
#[inline]
fn wide_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `fn name(args) => body`: `name` runs `body::<true>` compiled for AVX2 + FMA where the CPU has them, else
/// `body::<false>` as the portable build compiles it. The element-wise loops of the model (softmax over the
/// 1500-wide encoder scores, GELU, layer norm, the decoder's row dots) auto-vectorise to 4-lane SSE2 without FMA
/// on baseline x86-64; the same source compiled for AVX2 runs 8 lanes with fused multiply-adds. The body is
/// `#[inline(always)]`, so each copy is compiled whole for its features.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                // `unsafe fn`: a safe target-feature fn needs Rust 1.86, the workspace builds on 1.85.
                #[target_feature(enable = "avx2,fma")]
                #[allow(unsafe_code)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body::<true>($($arg),*)
                }
                if wide_cpu() {
                    // SAFETY: `wide` differs from the portable path only in the target features it is compiled
                    // for, and both were just detected on this CPU; the body is safe code.
                    #[allow(unsafe_code)]
                    return unsafe { wide($($arg),*) };
                }
            }
            $body::<false>($($arg),*)
        }
    };
}

/// `a · b + c`, fused where the copy was compiled with FMA (without it `mul_add` is a libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Dot product with eight independent accumulators, so the compiler can keep them in vector lanes.
#[inline(always)]
fn dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut sum = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for i in n / 8 * 8..n {
        sum += a[i] * b[i];
    }
    sum
}

/// `out[i][j] = a[i] · w[j] (+ bias[j])` row by row: a few rows against a weight matrix streamed once.
#[inline(always)]
fn rows_dot_body<const FMA: bool>(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    for (row, o) in a.chunks_exact(k).take(m).zip(out.chunks_exact_mut(n)) {
        for (j, slot) in o.iter_mut().enumerate() {
            *slot = dot_body::<FMA>(row, &w[j * k..(j + 1) * k]) + bias.map_or(0.0, |b| b[j]);
        }
    }
}

dispatch!(fn rows_dot(a: &[f32], m: usize, k: usize, w: &[f32], n: usize, bias: Option<&[f32]>, out: &mut [f32]) => rows_dot_body);

/// `out[m][n] = a[m][k] · w[n][k]ᵀ (+ bias[n])`.
pub(crate) fn matmul_bt(a: &[f32], m: usize, k: usize, w: &[f32], n: usize, bias: Option<&[f32]>, out: &mut [f32]) {
    assert!(a.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "matmul operand sizes");
    let out = &mut out[..m * n];
    if m < SMALL_M {
        rows_dot(a, m, k, w, n, bias, out);
        return;
    }
    match bias {
        Some(b) => out.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(&b[..n])),
        None => out.fill(0.0),
    }
    // Wᵀ as a view: row (k) stride 1, column (n) stride k.
    let a = Mat { data: a, rows: m, cols: k, rs: k, cs: 1 };
    let wt = Mat { data: w, rows: k, cols: n, rs: 1, cs: k };
    sgemm(1.0, &a, &wt, true, out, n);
}

/// A strided read-only matrix view over a slice.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Element stride between rows and between columns.
    pub rs: usize,
    pub cs: usize,
}

impl Mat<'_> {
    /// One past the largest index the view reads (0 when empty).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 { 0 } else { (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1 }
    }
}

/// `out[i][j] (row stride out_rs) = (accumulate ? out : 0) + alpha · Σ a[i][p] · b[p][j]`.
#[allow(unsafe_code)]
pub(crate) fn sgemm(alpha: f32, a: &Mat<'_>, b: &Mat<'_>, accumulate: bool, out: &mut [f32], out_rs: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions");
    assert!(a.extent() <= a.data.len() && b.extent() <= b.data.len(), "operand views stay inside their slices");
    if m == 0 || n == 0 {
        return;
    }
    assert!(out_rs >= n && (m - 1) * out_rs + n <= out.len(), "output view stays inside its slice");
    if k == 0 {
        if !accumulate {
            out.chunks_mut(out_rs).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    // SAFETY: the assertions above bound every index the kernel touches: lhs reads i·rs + p·cs < a.extent() <=
    // a.data.len() for i < m, p < k; rhs likewise; dst writes i·out_rs + j < (m-1)·out_rs + n <= out.len().
    // `out` is a unique borrow, so dst aliases neither input. Strides are non-negative and fit isize (slice
    // lengths do). `Parallelism::None`: the kernel runs on this thread only.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

impl Linear {
    /// `x` is `[rows][inp]`; returns `[rows][out]`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * self.out];
        matmul_bt(x, rows, self.inp, &self.w, self.out, Some(&self.b), &mut out);
        out
    }
}

#[inline(always)]
fn layer_norm_body<const FMA: bool>(x: &[f32], gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    let d = gamma.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = sum8(row) / d as f32;
        let mut acc = [0.0f32; 8];
        for c in row.chunks_exact(8) {
            for l in 0..8 {
                let centred = c[l] - mean;
                acc[l] = madd::<FMA>(centred, centred, acc[l]);
            }
        }
        let rest: f32 = row[d / 8 * 8..].iter().map(|v| (v - mean) * (v - mean)).sum();
        let var = (acc.iter().sum::<f32>() + rest) / d as f32;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for i in 0..d {
            o[i] = madd::<FMA>((row[i] - mean) * inv, gamma[i], beta[i]);
        }
    }
}

dispatch!(fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], out: &mut [f32]) => layer_norm_body);

impl LayerNorm {
    /// Row-wise layer norm (eps 1e-5, as PyTorch's default that Whisper uses).
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        layer_norm(x, &self.gamma, &self.beta, &mut out);
        out
    }
}

/// `e^x` in f32 without a libm call, so the loops over it vectorise: `2^n · p(r)` with `x = n·ln2 + r`,
/// |r| <= ln2/2 and a degree-6 polynomial (relative error below 2e-7, as libm's `expf` within float rounding).
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5·2^23 trick: `f32::round` is a libm call on baseline x86-64 (no SSE4.1). The
    // shifted value's low mantissa bits then hold n itself, read as an integer below: `n as i32` (saturating, NaN
    // to 0) compiled to a scalar convert and branches per element, which kept this loop from vectorising.
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_5 + r * (0.008_333_6 + r * 0.001_394_3)))));
    let n_int = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// `erf` from Numerical Recipes' `erfc` Chebyshev fit (fractional error < 1.2e-7), in f32 with [`fast_exp`].
#[inline(always)]
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204 + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let r = 1.0 - t * fast_exp(poly);
    if x >= 0.0 { r } else { -r }
}

#[inline(always)]
fn gelu_body<const FMA: bool>(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

dispatch!(
    /// GELU as PyTorch's default (`x · Φ(x)` with erf), in place.
    pub(crate) fn gelu(x: &mut [f32]) => gelu_body
);

/// Sum with eight independent accumulators (vectorisable, unlike a sequential float sum).
#[inline(always)]
pub(crate) fn sum8(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[inline(always)]
fn softmax_body<const FMA: bool>(row: &mut [f32]) {
    // Eight running maxima, so the scan vectorises (a single fold is a serial dependency chain).
    let mut lanes = [f32::NEG_INFINITY; 8];
    for c in row.chunks_exact(8) {
        for l in 0..8 {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    let max = row[row.len() / 8 * 8..]
        .iter()
        .copied()
        .fold(lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max), f32::max);
    // Masked entries are -inf: fast_exp clamps them to e^-87 (~1e-38), nothing against the row's maximum of 1.
    row.iter_mut().for_each(|v| *v = fast_exp(*v - max));
    let inv = 1.0 / sum8(row);
    row.iter_mut().for_each(|v| *v *= inv);
}

dispatch!(
    /// In-place softmax of one row.
    pub(crate) fn softmax(row: &mut [f32]) => softmax_body
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_sgemm_matches_naive_and_accumulates() {
        // A is a 3x4 column-major view inside a longer slice; B a transposed view; out has padding columns.
        let (m, k, n) = (3, 4, 5);
        let a_data: Vec<f32> = (0..20).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b_data: Vec<f32> = (0..25).map(|i| (i % 7) as f32 - 2.0).collect();
        let a = Mat { data: &a_data, rows: m, cols: k, rs: 1, cs: 3 };
        let b = Mat { data: &b_data, rows: k, cols: n, rs: 1, cs: 4 };
        let mut out = vec![1.0f32; m * 7];
        sgemm(2.0, &a, &b, true, &mut out, 7);
        for i in 0..m {
            for j in 0..n {
                let dot: f32 = (0..k).map(|p| a_data[i + p * 3] * b_data[p + j * 4]).sum();
                assert!((out[i * 7 + j] - (1.0 + 2.0 * dot)).abs() < 1e-4, "({i},{j})");
            }
            assert_eq!(out[i * 7 + 5], 1.0, "padding untouched");
        }
    }

    #[test]
    fn both_matmul_paths_match_naive() {
        for m in [1, 3, 8, 17] {
            let (k, n) = (37, 23);
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0).collect();
            let b: Vec<f32> = (0..n).map(|j| j as f32).collect();
            let mut out = vec![0.0; m * n];
            matmul_bt(&a, m, k, &w, n, Some(&b), &mut out);
            for r in 0..m {
                for j in 0..n {
                    let want: f32 = b[j] + (0..k).map(|i| a[r * k + i] * w[j * k + i]).sum::<f32>();
                    assert!((out[r * n + j] - want).abs() < 1e-3, "m={m} ({r},{j})");
                }
            }
        }
    }

    #[test]
    fn fast_exp_matches_libm() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (fast_exp(x), x.exp());
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, libm {want}");
        }
    }

    #[test]
    fn erf_and_gelu_match_known_values() {
        for (x, want) in
            [(0.0f32, 0.0f32), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (-2.0, -0.995_322_3), (3.5, 0.999_999_26)]
        {
            assert!((erf(x) - want).abs() < 4e-7, "erf({x}) = {}", erf(x));
        }
        let mut v = [1.0f32, -1.0];
        gelu(&mut v);
        assert!((v[0] - 0.841_344_7).abs() < 1e-6 && (v[1] + 0.158_655_3).abs() < 1e-6, "{v:?}");
    }

    /// Both compiled copies of each element-wise kernel (portable and AVX2 + FMA, where this CPU has it) against
    /// an f64 reference, at lengths that leave a remainder after the 8-lane blocks.
    #[test]
    fn dispatched_kernels_match_f64_in_both_copies() {
        let wave = |n: usize, f: f64| (0..n).map(|i| ((i as f64 * f).sin() * 3.0) as f32).collect::<Vec<_>>();
        let (d, rows) = (387, 3);
        let x = wave(d * rows, 0.37);
        let (gamma, beta) = (wave(d, 0.11), wave(d, 0.23));
        let mut reference = vec![0.0f32; x.len()];
        for (row, o) in x.chunks(d).zip(reference.chunks_mut(d)) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / d as f64;
            for i in 0..d {
                o[i] = ((f64::from(row[i]) - mean) / (var + 1e-5).sqrt() * f64::from(gamma[i]) + f64::from(beta[i]))
                    as f32;
            }
        }
        let mut scores = wave(1501, 0.013);
        scores[1400..].fill(f32::NEG_INFINITY);
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let total: f64 = scores.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        let (k, n) = (383, 5);
        let w = wave(k * n, 0.71);
        let bias = wave(n, 0.5);
        let dots: Vec<f32> = (0..rows)
            .flat_map(|i| {
                let (a, w, bias) = (&x[i * d..i * d + k], &w, &bias);
                (0..n).map(move |j| {
                    (a.iter().zip(&w[j * k..(j + 1) * k]).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum::<f64>()
                        + f64::from(bias[j])) as f32
                })
            })
            .collect();
        let a: Vec<f32> = x.chunks(d).flat_map(|row| row[..k].to_vec()).collect();

        type Copies = (fn(&[f32], &[f32], &[f32], &mut [f32]), fn(&mut [f32]), RowsDot);
        type RowsDot = fn(&[f32], usize, usize, &[f32], usize, Option<&[f32]>, &mut [f32]);
        let copies: [(&str, Copies); 2] = [
            ("portable", (layer_norm_body::<false>, softmax_body::<false>, rows_dot_body::<false>)),
            ("dispatched", (layer_norm, softmax, rows_dot)),
        ];
        for (name, (norm, soft, rdot)) in copies {
            let mut out = vec![0.0; x.len()];
            norm(&x, &gamma, &beta, &mut out);
            for (got, want) in out.iter().zip(&reference) {
                assert!((got - want).abs() < 1e-4, "{name} layer norm: {got} vs {want}");
            }
            let mut row = scores.clone();
            soft(&mut row);
            for (got, &v) in row.iter().zip(&scores) {
                let want = ((f64::from(v) - max).exp() / total) as f32;
                assert!((got - want).abs() < 1e-6, "{name} softmax: {got} vs {want}");
            }
            let mut out = vec![0.0; rows * n];
            rdot(&a, rows, k, &w, n, Some(&bias), &mut out);
            for (got, want) in out.iter().zip(&dots) {
                assert!((got - want).abs() < 1e-3, "{name} row dots: {got} vs {want}");
            }
        }
    }
}
