//! Session tokens on the agent: the signing-key ring it mints with, the verifier every door checks tokens
//! with, and the documents other services verify them with.
//!
//! ```text
//!  config source (standalone state / signing shard) ─▶ Tokens::set_ring ─▶ ArcSwap<Keys{ring, verifier, jwks}>
//!  door ─▶ Gateway::authenticate ─▶ Tokens::identify ─▶ VerifyCache (signature once per token)
//!                                        └─▶ infergate_gate::token::identify (the key, in the same snapshot)
//!  POST /v1/oauth/token ─▶ issue::client_credentials ─▶ mint(ring.signing_key(now))
//!  open stream: stream::Terms (exp + grace, in `ready`) · refresh ─▶ stream::refresh ─▶ the stream's new token
//!  GET /.well-known/jwks.json, /.well-known/openid-configuration ─▶ Tokens::jwks / discovery
//! ```
//! Verification is local: no call leaves the agent. The cache keys verified tokens by SHA-256 and is served
//! only under the verifier that produced the entry, so a key dropped from the ring stops verifying at once.
pub mod end_users;
pub mod external;
pub mod issue;
pub mod stream;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use infergate_gate::admission::Identity;
use infergate_gate::refusal::Refusal;
use infergate_gate::snapshot::{KeyRef, Snapshot};
use infergate_token::{Jwks, KeyRing, OpenIdConfiguration, RotationPolicy, Verifier, VerifyCache};
use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::Arc;
use std::time::Duration;

/// Verified tokens kept; a token is about 500 bytes and its claims a few hundred more.
const CACHE_CAPACITY: usize = 16_384;

/// The signing ring (where this agent mints) and what verifies against it, swapped together.
struct Keys {
    ring: Option<KeyRing>,
    verifier: Verifier,
    jwks: Jwks,
}

/// Tokens minted and refused. Labels are bounded by config (tier) or by code (reason): never a key id or jti.
#[derive(Clone)]
pub struct TokenMetrics {
    minted: IntCounterVec,
    refused: IntCounterVec,
    refreshes: IntCounterVec,
}

impl TokenMetrics {
    fn register(registry: &Registry) -> Self {
        let minted = IntCounterVec::new(
            Opts::new("tokens_minted_total", "Session tokens minted at POST /v1/oauth/token, by tier"),
            &["tier"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "tokens_refused_total",
                "Session tokens refused at a door (verification category, or the key's refusal code) and token \
                 requests refused (RFC 6749 error)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let refreshes = IntCounterVec::new(
            Opts::new(
                "token_refreshes_total",
                "In-stream token refreshes: accepted, or the refusal code of a refused one (the stream goes on)",
            ),
            &["result"],
        )
        .expect("valid metric");
        registry.register(Box::new(minted.clone())).expect("metric names are unique");
        registry.register(Box::new(refused.clone())).expect("metric names are unique");
        registry.register(Box::new(refreshes.clone())).expect("metric names are unique");
        TokenMetrics { minted, refused, refreshes }
    }

    pub fn refreshed(&self, result: &str) {
        self.refreshes.with_label_values(&[result]).inc();
    }

    pub fn minted(&self, tier: &str) {
        self.minted.with_label_values(&[tier]).inc();
    }

    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}

pub struct Tokens {
    issuer: String,
    audience: String,
    rotation: RotationPolicy,
    keys: ArcSwap<Keys>,
    cache: VerifyCache,
    pub metrics: TokenMetrics,
    /// GPU-seconds per end user (tokens minted with `end_user`).
    pub end_users: end_users::EndUserUsage,
    /// The JWKS of the external issuers policies trust, and their tokens' verification.
    pub external: external::ExternalIssuers,
}

/// A token refused at a door, with the key it names when the signature checked out (for the request record).
pub struct TokenRefused {
    pub refusal: Refusal,
    pub key: Option<KeyRef>,
    pub jti: Option<String>,
}

impl Tokens {
    pub fn new(issuer: String, audience: String, registry: &Registry) -> Self {
        let rotation = RotationPolicy::default();
        let verifier = Verifier::new(issuer.clone(), audience.clone(), rotation.leeway, [])
            .expect("an empty key set has no duplicate");
        let keys = Keys { ring: None, verifier, jwks: Jwks::default() };
        Tokens {
            issuer,
            audience,
            rotation,
            keys: ArcSwap::from_pointee(keys),
            cache: VerifyCache::new(CACHE_CAPACITY),
            metrics: TokenMetrics::register(registry),
            end_users: end_users::EndUserUsage::register(registry),
            external: external::ExternalIssuers::new(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub fn audience(&self) -> &str {
        &self.audience
    }
    /// The schedule config sources rotate the ring on (`KeyRing::plan`).
    pub fn rotation(&self) -> &RotationPolicy {
        &self.rotation
    }

    /// Installs the signing ring (every public key of it verifies; its current key signs).
    pub fn set_ring(&self, ring: KeyRing) -> anyhow::Result<()> {
        let verifier =
            Verifier::new(self.issuer.clone(), self.audience.clone(), self.rotation.leeway, ring.public_keys())
                .map_err(|e| anyhow::anyhow!("the signing key ring cannot verify: {e}"))?;
        let jwks = ring.jwks();
        self.keys.store(Arc::new(Keys { ring: Some(ring), verifier, jwks }));
        Ok(())
    }

    pub fn jwks(&self) -> Jwks {
        self.keys.load().jwks.clone()
    }

    pub fn discovery(&self) -> OpenIdConfiguration {
        OpenIdConfiguration::new(&self.issuer, [])
    }

    /// Verifies a presented token (signature once, then from the cache) and finds its key in `snapshot`.
    pub fn identify(&self, snapshot: &Snapshot, token: &str, now: DateTime<Utc>) -> Result<Identity, TokenRefused> {
        let keys = self.keys.load();
        let verified = match self.cache.verify(&keys.verifier, token, now) {
            Ok(verified) => verified,
            Err(error) => {
                // Not one of ours: a token of an external issuer some policy trusts, or nothing.
                if let Some(external) = self.external.identify(snapshot, token, keys.verifier.leeway(), now) {
                    return external.map_err(|refusal| {
                        self.metrics.refused(refusal.code.as_str());
                        TokenRefused { refusal, key: None, jti: None }
                    });
                }
                self.metrics.refused(error.category());
                return Err(TokenRefused { refusal: infergate_gate::token::refusal(&error), key: None, jti: None });
            }
        };
        infergate_gate::token::identify(snapshot, &verified, keys.verifier.leeway(), now).map_err(|refusal| {
            self.metrics.refused(refusal.code.as_str());
            TokenRefused {
                refusal,
                key: KeyRef::parse(&verified.claims.client_id),
                jti: Some(verified.claims.jti.clone()),
            }
        })
    }

    /// Drops expired cache entries (on the agent's periodic tick).
    pub fn purge_expired(&self, now: DateTime<Utc>) {
        self.cache.purge_expired(now);
    }

    /// Runs `f` with the key that signs at `now`, if this agent has a ring.
    fn with_signing_key<T>(&self, now: DateTime<Utc>, f: impl FnOnce(&infergate_token::SigningKey) -> T) -> Option<T> {
        let keys = self.keys.load();
        keys.ring.as_ref().map(|ring| f(ring.signing_key(now)))
    }

    /// Mints with the key that signs at `now`; `None` when this agent has no ring (yet). Logs the `jti` only.
    pub fn mint(
        &self,
        grant: &infergate_token::Grant,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> Option<Result<infergate_token::Minted, infergate_token::TokenError>> {
        let minted = self.with_signing_key(now, |key| infergate_token::mint(key, grant, now, lifetime))?;
        if let Ok(minted) = &minted {
            self.metrics.minted(&grant.tier);
            tracing::info!(
                target: "infergate::audit",
                event = "token_minted",
                jti = %minted.jti,
                key_id = %grant.key_id,
                policy = %grant.policy,
                expires_in_seconds = minted.lifetime.as_secs(),
                "session token minted"
            );
        }
        Some(minted)
    }

    /// The leeway verifiers allow (a token lives `exp` + this).
    pub fn leeway(&self) -> Duration {
        self.rotation.leeway
    }
}

pub use infergate_token::rotate;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn without_a_ring_nothing_verifies_and_nothing_signs() {
        let tokens = Tokens::new("http://gw".into(), "infergate".into(), &Registry::new());
        assert_eq!(tokens.jwks(), Jwks::default());
        assert!(tokens.with_signing_key(t0(), |_| ()).is_none());
        let refused = tokens
            .identify(&Snapshot::empty(), "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6IngifQ.e30.c2ln", t0())
            .err()
            .expect("refused");
        assert_eq!(refused.refusal.code, infergate_gate::refusal::RefusalCode::BadToken);
        assert!(refused.refusal.message.contains("unknown_kid"), "{}", refused.refusal.message);
    }
}
