//! Signing keys (private, Ed25519) and public keys (JWK, RFC 7517), and their stored forms.
//!
//! ```text
//!  SigningKey::generate ─▶ to_stored() ─▶ JSON in the operator's Secret ─▶ from_stored() (agent mints)
//!         └─▶ jwk() ─▶ Jwks (gateway config, /.well-known/jwks.json) ─▶ PublicKey::from_jwk (agent verifies)
//! ```
//! Algorithms are tied to key types: an OKP/Ed25519 key only ever verifies EdDSA, an EC/P-256 key only ES256.
//! A JWK whose `alg` says otherwise is refused when it is loaded, never reinterpreted.
use crate::error::KeyError;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The two signature algorithms a verifier accepts. Signing is EdDSA only; ES256 keys may come from elsewhere
/// (an HSM-held key the operator publishes, a peer gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    EdDSA,
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: only for the keys of external issuers a policy trusts (most OpenID
    /// providers sign with it); never for infergate's own tokens.
    RS256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }
    /// Exact, case-sensitive (RFC 7515 names are case-sensitive): `eddsa` or `ES256 ` are not algorithms.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "EdDSA" => Some(Alg::EdDSA),
            "ES256" => Some(Alg::ES256),
            "RS256" => Some(Alg::RS256),
            _ => None,
        }
    }
    pub(crate) fn jose(self) -> Algorithm {
        match self {
            Alg::EdDSA => Algorithm::EdDSA,
            Alg::ES256 => Algorithm::ES256,
            Alg::RS256 => Algorithm::RS256,
        }
    }
}

/// Random, non-secret key id: 9 bytes, 12 base64url characters. Only has to be unique within one key ring.
fn random_kid(rng: &SystemRandom) -> String {
    let mut bytes = [0u8; 9];
    rng.fill(&mut bytes).expect("the system RNG works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An Ed25519 private key with its id and schedule. Its [`Debug`] shows neither private nor public bytes.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    created_at: DateTime<Utc>,
    /// Before this instant the key is published but does not sign: agents learn the public key first.
    activates_at: DateTime<Utc>,
    /// PKCS#8 DER (v2, with the public key), the form that is stored. Secret.
    pkcs8: Vec<u8>,
    encoding: EncodingKey,
    public: [u8; 32],
}

impl SigningKey {
    /// A fresh key, active from `activates_at` (pass `created_at` for a key that signs at once).
    pub fn generate(created_at: DateTime<Utc>, activates_at: DateTime<Utc>) -> SigningKey {
        let rng = SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
        let kid = random_kid(&rng);
        Self::from_pkcs8(kid, created_at, activates_at, document.as_ref().to_vec()).expect("ring's own PKCS#8 parses")
    }

    fn from_pkcs8(
        kid: String,
        created_at: DateTime<Utc>,
        activates_at: DateTime<Utc>,
        pkcs8: Vec<u8>,
    ) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|_| KeyError::Invalid { kid: kid.clone(), reason: "not an Ed25519 PKCS#8 private key" })?;
        let public: [u8; 32] = pair.public_key().as_ref().try_into().expect("Ed25519 public keys are 32 bytes");
        let encoding = EncodingKey::from_ed_der(&pkcs8);
        Ok(SigningKey { kid, created_at, activates_at, pkcs8, encoding, public })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    pub fn activates_at(&self) -> DateTime<Utc> {
        self.activates_at
    }
    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The public half as a JWK: `{kty: OKP, crv: Ed25519, x, kid, alg: EdDSA, use: sig}`.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.public),
            y: None,
            n: None,
            e: None,
            kid: self.kid.clone(),
            alg: Some(Alg::EdDSA.as_str().into()),
            use_: Some("sig".into()),
        }
    }

    /// The form kept in a Secret: JSON-serialisable, private key as base64 PKCS#8 DER.
    pub fn to_stored(&self) -> StoredKey {
        StoredKey {
            kid: self.kid.clone(),
            alg: Alg::EdDSA,
            created_at: self.created_at,
            activates_at: self.activates_at,
            pkcs8: STANDARD.encode(&self.pkcs8),
        }
    }

    pub fn from_stored(stored: &StoredKey) -> Result<SigningKey, KeyError> {
        let invalid = |reason| KeyError::Invalid { kid: stored.kid.clone(), reason };
        if stored.alg != Alg::EdDSA {
            return Err(KeyError::Unsupported { kid: stored.kid.clone() });
        }
        if stored.kid.is_empty() {
            return Err(invalid("empty key id"));
        }
        let pkcs8 = STANDARD.decode(stored.pkcs8.trim()).map_err(|_| invalid("pkcs8 is not base64"))?;
        Self::from_pkcs8(stored.kid.clone(), stored.created_at, stored.activates_at, pkcs8)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}

/// [`SigningKey`] as stored in a Secret. Its `Debug` omits the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub kid: String,
    pub alg: Alg,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    /// Base64 (standard alphabet) of the PKCS#8 DER private key.
    pub pkcs8: String,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}

/// A public key in RFC 7517 form. Emitted for our own keys; parsed from a JWKS for any accepted key type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    /// OKP and EC keys (empty on an RSA key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crv: String,
    /// OKP and EC keys (empty on an RSA key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub x: String,
    /// RSA keys only: modulus and exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    pub kid: String,
    /// Always set on keys we publish. On a parsed key, optional (RFC 7517), but must agree with `kty`/`crv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A JWK Set document (`/.well-known/jwks.json`, and the gateway config's list of verification keys).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// A verification key: its id, the one algorithm it verifies, and the key itself.
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) kid: String,
    pub(crate) alg: Alg,
    pub(crate) decoding: DecodingKey,
}

impl PublicKey {
    /// Loads a JWK. The algorithm comes from the key type (`OKP`/`Ed25519` → EdDSA, `EC`/`P-256` → ES256);
    /// an `alg` member that says anything else, or `use` other than `sig`, is refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<PublicKey, KeyError> {
        let kid = jwk.kid.clone();
        let invalid = |reason| KeyError::Invalid { kid: kid.clone(), reason };
        if kid.is_empty() {
            return Err(invalid("empty key id"));
        }
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(invalid("use is not sig"));
        }
        let coordinate = |c: &str, what| match URL_SAFE_NO_PAD.decode(c) {
            Ok(bytes) if bytes.len() == 32 => Ok(bytes),
            _ => Err(invalid(what)),
        };
        let (alg, decoding) = match (jwk.kty.as_str(), jwk.crv.as_str()) {
            ("OKP", "Ed25519") => {
                if jwk.y.is_some() {
                    return Err(invalid("an OKP key has no y"));
                }
                let x = coordinate(&jwk.x, "x is not 32 base64url bytes")?;
                (Alg::EdDSA, DecodingKey::from_ed_der(&x))
            }
            ("EC", "P-256") => {
                let x = coordinate(&jwk.x, "x is not 32 base64url bytes")?;
                let y = coordinate(
                    jwk.y.as_deref().ok_or_else(|| invalid("an EC key needs y"))?,
                    "y is not 32 base64url bytes",
                )?;
                // Uncompressed SEC1 point; ring checks it is on the curve when it verifies.
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (Alg::ES256, DecodingKey::from_ec_der(&point))
            }
            ("RSA", _) => {
                let part = |v: Option<&String>, what| {
                    v.and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| invalid(what))
                };
                let n = part(jwk.n.as_ref(), "n is not base64url")?;
                let e = part(jwk.e.as_ref(), "e is not base64url")?;
                // ring verifies 2048 to 8192-bit moduli; say so here rather than fail every signature later.
                let bits = n.len() * 8 - n[0].leading_zeros() as usize;
                if !(2048..=8192).contains(&bits) {
                    return Err(invalid("RSA modulus is not 2048 to 8192 bits"));
                }
                (Alg::RS256, DecodingKey::from_rsa_raw_components(&n, &e))
            }
            _ => return Err(KeyError::Unsupported { kid }),
        };
        if jwk.alg.as_deref().is_some_and(|a| a != alg.as_str()) {
            return Err(KeyError::Unsupported { kid });
        }
        Ok(PublicKey { kid, alg, decoding })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn alg(&self) -> Alg {
        self.alg
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn stored_key_round_trips_to_the_same_public_key() {
        let key = SigningKey::generate(t0(), t0());
        let json = serde_json::to_string(&key.to_stored()).unwrap();
        let back = SigningKey::from_stored(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.jwk(), key.jwk());
        assert_eq!((back.created_at(), back.activates_at()), (t0(), t0()));
    }

    #[test]
    fn jwk_has_the_rfc_8037_members() {
        let key = SigningKey::generate(t0(), t0());
        let json = serde_json::to_value(key.jwk()).unwrap();
        let members: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(json["kty"], "OKP");
        assert_eq!(json["crv"], "Ed25519");
        assert_eq!(json["alg"], "EdDSA");
        assert_eq!(json["use"], "sig");
        assert_eq!(json["x"].as_str().unwrap().len(), 43);
    }

    #[test]
    fn generated_keys_have_distinct_kids() {
        let a = SigningKey::generate(t0(), t0());
        let b = SigningKey::generate(t0(), t0());
        assert_ne!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 12);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = SigningKey::generate(t0(), t0());
        let stored = key.to_stored();
        for debug in [format!("{key:?}"), format!("{stored:?}")] {
            assert!(!debug.contains(&stored.pkcs8[..16]), "{debug}");
            assert!(!debug.contains(&key.jwk().x), "{debug}");
        }
    }

    #[test]
    fn corrupt_stored_key_is_refused() {
        let mut stored = SigningKey::generate(t0(), t0()).to_stored();
        stored.pkcs8 = STANDARD.encode(b"not a key");
        let err = SigningKey::from_stored(&stored).unwrap_err();
        assert_eq!(err.category(), "invalid_key");
    }

    #[test]
    fn jwk_alg_that_disagrees_with_the_key_type_is_refused() {
        let mut jwk = SigningKey::generate(t0(), t0()).jwk();
        jwk.alg = Some("HS256".into());
        assert!(matches!(PublicKey::from_jwk(&jwk), Err(KeyError::Unsupported { .. })));
    }

    #[test]
    fn symmetric_and_other_curve_jwks_are_unsupported() {
        for (kty, crv) in [("oct", ""), ("EC", "P-384"), ("OKP", "X25519")] {
            let jwk = Jwk {
                kty: kty.into(),
                crv: crv.into(),
                x: URL_SAFE_NO_PAD.encode([1u8; 32]),
                y: Some(URL_SAFE_NO_PAD.encode([2u8; 32])),
                n: None,
                e: None,
                kid: "k".into(),
                alg: None,
                use_: None,
            };
            assert!(matches!(PublicKey::from_jwk(&jwk), Err(KeyError::Unsupported { .. })), "{kty} {crv}");
        }
    }

    #[test]
    fn rsa_jwks_load_as_rs256_from_2048_bits() {
        let rsa = |bytes: usize, alg: Option<&str>| Jwk {
            kty: "RSA".into(),
            crv: String::new(),
            x: String::new(),
            y: None,
            n: Some(URL_SAFE_NO_PAD.encode(vec![0xc5u8; bytes])),
            e: Some(URL_SAFE_NO_PAD.encode([1u8, 0, 1])),
            kid: "r".into(),
            alg: alg.map(str::to_owned),
            use_: Some("sig".into()),
        };
        assert_eq!(PublicKey::from_jwk(&rsa(256, Some("RS256"))).unwrap().alg(), Alg::RS256);
        assert!(matches!(PublicKey::from_jwk(&rsa(128, None)), Err(KeyError::Invalid { .. })));
        assert!(matches!(PublicKey::from_jwk(&rsa(256, Some("PS256"))), Err(KeyError::Unsupported { .. })));
        let mut no_e = rsa(256, None);
        no_e.e = None;
        assert!(matches!(PublicKey::from_jwk(&no_e), Err(KeyError::Invalid { .. })));
    }

    #[test]
    fn jwk_without_alg_and_use_loads_with_the_key_types_alg() {
        let mut jwk = SigningKey::generate(t0(), t0()).jwk();
        (jwk.alg, jwk.use_) = (None, None);
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap().alg(), Alg::EdDSA);
    }

    #[test]
    fn encryption_jwk_is_refused() {
        let mut jwk = SigningKey::generate(t0(), t0()).jwk();
        jwk.use_ = Some("enc".into());
        assert!(matches!(PublicKey::from_jwk(&jwk), Err(KeyError::Invalid { .. })));
    }
}
