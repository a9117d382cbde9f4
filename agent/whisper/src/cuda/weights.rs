//! The model's parameters on the GPU: matrices as fp16 bit patterns (exact: the checkpoint is fp16), biases,
//! norms and position tables as f32.
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use crate::model::{LayerNorm, Linear, WhisperWeights};

/// `y = x · Wᵀ + b`, `W` `[out][inp]` row-major fp16.
pub(super) struct DeviceLinear {
    pub w: CudaSlice<u16>,
    pub b: CudaSlice<f32>,
    pub out: usize,
    pub inp: usize,
}

pub(super) struct DeviceNorm {
    pub gamma: CudaSlice<f32>,
    pub beta: CudaSlice<f32>,
}

pub(super) struct DeviceEncoderLayer {
    pub attn_ln: DeviceNorm,
    pub qkv: DeviceLinear,
    pub attn_out: DeviceLinear,
    pub ffn_ln: DeviceNorm,
    pub fc1: DeviceLinear,
    pub fc2: DeviceLinear,
}

pub(super) struct DeviceDecoderLayer {
    pub self_ln: DeviceNorm,
    pub self_qkv: DeviceLinear,
    pub self_out: DeviceLinear,
    pub cross_ln: DeviceNorm,
    pub cross_q: DeviceLinear,
    pub cross_kv: DeviceLinear,
    pub cross_out: DeviceLinear,
    pub ffn_ln: DeviceNorm,
    pub fc1: DeviceLinear,
    pub fc2: DeviceLinear,
}

pub(super) struct DeviceWeights {
    /// Convolutions as linears over im2col rows: `[d][c_in * 3]`.
    pub conv1: DeviceLinear,
    pub conv2: DeviceLinear,
    pub encoder_positions: CudaSlice<f32>,
    pub encoder: Vec<DeviceEncoderLayer>,
    pub encoder_ln: DeviceNorm,
    /// `[n_vocab][d]` fp16: the embedding and the tied output projection.
    pub token_embedding: CudaSlice<u16>,
    pub decoder_positions: CudaSlice<f32>,
    pub decoder: Vec<DeviceDecoderLayer>,
    pub decoder_ln: DeviceNorm,
    /// `max(n_vocab, 4d)` zeros: the bias of the bias-free products (logits).
    pub zeros: CudaSlice<f32>,
}

/// fp16 bit patterns, round to nearest even.
pub(super) fn to_f16_bits(values: &[f32]) -> Vec<u16> {
    values.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect()
}

struct Uploader<'a> {
    stream: &'a Arc<CudaStream>,
}

impl Uploader<'_> {
    fn f32(&self, values: &[f32]) -> Result<CudaSlice<f32>, String> {
        self.stream.clone_htod(values).map_err(|e| format!("uploading weights: {e}"))
    }

    fn f16(&self, values: &[f32]) -> Result<CudaSlice<u16>, String> {
        self.stream.clone_htod(&to_f16_bits(values)).map_err(|e| format!("uploading weights: {e}"))
    }

    fn linear(&self, l: &Linear) -> Result<DeviceLinear, String> {
        Ok(DeviceLinear { w: self.f16(&l.w)?, b: self.f32(&l.b)?, out: l.out, inp: l.inp })
    }

    fn conv(&self, w: &[f32], b: &[f32], out: usize) -> Result<DeviceLinear, String> {
        Ok(DeviceLinear { w: self.f16(w)?, b: self.f32(b)?, out, inp: w.len() / out.max(1) })
    }

    fn norm(&self, n: &LayerNorm) -> Result<DeviceNorm, String> {
        Ok(DeviceNorm { gamma: self.f32(&n.gamma)?, beta: self.f32(&n.beta)? })
    }
}

impl DeviceWeights {
    /// Queues the uploads on `stream`; the caller synchronizes it before the weights are used elsewhere.
    pub(super) fn upload(stream: &Arc<CudaStream>, w: &WhisperWeights) -> Result<Self, String> {
        let up = Uploader { stream };
        let d = w.dims.d_model;
        let encoder = w
            .encoder
            .iter()
            .map(|l| {
                Ok(DeviceEncoderLayer {
                    attn_ln: up.norm(&l.attn_ln)?,
                    qkv: up.linear(&l.qkv)?,
                    attn_out: up.linear(&l.attn_out)?,
                    ffn_ln: up.norm(&l.ffn_ln)?,
                    fc1: up.linear(&l.fc1)?,
                    fc2: up.linear(&l.fc2)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let decoder = w
            .decoder
            .iter()
            .map(|l| {
                Ok(DeviceDecoderLayer {
                    self_ln: up.norm(&l.self_ln)?,
                    self_qkv: up.linear(&l.self_qkv)?,
                    self_out: up.linear(&l.self_out)?,
                    cross_ln: up.norm(&l.cross_ln)?,
                    cross_q: up.linear(&l.cross_q)?,
                    cross_kv: up.linear(&l.cross_kv)?,
                    cross_out: up.linear(&l.cross_out)?,
                    ffn_ln: up.norm(&l.ffn_ln)?,
                    fc1: up.linear(&l.fc1)?,
                    fc2: up.linear(&l.fc2)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            conv1: up.conv(&w.conv1_w, &w.conv1_b, d)?,
            conv2: up.conv(&w.conv2_w, &w.conv2_b, d)?,
            encoder_positions: up.f32(&w.encoder_positions)?,
            encoder,
            encoder_ln: up.norm(&w.encoder_ln)?,
            token_embedding: up.f16(&w.token_embedding)?,
            decoder_positions: up.f32(&w.decoder_positions)?,
            decoder,
            decoder_ln: up.norm(&w.decoder_ln)?,
            zeros: stream
                .alloc_zeros::<f32>(w.dims.n_vocab.max(4 * d))
                .map_err(|e| format!("allocating weights: {e}"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{ModelFiles, ModelSize};

    /// The module doc's claim: the checkpoints are fp16, so holding the weights as fp16 on the GPU loses nothing
    /// (the CPU reference computes with exactly these values).
    #[test]
    fn installed_checkpoints_round_trip_through_fp16_exactly() {
        let dir = std::env::var_os("INFERGATE_MODELS_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"));
        let Ok(files) = ModelFiles::load(&dir, ModelSize::TinyEn) else {
            eprintln!("SKIP: whisper tiny.en not installed under {}", dir.display());
            return;
        };
        let parsed = crate::ct2::parse(&files.model_bin).unwrap();
        let w = WhisperWeights::from_ct2(&parsed).unwrap();
        let exact = |name: &str, values: &[f32]| {
            let back: Vec<f32> = to_f16_bits(values).iter().map(|&b| half::f16::from_bits(b).to_f32()).collect();
            assert!(back == values, "{name} is not representable in fp16");
        };
        exact("conv1", &w.conv1_w);
        exact("conv2", &w.conv2_w);
        exact("token embedding", &w.token_embedding);
        for (i, l) in w.encoder.iter().enumerate() {
            for (name, lin) in [("qkv", &l.qkv), ("out", &l.attn_out), ("fc1", &l.fc1), ("fc2", &l.fc2)] {
                exact(&format!("encoder {i} {name}"), &lin.w);
            }
        }
        for (i, l) in w.decoder.iter().enumerate() {
            for (name, lin) in [
                ("self qkv", &l.self_qkv),
                ("self out", &l.self_out),
                ("cross q", &l.cross_q),
                ("cross kv", &l.cross_kv),
                ("cross out", &l.cross_out),
                ("fc1", &l.fc1),
                ("fc2", &l.fc2),
            ] {
                exact(&format!("decoder {i} {name}"), &lin.w);
            }
        }
    }
}
