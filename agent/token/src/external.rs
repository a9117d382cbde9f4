//! Access tokens of external OpenID Connect issuers that a policy trusts (`ApiKeyPolicy.spec.trustedIssuers`).
//!
//! ```text
//!  token ─▶ size ─▶ unverified `iss` (routing only: which policies trust it) ─▶ the issuer's IssuerKeys (JWKS)
//!        ─▶ header: alg ∈ {RS256, ES256, EdDSA}, typ JWT | at+jwt | absent, no crit, kid ∈ keys, alg == key's
//!        ─▶ signature (jsonwebtoken + ring) ─▶ iss == issuer, aud ∋ audience, exp/nbf/iat ± leeway
//!        ─▶ ExternalToken { sub, jti, exp, scope claim, end-user claim }
//! ```
//! Nothing is trusted before the signature checks out except the `iss` used to pick the key set, and a token
//! whose `iss` lies only picks a key set that cannot verify it. The claims are read as JSON values and each one
//! used is checked for its type: a claim of the wrong type is a malformed token, never a skipped check.
use crate::error::{KeyError, TokenError};
use crate::jose;
use crate::keys::{Alg, Jwk, PublicKey};
use crate::verify::{MAX_TOKEN_BYTES, library_validation, parse_header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// One issuer's verification keys, from its JWKS document.
#[derive(Clone, Debug, Default)]
pub struct IssuerKeys {
    keys: HashMap<String, PublicKey>,
}

impl IssuerKeys {
    /// Reads a JWKS document. Keys this crate cannot verify with (encryption keys, other curves, keys without a
    /// `kid`) are skipped, not fatal: an identity provider's set often holds some. Returns the keys and how many
    /// were skipped; a document with no usable key is an error.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<(IssuerKeys, usize), KeyError> {
        let invalid = |reason| KeyError::Invalid { kid: String::new(), reason };
        let document: Value = serde_json::from_slice(bytes).map_err(|_| invalid("the JWKS is not JSON"))?;
        let listed = document.get("keys").and_then(Value::as_array).ok_or_else(|| invalid("the JWKS has no keys"))?;
        let mut keys = HashMap::new();
        let mut skipped = 0;
        for entry in listed {
            let key = serde_json::from_value::<Jwk>(entry.clone()).ok().and_then(|jwk| PublicKey::from_jwk(&jwk).ok());
            match key {
                Some(key) if !keys.contains_key(&key.kid) => {
                    keys.insert(key.kid.clone(), key);
                }
                _ => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(invalid("the JWKS has no RS256, ES256 or EdDSA signing key with a kid"));
        }
        Ok((IssuerKeys { keys }, skipped))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What one trusted issuer entry asks of a token.
#[derive(Clone, Copy, Debug)]
pub struct IssuerRules<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub scope_claim: &'a str,
    pub end_user_claim: &'a str,
    pub leeway: Duration,
}

/// A verified external token: what the gateway uses of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalToken {
    pub kid: String,
    pub jti: Option<String>,
    pub exp: u64,
    /// The scope claim as one space-separated string (a list claim is joined).
    pub scope: Option<String>,
    /// The end-user claim's value.
    pub end_user: Option<String>,
}

/// The payload's `iss`, unverified: only to pick which trusted issuer's keys may verify the token.
pub fn unverified_issuer(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Verifies `token` against one issuer's keys and rules at `now`.
pub fn verify_external(
    token: &str,
    keys: &IssuerKeys,
    rules: IssuerRules<'_>,
    now: DateTime<Utc>,
) -> Result<ExternalToken, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge { max: MAX_TOKEN_BYTES });
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header = parse_header(header)?;
    let alg = Alg::from_name(&header.alg).ok_or(TokenError::AlgNotAllowed)?;
    if header.crit.is_some() {
        return Err(TokenError::Malformed("crit header parameters are not supported"));
    }
    let typ = header.typ.as_deref().unwrap_or("jwt").to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    if typ != "jwt" && typ != "at+jwt" {
        return Err(TokenError::Malformed("typ is neither JWT nor at+jwt"));
    }
    let key = header.kid.as_deref().and_then(|kid| keys.keys.get(kid)).ok_or(TokenError::UnknownKid)?;
    if key.alg != alg {
        return Err(TokenError::AlgNotAllowed);
    }
    jose::install();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &library_validation(alg))
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::AlgNotAllowed,
            ErrorKind::Json(_) => TokenError::Malformed("claims are not a JSON object"),
            _ => TokenError::Malformed("undecodable part"),
        })?
        .claims;
    let text = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Malformed("a string claim has another JSON type")),
    };
    let seconds = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(TokenError::Malformed("a time claim is not whole seconds")),
    };
    if text("iss")?.as_deref() != Some(rules.issuer) {
        return Err(TokenError::WrongIssuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == rules.audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(rules.audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    let exp = seconds("exp")?.ok_or(TokenError::Malformed("no exp: tokens without an expiry are not accepted"))?;
    let now = crate::claims::unix_seconds(now);
    let leeway = rules.leeway.as_secs();
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    let not_before = seconds("nbf")?.unwrap_or(0).max(seconds("iat")?.unwrap_or(0));
    if not_before > now.saturating_add(leeway) {
        return Err(TokenError::NotYetValid);
    }
    let scope = match claims.get(rules.scope_claim) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| i.as_str().ok_or(TokenError::Malformed("a scope list holds a non-string")))
                .collect::<Result<Vec<_>, _>>()?
                .join(" "),
        ),
        Some(_) => return Err(TokenError::Malformed("the scope claim is neither a string nor a list")),
    };
    let end_user = match claims.get(rules.end_user_claim) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(TokenError::Malformed("the end-user claim is neither a string nor a number")),
    };
    Ok(ExternalToken { kid: key.kid.clone(), jti: text("jti")?, exp, scope, end_user })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    const RULES: IssuerRules<'static> = IssuerRules {
        issuer: "https://idp.example.com/",
        audience: "voice-app",
        scope_claim: "scope",
        end_user_claim: "sub",
        leeway: Duration::from_secs(30),
    };

    /// An EdDSA-signed token with these claims and header `typ`, from a key the tests control.
    fn signed(key: &SigningKey, typ: &str, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some(typ.into());
        header.kid = Some(key.kid().into());
        jose::install();
        jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap()
    }

    fn keys_of(key: &SigningKey) -> IssuerKeys {
        let jwks = serde_json::json!({"keys": [key.jwk(), {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]});
        let (keys, skipped) = IssuerKeys::from_jwks_json(jwks.to_string().as_bytes()).unwrap();
        assert_eq!((keys.len(), skipped), (1, 1));
        keys
    }

    fn claims(extra: Value) -> Value {
        let exp = t0().timestamp() + 600;
        let mut base = serde_json::json!({"iss": RULES.issuer, "aud": ["other", "voice-app"], "exp": exp,
            "iat": t0().timestamp(), "sub": "user-42", "scope": "openid model:whisper-1"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        base
    }

    #[test]
    fn a_trusted_token_yields_its_scope_and_end_user() {
        let key = SigningKey::generate(t0(), t0());
        let token = signed(&key, "JWT", claims(serde_json::json!({})));
        assert_eq!(unverified_issuer(&token).as_deref(), Some(RULES.issuer));
        let verified = verify_external(&token, &keys_of(&key), RULES, t0()).unwrap();
        assert_eq!(verified.scope.as_deref(), Some("openid model:whisper-1"));
        assert_eq!(verified.end_user.as_deref(), Some("user-42"));
        let listed = signed(&key, "at+jwt", claims(serde_json::json!({"scope": ["a", "b"], "sub": 7})));
        let verified = verify_external(&listed, &keys_of(&key), RULES, t0()).unwrap();
        assert_eq!((verified.scope.as_deref(), verified.end_user.as_deref()), (Some("a b"), Some("7")));
    }

    #[test]
    fn each_check_refuses_with_its_own_error() {
        let key = SigningKey::generate(t0(), t0());
        let keys = keys_of(&key);
        let check = |c: Value| verify_external(&signed(&key, "JWT", claims(c)), &keys, RULES, t0()).unwrap_err();
        assert_eq!(check(serde_json::json!({"iss": "https://evil/"})), TokenError::WrongIssuer);
        assert_eq!(check(serde_json::json!({"aud": "other"})), TokenError::WrongAudience);
        assert_eq!(check(serde_json::json!({"exp": t0().timestamp() - 31})), TokenError::Expired);
        assert_eq!(check(serde_json::json!({"nbf": t0().timestamp() + 60})), TokenError::NotYetValid);
        assert!(matches!(check(serde_json::json!({"exp": "tomorrow"})), TokenError::Malformed(_)));
        assert!(matches!(check(serde_json::json!({"scope": 5})), TokenError::Malformed(_)));
        let mut no_exp = claims(serde_json::json!({}));
        no_exp.as_object_mut().unwrap().remove("exp");
        let token = signed(&key, "JWT", no_exp);
        assert!(matches!(verify_external(&token, &keys, RULES, t0()), Err(TokenError::Malformed(_))));
        let other = SigningKey::generate(t0(), t0());
        let foreign = signed(&other, "JWT", claims(serde_json::json!({})));
        assert_eq!(verify_external(&foreign, &keys, RULES, t0()).unwrap_err(), TokenError::UnknownKid);
        let odd_typ = signed(&key, "dpop+jwt", claims(serde_json::json!({})));
        assert!(matches!(verify_external(&odd_typ, &keys, RULES, t0()), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn a_jwks_without_a_usable_key_is_refused() {
        assert!(IssuerKeys::from_jwks_json(br#"{"keys": [{"kty": "oct", "k": "eA"}]}"#).is_err());
        assert!(IssuerKeys::from_jwks_json(b"not json").is_err());
    }
}
