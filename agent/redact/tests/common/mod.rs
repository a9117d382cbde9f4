//! Small helpers shared by the integration tests: run a policy and list what it found as (type, text).
#![allow(dead_code)]

use infergate_redact::{Entity, EntitySet, Policy, Redactor};

/// `found` of text with nothing to redact.
pub const NOTHING: [(Entity, &str); 0] = [];

/// Each redacted span of `text` under `entities` (default style), as its type and the text it covers.
pub fn found(entities: EntitySet, text: &str) -> Vec<(Entity, &str)> {
    Redactor::new(Policy::new(entities)).redact(text).spans.iter().map(|s| (s.entity, &text[s.start..s.end])).collect()
}

/// The spans one entity type's recogniser alone finds in `text`.
pub fn only(entity: Entity, text: &str) -> Vec<&str> {
    found(EntitySet::of(entity), text).into_iter().map(|(_, covered)| covered).collect()
}

/// `text` redacted under `entities` in the default style.
pub fn redact(entities: EntitySet, text: &str) -> String {
    Redactor::new(Policy::new(entities)).redact(text).text
}

/// "four one one ..." for a digit string.
pub fn spoken(digits: &str) -> String {
    const WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    digits.bytes().map(|d| WORDS[usize::from(d - b'0')]).collect::<Vec<_>>().join(" ")
}
