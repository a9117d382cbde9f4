//! Minting and verification of well-formed tokens: one check per test.
mod common;

use common::*;
use infergate_token::{Grant, Granted, KeyRing, RotationPolicy, SigningKey, TokenError, Verifier, mint};
use std::time::Duration;

fn mint_at(key: &SigningKey, grant: &Grant, now: chrono::DateTime<chrono::Utc>) -> String {
    mint(key, grant, now, TEN_MIN).unwrap().token
}

#[test]
fn a_minted_token_verifies_with_every_claim_intact() {
    let key = key();
    let minted = mint(&key, &grant(), t0(), TEN_MIN).unwrap();
    let verified = verifier(&[&key]).verify(&minted.token, t0()).unwrap();
    assert_eq!(verified.kid, key.kid());
    let c = &verified.claims;
    assert_eq!((c.iss.as_str(), c.aud.as_str(), c.sub.as_str()), (ISSUER, AUDIENCE, "voice-app/mobile"));
    assert_eq!((c.iat, c.exp, c.nbf), (t0().timestamp() as u64, t0().timestamp() as u64 + 600, None));
    assert_eq!(c.jti, minted.jti);
    assert_eq!(c.client_id, "kid_3f2a9c0d1e4b5a67");
    assert_eq!(c.tier, "standard");
    assert_eq!(c.granted(), grant().scope);
    assert_eq!(c.max_audio_seconds, Some(600));
    assert_eq!(c.codecs, grant().codecs);
    assert_eq!(c.end_user(), Some("user-8d41c2"));
    assert_eq!(minted.expires_at, t0() + secs(600));
    assert_eq!(minted.lifetime, TEN_MIN);
}

#[test]
fn jti_is_128_random_bits_in_base64url() {
    let key = key();
    let a = mint(&key, &grant(), t0(), TEN_MIN).unwrap();
    let b = mint(&key, &grant(), t0(), TEN_MIN).unwrap();
    assert_eq!(a.jti.len(), 22);
    assert!(a.jti.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    assert_ne!(a.jti, b.jti);
}

#[test]
fn the_header_is_eddsa_at_jwt_with_the_signing_kid() {
    let key = key();
    let token = mint_at(&key, &grant(), t0());
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some(key.kid()));
}

#[test]
fn an_unrestricted_grant_writes_no_scope_claims() {
    let key = key();
    let grant =
        Grant { scope: Granted::everything(), codecs: None, max_audio_seconds: None, end_user: None, ..grant() };
    let claims = verifier(&[&key]).verify(&mint_at(&key, &grant, t0()), t0()).unwrap().claims;
    assert_eq!(claims.granted(), Granted::everything());
    let payload = token_payload(&mint_at(&key, &grant, t0()));
    for absent in ["mdl", "ftr", "mas", "cdc", "act", "nbf"] {
        assert!(payload.get(absent).is_none(), "{absent} in {payload}");
    }
}

fn token_payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn a_typical_token_is_short_enough_for_metadata() {
    // Reported in the crate's notes; the bound leaves room for a longer issuer URL and policy name.
    let full = mint_at(&key(), &grant(), t0());
    let bare = Grant { scope: Granted::everything(), codecs: None, max_audio_seconds: None, end_user: None, ..grant() };
    let bare = mint_at(&key(), &bare, t0());
    println!("typical token: {} bytes; without scope, limits or end user: {} bytes", full.len(), bare.len());
    assert!(full.len() <= 600, "{} bytes", full.len());
}

#[test]
fn expiry_is_enforced_with_leeway() {
    let key = key();
    let token = mint_at(&key, &grant(), t0());
    let verifier = verifier(&[&key]);
    let last_ok = t0() + secs(600) + chrono::Duration::from_std(LEEWAY).unwrap() - secs(1);
    assert!(verifier.verify(&token, last_ok).is_ok());
    assert_eq!(verifier.verify(&token, last_ok + secs(1)), Err(TokenError::Expired));
}

#[test]
fn a_token_before_its_nbf_is_not_yet_valid() {
    let key = key();
    let grant = Grant { not_before: Some(t0() + secs(120)), ..grant() };
    let token = mint_at(&key, &grant, t0());
    let verifier = verifier(&[&key]);
    assert_eq!(verifier.verify(&token, t0()), Err(TokenError::NotYetValid));
    assert!(verifier.verify(&token, t0() + secs(90)).is_ok(), "within the leeway of nbf");
}

#[test]
fn a_token_issued_in_the_future_is_not_yet_valid() {
    let key = key();
    let token = mint_at(&key, &grant(), t0() + secs(300));
    assert_eq!(verifier(&[&key]).verify(&token, t0()), Err(TokenError::NotYetValid));
}

#[test]
fn another_audience_is_refused() {
    let key = key();
    let token = mint_at(&key, &Grant { audience: "billing".into(), ..grant() }, t0());
    assert_eq!(verifier(&[&key]).verify(&token, t0()), Err(TokenError::WrongAudience));
}

#[test]
fn another_issuer_is_refused() {
    let key = key();
    let token = mint_at(&key, &Grant { issuer: "https://evil.example".into(), ..grant() }, t0());
    assert_eq!(verifier(&[&key]).verify(&token, t0()), Err(TokenError::WrongIssuer));
}

#[test]
fn a_key_outside_the_set_is_unknown_kid() {
    let token = mint_at(&key(), &grant(), t0());
    assert_eq!(verifier(&[&key()]).verify(&token, t0()), Err(TokenError::UnknownKid));
}

#[test]
fn a_lifetime_over_the_maximum_is_refused() {
    let err = mint(&key(), &grant(), t0(), Duration::from_secs(3601)).unwrap_err();
    assert_eq!(err.category(), "invalid_lifetime");
    assert!(mint(&key(), &grant(), t0(), Duration::from_millis(999)).is_err());
}

#[test]
fn refusal_messages_carry_no_token_text_or_claim_values() {
    let key = key();
    let token = mint_at(&key, &Grant { audience: "billing".into(), ..grant() }, t0());
    let err = verifier(&[&key]).verify(&token, t0()).unwrap_err().to_string();
    for part in token.split('.').chain(["billing", "voice-app", "user-8d41c2", "kid_3f2a"]) {
        assert!(!err.contains(part), "{err}");
    }
}

#[test]
fn verifier_built_from_the_published_jwks_json_verifies() {
    let ring = KeyRing::bootstrap(t0());
    let json = serde_json::to_string(&ring.jwks()).unwrap();
    let verifier = Verifier::from_jwks(ISSUER, AUDIENCE, LEEWAY, &serde_json::from_str(&json).unwrap()).unwrap();
    let token = mint_at(ring.signing_key(t0()), &grant(), t0());
    assert!(verifier.verify(&token, t0()).is_ok());
}

/// Rotation end to end: the ring as the operator keeps it, a verifier per published JWKS.
mod rotation {
    use super::*;

    const DAY: i64 = 24 * 3600;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            period: Duration::from_secs(7 * DAY as u64),
            publish_ahead: Duration::from_secs(3600),
            max_token_lifetime: TEN_MIN,
            leeway: LEEWAY,
        }
    }

    fn reconcile(ring: &mut KeyRing, now: chrono::DateTime<chrono::Utc>) -> Verifier {
        let plan = ring.plan(now, &policy());
        ring.apply(&plan, now, SigningKey::generate);
        Verifier::from_jwks(ISSUER, AUDIENCE, LEEWAY, &ring.jwks()).unwrap()
    }

    /// A ring whose first key signed `old_token` just before the second key took over.
    fn rotated() -> (KeyRing, String, chrono::DateTime<chrono::Utc>) {
        let mut ring = KeyRing::bootstrap(t0());
        let switch = t0() + secs(7 * DAY);
        reconcile(&mut ring, switch - secs(3600));
        let old_token = mint_at(ring.signing_key(switch - secs(1)), &grant(), switch - secs(1));
        (ring, old_token, switch)
    }

    #[test]
    fn new_tokens_carry_the_new_kid() {
        let (ring, _, switch) = rotated();
        let new_kid = ring.keys()[1].kid();
        let token = mint_at(ring.signing_key(switch), &grant(), switch);
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(), Some(new_kid));
    }

    #[test]
    fn an_old_token_verifies_after_rotation_until_it_expires() {
        let (mut ring, old_token, switch) = rotated();
        let verifier = reconcile(&mut ring, switch + secs(60));
        assert!(verifier.verify(&old_token, switch + secs(60)).is_ok());
        let expiry = switch - secs(1) + secs(600) + chrono::Duration::from_std(LEEWAY).unwrap();
        assert_eq!(verifier.verify(&old_token, expiry), Err(TokenError::Expired));
    }

    #[test]
    fn the_old_key_is_dropped_only_after_its_tokens_expired() {
        let (mut ring, old_token, switch) = rotated();
        let expiry = switch - secs(1) + secs(600) + chrono::Duration::from_std(LEEWAY).unwrap();
        let verifier = reconcile(&mut ring, expiry - secs(1));
        assert_eq!(ring.keys().len(), 2, "still inside the overlap");
        assert!(verifier.verify(&old_token, expiry - secs(1)).is_ok());
        let drop_at = switch + chrono::Duration::from_std(policy().overlap()).unwrap();
        let verifier = reconcile(&mut ring, drop_at);
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(verifier.verify(&old_token, drop_at), Err(TokenError::UnknownKid));
    }
}
