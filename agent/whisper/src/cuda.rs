//! The CUDA backend (cuBLAS fp16 GEMMs with fp32 accumulation, NVRTC kernels, KV cache). Being written: until it
//! lands, `CudaWhisper::new` reports why it cannot run and the model loads on the CPU with one log line.
use std::sync::Arc;

use crate::error::WhisperError;
use crate::model::{Decoder, Dims, WhisperBackend, WhisperWeights};

/// Whether the CUDA libraries load on this node (the speaker encoder's probe: driver, cuBLAS, NVRTC).
pub fn cuda_available() -> Result<(), String> {
    infergate_speaker::cuda_available()
}

pub struct CudaWhisper {
    weights: Arc<WhisperWeights>,
}

impl CudaWhisper {
    pub fn new(weights: Arc<WhisperWeights>, _device: usize) -> Result<Self, WhisperError> {
        cuda_available().map_err(WhisperError::Cuda)?;
        let _ = &weights;
        Err(WhisperError::Cuda("the CUDA Whisper backend is not built into this agent yet".into()))
    }
}

impl WhisperBackend for CudaWhisper {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn dims(&self) -> Dims {
        self.weights.dims
    }

    fn encode(&self, _mel: &[f32]) -> Result<Box<dyn Decoder + '_>, WhisperError> {
        Err(WhisperError::Cuda("not built".into()))
    }
}
