//! Recognisers over digit runs: payment cards, SSNs, phone numbers and Deepgram-style `numbers`.
//!
//! A run is a sequence of units ("4111", "four", "double three") joined by separators; detections start and
//! end on unit edges, so "4111 1111" never yields half a group and a spoken word is never split.

use super::{Detection, ascii};
use crate::checks;
use crate::entity::Entity;
use crate::lexicon::CueKind;
use crate::scan::{Scan, Unit};

const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// Every window of a run that has 13-19 digits and passes Luhn.
///
/// All windows, not the first: with an extra spoken digit in front of a card, a shorter window that starts
/// at that digit passes Luhn by chance one time in ten, and taking only it would leave the card's last digits
/// readable. The union (merged later) covers the card. Written-out groups must look like a card's: every
/// written group but the last has at least four digits (4-4-4-4, 4-6-5, 4-4-4-4-3), which keeps two phone
/// numbers in a row (3-3-4 3-3-4) from reading as one card. Spoken digits have no groups, so a window that
/// starts or ends on a spoken digit and is not the whole run must also look like a major network's number
/// (15-16 digits, first digit 2-6): without that, some sub-window of a mistyped 16-digit number passes Luhn
/// more often than not (55% on random digits; 9% with it).
pub(crate) fn cards(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    for run in &scan.runs {
        let units = scan.run_units(run);
        let digits = digit_count(units);
        if digits < *CUED_CARD_DIGITS.start() {
            continue;
        }
        let before = found.len();
        cards_in_run(scan, units, found);
        // ASR mishears a digit now and then ("4539 14880 0343 647"): Luhn fails, yet the speaker said a
        // card number. After a card cue word, the whole run of a card's length (give or take a digit)
        // counts, at a lower confidence.
        let (first, last) = (&units[0], &units[units.len() - 1]);
        if found.len() == before
            && CUED_CARD_DIGITS.contains(&digits)
            && scan.cue_near(CueKind::Card, first.start, last.end)
        {
            let all = scan.digits_between(first, last);
            found.push(Detection::new(first.start, last.end, Entity::CreditCard, 0.7, ascii(all)));
        }
    }
}

/// The shortest card: Maestro's 12 digits.
const MAESTRO_DIGITS: usize = 12;

/// A card number after a cue word, as ASR may write it: one digit dropped or added.
const CUED_CARD_DIGITS: std::ops::RangeInclusive<usize> = 12..=20;

fn cards_in_run(scan: &Scan<'_>, units: &[Unit], found: &mut Vec<Detection>) {
    {
        if digit_count(units) < MAESTRO_DIGITS {
            return;
        }
        for first in 0..units.len() {
            let mut length = 0;
            for last in first..units.len() {
                let before_last = &units[last.max(1) - 1];
                if last > first && !before_last.spoken && before_last.len() < 4 {
                    break;
                }
                length += units[last].len();
                if length > *CARD_DIGITS.end() {
                    break;
                }
                let digits = scan.digits_between(&units[first], &units[last]);
                let whole_run = first == 0 && last == units.len() - 1;
                let spoken_edge = units[first].spoken || units[last].spoken;
                let network_shaped = matches!(length, 15 | 16) && (b'2'..=b'6').contains(&digits[0]);
                // Maestro issues 12-digit cards (IIN 5018, 5020, 5038, 56-58, 6304, 6759, 6761-6763): a
                // 12-digit number counts only as one block of written digits starting 5 or 6, so phone
                // numbers (grouped, or starting +1/+44) and spoken runs stay out of it.
                let maestro = length == MAESTRO_DIGITS
                    && first == last
                    && !units[first].spoken
                    && matches!(digits[0], b'5' | b'6');
                if (CARD_DIGITS.contains(&length) || maestro)
                    && (whole_run || !spoken_edge || network_shaped)
                    && checks::luhn(digits)
                {
                    let (start, end) = (units[first].start, units[last].end);
                    found.push(Detection::new(start, end, Entity::CreditCard, 1.0, ascii(digits)));
                }
            }
        }
    }
}

/// `ddd-dd-dddd` or `ddd dd dddd` anywhere; nine digits in any form (one block, spoken) only near a cue word
/// ("SSN", "social"). Both must pass the SSA area/group/serial rules.
pub(crate) fn ssns(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    for run in &scan.runs {
        let units = scan.run_units(run);
        if digit_count(units) < 9 {
            continue;
        }
        for window in units.windows(3) {
            let lengths = [window[0].len(), window[1].len(), window[2].len()];
            if lengths != [3, 2, 4] || window.iter().any(|u| u.spoken) {
                continue;
            }
            let separator = scan.gap(&window[0], &window[1]);
            if separator != scan.gap(&window[1], &window[2]) || !(separator == b"-" || separator == b" ") {
                continue;
            }
            let digits = scan.digits_between(&window[0], &window[2]);
            if !checks::ssn_valid(digits) {
                continue;
            }
            let cue = scan.cue_near(CueKind::Ssn, window[0].start, window[2].end);
            let score = match (cue, separator == b"-") {
                (true, _) => 0.95,
                (false, true) => 0.85,
                // Space-separated 3-2-4 is a weaker shape: other references are written that way too.
                (false, false) => 0.6,
            };
            found.push(Detection::new(window[0].start, window[2].end, Entity::UsSsn, score, ascii(digits)));
        }
        let (first, last) = ends(units);
        let digits = scan.digits_between(first, last);
        if digits.len() == 9 && checks::ssn_valid(digits) && scan.cue_near(CueKind::Ssn, first.start, last.end) {
            found.push(Detection::new(first.start, last.end, Entity::UsSsn, 0.9, ascii(digits)));
        }
    }
}

/// Phone numbers without a numbering-plan database:
/// - NANP written out: `(212) 555-0100`, `212-555-0100`, `212.555.0100`, `1 212 555 0100`, `+1 212 555 0100`;
/// - E.164: a `+`, a country code not starting with 0, 8-15 digits in all (`+44 20 7946 0958`);
/// - a whole run that is a NANP number on its own: ten digits as one block or spoken (`2125550100`,
///   "two one two five five five ..."), or eleven starting with 1;
/// - any whole run of 7-15 digits near a phone cue ("call", "phone", "mobile"): national formats of other
///   countries and spoken numbers.
pub(crate) fn phones(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    for run in &scan.runs {
        let units = scan.run_units(run);
        if digit_count(units) < 7 {
            continue;
        }
        written_nanp(scan, units, found);
        e164(scan, units, found);
        whole_run_phone(scan, units, found);
    }
}

fn written_nanp(scan: &Scan<'_>, units: &[Unit], found: &mut Vec<Detection>) {
    for first in 0..units.len() {
        let rest = &units[first..];
        let country_code = rest[0].len() == 1 && !rest[0].spoken && scan.digits[rest[0].digit_start] == b'1';
        let body = if country_code { &rest[1..] } else { rest };
        if body.len() < 3
            || body[..3].iter().any(|u| u.spoken)
            || [body[0].len(), body[1].len(), body[2].len()] != [3, 3, 4]
        {
            continue;
        }
        let digits = scan.digits_between(&body[0], &body[2]);
        if checks::nanp_valid(digits) {
            let start = with_prefix(scan, rest[0].start);
            found.push(Detection::new(start, body[2].end, Entity::PhoneNumber, 0.75, format!("+1{}", ascii(digits))));
        }
    }
}

fn e164(scan: &Scan<'_>, units: &[Unit], found: &mut Vec<Detection>) {
    let first = &units[0];
    let plus = first.start > 0 && scan.text.as_bytes()[first.start - 1] == b'+';
    if !plus || first.spoken || scan.digits[first.digit_start] == b'0' {
        return;
    }
    // The longest prefix of the run that is still a possible E.164 number.
    let last = units
        .iter()
        .take_while(|u| u.digit_end - first.digit_start <= 15)
        .filter(|u| u.digit_end - first.digit_start >= 8)
        .last();
    if let Some(last) = last {
        let value = format!("+{}", ascii(scan.digits_between(first, last)));
        found.push(Detection::new(first.start - 1, last.end, Entity::PhoneNumber, 0.8, value));
    }
}

fn whole_run_phone(scan: &Scan<'_>, units: &[Unit], found: &mut Vec<Detection>) {
    let (first, last) = ends(units);
    let digits = scan.digits_between(first, last);
    // Ten digits in several written groups of other shapes ("2019 2020 20") are not a phone number.
    let plain = units.len() == 1 || units.iter().all(|u| u.spoken);
    let nanp = plain
        && ((digits.len() == 10 && checks::nanp_valid(digits))
            || (digits.len() == 11 && digits[0] == b'1' && checks::nanp_valid(&digits[1..])));
    let cue = scan.cue_near(CueKind::Phone, first.start, last.end);
    if !(nanp || (cue && digits.len() <= 15)) {
        return;
    }
    let value = if nanp { format!("+1{}", ascii(&digits[digits.len() - 10..])) } else { ascii(digits) };
    let score = if cue { 0.8 } else { 0.5 };
    found.push(Detection::new(with_prefix(scan, first.start), last.end, Entity::PhoneNumber, score, value));
}

/// Deepgram's `numbers`: every run of three or more numerals, written or spoken.
pub(crate) fn numbers(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    for run in &scan.runs {
        let units = scan.run_units(run);
        let (first, last) = ends(units);
        let digits = scan.digits_between(first, last);
        if digits.len() >= 3 {
            found.push(Detection::new(first.start, last.end, Entity::Numbers, 0.5, ascii(digits)));
        }
    }
}

/// A run's first and last unit (runs are never empty).
fn ends(units: &[Unit]) -> (&Unit, &Unit) {
    (&units[0], &units[units.len() - 1])
}

fn digit_count(units: &[Unit]) -> usize {
    let (first, last) = ends(units);
    last.digit_end - first.digit_start
}

/// A phone number's opening parenthesis or plus sign belongs to it: redacting "212) 555-0100" would leave a
/// stray "(".
fn with_prefix(scan: &Scan<'_>, start: usize) -> usize {
    let bytes = scan.text.as_bytes();
    if start > 0 && matches!(bytes[start - 1], b'(' | b'+') { start - 1 } else { start }
}
