//! Dates of birth: a date within a short window of a birth cue ("born", "date of birth", "DOB",
//! "birthday"). A date without a cue is not personal data by itself, so there is no cue-less form.
//!
//! Forms: `01/02/1990`, `1990-01-02`, `2.1.90` (month first unless the first number is over 12),
//! `March 3rd, 1985`, `3 March 1985`, `the 3rd of March`, `Mar. 3`, `March 1985`.

use super::Detection;
use crate::entity::Entity;
use crate::lexicon::CueKind;
use crate::scan::{Scan, is_word_byte};

/// People say the cue first ("born on ..."); "... is my birthday" is the short way round.
const AFTER_CUE: usize = 48;
const BEFORE_CUE: usize = 40;

pub(crate) fn dates_of_birth(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    let bytes = scan.text.as_bytes();
    for cue in scan.cues.iter().filter(|c| c.kind == CueKind::Birth) {
        let after = cue.end..(cue.end + AFTER_CUE).min(bytes.len());
        let before = cue.start.saturating_sub(BEFORE_CUE)..cue.start;
        let date = word_starts(bytes, after)
            .find_map(|start| parse_date(bytes, start).map(|date| (start, date)))
            .or_else(|| {
                word_starts(bytes, before)
                    .filter_map(|start| parse_date(bytes, start).map(|date| (start, date)))
                    .filter(|(_, (end, _))| *end <= cue.start)
                    .last()
            });
        if let Some((start, (end, value))) = date {
            found.push(Detection::new(start, end, Entity::DateOfBirth, 0.85, value));
        }
    }
}

fn word_starts(bytes: &[u8], range: std::ops::Range<usize>) -> impl Iterator<Item = usize> + '_ {
    range.filter(move |&p| bytes[p].is_ascii_alphanumeric() && (p == 0 || !is_word_byte(bytes[p - 1])))
}

/// The date starting at `start`: where it ends and its ISO 8601 form (`1985-03-03`, `--03-03`, `1985-03`).
fn parse_date(bytes: &[u8], start: usize) -> Option<(usize, String)> {
    if bytes[start].is_ascii_digit() {
        numeric(bytes, start).or_else(|| day_first(bytes, start))
    } else {
        month_first(bytes, start)
    }
}

#[derive(Clone, Copy)]
struct Number {
    value: u32,
    digits: usize,
    end: usize,
}

/// 1..=`max_digits` ASCII digits at `start`, not followed by another digit.
fn number(bytes: &[u8], start: usize, max_digits: usize) -> Option<Number> {
    let digits = bytes.get(start..)?.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > max_digits {
        return None;
    }
    let value = bytes[start..start + digits].iter().fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'));
    Some(Number { value, digits, end: start + digits })
}

fn numeric(bytes: &[u8], start: usize) -> Option<(usize, String)> {
    let first = number(bytes, start, 4)?;
    let separator = *bytes.get(first.end)?;
    if !matches!(separator, b'/' | b'-' | b'.') {
        return None;
    }
    let second = number(bytes, first.end + 1, 2)?;
    if bytes.get(second.end) != Some(&separator) {
        return None;
    }
    let third = number(bytes, second.end + 1, 4)?;
    if bytes.get(third.end).is_some_and(|&b| is_word_byte(b)) {
        return None;
    }
    let (year, month, day) = if first.digits == 4 {
        (first, second.value, third.value)
    } else if matches!(third.digits, 2 | 4) {
        // US order unless the first number cannot be a month.
        if first.value > 12 { (third, second.value, first.value) } else { (third, first.value, second.value) }
    } else {
        return None;
    };
    Some((third.end, iso(Some(year), month, Some(day))?))
}

fn month_first(bytes: &[u8], start: usize) -> Option<(usize, String)> {
    let (month, after_month) = month(bytes, start)?;
    let at = blank(bytes, after_month)?;
    if let Some(day) = number(bytes, at, 2) {
        let after_day = ordinal(bytes, day.end)?;
        let year = comma_blank(bytes, after_day).and_then(|at| year(bytes, at));
        let end = year.map_or(after_day, |y| y.end);
        return Some((end, iso(year, month, Some(day.value))?));
    }
    let year = year(bytes, at)?;
    Some((year.end, iso(Some(year), month, None)?))
}

fn day_first(bytes: &[u8], start: usize) -> Option<(usize, String)> {
    let day = number(bytes, start, 2)?;
    let mut at = blank(bytes, ordinal(bytes, day.end)?)?;
    if bytes[at..].len() > 3 && bytes[at..at + 2].eq_ignore_ascii_case(b"of") && bytes[at + 2] == b' ' {
        at = blank(bytes, at + 2)?;
    }
    let (month, after_month) = month(bytes, at)?;
    let year = comma_blank(bytes, after_month).and_then(|at| year(bytes, at));
    Some((year.map_or(after_month, |y| y.end), iso(year, month, Some(day.value))?))
}

/// A four-digit year that ends a word.
fn year(bytes: &[u8], start: usize) -> Option<Number> {
    let year = number(bytes, start, 4).filter(|y| y.digits == 4)?;
    (!bytes.get(year.end).is_some_and(|&b| is_word_byte(b))).then_some(year)
}

/// A month name or its abbreviation ("Sept.") at a word start, and where it ends.
fn month(bytes: &[u8], start: usize) -> Option<(u32, usize)> {
    let letters = bytes.get(start..)?.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let end = start + letters;
    if !(3..=9).contains(&letters) || bytes.get(end).is_some_and(|&b| is_word_byte(b)) {
        return None;
    }
    let mut lower = [0u8; 9];
    for (dst, src) in lower.iter_mut().zip(&bytes[start..end]) {
        *dst = src.to_ascii_lowercase();
    }
    let month = match &lower[..letters] {
        b"january" | b"jan" => 1,
        b"february" | b"feb" => 2,
        b"march" | b"mar" => 3,
        b"april" | b"apr" => 4,
        b"may" => 5,
        b"june" | b"jun" => 6,
        b"july" | b"jul" => 7,
        b"august" | b"aug" => 8,
        b"september" | b"sep" | b"sept" => 9,
        b"october" | b"oct" => 10,
        b"november" | b"nov" => 11,
        b"december" | b"dec" => 12,
        _ => return None,
    };
    let end = if bytes.get(end) == Some(&b'.') { end + 1 } else { end };
    Some((month, end))
}

/// Skips "st"/"nd"/"rd"/"th" after a day; fails if other letters follow the digits.
fn ordinal(bytes: &[u8], end: usize) -> Option<usize> {
    let suffix =
        bytes.get(end..end + 2).filter(|s| [b"st", b"nd", b"rd", b"th"].iter().any(|o| s.eq_ignore_ascii_case(&o[..])));
    let end = if suffix.is_some() { end + 2 } else { end };
    (!bytes.get(end).is_some_and(|&b| is_word_byte(b))).then_some(end)
}

/// One or more spaces.
fn blank(bytes: &[u8], start: usize) -> Option<usize> {
    let spaces = bytes.get(start..)?.iter().take_while(|&&b| b == b' ').count();
    (spaces > 0).then_some(start + spaces)
}

/// An optional comma, then one or more spaces.
fn comma_blank(bytes: &[u8], start: usize) -> Option<usize> {
    let start = if bytes.get(start) == Some(&b',') { start + 1 } else { start };
    blank(bytes, start)
}

fn iso(year: Option<Number>, month: u32, day: Option<u32>) -> Option<String> {
    let year_ok = year.is_none_or(|y| y.digits == 2 || (1900..=2100).contains(&y.value));
    if !year_ok || !(1..=12).contains(&month) || day.is_some_and(|d| !(1..=31).contains(&d)) {
        return None;
    }
    Some(match (year, day) {
        (Some(y), Some(d)) if y.digits == 2 => format!("{:02}-{month:02}-{d:02}", y.value),
        (Some(y), Some(d)) => format!("{:04}-{month:02}-{d:02}", y.value),
        (None, Some(d)) => format!("--{month:02}-{d:02}"),
        (Some(y), None) => format!("{:04}-{month:02}", y.value),
        (None, None) => return None,
    })
}
