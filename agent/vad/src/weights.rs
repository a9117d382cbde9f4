//! Finds the 16 kHz sub-model inside Silero's ONNX export and turns its tensors into the layout the CPU code
//! wants.
//!
//! The opset-16 export is one graph with `If(sr == 16000)`: the `then` branch is the 16 kHz model (STFT basis
//! 258x1x256), the `else` branch the 8 kHz one (130x1x128). Both keep their weights as `Constant` nodes named
//! `If_0_<branch>__Inline_0__<torch name>`. We pick the graph whose own tensors include a 16 kHz STFT basis, so
//! a 16 kHz-only export with plain initializers loads too, and check every shape and conv stride against what
//! [`crate::model`] hard-codes: a different model must fail here, not compute nonsense.

use crate::VadError;
use crate::onnx::{self, DATA_TYPE_FLOAT, Graph, Tensor};

pub(crate) const N_FFT: usize = 256;
pub(crate) const HOP: usize = 128;
pub(crate) const N_BINS: usize = N_FFT / 2 + 1; // 129
pub(crate) const HIDDEN: usize = 128;
pub(crate) const KERNEL: usize = 3;

const BASIS: &str = "stft.forward_basis_buffer";

/// One `Conv1d(k=3, padding=1) + ReLU` encoder block. `weight` is `[cout][cin * 3]`, the torch layout, which is
/// also the im2col row layout.
#[derive(Debug)]
pub(crate) struct ConvLayer {
    pub cin: usize,
    pub cout: usize,
    pub stride: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug)]
pub(crate) struct Weights {
    /// `[2 * 129][256]`: rows 0..129 give the real parts, 129..258 the imaginary parts (window included).
    pub stft_basis: Vec<f32>,
    pub encoder: [ConvLayer; 4],
    /// `[512][256]`: each row is `weight_ih` row ++ `weight_hh` row, so one mat-vec over `[x; h]` gives all
    /// gates. Gate order is torch's: input, forget, cell, output.
    pub lstm_weight: Vec<f32>,
    /// `bias_ih + bias_hh`.
    pub lstm_bias: Vec<f32>,
    /// `decoder.decoder.2`: Conv1d(128 -> 1, k=1) on ReLU(h).
    pub head_weight: Vec<f32>,
    pub head_bias: f32,
}

/// (torch name, 16 kHz shape, stride for convs).
const ENCODER: [(&str, [i64; 3], usize); 4] = [
    ("encoder.0.reparam_conv", [128, 129, 3], 1),
    ("encoder.1.reparam_conv", [64, 128, 3], 2),
    ("encoder.2.reparam_conv", [64, 64, 3], 2),
    ("encoder.3.reparam_conv", [128, 64, 3], 1),
];

pub(crate) fn from_onnx(bytes: &[u8]) -> Result<Weights, VadError> {
    let root = onnx::parse_model(bytes).map_err(|reason| VadError::WeightsCorrupt { reason })?;
    select_16k(&root).map_err(|reason| VadError::UnsupportedGraph { reason })
}

fn select_16k(root: &Graph) -> Result<Weights, String> {
    let graph = find_16k_graph(root).ok_or_else(|| {
        if any_graph(root, &|g| named_tensors(g).any(|(n, t)| is_named(n, BASIS) && t.dims == [130, 1, 128])) {
            "it holds only the 8 kHz model (STFT basis 130x1x128); use silero_vad.onnx from silero-vad==6.2.3".into()
        } else {
            format!("no tensor named *{BASIS} with shape [258, 1, 256]")
        }
    })?;
    let tensors: Vec<(&str, &Tensor)> = named_tensors(graph).collect();
    let get = |name: &str, dims: &[i64]| -> Result<Vec<f32>, String> {
        let mut found = tensors.iter().filter(|(n, _)| is_named(n, name));
        let (_, t) = found.next().ok_or_else(|| format!("missing tensor {name}"))?;
        if found.next().is_some() {
            return Err(format!("tensor {name} appears more than once in the 16 kHz branch"));
        }
        if t.external {
            return Err(format!("tensor {name} is stored in an external data file"));
        }
        if t.data_type != DATA_TYPE_FLOAT {
            return Err(format!("tensor {name} has element type {} (expected float32)", t.data_type));
        }
        if t.dims != dims {
            return Err(format!("tensor {name} has shape {:?}, expected {dims:?}", t.dims));
        }
        let expected_len: i64 = dims.iter().product();
        if t.floats.len() as i64 != expected_len {
            return Err(format!("tensor {name} holds {} values, its shape needs {expected_len}", t.floats.len()));
        }
        if let Some(i) = t.floats.iter().position(|v| !v.is_finite()) {
            return Err(format!("tensor {name} has a non-finite value at index {i}"));
        }
        Ok(t.floats.clone())
    };

    let stft_basis = get(BASIS, &[2 * N_BINS as i64, 1, N_FFT as i64])?;
    check_conv(graph, BASIS, HOP, 0)?;

    let mut layers = Vec::with_capacity(4);
    for (name, dims, stride) in ENCODER {
        let weight_name = format!("{name}.weight");
        let weight = get(&weight_name, &dims)?;
        let bias = get(&format!("{name}.bias"), &dims[..1])?;
        check_conv(graph, &weight_name, stride, 1)?;
        layers.push(ConvLayer { cin: dims[1] as usize, cout: dims[0] as usize, stride, weight, bias });
    }
    let encoder: [ConvLayer; 4] = layers.try_into().expect("four encoder layers");

    let gates = 4 * HIDDEN as i64;
    let w_ih = get("decoder.rnn.weight_ih", &[gates, HIDDEN as i64])?;
    let w_hh = get("decoder.rnn.weight_hh", &[gates, HIDDEN as i64])?;
    let b_ih = get("decoder.rnn.bias_ih", &[gates])?;
    let b_hh = get("decoder.rnn.bias_hh", &[gates])?;
    let lstm_weight = w_ih
        .chunks_exact(HIDDEN)
        .zip(w_hh.chunks_exact(HIDDEN))
        .flat_map(|(ih, hh)| ih.iter().chain(hh).copied())
        .collect();
    let lstm_bias = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();

    let head_weight = get("decoder.decoder.2.weight", &[1, HIDDEN as i64, 1])?;
    let head_bias = get("decoder.decoder.2.bias", &[1])?[0];

    Ok(Weights { stft_basis, encoder, lstm_weight, lstm_bias, head_weight, head_bias })
}

/// Exporters prefix torch names: `If_0_then_branch__Inline_0__encoder.0...` (opset 16 with If), or
/// `model.encoder.0...` (16 kHz-only opset 15).
fn is_named(tensor_name: &str, torch_name: &str) -> bool {
    tensor_name.strip_suffix(torch_name).is_some_and(|prefix| prefix.is_empty() || prefix.ends_with(['_', '.']))
}

/// Tensors a graph defines itself (not those of nested subgraphs), under the name nodes refer to them by.
fn named_tensors(g: &Graph) -> impl Iterator<Item = (&str, &Tensor)> {
    let constants = g.nodes.iter().filter(|n| n.op_type == "Constant").filter_map(|n| {
        let t = n.attribute("value")?.tensor.as_ref()?;
        let name = n.outputs.first().map(String::as_str).filter(|s| !s.is_empty()).unwrap_or(&t.name);
        Some((name, t))
    });
    g.initializers.iter().map(|t| (t.name.as_str(), t)).chain(constants)
}

fn subgraphs(g: &Graph) -> impl Iterator<Item = &Graph> {
    g.nodes.iter().flat_map(|n| n.attributes.iter().filter_map(|a| a.graph.as_ref()))
}

fn any_graph(g: &Graph, pred: &dyn Fn(&Graph) -> bool) -> bool {
    pred(g) || subgraphs(g).any(|s| any_graph(s, pred))
}

fn find_16k_graph(g: &Graph) -> Option<&Graph> {
    let is_16k = named_tensors(g).any(|(n, t)| is_named(n, BASIS) && t.dims == [2 * N_BINS as i64, 1, N_FFT as i64]);
    if is_16k {
        return Some(g);
    }
    subgraphs(g).find_map(find_16k_graph)
}

/// The strides and paddings are attributes, not tensors: check them so the hard-coded forward pass matches.
fn check_conv(g: &Graph, weight_suffix: &str, stride: usize, pad: i64) -> Result<(), String> {
    let conv = g
        .nodes
        .iter()
        .find(|n| n.op_type == "Conv" && n.inputs.get(1).is_some_and(|w| is_named(w, weight_suffix)))
        .ok_or_else(|| format!("no Conv node uses {weight_suffix}"))?;
    let strides = conv.attribute("strides").map(|a| a.ints.as_slice()).unwrap_or(&[1]);
    let pads = conv.attribute("pads").map(|a| a.ints.as_slice()).unwrap_or(&[0, 0]);
    let dilations = conv.attribute("dilations").map(|a| a.ints.as_slice()).unwrap_or(&[1]);
    let group = conv.attribute("group").and_then(|a| a.ints.first().copied()).unwrap_or(1);
    if strides != [stride as i64] || pads != [pad, pad] || dilations != [1] || group != 1 {
        return Err(format!(
            "Conv on {weight_suffix} has strides {strides:?} pads {pads:?} dilations {dilations:?} group {group}, \
             expected strides [{stride}] pads [{pad}, {pad}]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tests::{Writer, float_tensor};

    #[test]
    fn exporter_prefixes_are_recognised() {
        assert!(is_named("If_0_then_branch__Inline_0__encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(is_named("model.encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(is_named("encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(!is_named("xencoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
    }

    #[test]
    fn an_8k_only_model_is_rejected_by_name() {
        let basis = float_tensor(BASIS, &[130, 1, 128], &vec![0.0; 130 * 128], true);
        let mut graph = Writer::default();
        graph.bytes(5, &basis);
        let mut model = Writer::default();
        model.bytes(7, &graph.0);
        let err = from_onnx(&model.0).unwrap_err();
        assert_eq!(err.category(), "unsupported_graph");
        let err = err.to_string();
        assert!(err.contains("only the 8 kHz model"), "{err}");
    }

    #[test]
    fn a_model_missing_a_layer_names_the_missing_tensor() {
        let basis = float_tensor(BASIS, &[258, 1, 256], &vec![0.0; 258 * 256], false);
        let mut graph = Writer::default();
        graph.bytes(5, &basis);
        let mut model = Writer::default();
        model.bytes(7, &graph.0);
        let err = from_onnx(&model.0).unwrap_err();
        assert_eq!(err.category(), "unsupported_graph");
        let err = err.to_string();
        assert!(err.contains("no Conv node uses stft.forward_basis_buffer"), "{err}");
    }
}
