//! Tokens built by hand to get past the verifier: each must be refused with its own category.
mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use infergate_token::{Jwk, PublicKey, SigningKey, TokenError, Verifier, mint};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;

fn header(alg: &str, kid: &str) -> serde_json::Value {
    json!({"alg": alg, "typ": "at+jwt", "kid": kid})
}

/// Signs like the real signer would, so only the part under test is wrong.
fn ed25519_sign(key: &SigningKey) -> impl FnOnce(&[u8]) -> Vec<u8> {
    let pkcs8 = STANDARD.decode(key.to_stored().pkcs8).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    move |input| pair.sign(input).as_ref().to_vec()
}

fn public_key_bytes(key: &SigningKey) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(key.jwk().x).unwrap()
}

fn hs256(secret: Vec<u8>) -> impl FnOnce(&[u8]) -> Vec<u8> {
    move |input| ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret), input).as_ref().to_vec()
}

fn refused(verifier: &Verifier, token: &str) -> TokenError {
    verifier.verify(token, t0()).expect_err("the crafted token must be refused")
}

#[test]
fn the_crafting_helpers_make_a_token_that_verifies() {
    // Guards every test below: a refusal there is due to the one thing it changes.
    let key = key();
    let token = craft(&header("EdDSA", key.kid()), &payload(), ed25519_sign(&key));
    assert!(verifier(&[&key]).verify(&token, t0()).is_ok());
}

#[test]
fn alg_none_is_not_allowed_in_any_spelling() {
    let key = key();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let unsigned = craft(&header(alg, key.kid()), &payload(), |_| Vec::new());
        assert_eq!(refused(&verifier(&[&key]), &unsigned), TokenError::AlgNotAllowed, "{alg}");
        let with_signature = craft(&header(alg, key.kid()), &payload(), ed25519_sign(&key));
        assert_eq!(refused(&verifier(&[&key]), &with_signature), TokenError::AlgNotAllowed, "{alg}");
    }
}

#[test]
fn hs256_keyed_with_the_ed25519_public_key_is_not_allowed() {
    let key = key();
    let jwk_json = serde_json::to_vec(&key.jwk()).unwrap();
    for secret in [public_key_bytes(&key), key.jwk().x.into_bytes(), jwk_json] {
        let token = craft(&header("HS256", key.kid()), &payload(), hs256(secret));
        assert_eq!(refused(&verifier(&[&key]), &token), TokenError::AlgNotAllowed);
    }
}

#[test]
fn hmac_under_the_eddsa_name_is_a_bad_signature() {
    let key = key();
    let token = craft(&header("EdDSA", key.kid()), &payload(), hs256(public_key_bytes(&key)));
    assert_eq!(refused(&verifier(&[&key]), &token), TokenError::BadSignature);
}

#[test]
fn rsa_and_other_hmac_algorithms_are_not_allowed() {
    let key = key();
    for alg in ["HS384", "HS512", "RS256", "PS256", "ES384", "EdDSA ", "eddsa"] {
        let token = craft(&header(alg, key.kid()), &payload(), ed25519_sign(&key));
        assert_eq!(refused(&verifier(&[&key]), &token), TokenError::AlgNotAllowed, "{alg}");
    }
}

/// A P-256 key as an external signer would hold it, with its JWK.
fn es256_key() -> (EcdsaKeyPair, Jwk) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = Jwk {
        kty: "EC".into(),
        crv: "P-256".into(),
        x: b64(&point[1..33]),
        y: Some(b64(&point[33..])),
        n: None,
        e: None,
        kid: "p256-1".into(),
        alg: Some("ES256".into()),
        use_: Some("sig".into()),
    };
    (pair, jwk)
}

fn es256_sign(pair: EcdsaKeyPair) -> impl FnOnce(&[u8]) -> Vec<u8> {
    move |input| pair.sign(&SystemRandom::new(), input).unwrap().as_ref().to_vec()
}

fn with_es256(ed: &SigningKey, jwk: &Jwk) -> Verifier {
    let keys = [PublicKey::from_jwk(&ed.jwk()).unwrap(), PublicKey::from_jwk(jwk).unwrap()];
    Verifier::new(ISSUER, AUDIENCE, LEEWAY, keys).unwrap()
}

#[test]
fn an_es256_token_from_an_es256_key_verifies() {
    let (pair, jwk) = es256_key();
    let token = craft(&header("ES256", "p256-1"), &payload(), es256_sign(pair));
    assert_eq!(with_es256(&key(), &jwk).verify(&token, t0()).unwrap().kid, "p256-1");
}

#[test]
fn a_header_alg_that_differs_from_the_keys_alg_is_not_allowed() {
    let ed = key();
    let (pair, jwk) = es256_key();
    let verifier = with_es256(&ed, &jwk);
    let eddsa_on_p256 = craft(&header("EdDSA", "p256-1"), &payload(), ed25519_sign(&ed));
    assert_eq!(refused(&verifier, &eddsa_on_p256), TokenError::AlgNotAllowed);
    let es256_on_ed25519 = craft(&header("ES256", ed.kid()), &payload(), es256_sign(pair));
    assert_eq!(refused(&verifier, &es256_on_ed25519), TokenError::AlgNotAllowed);
}

#[test]
fn a_tampered_payload_is_a_bad_signature() {
    let key = key();
    let token = mint(&key, &grant(), t0(), TEN_MIN).unwrap().token;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["mdl"] = json!(["whisper-large"]);
    parts[1] = b64(claims.to_string().as_bytes());
    assert_eq!(refused(&verifier(&[&key]), &parts.join(".")), TokenError::BadSignature);
}

#[test]
fn a_signature_from_another_token_is_a_bad_signature() {
    let key = key();
    let a = mint(&key, &grant(), t0(), TEN_MIN).unwrap().token;
    let b = mint(&key, &grant(), t0(), TEN_MIN).unwrap().token;
    let spliced = format!("{}.{}", a.rsplit_once('.').unwrap().0, b.rsplit_once('.').unwrap().1);
    assert_eq!(refused(&verifier(&[&key]), &spliced), TokenError::BadSignature);
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let huge = "a".repeat(infergate_token::MAX_TOKEN_BYTES + 1);
    assert_eq!(refused(&verifier(&[&key()]), &huge), TokenError::TooLarge { max: 4096 });
}

#[test]
fn anything_but_three_parts_is_malformed() {
    let key = key();
    let token = mint(&key, &grant(), t0(), TEN_MIN).unwrap().token;
    let (input, _) = token.rsplit_once('.').unwrap();
    for bad in [input.to_owned(), format!("{token}.x.y"), String::new(), "..".into()] {
        assert_eq!(refused(&verifier(&[&key]), &bad).category(), "malformed", "{bad:?}");
    }
}

#[test]
fn a_crit_header_is_malformed() {
    let key = key();
    let h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid(), "crit": ["exp"]});
    let token = craft(&h, &payload(), ed25519_sign(&key));
    assert_eq!(refused(&verifier(&[&key]), &token).category(), "malformed");
}

#[test]
fn a_jwt_of_another_type_is_malformed() {
    let key = key();
    for h in [json!({"alg": "EdDSA", "kid": key.kid()}), json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()})] {
        let token = craft(&h, &payload(), ed25519_sign(&key));
        assert_eq!(refused(&verifier(&[&key]), &token).category(), "malformed", "{h}");
    }
    let h = json!({"alg": "EdDSA", "typ": "application/AT+JWT", "kid": key.kid()});
    assert!(verifier(&[&key]).verify(&craft(&h, &payload(), ed25519_sign(&key)), t0()).is_ok());
}

#[test]
fn a_repeated_header_member_is_malformed() {
    let key = key();
    let h = format!(r#"{{"alg":"EdDSA","alg":"none","typ":"at+jwt","kid":"{}"}}"#, key.kid());
    let input = format!("{}.{}", b64(h.as_bytes()), b64(payload().to_string().as_bytes()));
    let signature = ed25519_sign(&key)(input.as_bytes());
    let token = format!("{input}.{}", b64(&signature));
    assert_eq!(refused(&verifier(&[&key]), &token).category(), "malformed");
}

#[test]
fn a_missing_kid_is_unknown_kid() {
    let key = key();
    let token = craft(&json!({"alg": "EdDSA", "typ": "at+jwt"}), &payload(), ed25519_sign(&key));
    assert_eq!(refused(&verifier(&[&key]), &token), TokenError::UnknownKid);
}

#[test]
fn a_time_claim_of_the_wrong_type_is_malformed_not_skipped() {
    // CVE-2026-25537's shape: a string nbf must not read as "no nbf", even under a valid signature.
    let key = key();
    let mut claims = payload();
    claims["nbf"] = json!("99999999999");
    let token = craft(&header("EdDSA", key.kid()), &claims, ed25519_sign(&key));
    assert_eq!(refused(&verifier(&[&key]), &token).category(), "malformed");
}

#[test]
fn missing_exp_is_malformed() {
    let key = key();
    let mut claims = payload();
    claims.as_object_mut().unwrap().remove("exp");
    let token = craft(&header("EdDSA", key.kid()), &claims, ed25519_sign(&key));
    assert_eq!(refused(&verifier(&[&key]), &token).category(), "malformed");
}

#[test]
fn an_audience_array_is_malformed() {
    let key = key();
    let mut claims = payload();
    claims["aud"] = json!([AUDIENCE, "other"]);
    let token = craft(&header("EdDSA", key.kid()), &claims, ed25519_sign(&key));
    assert_eq!(refused(&verifier(&[&key]), &token).category(), "malformed");
}
