//! PII redaction for transcripts: the pattern layer.
//!
//! ```text
//!  text ─▶ scan: one pass; digit units ("4111", "four", "double three") joined into runs,
//!          cue words ("ssn", "call", "born"), '@', ':', IBAN starts
//!       ─▶ recognisers for the policy's entity types, each with its validator
//!          (Luhn, SSA rules, mod-97, NANP/E.164, octets, dates near a cue) ─▶ detections
//!       ─▶ merge: widen to whole words, union overlapping/touching spans, keep the most specific type
//!       ─▶ render: entity | marker | mask | hash | remove ─▶ Redacted { text, spans, counts }
//! ```
//!
//! Pure and synchronous: no I/O; allocation is the output, one entry per digit group and one value per
//! detection. Spoken digits are matched in digit form and mapped back to their words, so "four one one
//! one ..." is found as a card and all of its words are redacted. Unstructured PII (names, streets) is the
//! NER layer's, which will add detections before `merge`.
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
mod policy;
mod recognise;
mod render;
mod scan;

use std::collections::BTreeMap;

pub use entity::{Entity, EntitySet};
pub use error::PolicyError;
pub use hmac::HashKey;
pub use policy::{DEFAULT_KEEP_LAST, Policy, Style};
pub use recognise::Detection;

/// One redacted span, in the input's byte coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedactedSpan {
    pub start: usize,
    pub end: usize,
    pub entity: Entity,
}

/// The result of one [`Redactor::redact`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    /// In input order, non-overlapping, each covering whole words.
    pub spans: Vec<RedactedSpan>,
    /// Spans per entity type: what a response reports and metrics count.
    pub counts: BTreeMap<Entity, u32>,
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
/// endpoint or key.
#[derive(Clone, Debug)]
pub struct Redactor {
    policy: Policy,
    key: Option<HashKey>,
}

impl Redactor {
    /// A redactor for `policy`. Under `Style::Hash` without [`Redactor::with_hash_key`] it writes `entity`
    /// style: with no key there is nothing to correlate with, and `entity` hides more than `hash`.
    pub fn new(policy: Policy) -> Redactor {
        Redactor { policy, key: None }
    }

    /// The key `Style::Hash` uses. The same key gives the same hash for the same value across calls.
    #[must_use]
    pub fn with_hash_key(self, key: HashKey) -> Redactor {
        Redactor { key: Some(key), ..self }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// What the recognisers found for the policy's entity types, unmerged, in no particular order.
    pub fn detect(&self, text: &str) -> Vec<Detection> {
        recognise::detect(text, self.policy.entities)
    }

    pub fn redact(&self, text: &str) -> Redacted {
        let spans = merge::merge(text, self.detect(text));
        let redacted = render::render(text, &spans, self.policy, self.key.as_ref());
        let mut counts = BTreeMap::new();
        for span in &spans {
            *counts.entry(span.entity).or_insert(0) += 1;
        }
        Redacted {
            text: redacted,
            spans: spans.iter().map(|s| RedactedSpan { start: s.start, end: s.end, entity: s.entity }).collect(),
            counts,
        }
    }

    /// Redacts ASR words (which may carry their own punctuation: "1111,") as one text joined by spaces, and
    /// says which words to mute in the audio.
    pub fn redact_words(&self, words: &[&str]) -> RedactedWords {
        let mut text = String::with_capacity(words.iter().map(|w| w.len() + 1).sum());
        let mut ranges = Vec::with_capacity(words.len());
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            ranges.push(text.len()..text.len() + word.len());
            text.push_str(word);
        }
        let redacted = self.redact(&text);
        // Words and spans are both in text order: one merge-walk.
        let mut spans = redacted.spans.iter().peekable();
        let muted = ranges
            .iter()
            .map(|word| {
                while spans.next_if(|s| s.end <= word.start).is_some() {}
                spans.peek().is_some_and(|s| s.start < word.end)
            })
            .collect();
        RedactedWords { muted, redacted }
    }
}
