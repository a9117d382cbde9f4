//! Verified tokens by digest, so a stream of requests with one token pays the signature check once.
//!
//! ```text
//!  token ─▶ size check ─▶ SHA-256 ─▶ shard (digest byte 8) ─▶ slot (digest bytes 0..8)
//!        ─▶ ct_eq(full digest) ∧ same verifier fingerprint ∧ now < exp + leeway ─▶ hit: Arc<VerifiedToken>
//!        └─ otherwise: Verifier::verify outside any lock ─▶ Ok: insert
//! ```
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
use ring::digest::{SHA256, digest};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use subtle::ConstantTimeEq;

const SHARDS: usize = 16;

/// Identity hasher: the keys are already uniform digest bits.
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
    digest: [u8; 32],
    fingerprint: u64,
    /// Unix second from which the token is expired (exp + leeway): never served at or after it.
    valid_until: u64,
    token: Arc<VerifiedToken>,
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<IdentityHasher>>;

pub struct VerifyCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl VerifyCache {
    /// A cache of about `capacity` tokens (rounded up to a multiple of the shard count).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        VerifyCache { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), per_shard }
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
        let digest: [u8; 32] = digest(&SHA256, token.as_bytes()).as_ref().try_into().expect("SHA-256 is 32 bytes");
        let slot = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        let shard = &self.shards[usize::from(digest[8]) % SHARDS];
        let now_secs = unix_seconds(now);
        {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = map.get(&slot) {
                // The digest of a bearer token is compared in constant time, like the API-key digests.
                let same = bool::from(entry.digest.ct_eq(&digest)) && entry.fingerprint == verifier.fingerprint();
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
            digest,
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
