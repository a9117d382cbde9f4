//! The words the scan recognises: spoken digits and the cue words that make a bare number count.
//!
//! Every whole word of the text is looked up, so the lookup starts with a 256-bit filter on (length, first
//! letter, last letter) that turns away nearly all ordinary words before anything is lowercased or compared.

/// What a cue word says about numbers near it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CueKind {
    Ssn,
    Phone,
    Birth,
    /// "card", "visa", "credit", ...: a long run of digits after it is a card number even when ASR got a
    /// digit wrong and Luhn fails.
    Card,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Word {
    /// A spoken digit, as its ASCII digit.
    Digit(u8),
    /// "double"/"triple": the next digit counts this many times.
    Repeat(usize),
    Cue(CueKind),
    Other,
}

/// "oh" is zero because ASR writes "four oh four"; a lone "oh" is a run of one digit, which no recogniser
/// takes. "to"/"for"/"won" are not digits: they are far more often the words themselves. "social" covers
/// "social security number"; "date of birth" and "birth date" come in through "birth".
const LEXICON: [(&[u8], Word); 39] = [
    (b"zero", Word::Digit(b'0')),
    (b"oh", Word::Digit(b'0')),
    (b"nought", Word::Digit(b'0')),
    (b"one", Word::Digit(b'1')),
    (b"two", Word::Digit(b'2')),
    (b"three", Word::Digit(b'3')),
    (b"four", Word::Digit(b'4')),
    (b"five", Word::Digit(b'5')),
    (b"six", Word::Digit(b'6')),
    (b"seven", Word::Digit(b'7')),
    (b"eight", Word::Digit(b'8')),
    (b"nine", Word::Digit(b'9')),
    (b"double", Word::Repeat(2)),
    (b"triple", Word::Repeat(3)),
    (b"ssn", Word::Cue(CueKind::Ssn)),
    (b"ssns", Word::Cue(CueKind::Ssn)),
    (b"social", Word::Cue(CueKind::Ssn)),
    (b"phone", Word::Cue(CueKind::Phone)),
    (b"telephone", Word::Cue(CueKind::Phone)),
    (b"tel", Word::Cue(CueKind::Phone)),
    (b"call", Word::Cue(CueKind::Phone)),
    (b"mobile", Word::Cue(CueKind::Phone)),
    (b"cell", Word::Cue(CueKind::Phone)),
    (b"cellphone", Word::Cue(CueKind::Phone)),
    (b"fax", Word::Cue(CueKind::Phone)),
    (b"dial", Word::Cue(CueKind::Phone)),
    (b"born", Word::Cue(CueKind::Birth)),
    (b"birth", Word::Cue(CueKind::Birth)),
    (b"birthday", Word::Cue(CueKind::Birth)),
    (b"birthdate", Word::Cue(CueKind::Birth)),
    (b"dob", Word::Cue(CueKind::Birth)),
    (b"card", Word::Cue(CueKind::Card)),
    (b"cards", Word::Cue(CueKind::Card)),
    (b"visa", Word::Cue(CueKind::Card)),
    (b"mastercard", Word::Cue(CueKind::Card)),
    (b"amex", Word::Cue(CueKind::Card)),
    (b"discover", Word::Cue(CueKind::Card)),
    (b"credit", Word::Cue(CueKind::Card)),
    (b"debit", Word::Cue(CueKind::Card)),
];

/// The longest word in the table; longer words are not looked up at all.
const LONGEST: usize = 10;

/// Filter bit for a word of `len` bytes from its lowercase first, second and last letters (a multiplicative
/// hash into 1024 bits: about one ordinary word in twenty passes).
#[allow(clippy::cast_possible_truncation)] // `len` is at most LONGEST
const fn signature(len: usize, first: u8, second: u8, last: u8) -> usize {
    let key = (first as u32) << 16 | (second as u32) << 8 | last as u32;
    let hash = key.wrapping_mul(0x9e37_79b1).wrapping_add((len as u32).wrapping_mul(0x85eb_ca6b));
    (hash >> 22) as usize
}

const FILTER: [u64; 16] = {
    let mut filter = [0u64; 16];
    let mut i = 0;
    while i < LEXICON.len() {
        let word = LEXICON[i].0;
        let bit = signature(word.len(), word[0], word[1], word[word.len() - 1]);
        filter[bit / 64] |= 1 << (bit % 64);
        i += 1;
    }
    filter
};

/// Looks up one ASCII-letter word, any case.
pub(crate) fn classify_ascii(word: &[u8]) -> Word {
    if word.len() < 2 || word.len() > LONGEST {
        return Word::Other;
    }
    let lower = |i: usize| word[i].to_ascii_lowercase();
    let bit = signature(word.len(), lower(0), lower(1), lower(word.len() - 1));
    if FILTER[bit / 64] & (1 << (bit % 64)) == 0 {
        return Word::Other;
    }
    LEXICON.iter().find(|(known, _)| known.eq_ignore_ascii_case(word)).map_or(Word::Other, |&(_, class)| class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_passes_the_filter_in_any_case() {
        for (word, class) in LEXICON {
            assert_eq!(classify_ascii(word), class);
            assert_eq!(classify_ascii(&word.to_ascii_uppercase()), class);
        }
    }

    #[test]
    fn ordinary_words_are_other() {
        for word in ["the", "to", "for", "won", "someone", "ones", "birthdays", "x", ""] {
            assert_eq!(classify_ascii(word.as_bytes()), Word::Other, "{word}");
        }
    }
}
