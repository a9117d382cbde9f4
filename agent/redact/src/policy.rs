//! What to redact and how, and how two policies combine.

use std::fmt;
use std::str::FromStr;

use crate::entity::EntitySet;
use crate::error::PolicyError;

/// How a redacted span is written in the output.
///
/// Strength, strongest first, is by what the output still tells a reader:
/// `remove` (not even that something was there) > `entity` (the type) > `marker` (the type, and which spans
/// in one response hold the same value) > `hash` (the type, and which spans hold the same value across
/// responses; whoever holds the key can test guesses, and an SSN has only 10^9 of them) > `mask` (part of
/// the value itself). [`Policy::tighten`] picks the stronger, so a key or a request can never weaken what
/// the endpoint enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Style {
    /// `[CREDIT_CARD]`.
    #[default]
    Entity,
    /// `[CREDIT_CARD_1]`: the same number for the same normalised value within one call.
    Marker,
    /// `****-****-****-1234`: digits but the last `keep_last` become `*`, separators stay.
    Mask,
    /// `[CREDIT_CARD:3f2a9c1e]`: the first 32 bits of HMAC-SHA256 over the type name and the normalised
    /// value, under the key given to the redactor.
    Hash,
    /// Nothing.
    Remove,
}

impl Style {
    pub const ALL: [Style; 5] = [Style::Entity, Style::Marker, Style::Mask, Style::Hash, Style::Remove];

    pub const fn name(self) -> &'static str {
        match self {
            Style::Entity => "entity",
            Style::Marker => "marker",
            Style::Mask => "mask",
            Style::Hash => "hash",
            Style::Remove => "remove",
        }
    }

    /// Rank in the order documented on [`Style`]; higher hides more.
    const fn strength(self) -> u8 {
        match self {
            Style::Mask => 0,
            Style::Hash => 1,
            Style::Marker => 2,
            Style::Entity => 3,
            Style::Remove => 4,
        }
    }

    /// The style that hides more of the two.
    #[must_use]
    pub fn stronger(self, other: Style) -> Style {
        if other.strength() > self.strength() { other } else { self }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Style {
    type Err = PolicyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Style::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| PolicyError::UnknownStyle(name.to_owned()))
    }
}

/// The default number of trailing digits `mask` leaves readable, as on a card receipt.
pub const DEFAULT_KEEP_LAST: u8 = 4;

/// What to redact and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    pub entities: EntitySet,
    pub style: Style,
    /// Digits `mask` leaves readable at the end of a span; never more than half the span's digits (see
    /// `render::mask`). Ignored by the other styles.
    pub keep_last: u8,
}

impl Policy {
    /// `entities` in the default style (`entity`), keeping [`DEFAULT_KEEP_LAST`] digits under `mask`.
    pub const fn new(entities: EntitySet) -> Policy {
        Policy { entities, style: Style::Entity, keep_last: DEFAULT_KEEP_LAST }
    }

    #[must_use]
    pub const fn style(self, style: Style) -> Policy {
        Policy { style, ..self }
    }

    #[must_use]
    pub const fn keep_last(self, keep_last: u8) -> Policy {
        Policy { keep_last, ..self }
    }

    /// This policy combined with a stricter request: the union of entity types, the stronger style, and the
    /// fewer kept digits. `a.tighten(b)` never redacts less than `a` or `b` alone, so a key's or a request's
    /// policy can only add to the endpoint's.
    #[must_use]
    pub fn tighten(&self, other: &Policy) -> Policy {
        Policy {
            entities: self.entities.union(other.entities),
            style: self.style.stronger(other.style),
            keep_last: self.keep_last.min(other.keep_last),
        }
    }
}
