//! Fixtures shared by the integration tests: a typical grant, verifiers, and hand-crafted tokens.
#![allow(dead_code)] // each test binary uses a different subset

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use infergate_token::{Grant, Granted, SigningKey, Verifier};
use std::collections::BTreeSet;
use std::time::Duration;

pub const ISSUER: &str = "https://gw.example.com";
pub const AUDIENCE: &str = "infergate";
pub const LEEWAY: Duration = Duration::from_secs(30);
pub const TEN_MIN: Duration = Duration::from_secs(600);

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

pub fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn set(items: &[&str]) -> Option<BTreeSet<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

/// A typical grant: one model, one feature, a tier, an audio cap, two codecs, an end user.
pub fn grant() -> Grant {
    Grant {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
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

pub fn key() -> SigningKey {
    SigningKey::generate(t0(), t0())
}

pub fn verifier(keys: &[&SigningKey]) -> Verifier {
    Verifier::new(
        ISSUER,
        AUDIENCE,
        LEEWAY,
        keys.iter().map(|k| infergate_token::PublicKey::from_jwk(&k.jwk()).unwrap()),
    )
    .unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token built by hand: `header.payload.signature` with `sign` over the signing input.
pub fn craft(header: &serde_json::Value, payload: &serde_json::Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// Valid claims for a hand-crafted token, issued at `t0()` for ten minutes.
pub fn payload() -> serde_json::Value {
    let iat = t0().timestamp();
    serde_json::json!({
        "iss": ISSUER, "sub": "voice-app/mobile", "aud": AUDIENCE, "iat": iat, "exp": iat + 600,
        "jti": "AAAAAAAAAAAAAAAAAAAAAA", "client_id": "kid_3f2a9c0d1e4b5a67", "tier": "standard",
    })
}
