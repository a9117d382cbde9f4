//! Recognisers over text anchors: IBAN, e-mail, IP addresses, dates of birth. Valid and near-miss cases.

mod common;

use common::only;
use infergate_redact::Entity::{DateOfBirth, EmailAddress, IbanCode, IpAddress};

#[test]
fn iban_grouped() {
    assert_eq!(only(IbanCode, "pay DE89 3704 0044 0532 0130 00 today"), ["DE89 3704 0044 0532 0130 00"]);
}

#[test]
fn iban_in_one_block() {
    assert_eq!(only(IbanCode, "IBAN: DE89370400440532013000."), ["DE89370400440532013000"]);
}

#[test]
fn iban_with_letters_in_the_bban() {
    assert_eq!(only(IbanCode, "GB82 WEST 1234 5698 7654 32"), ["GB82 WEST 1234 5698 7654 32"]);
}

#[test]
fn iban_checksum_error() {
    assert_eq!(only(IbanCode, "DE88 3704 0044 0532 0130 00"), Vec::<&str>::new());
    assert_eq!(only(IbanCode, "GB82 WEST 1234 5698 7654 33"), Vec::<&str>::new());
}

#[test]
fn iban_of_the_wrong_length() {
    assert_eq!(only(IbanCode, "DE89 3704 0044 0532 0130 0"), Vec::<&str>::new());
    assert_eq!(only(IbanCode, "DE89 3704 0044 0532 0130 001"), Vec::<&str>::new());
}

#[test]
fn iban_of_an_unknown_country() {
    assert_eq!(only(IbanCode, "US89 3704 0044 0532 0130 00"), Vec::<&str>::new());
}

#[test]
fn email() {
    assert_eq!(only(EmailAddress, "mail John.Doe+x@Example.co.uk."), ["John.Doe+x@Example.co.uk"]);
}

#[test]
fn email_near_misses() {
    for text in ["john@localhost", "a@b.c1", "@example.com", "john.@example.com", "x@-bad.com", "x@bad..com"] {
        assert_eq!(only(EmailAddress, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn ipv4() {
    assert_eq!(only(IpAddress, "from 192.168.0.1."), ["192.168.0.1"]);
}

#[test]
fn ipv4_invalid_octets() {
    for text in ["256.1.1.1", "1.2.3.999", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1. 2.3.4"] {
        assert_eq!(only(IpAddress, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn ipv6() {
    assert_eq!(
        only(IpAddress, "hosts fe80::1ff:fe23:4567:890a and 2001:db8::1."),
        ["fe80::1ff:fe23:4567:890a", "2001:db8::1"]
    );
}

#[test]
fn ipv6_after_a_label_colon() {
    assert_eq!(only(IpAddress, "address:fe80::1"), ["fe80::1"]);
}

#[test]
fn times_and_mac_addresses_are_not_ipv6() {
    for text in ["at 10:30:00", "aa:bb:cc:dd:ee:ff", "Note: see ::", "deadbeef::cafe::1"] {
        assert_eq!(only(IpAddress, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn dob_month_name_first() {
    assert_eq!(only(DateOfBirth, "I was born on March 3rd, 1985."), ["March 3rd, 1985"]);
}

#[test]
fn dob_numeric() {
    assert_eq!(only(DateOfBirth, "DOB: 01/02/1990"), ["01/02/1990"]);
    assert_eq!(only(DateOfBirth, "date of birth 1990-01-02"), ["1990-01-02"]);
}

#[test]
fn dob_day_first() {
    assert_eq!(only(DateOfBirth, "born on the 3rd of March 1985"), ["3rd of March 1985"]);
}

#[test]
fn dob_without_a_year() {
    assert_eq!(only(DateOfBirth, "my birthday is 4 July"), ["4 July"]);
}

#[test]
fn dob_before_the_cue() {
    assert_eq!(only(DateOfBirth, "Sept. 9, 1979 is my birthday"), ["Sept. 9, 1979"]);
}

#[test]
fn date_without_a_cue_is_not_a_dob() {
    assert_eq!(only(DateOfBirth, "the meeting is on March 3rd, 1985"), Vec::<&str>::new());
}

#[test]
fn impossible_date_is_not_a_dob() {
    for text in ["born 13/13/1990", "born 1990-02-32", "born March 32"] {
        assert_eq!(only(DateOfBirth, text), Vec::<&str>::new(), "{text}");
    }
}
