//! Writes the redacted text: each span replaced per the policy's style, everything else copied.

use std::fmt::Write as _;

use crate::entity::Entity;
use crate::hmac::{HashKey, hmac_sha256};
use crate::merge::Span;
use crate::policy::{Policy, Style};

/// Hex characters of the HMAC shown by `hash`: 32 bits tell values in one conversation apart without
/// giving a key holder a full digest to match offline.
const HASH_HEX: usize = 8;

/// The redacted text, and where each span's replacement sits in it (same order as `spans`).
pub(crate) fn render(
    text: &str,
    spans: &[Span],
    policy: Policy,
    key: Option<&HashKey>,
) -> (String, Vec<std::ops::Range<usize>>) {
    let mut out = String::with_capacity(text.len());
    let mut outputs = Vec::with_capacity(spans.len());
    let mut markers = Markers::default();
    let mut copied = 0;
    for span in spans {
        out.push_str(&text[copied..span.start]);
        let replaced_from = out.len();
        let name = span.entity.name();
        match (policy.style, key) {
            // Without a key there is nothing to correlate with; fall back to the next stronger style rather
            // than to anything that shows more.
            (Style::Entity, _) | (Style::Hash, None) => {
                let _ = write!(out, "[{name}]");
            }
            (Style::Marker, _) => {
                let _ = write!(out, "[{name}_{}]", markers.number(span.entity, &span.value));
            }
            (Style::Mask, _) => mask(&text[span.start..span.end], &span.value, usize::from(policy.keep_last), &mut out),
            (Style::Hash, Some(key)) => {
                let mac = hmac_sha256(key, &[name.as_bytes(), &[0], span.value.as_bytes()]);
                let _ = write!(out, "[{name}:");
                for byte in &mac[..HASH_HEX / 2] {
                    let _ = write!(out, "{byte:02x}");
                }
                out.push(']');
            }
            (Style::Remove, _) => {}
        }
        outputs.push(replaced_from..out.len());
        copied = span.end;
        // "my card is 4111... thanks" must not become "my card is  thanks".
        let after_space = out.is_empty() || out.ends_with(' ');
        if policy.style == Style::Remove && after_space && text[copied..].starts_with(' ') {
            copied += 1;
        }
    }
    out.push_str(&text[copied..]);
    (out, outputs)
}

/// `marker` numbers, per entity type, in order of first appearance.
#[derive(Default)]
struct Markers<'s> {
    seen: Vec<(Entity, &'s str, usize)>,
}

impl<'s> Markers<'s> {
    fn number(&mut self, entity: Entity, value: &'s str) -> usize {
        if let Some(&(_, _, n)) = self.seen.iter().find(|(e, v, _)| *e == entity && *v == value) {
            return n;
        }
        let n = self.seen.iter().filter(|(e, _, _)| *e == entity).count() + 1;
        self.seen.push((entity, value, n));
        n
    }
}

/// Every digit but the last few becomes `*`, letters always do, separators stay: `****-****-****-1234`.
///
/// At most half of a span's digits stay readable, whatever `keep_last` says: a 3-digit number with
/// `keep_last = 4` would otherwise come out whole. Spoken digits ("four one one one ...") have no written
/// digits to keep, so they are written as the masked digit string (`************1111`).
fn mask(source: &str, value: &str, keep_last: usize, out: &mut String) {
    let written = source.bytes().filter(u8::is_ascii_digit).count();
    if written > 0 {
        let keep_from = written - keep_last.min(written / 2);
        let mut seen = 0;
        for c in source.chars() {
            if c.is_ascii_digit() {
                seen += 1;
                out.push(if seen > keep_from { c } else { '*' });
            } else {
                out.push(if c.is_alphanumeric() { '*' } else { c });
            }
        }
        return;
    }
    let spoken = value.bytes().filter(u8::is_ascii_digit).count();
    if spoken > 0 {
        let keep_from = spoken - keep_last.min(spoken / 2);
        for (i, c) in value.chars().filter(char::is_ascii_digit).enumerate() {
            out.push(if i >= keep_from { c } else { '*' });
        }
        return;
    }
    out.extend(source.chars().map(|c| if c.is_alphanumeric() { '*' } else { c }));
}
