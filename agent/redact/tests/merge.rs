//! Span merging: overlaps of different recognisers become one span with the most specific type; spans
//! cover whole words; separate values stay separate.

mod common;

use common::found;
use infergate_redact::Entity::{CreditCard, EmailAddress, IbanCode, IpAddress, Numbers, PhoneNumber, UsSsn};
use infergate_redact::{Entity, EntitySet, Policy, Redactor};

#[test]
fn card_inside_an_email_is_one_email() {
    let text = "write to 4111111111111111@example.com now";
    assert_eq!(found(EntitySet::ALL, text), [(EmailAddress, "4111111111111111@example.com")]);
}

#[test]
fn ip_address_wins_over_numbers() {
    assert_eq!(found(EntitySet::ALL, "host 10.0.0.1 is up"), [(IpAddress, "10.0.0.1")]);
}

#[test]
fn card_wins_over_numbers() {
    assert_eq!(found(EntitySet::ALL, "card 4111 1111 1111 1111"), [(CreditCard, "4111 1111 1111 1111")]);
}

#[test]
fn iban_wins_over_a_luhn_window_inside_it() {
    // Whatever Luhn windows and `numbers` lie inside the IBAN's digits, the IBAN is the one span.
    let text = "DE89 3704 0044 0532 0130 00";
    assert_eq!(found(EntitySet::ALL, text), [(IbanCode, text)]);
}

#[test]
fn phone_prefix_and_numbers_merge() {
    assert_eq!(found(EntitySet::ALL, "call +1 (212) 555-0100"), [(PhoneNumber, "+1 (212) 555-0100")]);
}

#[test]
fn ssn_wins_over_numbers() {
    assert_eq!(found(EntitySet::ALL, "ssn 123-45-6789"), [(UsSsn, "123-45-6789")]);
}

#[test]
fn only_policy_types_take_part() {
    // Under `numbers` alone the card is just numerals.
    assert_eq!(found(EntitySet::NUMBERS, "card 4111 1111 1111 1111"), [(Numbers, "4111 1111 1111 1111")]);
}

#[test]
fn spans_widen_to_whole_words() {
    assert_eq!(found(EntitySet::PCI, "x4111111111111111é ok"), [(CreditCard, "x4111111111111111é")]);
    assert_eq!(Redactor::new(Policy::new(EntitySet::PCI)).redact("x4111111111111111é ok").text, "[CREDIT_CARD] ok");
}

#[test]
fn two_cards_separated_by_a_space_stay_two() {
    let redacted = Redactor::new(Policy::new(EntitySet::PCI)).redact("4111111111111111 5500005555555559");
    assert_eq!(redacted.text, "[CREDIT_CARD] [CREDIT_CARD]");
    assert_eq!(redacted.counts.into_iter().collect::<Vec<_>>(), [(CreditCard, 2)]);
}

#[test]
fn spans_are_in_input_coordinates() {
    let text = "é 4111 1111 1111 1111, ssn 123-45-6789";
    let spans = Redactor::new(Policy::new(EntitySet::PII)).redact(text).spans;
    let covered: Vec<(Entity, usize, usize)> = spans.iter().map(|s| (s.entity, s.start, s.end)).collect();
    assert_eq!(covered, [(CreditCard, 3, 22), (UsSsn, 28, 39)]);
}

#[test]
fn counts_per_type() {
    let text = "a@b.com, c@d.org, 192.168.1.1 and 4111-1111-1111-1111";
    let counts = Redactor::new(Policy::new(EntitySet::PII)).redact(text).counts;
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [(CreditCard, 1), (EmailAddress, 2), (IpAddress, 1)]);
}
