//! Token costs for the targets: uncached EdDSA verify <= 60 us; cached <= 1.2x the API-key admission
//! path (`agent/benches/admission.rs`). One typical grant (546-byte token), a ring of two keys.
use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use infergate_token::{Grant, Granted, KeyRing, SigningKey, Verifier, VerifyCache, mint};
use std::hint::black_box;
use std::time::Duration;

fn grant() -> Grant {
    let set = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    Grant {
        issuer: "https://gw.example.com".into(),
        audience: "infergate".into(),
        policy: "voice-app/mobile".into(),
        key_id: "kid_3f2a9c0d1e4b5a67".into(),
        tier: "standard".into(),
        scope: Granted { models: set(&["whisper-small"]), features: set(&["transcribe"]) },
        max_audio_seconds: Some(600),
        codecs: set(&["pcm16", "wav"]),
        end_user: Some("user-8d41c2".into()),
        not_before: None,
    }
}

fn tokens(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let mut ring = KeyRing::bootstrap(now);
    ring.apply(
        &infergate_token::RotationPlan { new_key_activates_at: Some(now), drop: vec![], next_check: now },
        now,
        SigningKey::generate,
    );
    let key = ring.signing_key(now).clone();
    let verifier = Verifier::from_jwks("https://gw.example.com", "infergate", Duration::from_secs(30), &ring.jwks())
        .expect("our own JWKS loads");
    let lifetime = Duration::from_secs(600);
    let token = mint(&key, &grant(), now, lifetime).expect("mints").token;

    c.bench_function("token/mint", |b| b.iter(|| mint(black_box(&key), black_box(&grant()), now, lifetime)));
    c.bench_function("token/verify_uncached", |b| b.iter(|| verifier.verify(black_box(&token), now)));
    let cache = VerifyCache::new(65_536);
    cache.verify(&verifier, &token, now).expect("verifies");
    c.bench_function("token/verify_cached", |b| b.iter(|| cache.verify(&verifier, black_box(&token), now)));
    // The floor of a cached check: hashing the token.
    c.bench_function("token/sha256_of_token", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(token.as_bytes())))
    });
    // The floor of an uncached check: ring's Ed25519 verify of the same signing input, without JOSE.
    let (input, signature) = token.rsplit_once('.').expect("three parts");
    let signature = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature).expect("b64");
    let x = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, key.jwk().x).expect("b64");
    let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x.clone());
    c.bench_function("token/ed25519_verify_floor", |b| {
        b.iter(|| public.verify(black_box(input.as_bytes()), black_box(&signature)).expect("verifies"))
    });
    // What verify_uncached uses since it measured faster than ring's (jose.rs, DalekVerifier).
    let dalek = ed25519_dalek::VerifyingKey::from_bytes(&x.as_slice().try_into().expect("32 bytes")).expect("a key");
    let dalek_signature = ed25519_dalek::Signature::from_slice(&signature).expect("64 bytes");
    c.bench_function("token/ed25519_dalek_floor", |b| {
        b.iter(|| dalek.verify_strict(black_box(input.as_bytes()), black_box(&dalek_signature)).expect("verifies"))
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
