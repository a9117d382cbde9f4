//! The API-key format.
//!
//! ```text
//!   sk_live_ 4Kq…(43 base62 chars = 256 random bits)… Xa91Zq
//!   └prefix┘ └──────────────── body ────────────────┘ └crc─┘  (CRC32 of prefix+body, 6 base62 chars)
//! ```
//! The checksum tells a mistyped or lookalike key (`bad_checksum`) from one never issued (`unknown_key`); the
//! gateway checks it only when its lookup finds nothing (a key it finds is one infergate issued). The gateway
//! stores only [`KeyDigest`]s (SHA-256 of the whole key) and compares them in constant time. The [`KeyId`] is
//! derived from the digest, so it is safe to log, put in status and audit lines, and to name in a revocation.
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 62^43 > 2^256, so 43 base62 digits hold 256 bits.
pub const BODY_LEN: usize = 43;
/// 62^6 > 2^32, so 6 base62 digits hold a CRC32.
pub const CHECKSUM_LEN: usize = 6;
pub const LIVE_PREFIX: &str = "sk_live_";
pub const TEST_PREFIX: &str = "sk_test_";
pub const KEY_LEN: usize = LIVE_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;

/// `live` keys are for production traffic, `test` keys for everything else; the prefix makes the difference
/// visible wherever a key is pasted, and the gateway enforces it against the endpoint's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Live,
    Test,
}

impl Environment {
    pub fn prefix(self) -> &'static str {
        match self {
            Environment::Live => LIVE_PREFIX,
            Environment::Test => TEST_PREFIX,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

/// Why a presented string is not a well-formed infergate key. Prefix and length are checked before the gateway
/// hashes anything; alphabet and checksum when its lookup found nothing (`infergate_gate::admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("API key has an unknown prefix: infergate keys start with sk_live_ or sk_test_")]
    UnknownPrefix,
    #[error("API key has the wrong length: infergate keys are {KEY_LEN} characters; check it was copied whole")]
    WrongLength,
    #[error("API key contains characters outside [0-9A-Za-z] after the prefix; check it was copied whole")]
    BadCharacter,
    #[error("API key checksum does not match: the key was mistyped or truncated")]
    BadChecksum,
}

impl KeyFormatError {
    /// Stable label for metrics and audit lines.
    pub fn category(&self) -> &'static str {
        match self {
            KeyFormatError::UnknownPrefix => "unknown_prefix",
            KeyFormatError::WrongLength => "wrong_length",
            KeyFormatError::BadCharacter => "bad_character",
            KeyFormatError::BadChecksum => "bad_checksum",
        }
    }
}

/// A plaintext API key. Its `Debug` and `Display` never print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate(env: Environment) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random number generator is unavailable");
        Self::from_entropy(env, &bytes)
    }

    /// A key from given entropy. Deterministic; used by [`generate`](Self::generate) and by tests.
    pub fn from_entropy(env: Environment, entropy: &[u8; 32]) -> Self {
        let mut s = String::with_capacity(KEY_LEN);
        s.push_str(env.prefix());
        s.push_str(&base62_fixed(entropy, BODY_LEN));
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&base62_fixed(&crc.to_be_bytes(), CHECKSUM_LEN));
        ApiKey(s)
    }

    /// Validates prefix and length only: the environment, and whether the string is key-sized at all. The
    /// gateway checks this before it hashes anything (nothing longer than a key is ever hashed) and leaves the
    /// rest of [`check_format`](Self::check_format) to a lookup that found nothing (`infergate_gate::admission`).
    pub fn check_shape(presented: &str) -> Result<Environment, KeyFormatError> {
        let env = if presented.starts_with(LIVE_PREFIX) {
            Environment::Live
        } else if presented.starts_with(TEST_PREFIX) {
            Environment::Test
        } else {
            return Err(KeyFormatError::UnknownPrefix);
        };
        if presented.len() != KEY_LEN {
            return Err(KeyFormatError::WrongLength);
        }
        Ok(env)
    }

    /// Validates prefix, length, alphabet and checksum. No lookup, no allocation.
    pub fn check_format(presented: &str) -> Result<Environment, KeyFormatError> {
        let env = Self::check_shape(presented)?;
        let tail = &presented.as_bytes()[LIVE_PREFIX.len()..];
        // Branch-free over the whole tail: a short-circuiting range test mispredicted on nearly every random
        // base62 character (~60 ns of a ~450 ns admission); this form has no branch to mispredict.
        let alphanumeric =
            tail.iter().fold(true, |ok, &b| ok & ((b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 26)));
        if !alphanumeric {
            return Err(KeyFormatError::BadCharacter);
        }
        let (signed, checksum) = presented.split_at(KEY_LEN - CHECKSUM_LEN);
        let crc = crc32fast::hash(signed.as_bytes());
        let mut expected = [0u8; CHECKSUM_LEN];
        base62_u32_into(crc, &mut expected);
        if expected != checksum.as_bytes() {
            return Err(KeyFormatError::BadChecksum);
        }
        Ok(env)
    }

    pub fn parse(presented: &str) -> Result<Self, KeyFormatError> {
        Self::check_format(presented).map(|_| ApiKey(presented.to_string()))
    }

    pub fn environment(&self) -> Environment {
        if self.0.starts_with(TEST_PREFIX) { Environment::Test } else { Environment::Live }
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(&self.0)
    }

    pub fn id(&self) -> KeyId {
        self.digest().key_id()
    }

    /// The secret itself. Call sites are few and obvious on purpose: writing the Secret, handing it to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.id())
    }
}

/// The longest message SHA-256 pads to two 64-byte blocks (one 0x80 byte and the 8-byte length follow it).
const TWO_BLOCKS: usize = 128 - 9;
type Block = sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>;
/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_INITIAL_STATE: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// SHA-256 of the whole key string. What the gateway config stores.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(presented: &str) -> Self {
        let bytes = presented.as_bytes();
        if bytes.len() > TWO_BLOCKS {
            return KeyDigest(Sha256::digest(bytes).into());
        }
        // Every key (57 bytes) pads to two compression blocks. Padded here and compressed in one call, the hash
        // costs ~77 ns instead of ~90 through `Digest`, whose buffered update and finalize make two calls, each
        // with its own setup of the SHA extensions (an admission decision is ~250 ns at 100k keys; issue 15).
        let mut blocks = [Block::default(), Block::default()];
        let (first, second) = blocks.split_at_mut(1);
        let (first, second) = (first[0].as_mut_slice(), second[0].as_mut_slice());
        let head = bytes.len().min(64);
        first[..head].copy_from_slice(&bytes[..head]);
        second[..bytes.len() - head].copy_from_slice(&bytes[head..]);
        // The 0x80 marker right after the message, then its length in bits, big-endian, at the end of the last block.
        match first.get_mut(bytes.len()) {
            Some(marker) => *marker = 0x80,
            None => second[bytes.len() - 64] = 0x80,
        }
        let used = if bytes.len() < 56 { 1 } else { 2 };
        let last = if used == 1 { &mut *first } else { &mut *second };
        last[56..].copy_from_slice(&(bytes.len() as u64 * 8).to_be_bytes());
        let mut state = SHA256_INITIAL_STATE;
        sha2::compress256(&mut state, &blocks[..used]);
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        KeyDigest(out)
    }

    /// Constant-time equality, so the comparison itself leaks nothing about how many bytes matched.
    /// Word-wise: every word is compared and the differences folded without a branch; only the folded word
    /// goes through `subtle` (byte-wise `subtle` cost ~20 ns per admission, a tenth of the decision).
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        let word = |d: &KeyDigest, i: usize| u64::from_ne_bytes(d.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let diff = (0..4).fold(0u64, |acc, i| acc | (word(self, i) ^ word(other, i)));
        diff.ct_eq(&0).into()
    }

    /// The key id: `kid_` + the first 8 digest bytes in hex. Non-secret (a digest prefix of a 256-bit secret).
    pub fn key_id(&self) -> KeyId {
        KeyId(format!("kid_{}", hex::encode(&self.0[..8])))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(KeyDigest(out))
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({})", self.key_id())
    }
}

impl Serialize for KeyDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyDigest::from_hex(&s).ok_or_else(|| serde::de::Error::custom("key digest must be 64 hex characters"))
    }
}

/// A short, non-secret key identifier (`kid_` + 16 hex characters). Safe in logs, status and audit lines.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl KeyId {
    pub const PATTERN: &'static str = "^kid_[0-9a-f]{16}$";
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_well_formed(s: &str) -> bool {
        s.len() == 20 && s.starts_with("kid_") && s[4..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Big-endian bytes -> exactly `len` base62 digits (left-padded with '0').
fn base62_fixed(bytes: &[u8], len: usize) -> String {
    let mut out = vec![0u8; len];
    base62_fixed_into(bytes, &mut out);
    String::from_utf8(out).expect("base62 alphabet is ASCII")
}

/// The checksum's digits: the same as [`base62_fixed_into`] of its 4 big-endian bytes, by machine division
/// (divisions by the constant 62 compile to multiplies). The admission hot path checks every presented key with it;
/// the byte-wise long division took ~0.4 us of the ~0.45 us format check.
fn base62_u32_into(mut value: u32, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
}

fn base62_fixed_into(bytes: &[u8], out: &mut [u8]) {
    // Schoolbook long division of a big-endian number by 62, least significant digit first.
    let mut num = [0u8; 32];
    let n = bytes.len();
    num[..n].copy_from_slice(bytes);
    let num = &mut num[..n];
    for slot in out.iter_mut().rev() {
        let mut rem = 0u32;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shape() {
        let k = ApiKey::generate(Environment::Live);
        assert_eq!(k.expose().len(), KEY_LEN);
        assert!(k.expose().starts_with("sk_live_"));
        assert_eq!(ApiKey::check_format(k.expose()), Ok(Environment::Live));
        let t = ApiKey::generate(Environment::Test);
        assert!(t.expose().starts_with("sk_test_"));
        assert_eq!(t.environment(), Environment::Test);
        assert!(KeyId::is_well_formed(k.id().as_str()));
    }

    #[test]
    fn digest_is_sha256_at_every_length() {
        // Around both padding edges (55/56 and 64 bytes), the two-block limit (119/120) and keys themselves.
        let text: String = (0..200u32).map(|i| char::from(b'!' + (i * 7 % 90) as u8)).collect();
        for len in 0..=text.len() {
            let s = &text[..len];
            assert_eq!(KeyDigest::of(s).0, <[u8; 32]>::from(Sha256::digest(s.as_bytes())), "length {len}");
        }
        let k = ApiKey::generate(Environment::Test);
        assert_eq!(k.digest().0, <[u8; 32]>::from(Sha256::digest(k.expose().as_bytes())));
        // FIPS 180-4's one-block example.
        assert_eq!(KeyDigest::of("abc").to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = ApiKey::generate(Environment::Live);
        let shown = format!("{k:?} {:?}", k.digest());
        assert!(!shown.contains(&k.expose()[8..20]));
        assert!(shown.contains("kid_"));
    }

    #[test]
    fn format_errors_are_specific() {
        let k = ApiKey::from_entropy(Environment::Live, &[7; 32]);
        let s = k.expose();
        assert_eq!(ApiKey::check_format("pk_live_abc"), Err(KeyFormatError::UnknownPrefix));
        assert_eq!(ApiKey::check_format(&s[..KEY_LEN - 1]), Err(KeyFormatError::WrongLength));
        let bad_char = format!("{}-{}", &s[..20], &s[21..]);
        assert_eq!(ApiKey::check_format(&bad_char), Err(KeyFormatError::BadCharacter));
        // The shape check is the format check's first half: same verdict on prefix and length, and nothing more.
        assert_eq!(ApiKey::check_shape("pk_live_abc"), Err(KeyFormatError::UnknownPrefix));
        assert_eq!(ApiKey::check_shape(&s[..KEY_LEN - 1]), Err(KeyFormatError::WrongLength));
        assert_eq!(ApiKey::check_shape(&bad_char), Ok(Environment::Live));
        let typo = format!("{}{}", &s[..KEY_LEN - 1], if s.ends_with('0') { '1' } else { '0' });
        assert_eq!(
            (ApiKey::check_shape(&typo), ApiKey::check_format(&typo)),
            (Ok(Environment::Live), Err(KeyFormatError::BadChecksum))
        );
    }

    #[test]
    fn every_byte_outside_the_alphabet_is_a_bad_character() {
        let k = ApiKey::from_entropy(Environment::Test, &[9; 32]);
        for byte in 0..=255u8 {
            for at in [LIVE_PREFIX.len(), 30, KEY_LEN - 1] {
                let mut bytes = k.expose().as_bytes().to_vec();
                bytes[at] = byte;
                let Ok(presented) = String::from_utf8(bytes) else { continue };
                let verdict = ApiKey::check_format(&presented);
                if byte.is_ascii_alphanumeric() {
                    assert_ne!(verdict, Err(KeyFormatError::BadCharacter), "byte {byte:#04x} at {at}");
                } else {
                    assert_eq!(verdict, Err(KeyFormatError::BadCharacter), "byte {byte:#04x} at {at}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn checksum_digits_match_the_long_division(v in any::<u32>()) {
            let (mut fast, mut slow) = ([0u8; CHECKSUM_LEN], [0u8; CHECKSUM_LEN]);
            base62_u32_into(v, &mut fast);
            base62_fixed_into(&v.to_be_bytes(), &mut slow);
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn base62_extremes() {
        assert_eq!(base62_fixed(&[0; 32], BODY_LEN), "0".repeat(BODY_LEN));
        // 2^256 - 1 must still fit in 43 digits.
        let max = base62_fixed(&[0xff; 32], BODY_LEN);
        assert_eq!(max.len(), BODY_LEN);
        assert_ne!(&max[..1], "0");
        assert_eq!(base62_fixed(&[0xff; 4], CHECKSUM_LEN).len(), CHECKSUM_LEN);
    }

    #[test]
    fn digest_compare_and_roundtrip() {
        let a = ApiKey::generate(Environment::Live);
        let b = ApiKey::generate(Environment::Live);
        assert!(a.digest().ct_eq(&a.digest()));
        assert!(!a.digest().ct_eq(&b.digest()));
        assert_eq!(KeyDigest::from_hex(&a.digest().to_hex()), Some(a.digest()));
        let json = serde_json::to_string(&a.digest()).unwrap();
        assert_eq!(serde_json::from_str::<KeyDigest>(&json).unwrap(), a.digest());
    }

    proptest! {
        #[test]
        fn roundtrip(entropy in any::<[u8; 32]>(), live in any::<bool>()) {
            let env = if live { Environment::Live } else { Environment::Test };
            let k = ApiKey::from_entropy(env, &entropy);
            prop_assert_eq!(ApiKey::parse(k.expose()).unwrap(), k.clone());
            prop_assert_eq!(ApiKey::check_format(k.expose()), Ok(env));
        }

        #[test]
        fn every_single_character_change_is_rejected(entropy in any::<[u8; 32]>(), pos in 8usize..KEY_LEN, c in 0usize..62) {
            let k = ApiKey::from_entropy(Environment::Live, &entropy);
            let mut bytes = k.expose().as_bytes().to_vec();
            let replacement = ALPHABET[c];
            prop_assume!(bytes[pos] != replacement);
            bytes[pos] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(ApiKey::check_format(&changed), Err(KeyFormatError::BadChecksum));
        }

        #[test]
        fn generated_keys_are_distinct(_round in 0u8..8) {
            let keys: std::collections::HashSet<String> =
                (0..512).map(|_| ApiKey::generate(Environment::Test).expose().to_string()).collect();
            prop_assert_eq!(keys.len(), 512);
        }
    }
}
