//! E-mail and IP addresses: the scan's '@' and ':' anchors, and dotted runs of four small numbers.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Detection;
use crate::entity::Entity;
use crate::scan::{Scan, is_word_byte};

/// `local@domain.tld`: the local part in the unquoted dot-atom characters people use, a domain of at least
/// two labels and an alphabetic TLD. Sentence punctuation after the address is not part of it.
pub(crate) fn emails(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    let bytes = scan.text.as_bytes();
    for &at in &scan.at_signs {
        let mut start = at;
        while start > 0 && is_local_byte(bytes[start - 1]) {
            start -= 1;
        }
        while start < at && bytes[start] == b'.' {
            start += 1;
        }
        if start == at || bytes[at - 1] == b'.' {
            continue;
        }
        let mut end = at + 1;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'.' | b'-')) {
            end += 1;
        }
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if valid_domain(&scan.text[at + 1..end]) {
            let value = scan.text[start..end].to_ascii_lowercase();
            found.push(Detection::new(start, end, Entity::EmailAddress, 1.0, value));
        }
    }
}

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn valid_domain(domain: &str) -> bool {
    let labels = domain.split('.');
    let tld = domain.rsplit('.').next().unwrap_or("");
    domain.contains('.')
        && tld.len() >= 2
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
        && labels.into_iter().all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
}

pub(crate) fn ip_addresses(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    ipv4(scan, found);
    ipv6(scan, found);
}

/// Four written units of 1-3 digits joined by single dots, each octet 0-255 without a leading zero, and not
/// part of a longer dotted sequence ("1.2.3.4.5" is a version, not an address).
fn ipv4(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    for run in &scan.runs {
        let units = scan.run_units(run);
        for first in 0..units.len().saturating_sub(3) {
            let window = &units[first..first + 4];
            let dotted = |k: usize| scan.gap(&units[k], &units[k + 1]) == b".";
            let octets_ok = window
                .iter()
                .all(|u| !u.spoken && u.len() <= 3 && (u.len() == 1 || scan.digits[u.digit_start] != b'0'));
            let isolated = (first == 0 || !dotted(first - 1)) && (first + 4 == units.len() || !dotted(first + 3));
            if !octets_ok || !isolated || !(first..first + 3).all(dotted) {
                continue;
            }
            if let Ok(address) = scan.text[window[0].start..window[3].end].parse::<Ipv4Addr>() {
                found.push(Detection::new(
                    window[0].start,
                    window[3].end,
                    Entity::IpAddress,
                    0.95,
                    address.to_string(),
                ));
            }
        }
    }
}

/// Tokens of hex digits, colons and dots around each ':' that std's parser accepts. A time ("10:30:00") or a
/// MAC address has no "::" and not eight groups, so it fails the parse.
fn ipv6(scan: &Scan<'_>, found: &mut Vec<Detection>) {
    let bytes = scan.text.as_bytes();
    let is_v6_byte = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut done_until = 0;
    for &colon in &scan.colons {
        if colon < done_until {
            continue;
        }
        let mut start = colon;
        while start > 0 && is_v6_byte(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = colon + 1;
        while end < bytes.len() && is_v6_byte(bytes[end]) {
            end += 1;
        }
        done_until = end;
        // "address:fe80::1" and "is fe80::1." : a single leading colon and trailing dots are punctuation.
        if bytes[start] == b':' && bytes.get(start + 1) != Some(&b':') {
            start += 1;
        }
        while end > start && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let token = &scan.text[start..end];
        let bounded =
            (start == 0 || !is_word_byte(bytes[start - 1])) && (end == bytes.len() || !is_word_byte(bytes[end]));
        if !bounded || token.bytes().filter(|&b| b == b':').count() < 2 || !token.bytes().any(|b| b.is_ascii_hexdigit())
        {
            continue;
        }
        if let Ok(address) = token.parse::<Ipv6Addr>() {
            found.push(Detection::new(start, end, Entity::IpAddress, 0.95, address.to_string()));
        }
    }
}
