//! The call context every forward pass runs in: bounds-checked device addresses, the lane's scratch memory,
//! uploads and downloads. The GEMMs are in gemm.rs, the kernel launches in launch.rs; everything is queued on
//! one lane's stream and nothing synchronizes except [`Exec::download`] and [`Exec::finish`].
use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits};

use super::kernels::Kernels;
use super::{Gpu, Lane};
use crate::model::Dims;

/// A device address with the number of `T`s it may reach. Every launch and GEMM checks its operands' extents
/// against these lengths before queuing, so a wrong size is an error, never a stray write.
pub(super) struct Ptr<T> {
    pub(super) addr: u64,
    pub(super) len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Ptr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Ptr<T> {}

impl<T> Ptr<T> {
    /// For arguments a kernel mode does not read.
    pub fn null() -> Self {
        Self { addr: 0, len: 0, _t: PhantomData }
    }

    /// The part starting `offset` elements in.
    pub fn at(self, offset: usize) -> Result<Self, String> {
        if offset > self.len {
            return Err(format!("offset {offset} is past a buffer of {}", self.len));
        }
        Ok(Self { addr: self.addr + (offset * size_of::<T>()) as u64, len: self.len - offset, _t: PhantomData })
    }

    /// `self` if it reaches `n` elements.
    pub fn need(self, n: usize, what: &str) -> Result<Self, String> {
        if n > self.len {
            return Err(format!("{what}: needs {n} elements, the buffer holds {}", self.len));
        }
        Ok(self)
    }
}

pub(super) fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what}: {v} does not fit a 32-bit size"))
}

/// What a fused GEMM epilogue ([`Exec::combine`]) does with `v = hi + lo + bias`.
#[derive(Clone, Copy)]
pub(super) enum Epilogue {
    /// `out[r * ld + j] = v`
    Write(Ptr<f32>, usize),
    /// `out[r * ld + j] += v` (the residual connections)
    Add(Ptr<f32>, usize),
    /// `out[r * n + j] = gelu(v)`
    Gelu(Ptr<f32>),
    /// `gelu(v)` written split, ready for the next GEMM
    GeluSplit(Ptr<u16>),
}

/// Working memory of one kind of call (sizes in [`ScratchSizes`]).
pub(super) struct Scratch {
    x: CudaSlice<f32>,
    act: CudaSlice<f32>,
    attn: CudaSlice<f32>,
    scores: CudaSlice<f32>,
    split: CudaSlice<u16>,
    product: CudaSlice<f32>,
    input: CudaSlice<f32>,
    tokens: CudaSlice<i32>,
}

/// The scratch buffers' addresses for one call.
#[derive(Clone, Copy)]
pub(super) struct Bufs {
    /// The residual stream `[rows][d]`.
    pub x: Ptr<f32>,
    /// Projections (`[rows][3d]` Q|K|V, cross Q) and the first convolution's output.
    pub act: Ptr<f32>,
    /// Attention output `[rows][d]`.
    pub attn: Ptr<f32>,
    /// Attention scores `[heads][tq][tk]`.
    pub scores: Ptr<f32>,
    /// Split fp16 GEMM inputs `[2][rows][k]`.
    pub split: Ptr<u16>,
    /// Raw GEMM outputs `[2][rows][n]`.
    pub product: Ptr<f32>,
    /// The mel window (encode) or the logits (decode).
    pub input: Ptr<f32>,
    pub tokens: Ptr<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScratchKind {
    Encode,
    Decode,
}

/// Element counts of each scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ScratchSizes {
    pub x: usize,
    pub act: usize,
    pub attn: usize,
    pub scores: usize,
    pub split: usize,
    pub product: usize,
    pub input: usize,
    pub tokens: usize,
}

impl ScratchSizes {
    pub(super) fn of(kind: ScratchKind, dims: &Dims) -> Self {
        let Dims { n_mels, n_audio_ctx: ctx, d_model: d, n_heads: heads, n_vocab, n_text_ctx, .. } = *dims;
        match kind {
            // The convolutions run over 2 x ctx frames; everything after over ctx positions.
            ScratchKind::Encode => {
                let frames = 2 * ctx;
                Self {
                    x: ctx * d,
                    act: (frames * d).max(ctx * 3 * d),
                    attn: ctx * d,
                    scores: heads * ctx * ctx,
                    split: (2 * frames * n_mels * 3).max(2 * ctx * 3 * d).max(2 * ctx * 4 * d),
                    product: (2 * frames * d).max(2 * ctx * 4 * d),
                    input: n_mels * frames,
                    tokens: 1,
                }
            }
            // Up to a whole context of tokens at once (a long prompt, or the alignment pass).
            ScratchKind::Decode => {
                let rows = n_text_ctx;
                Self {
                    x: rows * d,
                    act: rows * 3 * d,
                    attn: rows * d,
                    scores: heads * rows * ctx.max(rows),
                    split: 2 * rows * 4 * d,
                    product: (2 * rows * 4 * d).max(2 * n_vocab),
                    input: n_vocab,
                    tokens: rows,
                }
            }
        }
    }
}

impl Scratch {
    fn new(stream: &Arc<CudaStream>, sizes: ScratchSizes) -> Result<Self, String> {
        fn alloc<T: DeviceRepr + ValidAsZeroBits>(s: &Arc<CudaStream>, n: usize) -> Result<CudaSlice<T>, String> {
            s.alloc_zeros::<T>(n.max(1)).map_err(|e| format!("allocating {} bytes of scratch: {e}", n * size_of::<T>()))
        }
        Ok(Self {
            x: alloc(stream, sizes.x)?,
            act: alloc(stream, sizes.act)?,
            attn: alloc(stream, sizes.attn)?,
            scores: alloc(stream, sizes.scores)?,
            split: alloc(stream, sizes.split)?,
            product: alloc(stream, sizes.product)?,
            input: alloc(stream, sizes.input)?,
            tokens: alloc(stream, sizes.tokens)?,
        })
    }
}

/// One call's handle on the GPU: shared kernels and weights plus the lane it runs on.
pub(super) struct Exec<'a> {
    pub gpu: &'a Gpu,
    pub(super) lane: &'a mut Lane,
}

impl<'a> Exec<'a> {
    pub(super) fn new(gpu: &'a Gpu, lane: &'a mut Lane) -> Self {
        Self { gpu, lane }
    }

    pub fn dims(&self) -> Dims {
        self.gpu.dims
    }

    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.lane.stream
    }

    pub(super) fn kernels(&self) -> &Kernels {
        &self.gpu.kernels
    }

    /// Makes the context current on this thread (cuBLAS and the raw copies use the current context).
    pub fn bind(&self) -> Result<(), String> {
        self.gpu.ctx.bind_to_thread().map_err(|e| format!("binding the CUDA context: {e}"))
    }

    /// Waits for everything queued by this call and surfaces errors recorded asynchronously.
    pub fn finish(&self) -> Result<(), String> {
        self.stream().synchronize().map_err(|e| format!("synchronizing: {e}"))?;
        self.gpu.ctx.check_err().map_err(|e| format!("asynchronous CUDA error: {e}"))
    }

    pub fn ptr<T>(&self, buf: &CudaSlice<T>) -> Ptr<T> {
        // Event tracking is off (see the module doc), so the returned guard records nothing.
        let (addr, _guard) = buf.device_ptr(self.stream());
        Ptr { addr, len: buf.len(), _t: PhantomData }
    }

    /// The lane's scratch of `kind`, allocated on first use.
    pub fn scratch(&mut self, kind: ScratchKind) -> Result<Bufs, String> {
        let sizes = ScratchSizes::of(kind, &self.gpu.dims);
        let slot = match kind {
            ScratchKind::Encode => &mut self.lane.encode,
            ScratchKind::Decode => &mut self.lane.decode,
        };
        if slot.is_none() {
            *slot = Some(Scratch::new(&self.lane.stream, sizes)?);
        }
        let s = match kind {
            ScratchKind::Encode => self.lane.encode.as_ref(),
            ScratchKind::Decode => self.lane.decode.as_ref(),
        }
        .ok_or("scratch missing")?;
        Ok(Bufs {
            x: self.ptr(&s.x),
            act: self.ptr(&s.act),
            attn: self.ptr(&s.attn),
            scores: self.ptr(&s.scores),
            split: self.ptr(&s.split),
            product: self.ptr(&s.product),
            input: self.ptr(&s.input),
            tokens: self.ptr(&s.tokens),
        })
    }

    /// A zeroed buffer on this lane's stream (decoder state, per-call extras).
    pub fn alloc_f32(&self, n: usize) -> Result<CudaSlice<f32>, String> {
        self.stream().alloc_zeros::<f32>(n.max(1)).map_err(|e| format!("allocating {} bytes: {e}", n * 4))
    }

    pub fn upload<T: DeviceRepr>(&self, src: &[T], dst: Ptr<T>) -> Result<(), String> {
        dst.need(src.len(), "upload")?;
        // SAFETY: `dst` reaches `src.len()` elements (checked above) of a buffer that outlives the call. The
        // source is pageable host memory, which the driver stages before this returns, so `src` may go.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst.addr, src, self.stream().cu_stream()) }
            .map_err(|e| format!("upload: {e}"))
    }

    /// Waits for the queued work and copies `n` floats from `src`.
    pub fn download(&self, src: Ptr<f32>, n: usize) -> Result<Vec<f32>, String> {
        src.need(n, "download")?;
        let mut out = vec![0.0f32; n];
        // SAFETY: `src` reaches `n` floats (checked) and `out` holds `n`; the stream is synchronized before `out`
        // is read or dropped.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut out, src.addr, self.stream().cu_stream()) }
            .map_err(|e| format!("download: {e}"))?;
        self.stream().synchronize().map_err(|e| format!("download: {e}"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_offsets_and_extents_are_checked() {
        let p = Ptr::<f32> { addr: 1000, len: 10, _t: PhantomData };
        let q = p.at(4).unwrap();
        assert_eq!((q.addr, q.len), (1016, 6));
        assert!(p.at(11).is_err());
        assert!(q.need(6, "x").is_ok() && q.need(7, "x").is_err());
    }

    #[test]
    fn decode_scratch_holds_a_whole_context_and_the_logits() {
        let dims = Dims {
            n_mels: 80,
            n_audio_ctx: 1500,
            d_model: 384,
            n_heads: 6,
            encoder_layers: 4,
            decoder_layers: 4,
            n_vocab: 51864,
            n_text_ctx: 448,
        };
        let s = ScratchSizes::of(ScratchKind::Decode, &dims);
        assert!(s.product >= 2 * dims.n_vocab && s.product >= 2 * 448 * 4 * 384);
        assert_eq!(s.scores, 6 * 448 * 1500);
        let e = ScratchSizes::of(ScratchKind::Encode, &dims);
        assert!(e.split >= 2 * 3000 * 80 * 3 && e.act >= 3000 * 384);
    }
}
