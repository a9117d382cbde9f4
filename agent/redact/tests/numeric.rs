//! Recognisers over digit runs: cards, SSNs, phone numbers, `numbers`. Valid and near-miss cases.

mod common;

use common::only;
use infergate_redact::Entity::{CreditCard, Numbers, PhoneNumber, UsSsn};

#[test]
fn card_with_spaces() {
    assert_eq!(only(CreditCard, "card 4111 1111 1111 1111 please"), ["4111 1111 1111 1111"]);
}

#[test]
fn card_with_dashes() {
    assert_eq!(only(CreditCard, "card 4111-1111-1111-1236."), ["4111-1111-1111-1236"]);
}

#[test]
fn card_without_separators() {
    assert_eq!(only(CreditCard, "card:5555555555554444"), ["5555555555554444"]);
}

#[test]
fn card_lengths_13_15_and_19() {
    assert_eq!(
        only(CreditCard, "4222222222222, 3782 822463 10005 and 6011 0000 0000 0000 001"),
        ["4222222222222", "3782 822463 10005", "6011 0000 0000 0000 001"]
    );
}

#[test]
fn card_with_one_digit_changed_is_not_a_card() {
    assert_eq!(only(CreditCard, "ref 4111 1111 1111 1112"), Vec::<&str>::new());
    assert_eq!(only(CreditCard, "order 4539 14880 0343 647 shipped"), Vec::<&str>::new());
}

#[test]
fn maestro_12_digit_cards_only_as_one_written_block() {
    assert_eq!(only(CreditCard, "paid with 501800000009"), ["501800000009"]);
    assert_eq!(only(CreditCard, "ref 501800000008"), Vec::<&str>::new(), "Luhn fails");
    assert_eq!(only(CreditCard, "ref 301800000004"), Vec::<&str>::new(), "not a Maestro IIN");
    assert_eq!(only(CreditCard, "call 5018 0000 0009"), Vec::<&str>::new(), "grouped: not card-shaped");
}

#[test]
fn after_a_card_cue_a_misheard_card_number_still_counts() {
    // ASR dropped or doubled a digit: Luhn fails, the cue word says what it was.
    assert_eq!(only(CreditCard, "card 4111 1111 1111 1112"), ["4111 1111 1111 1112"]);
    assert_eq!(only(CreditCard, "my card number is 4539, 14880, 0343, 647, thank you"), ["4539, 14880, 0343, 647"]);
    assert_eq!(
        only(CreditCard, "visa four five three nine one four eight eight zero three four three six four six"),
        ["four five three nine one four eight eight zero three four three six four six"]
    );
    // Too short or too long for a card, cue or not.
    assert_eq!(only(CreditCard, "card ending 4467 5521 992"), Vec::<&str>::new());
    assert_eq!(only(CreditCard, "credit ref 411111111111111100001"), Vec::<&str>::new());
}

#[test]
fn twenty_digits_in_one_block_are_not_a_card() {
    assert_eq!(only(CreditCard, "ref 41111111111111110000"), Vec::<&str>::new());
}

#[test]
fn twelve_digits_are_not_a_card() {
    assert_eq!(only(CreditCard, "4111 1111 1111"), Vec::<&str>::new());
}

#[test]
fn two_phone_numbers_in_a_row_are_not_a_card() {
    assert_eq!(only(CreditCard, "212 555 0100 415 555 0123"), Vec::<&str>::new());
}

#[test]
fn card_after_other_digits_in_the_same_run() {
    assert_eq!(only(CreditCard, "ref 12, 4111 1111 1111 1111"), ["4111 1111 1111 1111"]);
}

#[test]
fn card_inside_a_word_takes_the_whole_word() {
    assert_eq!(only(CreditCard, "id ref4111111111111111x."), ["ref4111111111111111x"]);
}

#[test]
fn ssn_with_dashes() {
    assert_eq!(only(UsSsn, "ssn 123-45-6789."), ["123-45-6789"]);
}

#[test]
fn ssn_with_dashes_needs_no_cue() {
    assert_eq!(only(UsSsn, "it is 078-05-1120"), ["078-05-1120"]);
}

#[test]
fn ssn_with_spaces() {
    assert_eq!(only(UsSsn, "it is 123 45 6789"), ["123 45 6789"]);
}

#[test]
fn ssn_invalid_areas() {
    for text in ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "000 12 3456", "my ssn is 666123456"] {
        assert_eq!(only(UsSsn, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn ssn_invalid_group_and_serial() {
    for text in ["123-00-4567", "123-45-0000"] {
        assert_eq!(only(UsSsn, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn ssn_mixed_separators_are_not_an_ssn() {
    assert_eq!(only(UsSsn, "123-45 6789"), Vec::<&str>::new());
}

#[test]
fn nine_digits_near_a_cue_are_an_ssn() {
    assert_eq!(only(UsSsn, "My social security number is 123456789."), ["123456789"]);
}

#[test]
fn nine_digits_without_a_cue_are_not_an_ssn() {
    assert_eq!(only(UsSsn, "order 123456789 shipped"), Vec::<&str>::new());
}

#[test]
fn nanp_with_parentheses() {
    assert_eq!(only(PhoneNumber, "call (212) 555-0100."), ["(212) 555-0100"]);
}

#[test]
fn nanp_with_dashes_and_dots() {
    assert_eq!(only(PhoneNumber, "212-555-0100 or 212.555.0100"), ["212-555-0100", "212.555.0100"]);
}

#[test]
fn nanp_with_country_code() {
    assert_eq!(only(PhoneNumber, "at +1 212 555 0100 now"), ["+1 212 555 0100"]);
}

#[test]
fn nanp_in_one_block() {
    assert_eq!(only(PhoneNumber, "at 2125550100 now"), ["2125550100"]);
}

#[test]
fn e164_international() {
    assert_eq!(only(PhoneNumber, "London +44 20 7946 0958."), ["+44 20 7946 0958"]);
}

#[test]
fn nanp_area_or_exchange_starting_with_0_or_1_is_not_a_phone() {
    for text in ["112-555-0100", "212-155-0100", "911-555-0100", "1125550100"] {
        assert_eq!(only(PhoneNumber, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn national_number_near_a_cue() {
    assert_eq!(only(PhoneNumber, "call me on 020 7946 0958"), ["020 7946 0958"]);
}

#[test]
fn seven_digits_need_a_cue() {
    assert_eq!(only(PhoneNumber, "ticket 555-0100"), Vec::<&str>::new());
    assert_eq!(only(PhoneNumber, "phone 555-0100"), ["555-0100"]);
}

#[test]
fn numbers_of_three_or_more_digits() {
    assert_eq!(only(Numbers, "paid 300 dollars 42 times in 2019, room 7"), ["300", "2019"]);
}

#[test]
fn numbers_join_separated_groups() {
    assert_eq!(only(Numbers, "it is 1, 2 and 3 4 5"), ["3 4 5"]);
}

#[test]
fn numbers_spoken() {
    assert_eq!(only(Numbers, "code one two three now"), ["one two three"]);
}

#[test]
fn two_digits_are_not_numbers() {
    assert_eq!(only(Numbers, "I am 42"), Vec::<&str>::new());
}
