//! Loads Resemblyzer's `pretrained.pt` (legacy torch pickle) into named f32 tensors.
//!
//! The file pins the model: its sha256 is checked before parsing, so a different checkpoint can never be
//! mistaken for this one. In the file all LSTM parameters are views into one flat cuDNN storage (offsets
//! 0, 40960, ... 1356800), which is why offsets and strides are honoured rather than assumed.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::ModelError;
use crate::pickle::{PickleError, Value, read_pickle};
use crate::{EMBEDDING_DIM, HIDDEN, MEL_BANDS, NUM_LAYERS};

/// sha256 of `resemblyzer/pretrained.pt` as listed in the RECORD of `Resemblyzer-0.1.4-py3-none-any.whl`.
/// Also pinned in tests/tools/install-speaker-weights.sh.
pub const PRETRAINED_SHA256: &str = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e";

/// `torch.save` legacy-format magic number.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// One LSTM layer in PyTorch's gate order (input, forget, cell, output), row-major as stored.
#[derive(Debug, Clone)]
pub struct LstmLayer {
    pub input_size: usize,
    /// `[4 * HIDDEN][input_size]`
    pub w_ih: Vec<f32>,
    /// `[4 * HIDDEN][HIDDEN]`
    pub w_hh: Vec<f32>,
    /// `[4 * HIDDEN]`
    pub b_ih: Vec<f32>,
    /// `[4 * HIDDEN]`
    pub b_hh: Vec<f32>,
}

/// Every parameter the encoder uses; `similarity_*` and the optimizer state in the file are ignored.
#[derive(Debug, Clone)]
pub struct EncoderWeights {
    pub lstm: Vec<LstmLayer>,
    /// `[EMBEDDING_DIM][HIDDEN]`
    pub linear_weight: Vec<f32>,
    /// `[EMBEDDING_DIM]`
    pub linear_bias: Vec<f32>,
}

/// A tensor read from the file: dense row-major data plus its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl EncoderWeights {
    /// Reads and verifies `path`. Errors say whether the file is absent or not the expected checkpoint.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes =
            std::fs::read(path).map_err(|source| ModelError::WeightsMissing { path: path.to_path_buf(), source })?;
        let corrupt = |reason: String| ModelError::WeightsCorrupt { path: path.to_path_buf(), reason };
        let digest = hex::encode(Sha256::digest(&bytes));
        if digest != PRETRAINED_SHA256 {
            return Err(corrupt(format!(
                "sha256 is {digest}, expected {PRETRAINED_SHA256}; delete it and rerun tests/tools/install-speaker-weights.sh"
            )));
        }
        let tensors = read_legacy_state_dict(&bytes).map_err(corrupt)?;
        Self::from_tensors(tensors).map_err(corrupt)
    }

    /// Builds the encoder parameters from named tensors, checking every shape.
    pub fn from_tensors(mut tensors: HashMap<String, Tensor>) -> Result<Self, String> {
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            let t = tensors.remove(name).ok_or_else(|| format!("model_state has no tensor `{name}`"))?;
            if t.shape != shape {
                return Err(format!("`{name}` has shape {:?}, expected {shape:?}", t.shape));
            }
            Ok(t.data)
        };
        let mut lstm = Vec::with_capacity(NUM_LAYERS);
        for layer in 0..NUM_LAYERS {
            let input_size = if layer == 0 { MEL_BANDS } else { HIDDEN };
            lstm.push(LstmLayer {
                input_size,
                w_ih: take(&format!("lstm.weight_ih_l{layer}"), &[4 * HIDDEN, input_size])?,
                w_hh: take(&format!("lstm.weight_hh_l{layer}"), &[4 * HIDDEN, HIDDEN])?,
                b_ih: take(&format!("lstm.bias_ih_l{layer}"), &[4 * HIDDEN])?,
                b_hh: take(&format!("lstm.bias_hh_l{layer}"), &[4 * HIDDEN])?,
            });
        }
        let linear_weight = take("linear.weight", &[EMBEDDING_DIM, HIDDEN])?;
        let linear_bias = take("linear.bias", &[EMBEDDING_DIM])?;
        let all = [&linear_weight, &linear_bias]
            .into_iter()
            .chain(lstm.iter().flat_map(|l| [&l.w_ih, &l.w_hh, &l.b_ih, &l.b_hh]));
        for values in all {
            if values.iter().any(|v| !v.is_finite()) {
                return Err("a parameter is NaN or infinite".into());
            }
        }
        Ok(Self { lstm, linear_weight, linear_bias })
    }
}

/// Where a storage's elements live in the file.
struct StorageSpan {
    data_offset: usize,
    len: usize,
}

/// Parses a legacy `torch.save` file whose object is a dict with a `model_state` state dict of float
/// tensors. Returns every tensor of `model_state` by name.
pub fn read_legacy_state_dict(bytes: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    let pk = |e: PickleError| format!("not a legacy torch file: {e}");
    let mut pos = 0;
    if read_pickle(bytes, &mut pos).map_err(pk)? != Value::Int(LEGACY_MAGIC) {
        return Err("magic number mismatch: not a legacy (pre-1.6, non-zip) torch.save file".into());
    }
    if read_pickle(bytes, &mut pos).map_err(pk)? != Value::Int(LEGACY_PROTOCOL) {
        return Err("unsupported legacy torch protocol version".into());
    }
    let sys_info = read_pickle(bytes, &mut pos).map_err(pk)?;
    if dict_get(&sys_info, "little_endian") != Some(&Value::Bool(true)) {
        return Err("file was written on a big-endian machine; only little-endian files are supported".into());
    }
    let root = read_pickle(bytes, &mut pos).map_err(pk)?;
    let keys = match read_pickle(bytes, &mut pos).map_err(pk)? {
        Value::List(keys) => keys,
        other => return Err(format!("storage key list is a {}", kind(&other))),
    };

    // Storages follow in key-list order, each as u64 element count + raw little-endian f32s.
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err("storage key is not a string".into());
        };
        let header = bytes.get(pos..pos + 8).ok_or("file ends inside a storage header")?;
        let len = usize::try_from(u64::from_le_bytes(header.try_into().expect("8 bytes")))
            .map_err(|_| "storage length overflows usize")?;
        let data_offset = pos + 8;
        let end = len.checked_mul(4).and_then(|n| n.checked_add(data_offset)).ok_or("storage length overflows")?;
        if end > bytes.len() {
            return Err(format!("storage {key} claims {len} floats but the file ends first"));
        }
        storages.insert(key, StorageSpan { data_offset, len });
        pos = end;
    }
    if pos != bytes.len() {
        return Err(format!("{} trailing bytes after the last storage", bytes.len() - pos));
    }

    let state = dict_get(&root, "model_state").ok_or("the checkpoint has no `model_state` entry")?;
    let Value::Dict(entries) = state else {
        return Err("`model_state` is not a dict".into());
    };
    let mut out = HashMap::new();
    for (name, value) in entries {
        let Value::Str(name) = name else {
            return Err("a model_state key is not a string".into());
        };
        let tensor = rebuild_tensor(value, bytes, &storages).map_err(|e| format!("tensor `{name}`: {e}"))?;
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

/// Evaluates `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`.
fn rebuild_tensor(value: &Value, bytes: &[u8], storages: &HashMap<String, StorageSpan>) -> Result<Tensor, String> {
    let Value::Call { callable, args } = value else {
        return Err(format!("is a {}, not a tensor", kind(value)));
    };
    if !matches!(&**callable, Value::Global { module, name } if module == "torch._utils" && name == "_rebuild_tensor_v2")
    {
        return Err(format!("built by {callable:?}, only torch._utils._rebuild_tensor_v2 is supported"));
    }
    let Value::Tuple(args) = &**args else {
        return Err("arguments are not a tuple".into());
    };
    let [storage, offset, size, stride, ..] = args.as_slice() else {
        return Err("too few arguments".into());
    };

    let Value::PersistentId(pid) = storage else {
        return Err("storage is not a persistent reference".into());
    };
    let Value::Tuple(pid) = &**pid else {
        return Err("storage reference is not a tuple".into());
    };
    let [tag, storage_type, key, _location, _size, view] = pid.as_slice() else {
        return Err("storage reference does not have 6 fields".into());
    };
    if tag != &Value::Str("storage".into()) {
        return Err("persistent id is not a storage".into());
    }
    if !matches!(storage_type, Value::Global { module, name } if module == "torch" && name == "FloatStorage") {
        return Err(format!("storage type {storage_type:?} is not torch.FloatStorage"));
    }
    if view != &Value::None {
        return Err("storage views (view_metadata) are not supported".into());
    }
    let Value::Str(key) = key else {
        return Err("storage key is not a string".into());
    };
    let span = storages.get(key).ok_or_else(|| format!("storage {key} is not in the file"))?;

    let offset = as_usize(offset)?;
    let shape = as_usize_tuple(size)?;
    let strides = as_usize_tuple(stride)?;
    if shape.len() != strides.len() {
        return Err("size and stride have different ranks".into());
    }
    let numel: usize = shape.iter().product();
    if numel > 0 {
        let last = shape.iter().zip(&strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + offset;
        if last >= span.len {
            return Err(format!("reads element {last} of a storage with {} elements", span.len));
        }
    }
    // Row-major gather through the strides; a contiguous tensor is the common case and the same loop.
    let mut data = Vec::with_capacity(numel);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let element = offset + index.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>();
        let at = span.data_offset + 4 * element;
        data.push(f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")));
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(Tensor { shape, data })
}

fn dict_get<'v>(dict: &'v Value, key: &str) -> Option<&'v Value> {
    match dict {
        Value::Dict(entries) => entries.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v),
        _ => None,
    }
}

fn as_usize(v: &Value) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{i} is not a valid size")),
        other => Err(format!("expected an integer, found a {}", kind(other))),
    }
}

fn as_usize_tuple(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items.iter().map(as_usize).collect(),
        other => Err(format!("expected a tuple of integers, found a {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Dict(_) => "dict",
        Value::Global { .. } => "global",
        Value::Call { .. } => "call",
        Value::PersistentId(_) => "persistent id",
    }
}
