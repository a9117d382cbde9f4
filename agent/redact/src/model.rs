//! The hook for an external entity model (the NER layer, `agent/ner`): its detections join the patterns'
//! before merging, so one merge decides spans, labels and priorities for both.
//!
//! ```text
//!  text ─┬▶ pattern recognisers (policy types) ───────────────────────────────┐
//!        └▶ EntityModel::detect (policy ∩ model types) ─▶ span check ─────────┴▶ merge ─▶ render
//! ```
//! A model can fail (a runtime error, a bad file behind it). Redaction must then neither leak text nor
//! quietly come back with only the patterns' share: [`Redactor::try_redact`](crate::Redactor::try_redact)
//! returns the error so the caller refuses the response, and [`Redactor::redact`](crate::Redactor::redact)
//! marks its patterns-only result with [`Redacted::model_error`](crate::Redacted::model_error).

use std::error::Error;

use crate::entity::EntitySet;
use crate::recognise::Detection;

/// A model that finds entity types the patterns cannot (names, places, addresses).
///
/// One instance serves every request of the process: implementations hold per-call state in the call, never
/// in `self`.
pub trait EntityModel: Send + Sync {
    /// The types this model can find. The redactor asks for the policy's share of them and does not call
    /// the model at all when that share is empty (a `pci`-only policy pays nothing for NER).
    fn entities(&self) -> EntitySet;

    /// Appends what it finds in `text` of the types in `wanted` (never empty, always within
    /// [`EntityModel::entities`]) to `out`. Each detection is a non-empty byte range of `text` on char
    /// boundaries; the redactor refuses (as [`ModelError::invalid_span`]) anything else rather than
    /// guess. Order does not matter and spans may overlap anything.
    fn detect(&self, text: &str, wanted: EntitySet, out: &mut Vec<Detection>) -> Result<(), ModelError>;
}

/// An entity model failed; the text was not fully redacted.
///
/// The message is the model's own error, which must not contain input text (the model crates guarantee
/// it); metrics use [`ModelError::category`].
#[derive(Debug, thiserror::Error)]
#[error("entity model failed: {source}")]
pub struct ModelError {
    category: &'static str,
    #[source]
    source: Box<dyn Error + Send + Sync>,
}

impl ModelError {
    /// A failure of a model, under the model crate's fixed label for it.
    pub fn new(category: &'static str, source: impl Into<Box<dyn Error + Send + Sync>>) -> ModelError {
        ModelError { category, source: source.into() }
    }

    /// The model returned a span outside the text, off a char boundary, empty, or of a type it was not
    /// asked for: a bug in the model crate, refused rather than rendered.
    pub fn invalid_span() -> ModelError {
        ModelError::new("invalid_span", "the entity model returned a span that is not a non-empty range of the text")
    }

    /// A fixed label for metrics and refusals.
    pub fn category(&self) -> &'static str {
        self.category
    }
}
