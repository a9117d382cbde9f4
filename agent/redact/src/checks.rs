//! The validators: checksums and numbering-plan rules that turn "some digits" into "a card", "an SSN".
//! All take ASCII digits (IBAN: uppercase ASCII alphanumerics) and never allocate.

/// The Luhn check every payment card number passes.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &d)| {
            let value = u32::from(d - b'0');
            match (position % 2 == 1, value * 2) {
                (false, _) => value,
                (true, doubled) if doubled > 9 => doubled - 9,
                (true, doubled) => doubled,
            }
        })
        .sum();
    sum % 10 == 0
}

/// SSA rules for a 9-digit SSN: area not 000, 666 or 900-999 (never issued; 9xx are ITINs), group not 00,
/// serial not 0000.
pub(crate) fn ssn_valid(digits: &[u8]) -> bool {
    if digits.len() != 9 {
        return false;
    }
    let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

/// NANP rules for a 10-digit number: area code and exchange start with 2-9, and the area code is not an
/// N11 service code (211, 911).
pub(crate) fn nanp_valid(digits: &[u8]) -> bool {
    digits.len() == 10 && digits[0] >= b'2' && digits[3] >= b'2' && !(digits[1] == b'1' && digits[2] == b'1')
}

/// IBAN length for the countries in the SWIFT registry that customers are most likely to read out: the
/// SEPA area, the Gulf and a few others. A country not listed is not matched (recall, not a false alarm).
pub(crate) fn iban_length(country: [u8; 2]) -> Option<usize> {
    let length = match &country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" | b"SD" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"LY" | b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    };
    Some(length)
}

/// ISO 13616 check: move the first four characters to the end, read letters as 10..35, and the number
/// mod 97 is 1. `iban` is uppercase ASCII alphanumerics.
pub(crate) fn iban_mod97(iban: &[u8]) -> bool {
    if iban.len() <= 4 {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let remainder = tail.iter().chain(head).try_fold(0u32, |acc, &c| match c {
        b'0'..=b'9' => Some((acc * 10 + u32::from(c - b'0')) % 97),
        b'A'..=b'Z' => Some((acc * 100 + u32::from(c - b'A') + 10) % 97),
        _ => None,
    });
    remainder == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards() {
        for card in ["4111111111111111", "5500005555555559", "378282246310005", "6011111111111117", "4222222222222"] {
            assert!(luhn(card.as_bytes()), "{card}");
        }
    }

    #[test]
    fn luhn_rejects_one_changed_digit() {
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"4111111111111211"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid(b"123456789"));
        for invalid in ["000123456", "666123456", "900123456", "999123456", "123006789", "123450000"] {
            assert!(!ssn_valid(invalid.as_bytes()), "{invalid}");
        }
    }

    #[test]
    fn nanp_rules() {
        assert!(nanp_valid(b"2125550100"));
        for invalid in ["1125550100", "2121550100", "2110550100", "9115550100", "212555010"] {
            assert!(!nanp_valid(invalid.as_bytes()), "{invalid}");
        }
    }

    #[test]
    fn iban_check_digits() {
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(!iban_mod97(b"DE88370400440532013000"));
        assert!(!iban_mod97(b"GB82WEST12345698765433"));
    }

    #[test]
    fn iban_lengths() {
        assert_eq!(iban_length(*b"DE"), Some(22));
        assert_eq!(iban_length(*b"FR"), Some(27));
        assert_eq!(iban_length(*b"US"), None);
    }
}
