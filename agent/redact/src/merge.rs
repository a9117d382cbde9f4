//! Detections to the spans that get redacted: widened to whole words, overlaps and touching spans merged.
//!
//! ```text
//!  detections ─▶ widen to word edges ─▶ sort by start ─▶ union overlapping/touching ─▶ spans
//!                                                        (label: highest Entity::priority)
//! ```
//! Spans of the same type separated by a space stay apart ("card 1 and card 2" counts two cards); only
//! overlapping or touching ones merge, whatever their types.

use crate::entity::Entity;
use crate::recognise::Detection;
use crate::scan::is_word_byte;

/// A span to redact, in input byte coordinates, with the value `marker`/`hash` key on.
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub entity: Entity,
    pub value: String,
}

pub(crate) fn merge(text: &str, mut detections: Vec<Detection>) -> Vec<Span> {
    let bytes = text.as_bytes();
    for d in &mut detections {
        // A span never splits a word: "ref4111111111111111" is redacted whole, not as "ref[CREDIT_CARD]".
        while d.start > 0 && is_word_byte(bytes[d.start - 1]) {
            d.start -= 1;
        }
        while d.end < bytes.len() && is_word_byte(bytes[d.end]) {
            d.end += 1;
        }
    }
    detections.sort_by_key(|d| (d.start, std::cmp::Reverse(d.end)));
    let mut spans: Vec<Span> = Vec::with_capacity(detections.len());
    for d in detections {
        match spans.last_mut() {
            Some(span) if d.start <= span.end => {
                span.end = span.end.max(d.end);
                if d.entity.priority() > span.entity.priority() {
                    span.entity = d.entity;
                    span.value = d.into_value();
                }
            }
            _ => spans.push(Span { start: d.start, end: d.end, entity: d.entity, value: d.into_value() }),
        }
    }
    spans
}
