//! Typed errors with stable category labels. Metrics and logs use the label; no message carries input text
//! (or token ids, which are the text in another spelling).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NerError {
    #[error(
        "NER model file not found at {path}: {source}; run tests/tools/install-ner-weights.sh or `infergate-agent models fetch --model pii-ner`"
    )]
    WeightsMissing { path: PathBuf, source: std::io::Error },
    #[error("NER model file at {path} is not usable: {reason}")]
    WeightsCorrupt { path: PathBuf, reason: String },
    /// The files verified but tract or the tokenizer could not build a runnable model from them (a tract
    /// version without an op the file uses, for instance).
    #[error("NER model could not be prepared: {0}")]
    Load(String),
    /// The tokenizer failed on a request's text. Its own message is dropped: it may quote the input.
    #[error("the NER tokenizer failed on the input")]
    Tokenize,
    /// tract failed on one window. Its own message is dropped: it may dump the input tensor.
    #[error("the NER model failed on a window of {tokens} tokens")]
    Inference { tokens: usize },
}

impl NerError {
    pub fn category(&self) -> &'static str {
        match self {
            NerError::WeightsMissing { .. } => "weights_missing",
            NerError::WeightsCorrupt { .. } => "weights_corrupt",
            NerError::Load(_) => "load",
            NerError::Tokenize => "tokenize",
            NerError::Inference { .. } => "inference",
        }
    }
}
