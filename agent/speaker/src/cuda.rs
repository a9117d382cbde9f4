//! Placeholder while the CUDA path is written.
use std::sync::Arc;
use crate::{BatchEmbeddings, EmbeddingBackend, ModelError, Prepared, EncoderWeights};
pub fn cuda_available() -> Result<(), String> { Err("not built".into()) }
pub struct CudaEncoder;
impl CudaEncoder { pub fn new(_w: Arc<EncoderWeights>, _o: usize) -> Result<Self, ModelError> { Err(ModelError::CudaUnavailable("x".into())) } }
impl EmbeddingBackend for CudaEncoder { fn name(&self) -> &'static str { "cuda" } fn embed_prepared(&self, _b: &[Prepared]) -> Result<BatchEmbeddings, ModelError> { Err(ModelError::CudaUnavailable("x".into())) } }
