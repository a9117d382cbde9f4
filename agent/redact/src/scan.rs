//! The one pass over the text that every pattern recogniser starts from.
//!
//! ```text
//!  bytes ─┬─ ASCII digits ──────────────────────┐
//!         ├─ whole words "four", "oh",          ├─▶ units ─▶ runs: units joined by short separators
//!         │  "double three"                     ┘     ("4111 1111", "(212) 555-0100", "four one one one")
//!         ├─ whole cue words ("ssn", "call", "born") ─▶ cues
//!         ├─ two letters + a digit at a word start ─▶ IBAN starts
//!         └─ '@', ':' ─▶ e-mail and IPv6 anchors
//! ```
//! Recognisers look only at these, so text without digits or anchors costs one byte test per byte and one
//! table lookup per short word.

use std::ops::Range;

use crate::lexicon::{self, CueKind, Word};

/// Separators may join units into one run when at most this many of them sit between two units:
/// ") " in "(212) 555" is two.
const MAX_GAP: usize = 3;

/// How far (in bytes) a cue word may be from a number and still count as "near" it.
const CUE_WINDOW: usize = 40;

fn is_gap_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'-' | b'.' | b',' | b'(' | b')')
}

/// Letters, digits and any non-ASCII byte. Counting every non-ASCII byte keeps multi-byte characters whole,
/// so a span widened to word edges always lands on a char boundary.
pub(crate) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// A digit-bearing token: an ASCII digit string ("4111") or a spoken digit word ("four", "double three").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unit {
    /// Byte range in the text.
    pub start: usize,
    pub end: usize,
    /// Its digits: `Scan::digits[digit_start..digit_end]`.
    pub digit_start: usize,
    pub digit_end: usize,
    pub spoken: bool,
}

impl Unit {
    pub fn len(&self) -> usize {
        self.digit_end - self.digit_start
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cue {
    pub start: usize,
    pub end: usize,
    pub kind: CueKind,
}

pub(crate) struct Scan<'t> {
    pub text: &'t str,
    /// Every unit's digits, as ASCII, in text order.
    pub digits: Vec<u8>,
    pub units: Vec<Unit>,
    /// Maximal sequences of units with only separators between them; ranges into `units`.
    pub runs: Vec<Range<usize>>,
    /// In text order, so `cue_near` can binary-search.
    pub cues: Vec<Cue>,
    pub at_signs: Vec<usize>,
    pub colons: Vec<usize>,
    pub iban_starts: Vec<usize>,
    /// First unit of the run still being extended.
    open_run: usize,
}

impl<'t> Scan<'t> {
    pub fn new(text: &'t str) -> Scan<'t> {
        let mut scan = Scan {
            text,
            digits: Vec::new(),
            units: Vec::new(),
            runs: Vec::new(),
            cues: Vec::new(),
            at_signs: Vec::new(),
            colons: Vec::new(),
            iban_starts: Vec::new(),
            open_run: 0,
        };
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            i = if b.is_ascii_digit() {
                let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                scan.push_unit(i, end, &bytes[i..end], false);
                end
            } else if b.is_ascii_alphabetic() {
                scan.word(i)
            } else {
                match b {
                    b'@' => scan.at_signs.push(i),
                    b':' => scan.colons.push(i),
                    _ => {}
                }
                i + 1
            };
        }
        scan.close_run();
        scan
    }

    pub fn run_units(&self, run: &Range<usize>) -> &[Unit] {
        &self.units[run.clone()]
    }

    /// The digits of `first` through `last` (units of one run, in order).
    pub fn digits_between(&self, first: &Unit, last: &Unit) -> &[u8] {
        &self.digits[first.digit_start..last.digit_end]
    }

    /// The text between two consecutive units.
    pub fn gap(&self, before: &Unit, after: &Unit) -> &'t [u8] {
        let text: &'t str = self.text;
        &text.as_bytes()[before.end..after.start]
    }

    /// Whether a cue of `kind` sits within `CUE_WINDOW` bytes of `start..end`.
    pub fn cue_near(&self, kind: CueKind, start: usize, end: usize) -> bool {
        let from = start.saturating_sub(CUE_WINDOW);
        let first = self.cues.partition_point(|c| c.end < from);
        self.cues[first..].iter().take_while(|c| c.start <= end + CUE_WINDOW).any(|c| c.kind == kind)
    }

    /// Handles the ASCII-letter run at `start`; returns where scanning resumes.
    fn word(&mut self, start: usize) -> usize {
        let text: &'t str = self.text;
        let bytes = text.as_bytes();
        let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
        if start > 0 && is_word_byte(bytes[start - 1]) {
            return end;
        }
        match bytes.get(end) {
            Some(next) if next.is_ascii_digit() => {
                if end - start == 2 {
                    self.iban_starts.push(start);
                }
                return end;
            }
            // Letters run on into non-ASCII ones: not one of our words.
            Some(&next) if is_word_byte(next) => return end,
            _ => {}
        }
        match lexicon::classify_ascii(&bytes[start..end]) {
            Word::Digit(d) => self.push_unit(start, end, &[d], true),
            Word::Repeat(times) => {
                if let Some((digit, unit_end)) = repeated_digit(bytes, end) {
                    self.push_unit(start, unit_end, &[digit; 3][..times], true);
                    return unit_end;
                }
            }
            Word::Cue(kind) => self.cues.push(Cue { start, end, kind }),
            Word::Other => {}
        }
        end
    }

    fn push_unit(&mut self, start: usize, end: usize, digits: &[u8], spoken: bool) {
        if let Some(last) = self.units.last() {
            let gap = &self.text.as_bytes()[last.end..start];
            if gap.is_empty() || gap.len() > MAX_GAP || !gap.iter().all(|&b| is_gap_byte(b)) {
                self.close_run();
            }
        }
        let digit_start = self.digits.len();
        self.digits.extend_from_slice(digits);
        self.units.push(Unit { start, end, digit_start, digit_end: self.digits.len(), spoken });
    }

    fn close_run(&mut self) {
        // "Oh, oh oh" is an exclamation, not "000": a run of nothing but "oh" is dropped.
        let text = self.text;
        let units = &self.units[self.open_run..];
        if !units.is_empty() && units.iter().all(|u| text[u.start..u.end].eq_ignore_ascii_case("oh")) {
            self.digits.truncate(units[0].digit_start);
            self.units.truncate(self.open_run);
            return;
        }
        if self.open_run < self.units.len() {
            self.runs.push(self.open_run..self.units.len());
            self.open_run = self.units.len();
        }
    }
}

/// The digit after "double"/"triple" ("double three", "double-3"), with where that word ends.
fn repeated_digit(bytes: &[u8], after: usize) -> Option<(u8, usize)> {
    if !matches!(bytes.get(after), Some(b' ' | b'-')) {
        return None;
    }
    let start = after + 1;
    let first = *bytes.get(start)?;
    let end = if first.is_ascii_digit() {
        start + 1
    } else {
        start + bytes[start..].iter().take_while(|b| b.is_ascii_alphabetic()).count()
    };
    if end == start || bytes.get(end).is_some_and(|&b| is_word_byte(b)) {
        return None;
    }
    if first.is_ascii_digit() {
        return Some((first, end));
    }
    match lexicon::classify_ascii(&bytes[start..end]) {
        Word::Digit(d) => Some((d, end)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each run as (its text, its digits).
    fn runs(text: &str) -> Vec<(&str, String)> {
        let scan = Scan::new(text);
        scan.runs
            .iter()
            .map(|run| {
                let units = scan.run_units(run);
                let (first, last) = (&units[0], &units[units.len() - 1]);
                let digits = scan.digits_between(first, last).iter().map(|&d| char::from(d)).collect();
                (&text[first.start..last.end], digits)
            })
            .collect()
    }

    #[test]
    fn separators_join_units_and_words_split_runs() {
        assert_eq!(
            runs("call (212) 555-0100 or 4111 1111, then 7"),
            vec![
                ("212) 555-0100", "2125550100".to_owned()),
                ("4111 1111", "41111111".to_owned()),
                ("7", "7".to_owned())
            ]
        );
    }

    #[test]
    fn spoken_digits_are_units() {
        assert_eq!(runs("it is Four oh double three, nine"), vec![("Four oh double three, nine", "40339".to_owned())]);
    }

    #[test]
    fn digit_words_inside_other_words_are_not_digits() {
        assert!(runs("someone oneself twofold done").is_empty());
    }

    #[test]
    fn a_run_of_only_oh_is_not_digits() {
        assert_eq!(runs("Oh, oh oh! Oh one two"), vec![("Oh one two", "012".to_owned())]);
    }

    #[test]
    fn double_without_a_digit_is_a_word() {
        assert_eq!(runs("double trouble 12"), vec![("12", "12".to_owned())]);
    }

    #[test]
    fn digits_inside_words_are_units() {
        assert_eq!(runs("ref4111x"), vec![("4111", "4111".to_owned())]);
    }

    #[test]
    fn anchors_are_collected() {
        let scan = Scan::new("DE89 x@y.z fe80::1 my SSN");
        // Candidates only ("fe80" is one); the IBAN recogniser validates.
        assert_eq!(scan.iban_starts, vec![0, 11]);
        assert_eq!(scan.at_signs, vec![6]);
        assert_eq!(scan.colons, vec![15, 16]);
        assert_eq!(scan.cues.len(), 1);
        assert!(scan.cue_near(CueKind::Ssn, 0, 1));
        assert!(!scan.cue_near(CueKind::Phone, 0, 1));
    }
}
