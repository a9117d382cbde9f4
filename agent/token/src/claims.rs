//! The token's claims and minting.
//!
//! ```text
//!  Grant (policy, key id, tier, Granted scope, limits, end user) ─mint(&SigningKey, now, lifetime)─▶ Minted
//!      header {alg: EdDSA, typ: at+jwt, kid}  payload Claims  signature (ring Ed25519)
//! ```
//! Registered claims keep their standard names so any JWT library reads them: RFC 7519's, and RFC 9068's
//! `client_id` (the API key id, which is the OAuth client id at the token endpoint). infergate's own claims
//! have short names because the token rides in gRPC metadata and in every WebSocket upgrade: `tier`, `mdl`
//! (models), `ftr` (features), `mas` (max audio seconds), `cdc` (codecs); `act` carries the end user.
use crate::error::TokenError;
use crate::jose;
use crate::keys::SigningKey;
use crate::scope::Granted;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// The longest lifetime [`mint`] accepts. Key rotation keeps a retired public key for at least this long
/// (`RotationPolicy::max_token_lifetime` must not be shorter).
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// RFC 9068 explicit typing: a JWT of any other `typ` is not one of our access tokens (RFC 8725 section 3.11).
pub const TOKEN_TYPE: &str = "at+jwt";

/// An end user of the app that holds the key, RFC 8693 `act` style: the key's policy is the subject, the
/// token acts for this user inside the policy's budget. The id is the app's, opaque to infergate; its `Debug`
/// is redacted (user ids are personal data: hash them before they reach a metric or a log line).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Actor { sub: <redacted> }")
    }
}

/// The payload of an infergate access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The policy the key belongs to, `namespace/name`.
    pub sub: String,
    /// One audience; a token with an array `aud` is not ours and does not parse.
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// 128 random bits, base64url: the only token-derived value that may be logged.
    pub jti: String,
    /// The API key id (`kid_` + 16 hex) the token was minted from, the OAuth client id. Not the JWS `kid`
    /// (that names the signing key).
    pub client_id: String,
    pub tier: String,
    #[serde(rename = "mdl", default, skip_serializing_if = "Option::is_none")]
    pub models: Option<BTreeSet<String>>,
    #[serde(rename = "ftr", default, skip_serializing_if = "Option::is_none")]
    pub features: Option<BTreeSet<String>>,
    /// A cap below the endpoint's `maxAudioSeconds`, per request and per stream.
    #[serde(rename = "mas", default, skip_serializing_if = "Option::is_none")]
    pub max_audio_seconds: Option<u32>,
    /// Codecs allowed on top of the endpoint's list (intersected at admission).
    #[serde(rename = "cdc", default, skip_serializing_if = "Option::is_none")]
    pub codecs: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

impl Claims {
    /// The scope narrowing the token carries.
    pub fn granted(&self) -> Granted {
        Granted { models: self.models.clone(), features: self.features.clone() }
    }
    pub fn expires_at(&self) -> DateTime<Utc> {
        seconds_to_time(self.exp)
    }
    pub fn end_user(&self) -> Option<&str> {
        self.act.as_ref().map(|a| a.sub.as_str())
    }
}

pub(crate) fn seconds_to_time(secs: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whole seconds since the epoch; instants before 1970 (a broken clock) count as 0.
pub(crate) fn unix_seconds(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

/// What the token endpoint decided to grant, after authenticating the client and narrowing its scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub issuer: String,
    pub audience: String,
    /// `namespace/name` of the key's policy.
    pub policy: String,
    /// The API key id the client authenticated with.
    pub key_id: String,
    pub tier: String,
    pub scope: Granted,
    pub max_audio_seconds: Option<u32>,
    pub codecs: Option<BTreeSet<String>>,
    pub end_user: Option<String>,
    /// For tokens handed out ahead of their use; `None` means valid from `iat`.
    pub not_before: Option<DateTime<Utc>>,
}

/// A minted token, and what the token endpoint and the audit log need from it.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
    /// `expires_in` of the token response.
    pub lifetime: Duration,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted").field("jti", &self.jti).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).expect("the system RNG works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The lifetime to mint with: `wanted`, cut short by every deadline that is set (the key's `valid_until`, the
/// policy's `expiresAt`, ...). `None` when a deadline has passed or leaves under a second.
pub fn lifetime_within(
    now: DateTime<Utc>,
    wanted: Duration,
    deadlines: impl IntoIterator<Item = Option<DateTime<Utc>>>,
) -> Option<Duration> {
    let mut lifetime = wanted;
    for deadline in deadlines.into_iter().flatten() {
        let left = (deadline - now).to_std().ok()?;
        lifetime = lifetime.min(left);
    }
    (lifetime.as_secs() >= 1).then(|| Duration::from_secs(lifetime.as_secs()))
}

/// Signs a token for `grant`, valid from `now` for `lifetime` (whole seconds, 1 s to [`MAX_LIFETIME`]).
pub fn mint(key: &SigningKey, grant: &Grant, now: DateTime<Utc>, lifetime: Duration) -> Result<Minted, TokenError> {
    let secs = lifetime.as_secs();
    if secs == 0 || lifetime > MAX_LIFETIME {
        return Err(TokenError::InvalidLifetime { max_secs: MAX_LIFETIME.as_secs() });
    }
    let iat = unix_seconds(now);
    let claims = Claims {
        iss: grant.issuer.clone(),
        sub: grant.policy.clone(),
        aud: grant.audience.clone(),
        exp: iat + secs,
        iat,
        nbf: grant.not_before.map(unix_seconds),
        jti: random_jti(),
        client_id: grant.key_id.clone(),
        tier: grant.tier.clone(),
        models: grant.scope.models.clone(),
        features: grant.scope.features.clone(),
        max_audio_seconds: grant.max_audio_seconds,
        codecs: grant.codecs.clone(),
        act: grant.end_user.clone().map(|sub| Actor { sub }),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.into());
    header.kid = Some(key.kid().to_owned());
    jose::install();
    let token = jsonwebtoken::encode(&header, &claims, key.encoding_key())
        .map_err(|_| TokenError::Signing("the signing key was refused by the JOSE provider"))?;
    Ok(Minted { token, jti: claims.jti, expires_at: seconds_to_time(claims.exp), lifetime: Duration::from_secs(secs) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn lifetime_is_cut_by_the_nearest_deadline() {
        let ten_min = Duration::from_secs(600);
        let in_5 = Some(t0() + chrono::Duration::minutes(5));
        let in_20 = Some(t0() + chrono::Duration::minutes(20));
        assert_eq!(lifetime_within(t0(), ten_min, [None, in_20]), Some(ten_min));
        assert_eq!(lifetime_within(t0(), ten_min, [in_20, in_5]), Some(Duration::from_secs(300)));
    }

    #[test]
    fn no_lifetime_once_a_deadline_has_passed() {
        let past = Some(t0() - chrono::Duration::seconds(1));
        assert_eq!(lifetime_within(t0(), Duration::from_secs(600), [past]), None);
        assert_eq!(lifetime_within(t0(), Duration::from_secs(600), [Some(t0())]), None);
        let sub_second = Some(t0() + chrono::Duration::milliseconds(900));
        assert_eq!(lifetime_within(t0(), Duration::from_secs(600), [sub_second]), None);
    }

    #[test]
    fn end_user_debug_is_redacted() {
        let actor = Actor { sub: "alice@example.com".into() };
        assert!(!format!("{actor:?}").contains("alice"));
    }
}
