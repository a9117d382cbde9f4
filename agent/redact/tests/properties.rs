//! Properties over generated text: redaction never panics, spans are sound, and no card survives.

mod common;

use common::spoken;
use infergate_redact::{Entity, EntitySet, HashKey, Policy, Redactor, Style};
use proptest::prelude::*;

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let v = u32::from(d - b'0');
            if i % 2 == 1 { if v * 2 > 9 { v * 2 - 9 } else { v * 2 } } else { v }
        })
        .sum();
    sum % 10 == 0
}

/// A Luhn-valid 16-digit number whose first digit is in `first`.
fn card(first: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = String> {
    (first, proptest::collection::vec(0u8..10, 14)).prop_map(|(lead, body)| {
        let mut digits: Vec<u8> = std::iter::once(lead).chain(body).map(|d| b'0' + d).collect();
        let check = (b'0'..=b'9').find(|&c| luhn(&[&digits[..], &[c]].concat())).unwrap_or(b'0');
        digits.push(check);
        String::from_utf8(digits).unwrap_or_default()
    })
}

/// A card as people and ASR write it: one block, 4-4-4-4 with spaces or dashes, or spoken. Written cards
/// may start with any digit; spoken ones start like a major network's (2-6), which is what lets the
/// recogniser find them next to other spoken digits (see `numeric::cards`).
fn written_card() -> impl Strategy<Value = String> {
    prop_oneof![
        (card(0..=9), 0..3usize).prop_map(|(digits, form)| {
            let groups: Vec<&str> = (0..4).map(|g| &digits[g * 4..g * 4 + 4]).collect();
            match form {
                0 => digits.clone(),
                1 => groups.join(" "),
                _ => groups.join("-"),
            }
        }),
        card(2..=6).prop_map(|digits| spoken(&digits)),
    ]
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["my", "card", "is", "call", "ssn", "born", "one", "oh", "double", "x", "é", "-", ",", ".", "@", ":", "+", "(", ")", "DE89", "192.168.0.1", "a@b.co"])
            .prop_map(str::to_owned),
        2 => "[0-9]{1,20}",
        2 => "[0-9 -]{1,24}",
        2 => written_card(),
        1 => any::<String>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(fragment(), 0..24),
        proptest::collection::vec(prop::sample::select(vec!["", " ", "  ", "-", ", ", "\n"]), 24),
    )
        .prop_map(|(fragments, separators)| {
            fragments.iter().zip(&separators).flat_map(|(f, s)| [f.as_str(), *s]).collect()
        })
}

/// Luhn-valid cards left readable: maximal 16-digit blocks, and 4-4-4-4 groups joined by one space or dash.
fn readable_cards(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let digit_at = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut found = Vec::new();
    for start in 0..b.len() {
        if !digit_at(start) || (start > 0 && digit_at(start - 1)) {
            continue;
        }
        let block = (start..b.len()).take_while(|&i| digit_at(i)).count();
        if block == 16 && luhn(&b[start..start + 16]) {
            found.push(text[start..start + 16].to_owned());
        }
        let grouped = (0..4).all(|g| {
            let at = start + g * 5;
            (0..4).all(|k| digit_at(at + k)) && (g == 3 || matches!(b.get(at + 4), Some(b' ' | b'-')))
        }) && !digit_at(start + 19);
        if grouped {
            let digits: Vec<u8> = b[start..start + 19].iter().copied().filter(u8::is_ascii_digit).collect();
            if luhn(&digits) {
                found.push(text[start..start + 19].to_owned());
            }
        }
    }
    found
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn redact_never_panics_and_spans_are_sound(text in text(), style in prop::sample::select(Style::ALL.to_vec())) {
        let redactor = Redactor::new(Policy::new(EntitySet::ALL).style(style)).with_hash_key(HashKey::new(*b"k"));
        let redacted = redactor.redact(&text);
        let mut previous_end = 0;
        for span in &redacted.spans {
            prop_assert!(previous_end <= span.start && span.start < span.end && span.end <= text.len());
            prop_assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
            previous_end = span.end;
        }
        let counted: u32 = redacted.counts.values().sum();
        prop_assert_eq!(counted as usize, redacted.spans.len());
    }

    #[test]
    fn arbitrary_unicode_never_panics(text in any::<String>()) {
        for style in Style::ALL {
            let _ = Redactor::new(Policy::new(EntitySet::ALL).style(style)).redact(&text);
        }
    }

    #[test]
    fn no_luhn_valid_card_survives(text in text()) {
        for entities in [EntitySet::PCI, EntitySet::PII] {
            let redacted = Redactor::new(Policy::new(entities)).redact(&text);
            prop_assert_eq!(readable_cards(&redacted.text), Vec::<String>::new(), "in {:?}", redacted.text);
        }
    }

    #[test]
    fn inserted_cards_are_found_in_every_form(before in text(), card in written_card(), after in text()) {
        let text = format!("{before} . {card} . {after}");
        let redacted = Redactor::new(Policy::new(EntitySet::PCI)).redact(&text);
        prop_assert!(redacted.counts.get(&Entity::CreditCard).is_some_and(|&n| n >= 1));
        prop_assert!(!redacted.text.contains(&format!(" {card} ")), "{:?}", redacted.text);
    }
}
