//! The Rampart model's files, checked against pinned digests before a byte is parsed.
//!
//! ```text
//!  <dir>/model_q4.onnx    BERT token classifier, 6 layers, d=384; MatMulNBits (4-bit, block 32)
//!       /tokenizer.json   uncased WordPiece, vocab 19,730
//!       /config.json      id2label: "O" and B-/I- of 17 entity types
//!       /LICENSE          CC BY 4.0 (installed for redistribution; not read here)
//! ```
//! The digests are the ones tests/tools/install-ner-weights.sh and the agent's `pii-ner` catalog entry
//! pin (keep the three in step): a file that differs is refused with the command that fixes it, so a
//! swapped checkpoint can never decide what gets redacted.
use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::NerError;

/// Where the files live under the agent's models directory.
pub const MODEL_DIR: &str = "ner/rampart";

pub const MODEL_SHA256: &str = "9f27d24949b0581701071ea5ef522d77ccd3f50c525cc91eac4d265b0fc2afe5";
pub const TOKENIZER_SHA256: &str = "ec87d41d85cbf02128ec0e5f577b805a326b06bb2947ef2752e67a98a42819f9";
pub const CONFIG_SHA256: &str = "4f580895a8d5b40c0c61fef61bbbfe129a6d755e5212991b429e5fd141284edd";

/// What `config.json` says that inference needs.
#[derive(serde::Deserialize)]
struct RawConfig {
    /// JSON object keys are strings: "0" -> "O", "1" -> "B-GIVEN_NAME", ...
    id2label: BTreeMap<String, String>,
    max_position_embeddings: usize,
}

pub(crate) struct Config {
    /// Label names by id, dense from 0.
    pub labels: Vec<String>,
    /// Positions the model has, [CLS] and [SEP] included.
    pub max_positions: usize,
}

/// The verified files, read into memory.
pub(crate) struct Files {
    pub model: Vec<u8>,
    pub tokenizer: Vec<u8>,
    pub config: Config,
}

fn read_checked(path: &Path, expected: &str) -> Result<Vec<u8>, NerError> {
    let bytes = std::fs::read(path).map_err(|source| NerError::WeightsMissing { path: path.to_path_buf(), source })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if digest != expected {
        return Err(NerError::WeightsCorrupt {
            path: path.to_path_buf(),
            reason: format!(
                "sha256 is {digest}, expected {expected}; delete it and run tests/tools/install-ner-weights.sh \
                 or `infergate-agent models fetch --model pii-ner`"
            ),
        });
    }
    Ok(bytes)
}

fn parse_config(path: &Path, bytes: &[u8]) -> Result<Config, NerError> {
    let corrupt = |reason: String| NerError::WeightsCorrupt { path: path.to_path_buf(), reason };
    let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut labels = vec![None; raw.id2label.len()];
    for (id, label) in raw.id2label {
        let slot = id.parse::<usize>().ok().and_then(|id| labels.get_mut(id));
        match slot {
            Some(slot @ None) => *slot = Some(label),
            _ => return Err(corrupt(format!("id2label ids are not 0..{}", labels.len()))),
        }
    }
    Ok(Config { labels: labels.into_iter().flatten().collect(), max_positions: raw.max_position_embeddings })
}

impl Files {
    /// Reads and verifies the three files under `dir`.
    pub fn load(dir: &Path) -> Result<Files, NerError> {
        let model = read_checked(&dir.join("model_q4.onnx"), MODEL_SHA256)?;
        let tokenizer = read_checked(&dir.join("tokenizer.json"), TOKENIZER_SHA256)?;
        let config_path = dir.join("config.json");
        let config = parse_config(&config_path, &read_checked(&config_path, CONFIG_SHA256)?)?;
        Ok(Files { model, tokenizer, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_ids_must_be_dense() {
        let path = Path::new("config.json");
        let ok = parse_config(path, br#"{"id2label": {"1": "B-CITY", "0": "O"}, "max_position_embeddings": 512}"#);
        assert_eq!(ok.unwrap().labels, ["O", "B-CITY"]);
        let gap = parse_config(path, br#"{"id2label": {"0": "O", "2": "B-CITY"}, "max_position_embeddings": 512}"#);
        assert_eq!(gap.err().map(|e| e.category()), Some("weights_corrupt"));
    }

    #[test]
    fn a_missing_file_names_the_fix() {
        let error = Files::load(Path::new("/nonexistent/ner")).err().unwrap();
        assert_eq!(error.category(), "weights_missing");
        assert!(error.to_string().contains("install-ner-weights.sh"));
    }
}
