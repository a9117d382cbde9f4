//! The ONNX graph on tract: one optimised plan shared by every call, a fresh state per call.
//!
//! The 4-bit matmuls are made dense first (dequant.rs says why). The graph keeps its own symbolic input shapes
//! (`batch_size` x `sequence_length`), resolved by tract per call, so one plan serves every window length.
//! Pinning the input facts at import fails on this file, and a plan made concrete for one length afterwards
//! (`set_symbols`) measured no faster.
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::NerError;

pub(crate) struct Runtime {
    plan: Arc<TypedRunnableModel>,
    /// Where `input_ids`, `attention_mask` and `token_type_ids` go in the plan's input list.
    slots: [usize; 3],
    labels: usize,
}

/// The graph's inputs, by name, in the order `Runtime::slots` indexes.
const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

impl Runtime {
    pub fn load(onnx: &[u8], labels: usize) -> Result<Runtime, NerError> {
        let load = |stage: &str, e: TractError| NerError::Load(format!("{stage}: {e:#}"));
        let framework = tract_onnx::onnx();
        let mut proto = framework.proto_model_for_read(&mut &onnx[..]).map_err(|e| load("parse", e))?;
        crate::dequant::dense_matmuls(&mut proto)?;
        let model = framework.model_for_proto_model(&proto).map_err(|e| load("import", e))?;
        drop(proto);
        let names: Vec<String> = model
            .input_outlets()
            .map_err(|e| load("inputs", e))?
            .iter()
            .map(|outlet| model.node(outlet.node).name.clone())
            .collect();
        let mut slots = [0; 3];
        for (slot, input) in slots.iter_mut().zip(INPUTS) {
            *slot = names.iter().position(|n| n == input).ok_or_else(|| {
                NerError::Load(format!("the graph has no input `{input}` (inputs: {})", names.join(", ")))
            })?;
        }
        if names.len() != INPUTS.len() {
            return Err(NerError::Load(format!("expected inputs {INPUTS:?}, the graph has {}", names.join(", "))));
        }
        let plan = model
            .into_typed()
            .map_err(|e| load("typing", e))?
            .into_optimized()
            .map_err(|e| load("optimising", e))?
            .into_runnable()
            .map_err(|e| load("planning", e))?;
        Ok(Runtime { plan, slots, labels })
    }

    /// Logits for each of `windows` as `[CLS] ids [SEP]`, in one call: the sequences are padded to the longest
    /// with `pad` under attention mask 0, which the graph turns into "attend to nothing there", so a
    /// window's logits do not depend on what it was batched with. Appends one row of `labels` per id, window
    /// after window ([CLS], [SEP] and padding rows dropped).
    pub fn logits(&self, special: Special, windows: &[&[u32]], out: &mut Vec<f32>) -> Result<(), NerError> {
        let tokens = windows.iter().map(|w| w.len()).sum();
        // tract's own message is dropped: it may print the input tensor, which is the text as token ids.
        let failed = |_| NerError::Inference { tokens };
        let batch = windows.len();
        let width = windows.iter().map(|w| w.len()).max().unwrap_or(0) + 2;
        let mut input_ids = Vec::with_capacity(batch * width);
        let mut attention_mask = Vec::with_capacity(batch * width);
        for ids in windows {
            let real = ids.len() + 2;
            input_ids.push(i64::from(special.cls));
            input_ids.extend(ids.iter().map(|&id| i64::from(id)));
            input_ids.push(i64::from(special.sep));
            input_ids.extend(std::iter::repeat_n(i64::from(special.pad), width - real));
            attention_mask.extend(std::iter::repeat_n(1i64, real).chain(std::iter::repeat_n(0, width - real)));
        }
        // One segment.
        let token_type_ids = vec![0i64; batch * width];
        let mut inputs: [Option<TValue>; 3] = [None, None, None];
        for (slot, data) in self.slots.iter().zip([&input_ids, &attention_mask, &token_type_ids]) {
            inputs[*slot] = Some(Tensor::from_shape(&[batch, width], data).map_err(failed)?.into());
        }
        let outputs = self.plan.run(inputs.into_iter().flatten().collect()).map_err(failed)?;
        let logits = outputs.first().ok_or(NerError::Inference { tokens })?;
        let view = logits.to_plain_array_view::<f32>().map_err(failed)?;
        let flat = view.as_slice().ok_or(NerError::Inference { tokens })?;
        if view.shape() != [batch, width, self.labels] {
            return Err(NerError::Inference { tokens });
        }
        for (row, ids) in windows.iter().enumerate() {
            let first = (row * width + 1) * self.labels;
            out.extend_from_slice(&flat[first..first + ids.len() * self.labels]);
        }
        Ok(())
    }
}

/// The tokenizer's special token ids the model input needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Special {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
}
