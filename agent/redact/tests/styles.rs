//! Each redaction style, exactly as written.

mod common;

use common::spoken;
use infergate_redact::{EntitySet, HashKey, Policy, Redactor, Style};

fn redact(style: Style, text: &str) -> String {
    Redactor::new(Policy::new(EntitySet::ALL).style(style)).redact(text).text
}

fn hashed(key: &[u8], text: &str) -> String {
    Redactor::new(Policy::new(EntitySet::ALL).style(Style::Hash)).with_hash_key(HashKey::new(key)).redact(text).text
}

#[test]
fn entity() {
    assert_eq!(
        redact(Style::Entity, "card 4111 1111 1111 1111, ssn 123-45-6789."),
        "card [CREDIT_CARD], ssn [US_SSN]."
    );
}

#[test]
fn marker_repeats_for_the_same_value_in_any_form() {
    let text =
        format!("4111111111111111 and 5500005555555559 and 4111-1111-1111-1111 and {}", spoken("4111111111111111"));
    assert_eq!(
        redact(Style::Marker, &text),
        "[CREDIT_CARD_1] and [CREDIT_CARD_2] and [CREDIT_CARD_1] and [CREDIT_CARD_1]"
    );
}

#[test]
fn marker_numbers_count_per_type() {
    assert_eq!(
        redact(Style::Marker, "a@b.com 4111111111111111 c@d.com a@b.com"),
        "[EMAIL_ADDRESS_1] [CREDIT_CARD_1] [EMAIL_ADDRESS_2] [EMAIL_ADDRESS_1]"
    );
}

#[test]
fn mask_keeps_the_last_four_digits_and_separators() {
    assert_eq!(redact(Style::Mask, "card 4111-1111-1111-1236."), "card ****-****-****-1236.");
    assert_eq!(redact(Style::Mask, "ssn 123-45-6789"), "ssn ***-**-6789");
}

#[test]
fn mask_keep_last_is_configurable() {
    let policy = Policy::new(EntitySet::PCI).style(Style::Mask).keep_last(2);
    assert_eq!(Redactor::new(policy).redact("4111 1111 1111 1236").text, "**** **** **** **36");
}

#[test]
fn mask_never_keeps_more_than_half_the_digits() {
    assert_eq!(redact(Style::Mask, "paid 300 dollars"), "paid **0 dollars");
}

#[test]
fn mask_of_spoken_digits_writes_the_masked_digits() {
    assert_eq!(redact(Style::Mask, &format!("card {}", spoken("4111111111111111"))), "card ************1111");
}

#[test]
fn mask_of_letters() {
    assert_eq!(redact(Style::Mask, "mail bob@ex.com"), "mail ***@**.***");
}

#[test]
fn hash_is_a_keyed_hmac_prefix() {
    // HMAC-SHA256(key "k", "CREDIT_CARD\0" + digits), first 4 bytes; checked with Python's hmac module.
    assert_eq!(hashed(b"k", "card 4111 1111 1111 1111"), "card [CREDIT_CARD:6b5ca31e]");
    assert_eq!(hashed(b"k", "ssn 123-45-6789"), "ssn [US_SSN:b2d01142]");
}

#[test]
fn hash_is_the_same_for_the_same_value_in_any_form() {
    assert_eq!(hashed(b"k", &spoken("4111111111111111")), "[CREDIT_CARD:6b5ca31e]");
}

#[test]
fn hash_differs_by_key() {
    assert_eq!(hashed(b"other", "4111111111111111"), "[CREDIT_CARD:37962656]");
}

#[test]
fn hash_without_a_key_writes_the_entity() {
    assert_eq!(redact(Style::Hash, "4111111111111111"), "[CREDIT_CARD]");
}

#[test]
fn remove_takes_one_adjacent_space_with_it() {
    assert_eq!(redact(Style::Remove, "my card is 4111 1111 1111 1111 thanks"), "my card is thanks");
    assert_eq!(redact(Style::Remove, "4111 1111 1111 1111 is mine"), "is mine");
    assert_eq!(redact(Style::Remove, "card: 4111111111111111."), "card: .");
}

#[test]
fn text_without_pii_is_unchanged() {
    for style in Style::ALL {
        assert_eq!(redact(style, "nothing to see here, 42."), "nothing to see here, 42.");
    }
}

#[test]
fn debug_output_never_shows_values() {
    let text = "card 4111 1111 1111 1111 mail bob@example.com";
    let redactor = Redactor::new(Policy::new(EntitySet::ALL)).with_hash_key(HashKey::new(*b"key-material"));
    let debug = format!("{:?} {:?} {:?}", redactor, redactor.detect(text), redactor.redact(text));
    for secret in ["4111", "bob", "example", "key-material"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}
