//! The pattern recognisers. Each one reads the [`Scan`]'s anchors, validates, and reports detections of its
//! own entity type; overlapping detections are left for `merge` to resolve.

mod dob;
mod iban;
mod network;
mod numeric;

use std::fmt;

use crate::entity::{Entity, EntitySet};
use crate::scan::Scan;

/// One recogniser's finding, before merging.
#[derive(Clone, PartialEq)]
pub struct Detection {
    /// Byte range in the input text.
    pub start: usize,
    pub end: usize,
    pub entity: Entity,
    /// Confidence in [0, 1]: 1.0 when a checksum passed, lower when only the shape or a cue word matched.
    pub score: f32,
    /// The value in one canonical form (digits only, lowercase e-mail, E.164 phone, ISO date) so `marker` and
    /// `hash` treat "4111 1111 ..." and "four one one one ..." as the same value. Never in Debug output.
    value: String,
}

impl Detection {
    /// A finding of `entity` at bytes `start..end` of the text, for recognisers and
    /// [`EntityModel`](crate::EntityModel)s. `value` is what `marker` and `hash` compare: the normalised
    /// value, so two spellings of one value get one marker (a model passes, say, the lowercased words).
    pub fn new(start: usize, end: usize, entity: Entity, score: f32, value: String) -> Detection {
        Detection { start, end, entity, score, value }
    }

    /// The normalised value. Handle as the secret it is.
    pub fn value(&self) -> &str {
        &self.value
    }

    pub(crate) fn into_value(self) -> String {
        self.value
    }
}

impl fmt::Debug for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detection")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("entity", &self.entity)
            .field("score", &self.score)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

/// Runs the recognisers for `entities` over `text`.
pub(crate) fn detect(text: &str, entities: EntitySet) -> Vec<Detection> {
    let scan = Scan::new(text);
    let mut found = Vec::new();
    let recognisers: [(Entity, fn(&Scan<'_>, &mut Vec<Detection>)); 8] = [
        (Entity::CreditCard, numeric::cards),
        (Entity::UsSsn, numeric::ssns),
        (Entity::PhoneNumber, numeric::phones),
        (Entity::Numbers, numeric::numbers),
        (Entity::IbanCode, iban::ibans),
        (Entity::EmailAddress, network::emails),
        (Entity::IpAddress, network::ip_addresses),
        (Entity::DateOfBirth, dob::dates_of_birth),
    ];
    for (entity, recognise) in recognisers {
        if entities.contains(entity) {
            recognise(&scan, &mut found);
        }
    }
    found
}

/// ASCII digits (or other ASCII) as a String.
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}
