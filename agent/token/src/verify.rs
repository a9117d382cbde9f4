//! Local token verification: no introspection call, no clock of its own.
//!
//! ```text
//!  token ─▶ size ≤ 4 KiB ─▶ 3 parts ─▶ header: alg ∈ {EdDSA, ES256}, typ at+jwt, no crit
//!        ─▶ kid ∈ key set ─▶ header alg == that key's alg ─▶ signature (jsonwebtoken + ring)
//!        ─▶ typed claims ─▶ iss, aud ─▶ exp, nbf, iat against `now` ± leeway ─▶ VerifiedToken
//! ```
//! The algorithm check happens before the library sees the token and again inside it (its key-family check):
//! a token whose header says HS256, with the Ed25519 public key as the HMAC secret, never reaches a MAC.
//! What is *not* checked here: whether the API key behind the token (`client_id` claim) is still valid. The agent
//! looks it up in the same snapshot it admits with, so a revoked key kills its tokens at once.
use crate::claims::{Claims, TOKEN_TYPE, unix_seconds};
use crate::error::{KeyError, TokenError};
use crate::jose;
use crate::keys::{Alg, Jwks, PublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use ring::digest::{SHA256, digest};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// Longest token accepted; longer input is refused before it is split, decoded or hashed.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A token whose signature and claims checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The signing key's id (JWS header `kid`).
    pub kid: String,
    pub claims: Claims,
    /// What the gateway derives from the claims once (its per-token grant), kept with the cached token.
    pub derived: Derived,
}

/// A value a consumer derives from a verified token's claims, computed on first use and then shared by every
/// cache hit of that token: rebuilding the gateway's grant (a `jti` copy, scope sets, an end-user hash and an
/// allocation) on every request was about a third of a cached token's admission. Not part of the token's value:
/// tokens compare equal whatever was derived, and a clone starts empty.
#[derive(Default)]
pub struct Derived(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl Derived {
    /// The derived value, computed by `init` the first time; `None` if a value of another type was derived first.
    pub fn get_or_init<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(init())).downcast_ref::<T>()
    }
}

impl Clone for Derived {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Derived(..)" } else { "Derived(empty)" })
    }
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

/// Verifies tokens against a key set, one issuer and one audience. Immutable: the agent builds a new one when
/// the published keys change and swaps it with its snapshot.
pub struct Verifier {
    keys: HashMap<String, PublicKey>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    /// Identifies keys + issuer + audience + leeway, so a cache entry made under another configuration (a key
    /// since dropped, say) is never served (cache.rs).
    fingerprint: u64,
    eddsa: Validation,
    es256: Validation,
    rs256: Validation,
}

/// The library's own claim checks are off: it reads the system clock, and this crate takes `now` from the
/// caller. Time, issuer and audience are checked on the typed [`Claims`], where a claim of the wrong JSON type
/// fails to parse instead of being skipped (the class of CVE-2026-25537).
pub(crate) fn library_validation(alg: Alg) -> Validation {
    let mut validation = Validation::new(alg.jose());
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
}

impl Verifier {
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        leeway: Duration,
        keys: impl IntoIterator<Item = PublicKey>,
    ) -> Result<Verifier, KeyError> {
        let mut by_kid = HashMap::new();
        for key in keys {
            if let Some(twin) = by_kid.insert(key.kid.clone(), key) {
                return Err(KeyError::DuplicateKid(twin.kid));
            }
        }
        // At start-up, so ring is the provider before anything else in the process asks jsonwebtoken for one.
        jose::install();
        let (issuer, audience, leeway_secs) = (issuer.into(), audience.into(), leeway.as_secs());
        let fingerprint = fingerprint(&by_kid, &issuer, &audience, leeway_secs);
        Ok(Verifier {
            keys: by_kid,
            issuer,
            audience,
            leeway_secs,
            fingerprint,
            eddsa: library_validation(Alg::EdDSA),
            es256: library_validation(Alg::ES256),
            rs256: library_validation(Alg::RS256),
        })
    }

    /// From a JWKS document (the gateway config's, or [`KeyRing::jwks`](crate::KeyRing::jwks)). A key this
    /// crate cannot verify with is an error, not skipped: the published set is ours and should be all usable.
    pub fn from_jwks(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        leeway: Duration,
        jwks: &Jwks,
    ) -> Result<Verifier, KeyError> {
        let keys = jwks.keys.iter().map(PublicKey::from_jwk).collect::<Result<Vec<_>, _>>()?;
        Self::new(issuer, audience, leeway, keys)
    }

    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway_secs)
    }
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge { max: MAX_TOKEN_BYTES });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let header = parse_header(header)?;
        let alg = Alg::from_name(&header.alg).ok_or(TokenError::AlgNotAllowed)?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed("crit header parameters are not supported"));
        }
        // RFC 7515: `typ` compares case-insensitively, and `application/` may be omitted.
        let typ = header.typ.as_deref().unwrap_or_default().to_ascii_lowercase();
        if typ != TOKEN_TYPE && typ.strip_prefix("application/") != Some(TOKEN_TYPE) {
            return Err(TokenError::Malformed("typ is not at+jwt"));
        }
        let key = header.kid.as_deref().and_then(|kid| self.keys.get(kid)).ok_or(TokenError::UnknownKid)?;
        if key.alg != alg {
            return Err(TokenError::AlgNotAllowed);
        }
        let validation = match key.alg {
            Alg::EdDSA => &self.eddsa,
            Alg::ES256 => &self.es256,
            Alg::RS256 => &self.rs256,
        };
        jose::install();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::AlgNotAllowed,
                ErrorKind::Json(_) => TokenError::Malformed("claims are not the expected JSON"),
                _ => TokenError::Malformed("undecodable part"),
            })?
            .claims;
        self.check_claims(&claims, now)?;
        Ok(VerifiedToken { kid: key.kid.clone(), claims, derived: Derived::default() })
    }

    fn check_claims(&self, claims: &Claims, now: DateTime<Utc>) -> Result<(), TokenError> {
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        let now = unix_seconds(now);
        if now >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(TokenError::Expired);
        }
        let not_before = claims.nbf.unwrap_or(0).max(claims.iat);
        if not_before > now.saturating_add(self.leeway_secs) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    /// The first second at which a token is refused as expired: `exp` + leeway. Cache entries end there.
    pub(crate) fn valid_until(&self, claims: &Claims) -> u64 {
        claims.exp.saturating_add(self.leeway_secs)
    }
}

#[derive(Deserialize)]
pub(crate) struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub crit: Option<serde::de::IgnoredAny>,
}

/// serde refuses a header with a repeated member, so `{"alg":"EdDSA","alg":"none"}` cannot mean two things.
pub(crate) fn parse_header(part: &str) -> Result<Header, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed("header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("header is not a JOSE header"))
}

fn fingerprint(keys: &HashMap<String, PublicKey>, issuer: &str, audience: &str, leeway_secs: u64) -> u64 {
    let mut sorted: Vec<&PublicKey> = keys.values().collect();
    sorted.sort_by(|a, b| a.kid.cmp(&b.kid));
    let mut material = Vec::new();
    for part in [issuer.as_bytes(), audience.as_bytes(), &leeway_secs.to_be_bytes()] {
        material.extend_from_slice(&(part.len() as u64).to_be_bytes());
        material.extend_from_slice(part);
    }
    for key in sorted {
        for part in [key.kid.as_bytes(), key.alg.as_str().as_bytes(), key.decoding.as_bytes()] {
            material.extend_from_slice(&(part.len() as u64).to_be_bytes());
            material.extend_from_slice(part);
        }
    }
    u64::from_be_bytes(digest(&SHA256, &material).as_ref()[..8].try_into().expect("8 bytes"))
}
