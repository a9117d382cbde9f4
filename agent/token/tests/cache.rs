//! The verified-token cache: hits, expiry, bounds, and when it must not answer.
mod common;

use common::*;
use infergate_token::{Grant, TokenError, VerifyCache, mint};
use std::sync::Arc;
use std::time::Duration;

fn token_for(key: &infergate_token::SigningKey, lifetime: Duration) -> String {
    mint(key, &grant(), t0(), lifetime).unwrap().token
}

#[test]
fn a_hit_returns_the_same_verified_token() {
    let key = key();
    let (verifier, cache) = (verifier(&[&key]), VerifyCache::new(1024));
    let token = token_for(&key, TEN_MIN);
    let first = cache.verify(&verifier, &token, t0()).unwrap();
    let second = cache.verify(&verifier, &token, t0() + secs(5)).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(*first, verifier.verify(&token, t0()).unwrap());
    assert_eq!(cache.len(), 1);
}

#[test]
fn an_expired_entry_is_refused_and_evicted() {
    let key = key();
    let (verifier, cache) = (verifier(&[&key]), VerifyCache::new(1024));
    let token = token_for(&key, Duration::from_secs(10));
    cache.verify(&verifier, &token, t0()).unwrap();
    let after = t0() + secs(10) + chrono::Duration::from_std(LEEWAY).unwrap();
    assert_eq!(cache.verify(&verifier, &token, after), Err(TokenError::Expired));
    assert!(cache.is_empty());
}

#[test]
fn refusals_are_not_cached() {
    let key = key();
    let (verifier, cache) = (verifier(&[&key]), VerifyCache::new(1024));
    let token = mint(&key, &Grant { audience: "other".into(), ..grant() }, t0(), TEN_MIN).unwrap().token;
    assert_eq!(cache.verify(&verifier, &token, t0()), Err(TokenError::WrongAudience));
    assert!(cache.is_empty());
}

#[test]
fn a_success_under_another_key_set_is_not_served() {
    let (old, new) = (key(), key());
    let cache = VerifyCache::new(1024);
    let token = token_for(&old, TEN_MIN);
    cache.verify(&verifier(&[&old, &new]), &token, t0()).unwrap();
    // The old key was dropped from the ring: its token must stop verifying even though it is cached.
    assert_eq!(cache.verify(&verifier(&[&new]), &token, t0()), Err(TokenError::UnknownKid));
}

#[test]
fn the_same_configuration_rebuilt_keeps_its_hits() {
    let key = key();
    let cache = VerifyCache::new(1024);
    let token = token_for(&key, TEN_MIN);
    let first = cache.verify(&verifier(&[&key]), &token, t0()).unwrap();
    let rebuilt = verifier(&[&key]);
    assert!(Arc::ptr_eq(&first, &cache.verify(&rebuilt, &token, t0()).unwrap()));
}

#[test]
fn the_cache_stays_within_its_capacity() {
    let key = key();
    let (verifier, cache) = (verifier(&[&key]), VerifyCache::new(16));
    for _ in 0..200 {
        cache.verify(&verifier, &token_for(&key, TEN_MIN), t0()).unwrap();
    }
    assert!(cache.len() <= 16, "{}", cache.len());
}

#[test]
fn purge_drops_only_expired_entries() {
    let key = key();
    let (verifier, cache) = (verifier(&[&key]), VerifyCache::new(1024));
    cache.verify(&verifier, &token_for(&key, Duration::from_secs(10)), t0()).unwrap();
    cache.verify(&verifier, &token_for(&key, TEN_MIN), t0()).unwrap();
    cache.purge_expired(t0() + secs(60));
    assert_eq!(cache.len(), 1);
}

#[test]
fn oversized_input_is_refused_before_hashing() {
    let cache = VerifyCache::new(16);
    let huge = "x".repeat(1 << 20);
    assert_eq!(cache.verify(&verifier(&[&key()]), &huge, t0()), Err(TokenError::TooLarge { max: 4096 }));
}

#[test]
fn concurrent_readers_share_one_entry() {
    let key = key();
    let (verifier, cache) = (Arc::new(verifier(&[&key])), Arc::new(VerifyCache::new(1024)));
    let token = Arc::new(token_for(&key, TEN_MIN));
    let first = cache.verify(&verifier, &token, t0()).unwrap();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (verifier, cache, token, first) = (verifier.clone(), cache.clone(), token.clone(), first.clone());
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    assert!(Arc::ptr_eq(&first, &cache.verify(&verifier, &token, t0()).unwrap()));
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
}

/// Tokens are filed by their last characters (the end of the signature): a token that ends like a cached one but
/// differs anywhere else is verified on its own, refused, and leaves the cached one in place.
#[test]
fn a_token_ending_like_a_cached_one_is_verified_not_served() {
    let key = key();
    let (verifier, cache) = (verifier(&[&key]), VerifyCache::new(1024));
    let token = token_for(&key, TEN_MIN);
    let first = cache.verify(&verifier, &token, t0()).unwrap();
    let payload = token.find('.').unwrap() + 5;
    for swap in ["A", "B"] {
        let mut forged = token.clone();
        if &forged[payload..payload + 1] == swap {
            continue;
        }
        forged.replace_range(payload..payload + 1, swap);
        assert!(cache.verify(&verifier, &forged, t0()).is_err(), "a changed payload under the same signature");
    }
    let short = &token[token.len() - 10..];
    assert!(cache.verify(&verifier, short, t0()).is_err(), "shorter than the part hashed");
    assert!(Arc::ptr_eq(&first, &cache.verify(&verifier, &token, t0()).unwrap()));
    assert_eq!(cache.len(), 1);
}
