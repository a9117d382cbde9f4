//! Launches of the NVRTC kernels (kernels.rs), each after checking its operands' extents.
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::kernels::BLOCK;
use super::ops::{Epilogue, Exec, Ptr, int};
use super::weights::DeviceNorm;
use crate::model::Dims;

impl Exec<'_> {
    fn grid(n: usize) -> LaunchConfig {
        // Grid-stride loops cover the rest.
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    fn per_row(rows: usize) -> Result<LaunchConfig, String> {
        let rows = u32::try_from(rows.max(1)).map_err(|_| "too many rows".to_string())?;
        Ok(LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 })
    }

    /// Kernel-3 same-padded convolution input as split im2col rows `[2][t_out][c_in * 3]`.
    #[allow(clippy::too_many_arguments)]
    pub fn im2col3(
        &self,
        x: Ptr<f32>,
        t_in: usize,
        c_in: usize,
        t_step: usize,
        c_step: usize,
        stride: usize,
        cols: Ptr<u16>,
    ) -> Result<usize, String> {
        let t_out = t_in.div_ceil(stride);
        x.need((t_in - 1) * t_step + (c_in - 1) * c_step + 1, "im2col input")?;
        let n = t_out * c_in * 3;
        cols.need(2 * n, "im2col output")?;
        let (t_in_i, c_in_i, stride_i, t_out_i) =
            (int(t_in, "frames")?, int(c_in, "channels")?, int(stride, "stride")?, int(t_out, "frames")?);
        let (t_step, c_step) = (t_step as i64, c_step as i64);
        let mut launch = self.stream().launch_builder(&self.kernels().im2col3);
        launch.arg(&x.addr).arg(&t_in_i).arg(&c_in_i).arg(&t_step).arg(&c_step).arg(&stride_i).arg(&t_out_i);
        launch.arg(&cols.addr);
        // SAFETY: arguments match `im2col3`'s signature in order and type (pointers as u64); the input extent
        // and the 2·t_out·c_in·3 outputs were checked above; the kernel bounds its loop by t_out·c_in·3.
        unsafe { launch.launch(Self::grid(n)) }.map(drop).map_err(|e| format!("im2col3: {e}"))?;
        Ok(t_out)
    }

    /// `v = hi + lo + bias` over a GEMM's `[2][rows][n]` output, then the epilogue.
    pub fn combine(
        &self,
        product: Ptr<f32>,
        bias: Ptr<f32>,
        rows: usize,
        n: usize,
        epi: Epilogue,
    ) -> Result<(), String> {
        product.need(2 * rows * n, "combine input")?;
        bias.need(n, "bias")?;
        let last_row = |ld: usize| rows.saturating_sub(1) * ld + n;
        let (mode, out, ld, out_split) = match epi {
            Epilogue::Write(out, ld) => (0i32, out.need(last_row(ld), "combine output")?, ld, Ptr::null()),
            Epilogue::Add(out, ld) => (1, out.need(last_row(ld), "residual")?, ld, Ptr::null()),
            Epilogue::Gelu(out) => (2, out.need(rows * n, "combine output")?, n, Ptr::null()),
            Epilogue::GeluSplit(split) => (3, Ptr::null(), n, split.need(2 * rows * n, "combine output")?),
        };
        let (rows_i, n_i, ld_i) = (int(rows, "rows")?, int(n, "columns")?, int(ld, "row stride")?);
        let mut launch = self.stream().launch_builder(&self.kernels().combine);
        launch.arg(&product.addr).arg(&bias.addr).arg(&rows_i).arg(&n_i).arg(&mode).arg(&out.addr).arg(&ld_i);
        launch.arg(&out_split.addr);
        // SAFETY: arguments match `combine`'s signature; the input, bias and the output the mode writes were
        // checked above (the unused output is null and never touched by that mode).
        unsafe { launch.launch(Self::grid(rows * n)) }.map(drop).map_err(|e| format!("combine: {e}"))
    }

    pub fn add_inplace(&self, x: Ptr<f32>, y: Ptr<f32>, n: usize) -> Result<(), String> {
        x.need(n, "add")?;
        y.need(n, "add")?;
        let n_i = n as i64;
        let mut launch = self.stream().launch_builder(&self.kernels().add_inplace);
        launch.arg(&x.addr).arg(&y.addr).arg(&n_i);
        // SAFETY: both operands reach `n` floats (checked); the kernel bounds its loop by `n`.
        unsafe { launch.launch(Self::grid(n)) }.map(drop).map_err(|e| format!("add: {e}"))
    }

    /// Layer norm of `rows` rows of `x` (`[rows][d]`), written split to `out` (`[2][rows][d]`).
    pub fn layernorm_split(&self, x: Ptr<f32>, norm: &DeviceNorm, rows: usize, out: Ptr<u16>) -> Result<(), String> {
        let d = self.dims().d_model;
        x.need(rows * d, "layer norm input")?;
        out.need(2 * rows * d, "layer norm output")?;
        let (gamma, beta) = (self.ptr(&norm.gamma).need(d, "gamma")?, self.ptr(&norm.beta).need(d, "beta")?);
        let (rows_i, d_i) = (int(rows, "rows")?, int(d, "d_model")?);
        let mut launch = self.stream().launch_builder(&self.kernels().layernorm_split);
        launch.arg(&x.addr).arg(&gamma.addr).arg(&beta.addr).arg(&rows_i).arg(&d_i).arg(&out.addr);
        // SAFETY: one block of BLOCK threads per row (the reduction assumes BLOCK); each block reads its row
        // of d floats and writes 2 halves of d, all within the extents checked above.
        unsafe { launch.launch(Self::per_row(rows)?) }.map(drop).map_err(|e| format!("layer norm: {e}"))
    }

    /// `x` (`[rows][cols]`, row stride `ld`) written split to `out` (`[2][rows][cols]`).
    pub fn split_rows(&self, x: Ptr<f32>, rows: usize, cols: usize, ld: usize, out: Ptr<u16>) -> Result<(), String> {
        x.need(rows.saturating_sub(1) * ld + cols, "split input")?;
        out.need(2 * rows * cols, "split output")?;
        let (rows_i, cols_i, ld_i) = (int(rows, "rows")?, int(cols, "columns")?, int(ld, "row stride")?);
        let mut launch = self.stream().launch_builder(&self.kernels().split_rows);
        launch.arg(&x.addr).arg(&rows_i).arg(&cols_i).arg(&ld_i).arg(&out.addr);
        // SAFETY: extents checked above; the kernel bounds its loop by rows·cols.
        unsafe { launch.launch(Self::grid(rows * cols)) }.map(drop).map_err(|e| format!("split: {e}"))
    }

    pub(super) fn softmax_rows(
        &self,
        scores: Ptr<f32>,
        heads: usize,
        tq: usize,
        tk: usize,
        causal_offset: Option<usize>,
    ) -> Result<(), String> {
        scores.need(heads * tq * tk, "softmax")?;
        let causal = match causal_offset {
            Some(offset) => int(offset, "causal offset")?,
            None => -1,
        };
        let (tq_i, tk_i) = (int(tq, "queries")?, int(tk, "keys")?);
        let mut launch = self.stream().launch_builder(&self.kernels().softmax_rows);
        launch.arg(&scores.addr).arg(&tq_i).arg(&tk_i).arg(&causal);
        // SAFETY: one block of BLOCK threads per score row (heads·tq rows of tk floats, checked above).
        unsafe { launch.launch(Self::per_row(heads * tq)?) }.map(drop).map_err(|e| format!("softmax: {e}"))
    }

    /// `out[i] = embedding[tokens[i]] + positions[first_position + i]` for `n` tokens already uploaded
    /// (and checked against the vocabulary by the caller).
    pub fn embed(&self, tokens: Ptr<i32>, n: usize, first_position: usize, out: Ptr<f32>) -> Result<(), String> {
        let Dims { d_model: d, n_vocab, n_text_ctx, .. } = self.dims();
        if first_position + n > n_text_ctx {
            return Err(format!("positions {first_position}..{} exceed the context", first_position + n));
        }
        tokens.need(n, "tokens")?;
        out.need(n * d, "embeddings")?;
        let embedding = self.ptr(&self.gpu.weights.token_embedding).need(n_vocab * d, "embedding")?;
        let positions = self.ptr(&self.gpu.weights.decoder_positions).need(n_text_ctx * d, "positions")?;
        let (first, n_i, d_i) = (int(first_position, "position")?, int(n, "tokens")?, int(d, "d_model")?);
        let mut launch = self.stream().launch_builder(&self.kernels().embed);
        launch.arg(&tokens.addr).arg(&embedding.addr).arg(&positions.addr).arg(&first).arg(&n_i).arg(&d_i);
        launch.arg(&out.addr);
        // SAFETY: token ids were checked below n_vocab on the host before upload, positions stay below
        // n_text_ctx (checked above), and the output reaches n·d floats.
        unsafe { launch.launch(Self::grid(n * d)) }.map(drop).map_err(|e| format!("embed: {e}"))
    }

    /// `dst[r * ld_dst + j] = src[r * ld_src + j]` for `rows` rows of `width`.
    pub fn copy_rows(
        &self,
        src: Ptr<f32>,
        ld_src: usize,
        dst: Ptr<f32>,
        ld_dst: usize,
        rows: usize,
        width: usize,
    ) -> Result<(), String> {
        src.need(rows.saturating_sub(1) * ld_src + width, "copy source")?;
        dst.need(rows.saturating_sub(1) * ld_dst + width, "copy destination")?;
        let (ls, ld, r, w) = (int(ld_src, "stride")?, int(ld_dst, "stride")?, int(rows, "rows")?, int(width, "width")?);
        let mut launch = self.stream().launch_builder(&self.kernels().copy_rows);
        launch.arg(&src.addr).arg(&ls).arg(&dst.addr).arg(&ld).arg(&r).arg(&w);
        // SAFETY: extents checked above; the kernel bounds its loop by rows·width.
        unsafe { launch.launch(Self::grid(rows * width)) }.map(drop).map_err(|e| format!("copy rows: {e}"))
    }

    /// `out[i] = softmax(hi_i + lo_i)[targets[i]]` over split logits `[2][rows][cols]`.
    pub fn softmax_pick(
        &self,
        product: Ptr<f32>,
        rows: usize,
        cols: usize,
        targets: Ptr<i32>,
        out: Ptr<f32>,
    ) -> Result<(), String> {
        product.need(2 * rows * cols, "logits")?;
        targets.need(rows, "targets")?;
        out.need(rows, "probabilities")?;
        let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "columns")?);
        let mut launch = self.stream().launch_builder(&self.kernels().softmax_pick);
        launch.arg(&product.addr).arg(&rows_i).arg(&cols_i).arg(&targets.addr).arg(&out.addr);
        // SAFETY: one block of BLOCK threads per row; extents checked above; targets are range-checked in the
        // kernel.
        unsafe { launch.launch(Self::per_row(rows)?) }.map(drop).map_err(|e| format!("softmax pick: {e}"))
    }
}
