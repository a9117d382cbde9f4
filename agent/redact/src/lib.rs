//! PII redaction for transcripts: validated patterns, an optional entity model, span merging, styles.
//!
//! ```text
//!  text ─▶ scan: one pass; digit units ("4111", "four", "double three") joined into runs,
//!          cue words ("ssn", "call", "born"), '@', ':', IBAN starts
//!       ─▶ recognisers for the policy's entity types, each with its validator
//!          (Luhn, SSA rules, mod-97, NANP/E.164, octets, dates near a cue) ─▶ detections
//!       ─▶ EntityModel (optional; the NER layer in agent/ner) for PERSON, LOCATION, STREET_ADDRESS,
//!          ZIP_CODE ─▶ more detections
//!       ─▶ merge: widen to whole words, union overlapping/touching spans, keep the most specific type
//!       ─▶ render: entity | marker | mask | hash | remove ─▶ Redacted { text, spans, counts }
//! ```
//!
//! Pure and synchronous: no I/O, no model runtime (a model is a trait object handed in); allocation is the
//! output, one entry per digit group and one value per detection. Spoken digits are matched in digit form
//! and mapped back to their words, so "four one one one ..." is found as a card and all of its words are
//! redacted. Unstructured PII (names, places, streets) is the model's: see [`EntityModel`] for how its
//! detections join and what happens when it fails.
//!
//! Nothing here puts an unredacted value in Debug output or an error: [`Detection`] hides its value, and
//! [`Redacted`] holds only redacted text and positions.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod checks;
mod entity;
mod error;
mod hmac;
mod lexicon;
mod merge;
mod model;
mod policy;
mod recognise;
mod render;
mod scan;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use entity::{Entity, EntitySet};
pub use error::PolicyError;
pub use hmac::HashKey;
pub use model::{EntityModel, ModelError};
pub use policy::{DEFAULT_KEEP_LAST, Policy, Style};
pub use recognise::Detection;

/// One redacted span, in the input's byte coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedactedSpan {
    pub start: usize,
    pub end: usize,
    pub entity: Entity,
    /// Where the span's replacement (`[CREDIT_CARD]`, a mask, nothing under `remove`) is in
    /// [`Redacted::text`]: callers that rebuild words or segments take it from there.
    pub output_start: usize,
    pub output_end: usize,
}

impl RedactedSpan {
    /// The replacement's byte range in [`Redacted::text`].
    pub fn output(&self) -> std::ops::Range<usize> {
        self.output_start..self.output_end
    }
}

/// The result of one [`Redactor::redact`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    /// In input order, non-overlapping, each covering whole words.
    pub spans: Vec<RedactedSpan>,
    /// Spans per entity type: what a response reports and metrics count.
    pub counts: BTreeMap<Entity, u32>,
    /// Set (to [`ModelError::category`]) when [`Redactor::redact`] ran a model that failed: the text is
    /// redacted by the patterns only, and names or addresses may remain in it. A caller that would serve
    /// it must refuse instead ([`Redactor::try_redact`] makes that the only path). Always `None` from
    /// `try_redact` and without a model.
    pub model_error: Option<&'static str>,
}

/// Per-word redaction for word-timed transcripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactedWords {
    /// One flag per input word: true where any redacted span touches the word, so its audio is muted.
    pub muted: Vec<bool>,
    /// The words joined with single spaces, redacted; span positions refer to that joined text.
    pub redacted: Redacted,
}

/// Applies one policy. Cheap to build; holds no per-call state, so one can serve every request of an
/// endpoint or key (the model behind it is shared, not copied).
#[derive(Clone)]
pub struct Redactor {
    policy: Policy,
    key: Option<HashKey>,
    model: Option<Arc<dyn EntityModel>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("policy", &self.policy)
            .field("key", &self.key)
            .field("model", &self.model.as_ref().map(|m| m.entities()))
            .finish()
    }
}

impl Redactor {
    /// A redactor for `policy`, patterns only. Under `Style::Hash` without [`Redactor::with_hash_key`] it
    /// writes `entity` style: with no key there is nothing to correlate with, and `entity` hides more than
    /// `hash`.
    pub fn new(policy: Policy) -> Redactor {
        Redactor { policy, key: None, model: None }
    }

    /// The key `Style::Hash` uses. The same key gives the same hash for the same value across calls.
    #[must_use]
    pub fn with_hash_key(self, key: HashKey) -> Redactor {
        Redactor { key: Some(key), ..self }
    }

    /// Adds a model for the types the patterns cannot find. It runs only for the policy's share of
    /// [`EntityModel::entities`].
    #[must_use]
    pub fn with_model(self, model: Arc<dyn EntityModel>) -> Redactor {
        Redactor { model: Some(model), ..self }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// What the pattern recognisers found for the policy's entity types, unmerged, in no particular order.
    /// The model's detections are not included.
    pub fn detect(&self, text: &str) -> Vec<Detection> {
        recognise::detect(text, self.policy.entities)
    }

    /// Patterns and model. Fails only when the model does; then nothing is returned, so no partly
    /// redacted text can be served by mistake.
    pub fn try_redact(&self, text: &str) -> Result<Redacted, ModelError> {
        let mut detections = self.detect(text);
        self.model_detections(text, &mut detections)?;
        Ok(self.render(text, detections, None))
    }

    /// Like [`Redactor::try_redact`], but a model failure gives the patterns-only result marked with
    /// [`Redacted::model_error`]: for callers that can use the patterns' share (counting, tests), never for
    /// serving text without checking the mark.
    pub fn redact(&self, text: &str) -> Redacted {
        let mut detections = self.detect(text);
        let patterns_only = detections.len();
        match self.model_detections(text, &mut detections) {
            Ok(()) => self.render(text, detections, None),
            Err(error) => {
                detections.truncate(patterns_only);
                self.render(text, detections, Some(error.category()))
            }
        }
    }

    /// Redacts ASR words (which may carry their own punctuation: "1111,") as one text joined by spaces, and
    /// says which words to mute in the audio. Fails only when the model does, like [`Redactor::try_redact`].
    pub fn try_redact_words(&self, words: &[&str]) -> Result<RedactedWords, ModelError> {
        let (text, ranges) = join_words(words);
        let redacted = self.try_redact(&text)?;
        Ok(RedactedWords { muted: muted_words(&ranges, &redacted.spans), redacted })
    }

    /// [`Redactor::try_redact_words`] with [`Redactor::redact`]'s handling of a model failure (see
    /// [`Redacted::model_error`]).
    pub fn redact_words(&self, words: &[&str]) -> RedactedWords {
        let (text, ranges) = join_words(words);
        let redacted = self.redact(&text);
        RedactedWords { muted: muted_words(&ranges, &redacted.spans), redacted }
    }

    /// Appends the model's detections for the policy's share of its types, checked.
    fn model_detections(&self, text: &str, detections: &mut Vec<Detection>) -> Result<(), ModelError> {
        let Some(model) = &self.model else { return Ok(()) };
        let wanted = self.policy.entities.intersection(model.entities());
        if wanted.is_empty() {
            return Ok(());
        }
        let first = detections.len();
        model.detect(text, wanted, detections)?;
        let sound = |d: &Detection| {
            d.start < d.end
                && d.end <= text.len()
                && text.is_char_boundary(d.start)
                && text.is_char_boundary(d.end)
                && wanted.contains(d.entity)
        };
        if detections[first..].iter().all(sound) { Ok(()) } else { Err(ModelError::invalid_span()) }
    }

    fn render(&self, text: &str, detections: Vec<Detection>, model_error: Option<&'static str>) -> Redacted {
        let spans = merge::merge(text, detections);
        let (redacted, outputs) = render::render(text, &spans, self.policy, self.key.as_ref());
        let mut counts = BTreeMap::new();
        for span in &spans {
            *counts.entry(span.entity).or_insert(0) += 1;
        }
        Redacted {
            text: redacted,
            spans: spans
                .iter()
                .zip(outputs)
                .map(|(s, o)| RedactedSpan {
                    start: s.start,
                    end: s.end,
                    entity: s.entity,
                    output_start: o.start,
                    output_end: o.end,
                })
                .collect(),
            counts,
            model_error,
        }
    }
}

/// The words joined with single spaces, and each word's byte range in the result.
fn join_words(words: &[&str]) -> (String, Vec<std::ops::Range<usize>>) {
    let mut text = String::with_capacity(words.iter().map(|w| w.len() + 1).sum());
    let mut ranges = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        ranges.push(text.len()..text.len() + word.len());
        text.push_str(word);
    }
    (text, ranges)
}

/// One flag per word: whether any span touches it. Words and spans are both in text order: one merge-walk.
fn muted_words(ranges: &[std::ops::Range<usize>], spans: &[RedactedSpan]) -> Vec<bool> {
    let mut spans = spans.iter().peekable();
    ranges
        .iter()
        .map(|word| {
            while spans.next_if(|s| s.end <= word.start).is_some() {}
            spans.peek().is_some_and(|s| s.start < word.end)
        })
        .collect()
}
