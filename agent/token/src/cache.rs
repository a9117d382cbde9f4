//! Verified tokens, so a stream of requests with one token pays the signature check once.
//!
//! ```text
//!  token ─▶ size check ─▶ seeded foldhash of its last 16 characters ─▶ shard (hash bits) ─▶ slot (hash)
//!        ─▶ constant-time compare of the whole token ∧ same verifier fingerprint ∧ now < exp + leeway
//!        ─▶ hit: Arc<VerifiedToken>
//!        └─ otherwise: Verifier::verify outside any lock ─▶ Ok: insert
//! ```
//! Why the signature's end and a seeded fast hash, not SHA-256 of the token: hashing 550 bytes with SHA-256 was
//! 410 of the 456 ns a hit cost (criterion, `token/sha256_of_token`), twice the whole API-key admission. The
//! signature differs between any two tokens, and its last 16 characters (96 of its bits) as much as any 16; a
//! slot is only ever served to the exact token it holds (the full text is kept and compared in constant time),
//! so a hash collision costs a verification, never a wrong answer. The hash need not resist chosen inputs either:
//! only tokens that verified are inserted, i.e. ones this agent's ring signed, whose signatures no client
//! chooses. So foldhash with a per-process seed over the last 16 bytes, without looking for the signature's `.`
//! first: with the 86-character signature found by `rsplit_once` and hashed whole, a cached token's admission
//! measured 174 ns, and 136-140 ns without (criterion `tokens_100k/token_cached_admit`, same runs as the API key's
//! 137-141 ns); the keyed SipHash before that cost ~40 ns. The price of keeping the text is memory: an entry holds
//! about 550 bytes (9 MB at the agent's 16,384 entries).
//!
//! Why sharded `Mutex<HashMap>` and not a concurrent-map crate: a hit holds one of 16 locks for a hash lookup
//! and an `Arc` clone (tens of ns), readers write nothing (no LRU list to update), and it adds no dependency.
//! Only successes are cached: a refused token is not remembered (a flood of junk cannot fill the cache), and a
//! cached success is served only while the verifier that produced it is unchanged, so a key dropped from the
//! ring stops verifying its tokens at the next swap. Revocation of the API key behind a token is not this
//! cache's business: the agent checks the key in its snapshot on every use, hit or miss.
//!
//! Eviction when a shard is full: expired entries first, then the entry that expires soonest (the least useful
//! one, and no bookkeeping on reads).
use crate::claims::unix_seconds;
use crate::error::TokenError;
use crate::verify::{MAX_TOKEN_BYTES, VerifiedToken, Verifier};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

const SHARDS: usize = 16;
/// Characters of the signature hashed: 16 base64url characters are 96 bits of it.
const TAIL: usize = 16;

/// Identity hasher: the keys are already uniform hash bits.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys, which this map never uses; fold the bytes in anyway so it stays correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    /// The token, compared in full before the entry is served.
    text: Box<str>,
    fingerprint: u64,
    /// Unix second from which the token is expired (exp + leeway): never served at or after it.
    valid_until: u64,
    token: Arc<VerifiedToken>,
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<IdentityHasher>>;

pub struct VerifyCache {
    shards: Vec<Mutex<Shard>>,
    /// foldhash with this process's random seed (see the module comment for why not SipHash).
    hasher: foldhash::fast::RandomState,
    per_shard: usize,
}

impl VerifyCache {
    /// A cache of about `capacity` tokens (rounded up to a multiple of the shard count).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        VerifyCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            per_shard,
        }
    }

    /// [`Verifier::verify`], answered from the cache while the token's earlier success still holds.
    pub fn verify(
        &self,
        verifier: &Verifier,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        // Before hashing: a megabyte of junk costs a length compare, not a SHA-256.
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge { max: MAX_TOKEN_BYTES });
        }
        let slot = self.hasher.hash_one(tail(token));
        let shard = &self.shards[(slot >> 60) as usize % SHARDS];
        let now_secs = unix_seconds(now);
        {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = map.get(&slot) {
                // A bearer token is compared in constant time, like the API-key digests.
                let same = same_text(&entry.text, token) && entry.fingerprint == verifier.fingerprint();
                if same && now_secs < entry.valid_until {
                    return Ok(Arc::clone(&entry.token));
                }
                if same {
                    map.remove(&slot);
                }
            }
        }
        let verified = Arc::new(verifier.verify(token, now)?);
        let entry = Entry {
            text: token.into(),
            fingerprint: verifier.fingerprint(),
            valid_until: verifier.valid_until(&verified.claims),
            token: Arc::clone(&verified),
        };
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&slot) {
            make_room(&mut map, now_secs, self.per_shard);
        }
        map.insert(slot, entry);
        Ok(verified)
    }

    /// Tokens held, expired or not.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired entries everywhere; for a periodic sweep, so memory follows traffic down.
    pub fn purge_expired(&self, now: DateTime<Utc>) {
        let now_secs = unix_seconds(now);
        for shard in &self.shards {
            shard.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, e| e.valid_until > now_secs);
        }
    }
}

fn make_room(map: &mut Shard, now_secs: u64, per_shard: usize) {
    map.retain(|_, e| e.valid_until > now_secs);
    if map.len() < per_shard {
        return;
    }
    if let Some(soonest) = map.iter().min_by_key(|(_, e)| e.valid_until).map(|(slot, _)| *slot) {
        map.remove(&soonest);
    }
}

/// The bytes a token is filed under: its last [`TAIL`] bytes, which for a token this agent signed are the end of
/// its signature.
fn tail(token: &str) -> &[u8] {
    let bytes = token.as_bytes();
    &bytes[bytes.len().saturating_sub(TAIL)..]
}

/// Equal strings, in time that depends only on their lengths (which are not secret: every token of a grant has
/// about the same length). Eight bytes a step, no early exit.
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut difference = 0u64;
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a_words.remainder(), b_words.remainder());
    for (x, y) in a_words.zip(b_words) {
        let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        difference |= word(x) ^ word(y);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        difference |= u64::from(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::same_text;

    #[test]
    fn same_text_is_equality() {
        assert!(same_text("", ""));
        assert!(same_text("eyJhbGciOi.x.y", "eyJhbGciOi.x.y"));
        assert!(!same_text("eyJhbGciOi.x.y", "eyJhbGciOi.x.z"));
        assert!(!same_text("abcdefgh1", "abcdefgh2"));
        assert!(!same_text("abc", "abcd"));
    }
}
