//! IBANs: a known country code, two check digits and the country's BBAN length, printed grouped or not,
//! passing ISO 13616 mod-97.

use super::{Detection, ascii};
use crate::checks;
use crate::entity::Entity;
use crate::scan::{Scan, is_word_byte};

const LONGEST: usize = 34;

pub(crate) fn ibans(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    let bytes = scan.text.as_bytes();
    for &start in &scan.iban_starts {
        let country = [bytes[start].to_ascii_uppercase(), bytes[start + 1].to_ascii_uppercase()];
        let Some(length) = checks::iban_length(country) else { continue };
        let mut iban = [0u8; LONGEST];
        let mut count = 0;
        let mut end = start;
        while count < length && end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_alphanumeric() {
                iban[count] = b.to_ascii_uppercase();
                count += 1;
                end += 1;
            } else if count >= 4
                && matches!(b, b' ' | b'-')
                && bytes.get(end + 1).is_some_and(u8::is_ascii_alphanumeric)
            {
                // Printed IBANs come in groups of four; ASR and people group them however they read them.
                end += 1;
            } else {
                break;
            }
        }
        let iban = &iban[..count];
        let complete = count == length && !bytes.get(end).is_some_and(|&b| is_word_byte(b));
        if complete && iban[3].is_ascii_digit() && checks::iban_mod97(iban) {
            found.push(Detection::new(start, end, Entity::IbanCode, 1.0, ascii(iban)));
        }
    }
}
