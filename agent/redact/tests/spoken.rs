//! Spoken digits: matched in digit form, redacted as the words that said them.

mod common;

use common::{NOTHING, found, redact, spoken};
use infergate_redact::Entity::{CreditCard, Numbers, PhoneNumber, UsSsn};
use infergate_redact::{EntitySet, Policy, Redactor};

#[test]
fn spoken_card_is_found_and_every_word_redacted() {
    let text = format!("my card is {} thanks", spoken("4111111111111111"));
    let card = spoken("4111111111111111");
    assert_eq!(found(EntitySet::PCI, &text), [(CreditCard, card.as_str())]);
    assert_eq!(redact(EntitySet::PCI, &text), "my card is [CREDIT_CARD] thanks");
}

#[test]
fn spoken_card_with_invalid_luhn_is_not_a_card() {
    let text = format!("the code is {}", spoken("4111111111111112"));
    assert_eq!(found(EntitySet::PCI, &text), NOTHING);
    // After a card cue it is taken as a card ASR misheard (numeric.rs, CUED_CARD_DIGITS).
    let cued = format!("my card is {}", spoken("4111111111111112"));
    assert_eq!(found(EntitySet::PCI, &cued).len(), 1);
}

#[test]
fn double_and_oh() {
    // 4 1 11 1x12 = 4111111111111111; "oh" in the second is a zero: 5500 0055 5555 5559.
    let first = format!("four one double one {}", ["one"; 12].join(" "));
    let second = "five five oh oh oh oh five five five five five five five five five nine";
    let text = format!("{first}, and {second}");
    assert_eq!(found(EntitySet::PCI, &text), [(CreditCard, first.as_str()), (CreditCard, second)]);
}

#[test]
fn capitalised_and_punctuated_words() {
    let text = "Four one one one, one one one one. One one one one - one one one one";
    assert_eq!(found(EntitySet::PCI, text), [(CreditCard, text)]);
}

#[test]
fn mixed_written_and_spoken() {
    let text = "4111 1111 one one one one 1111";
    assert_eq!(found(EntitySet::PCI, text), [(CreditCard, text)]);
}

#[test]
fn spoken_phone_number() {
    let text = format!("reach me at {} ok", spoken("2125550100"));
    assert_eq!(found(EntitySet::of(PhoneNumber), &text), [(PhoneNumber, spoken("2125550100").as_str())]);
}

#[test]
fn spoken_ssn_near_a_cue() {
    let text = format!("my social is {}", spoken("123456789"));
    assert_eq!(found(EntitySet::SSN, &text), [(UsSsn, spoken("123456789").as_str())]);
}

#[test]
fn digit_words_inside_words_are_not_digits() {
    assert_eq!(found(EntitySet::of(Numbers), "someone gone fivefold to oneself"), NOTHING);
}

#[test]
fn one_as_a_word_is_not_a_number() {
    assert_eq!(found(EntitySet::of(Numbers), "one of the two of us"), NOTHING);
}

#[test]
fn words_to_mute() {
    let card = spoken("4111111111111111");
    let mut words = vec!["my", "card", "is"];
    words.extend(card.split(' '));
    words.push("thanks.");
    let result = Redactor::new(Policy::new(EntitySet::PCI)).redact_words(&words);
    let mut expected = vec![false; 3];
    expected.extend([true; 16]);
    expected.push(false);
    assert_eq!(result.muted, expected);
    assert_eq!(result.redacted.text, "my card is [CREDIT_CARD] thanks.");
}

#[test]
fn words_with_their_own_punctuation() {
    let words = ["card", "4111,", "1111,", "1111,", "1111.", "Bye"];
    let result = Redactor::new(Policy::new(EntitySet::PCI)).redact_words(&words);
    assert_eq!(result.muted, [false, true, true, true, true, false]);
    assert_eq!(result.redacted.text, "card [CREDIT_CARD]. Bye");
}
