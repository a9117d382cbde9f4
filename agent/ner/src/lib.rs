//! PII named-entity recognition for `infergate-redact`: the "Rampart" BERT token classifier (National
//! Design Studio, CC BY 4.0; attribution in NOTICE) run by tract, as an [`EntityModel`] that finds
//! `PERSON`, `LOCATION`, `STREET_ADDRESS` and `ZIP_CODE`.
//!
//! ```text
//!  text ─▶ WordPiece (tokenizer.json): token ids, byte offsets, word ids
//!       ─▶ windows: sentences packed up to 32 tokens, longer ones cut to 64 with 16 shared   (windows.rs)
//!       ─▶ [CLS] window [SEP], windows of similar length batched up to 160 padded tokens a call
//!       ─▶ tract plan of model_q4.onnx, its 4-bit matmuls made f32 at load ─▶ logits  (runtime.rs, dequant.rs)
//!       ─▶ argmax label + softmax score per token, each token from the window that owns it
//!       ─▶ words (first piece's label) ─▶ runs of one type ─▶ addresses ─▶ Detections         (labels.rs)
//! ```
//! One [`NerModel`] serves every request: the tokenizer and the optimised plan are shared read-only, and
//! each call has state of its own. tract runs on the calling thread (its default executor);
//! no thread pool is started. Files are digest-checked before parsing (weights.rs).
//!
//! Nothing here logs, and no error carries input text or token ids.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod dequant;
mod error;
mod labels;
mod runtime;
mod weights;
mod windows;

use std::path::Path;

use infergate_redact::{Detection, Entity, EntityModel, EntitySet, ModelError};
use tokenizers::Tokenizer;

pub use error::NerError;
pub use weights::{CONFIG_SHA256, MODEL_DIR, MODEL_SHA256, TOKENIZER_SHA256};

use labels::Labelled;
use runtime::{Runtime, Special};

/// The loaded model. `Send + Sync`: share one behind an `Arc`.
pub struct NerModel {
    tokenizer: Tokenizer,
    runtime: Runtime,
    /// config.json's label names by id ("O", "B-GIVEN_NAME", ...).
    labels: Vec<String>,
    /// What each label id means for redaction (`None`: "O" or a type not taken; see labels.rs).
    entities: Vec<Option<Entity>>,
    special: Special,
}

impl std::fmt::Debug for NerModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NerModel").field("labels", &self.labels.len()).finish_non_exhaustive()
    }
}

/// One token as the model labelled it: for the reference tests, evaluation and debugging.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Token {
    /// WordPiece id.
    pub id: u32,
    /// Byte range in the text.
    pub start: usize,
    pub end: usize,
    /// The pre-tokenizer word it belongs to (punctuation is its own word).
    pub word: Option<u32>,
    /// Label id (see [`NerModel::labels`]), the argmax of the logits.
    pub label: usize,
    /// Softmax probability of that label.
    pub score: f32,
}

/// Every token of a text with its label and logits, from the window that owns it.
#[derive(Clone, Debug)]
pub struct Classified {
    pub tokens: Vec<Token>,
    /// `tokens.len()` rows of `labels` logits.
    logits: Vec<f32>,
    labels: usize,
}

impl Classified {
    /// The logits of token `index`, one per label id.
    pub fn logits(&self, index: usize) -> &[f32] {
        &self.logits[index * self.labels..(index + 1) * self.labels]
    }
}

impl NerModel {
    /// Loads `dir` (normally `<models dir>/`[`MODEL_DIR`]), verifying each file's sha256 first.
    pub fn load(dir: &Path) -> Result<NerModel, NerError> {
        let files = weights::Files::load(dir)?;
        let labels = files.config.labels;
        let entities = labels
            .iter()
            .map(|label| labels::entity_of(label))
            .collect::<Result<Vec<_>, ()>>()
            .map_err(|()| NerError::Load("config.json has a label this crate does not know".into()))?;
        if windows::MAX_TOKENS + 2 > files.config.max_positions {
            return Err(NerError::Load(format!("the model has only {} positions", files.config.max_positions)));
        }
        let mut tokenizer =
            Tokenizer::from_bytes(&files.tokenizer).map_err(|e| NerError::Load(format!("tokenizer.json: {e}")))?;
        // Windows are cut here, never by the tokenizer.
        tokenizer.with_truncation(None).map_err(|e| NerError::Load(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        let special = |token| tokenizer.token_to_id(token).ok_or_else(|| NerError::Load(format!("no {token} token")));
        let special = Special { cls: special("[CLS]")?, sep: special("[SEP]")?, pad: special("[PAD]")? };
        let runtime = Runtime::load(&files.model, labels.len())?;
        Ok(NerModel { tokenizer, runtime, labels, entities, special })
    }

    /// Whether the files under `dir` are present with their pinned digests, without building the model.
    pub fn verify(dir: &Path) -> Result<(), NerError> {
        weights::Files::load(dir).map(drop)
    }

    /// The label names by id.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Every token of `text` with its label: the model's raw view, before words and spans.
    pub fn classify(&self, text: &str) -> Result<Classified, NerError> {
        let encoding = self.tokenizer.encode(text, false).map_err(|_| NerError::Tokenize)?;
        let (ids, offsets, words) = (encoding.get_ids(), encoding.get_offsets(), encoding.get_word_ids());
        let labels = self.labels.len();
        let plan = windows::plan(text, offsets, words);
        // Each window's rows, in window order once every batch has run.
        let mut window_logits: Vec<Vec<f32>> = vec![Vec::new(); plan.len()];
        let mut batch_logits = Vec::new();
        for batch in windows::batches(&plan) {
            let inputs: Vec<&[u32]> = batch.iter().map(|&w| &ids[plan[w].start..plan[w].end]).collect();
            batch_logits.clear();
            self.runtime.logits(self.special, &inputs, &mut batch_logits)?;
            let mut rows = batch_logits.as_slice();
            for &w in &batch {
                let (head, rest) = rows.split_at((plan[w].end - plan[w].start) * labels);
                window_logits[w] = head.to_vec();
                rows = rest;
            }
        }
        let mut logits = Vec::with_capacity(ids.len() * labels);
        for (window, rows) in plan.iter().zip(&window_logits) {
            logits.extend_from_slice(
                &rows[(window.own_start - window.start) * labels..(window.own_end - window.start) * labels],
            );
        }
        let tokens = (0..ids.len())
            .map(|i| {
                let (label, score) = argmax_softmax(&logits[i * labels..(i + 1) * labels]);
                Token { id: ids[i], start: offsets[i].0, end: offsets[i].1, word: words[i], label, score }
            })
            .collect();
        Ok(Classified { tokens, logits, labels })
    }

    fn find(&self, text: &str, wanted: EntitySet, out: &mut Vec<Detection>) -> Result<(), NerError> {
        let classified = self.classify(text)?;
        let labelled: Vec<Labelled> = classified
            .tokens
            .iter()
            .map(|t| Labelled {
                start: t.start,
                end: t.end,
                word: t.word,
                entity: self.entities[t.label],
                score: t.score,
            })
            .collect();
        labels::detections(text, &labels::words(&labelled), wanted, out);
        Ok(())
    }
}

impl EntityModel for NerModel {
    fn entities(&self) -> EntitySet {
        EntitySet::NER
    }

    fn detect(&self, text: &str, wanted: EntitySet, out: &mut Vec<Detection>) -> Result<(), ModelError> {
        self.find(text, wanted, out).map_err(|e| ModelError::new(e.category(), e))
    }
}

/// The index of the largest logit and its softmax probability.
fn argmax_softmax(row: &[f32]) -> (usize, f32) {
    let (best, max) = row
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| if v > bv { (i, v) } else { (bi, bv) });
    let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
    (best, 1.0 / sum)
}

// The agent shares one model across request tasks.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<NerModel>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_softmax_of_a_row() {
        let (label, score) = argmax_softmax(&[0.0, 2.0, 0.0]);
        assert_eq!(label, 1);
        let expected = 2f32.exp() / (2.0 + 2f32.exp());
        assert!((score - expected).abs() < 1e-6);
    }

    #[test]
    fn ties_take_the_first_label() {
        assert_eq!(argmax_softmax(&[1.0, 1.0]).0, 0);
    }
}
