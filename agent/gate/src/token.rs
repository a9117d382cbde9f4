//! Session tokens at admission: a verified token is turned into the [`Identity`] of the key it was minted
//! from, looked up in the same snapshot as a presented key, so the key's state decides for its tokens.
//!
//! ```text
//!  VerifiedToken (signature, iss, aud, exp checked by infergate-token)
//!     ─▶ client_id kid_<16 hex> ─▶ KeyRef ─▶ snapshot.key_in_policy(KeyRef, sub) ─▶ identify(digest)
//!          (revoked / expired / not yet valid / suspended / environment: exactly the key's refusals)
//!     ─▶ Identity { token: TokenGrant { jti, scope, expiry } }
//!  authorize: policy scope ─▶ TokenGrant::check_scope (the token's narrowing) ─▶ Origin ─▶ limits
//! ```
//! A token never outlives its key: revoking the key refuses every token minted from it at the next decision,
//! and the stream registry, which re-identifies open streams by the key's digest, closes their streams.
use crate::admission::{self, Identity};
use crate::refusal::{Refusal, RefusalCode};
use crate::snapshot::{KeyRef, Snapshot};
use chrono::{DateTime, Utc};
use infergate_crds::endpoint::Feature;
use infergate_token::{Granted, TokenError, VerifiedToken};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// What a session token adds to the identity of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// The token's id: the only token-derived value that goes into a log or audit line.
    pub jti: String,
    /// The narrowing the token carries, applied on top of the policy's scopes.
    pub scope: Granted,
    /// The token's `exp`.
    pub expires_at: DateTime<Utc>,
    /// `exp` plus the verifier's leeway: the first instant the token is refused as expired.
    pub valid_until: DateTime<Utc>,
    /// The end user the token acts for (`act.sub`), hashed: budgets, stream caps and usage per user use this.
    pub end_user: Option<EndUser>,
    /// `mas`: a cap on the audio seconds of one request or stream, below the endpoint's.
    pub max_audio_seconds: Option<u32>,
    /// `cdc`: the codecs the token may send (on top of the endpoint's list).
    pub codecs: Option<BTreeSet<String>>,
}

/// An end user of the app holding the key, as the gateway knows it: 64 bits of SHA-256 over the policy and
/// the app's user id. The policy is in the hash so that two apps' users never share a budget. This is the only
/// form of the id that reaches a metric, the admin API or a log line (`u_` + 16 hex); an app that wants to map
/// it back computes the same hash (docs/tokens.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndUser(pub u64);

impl EndUser {
    pub fn of(policy: &str, user: &str) -> EndUser {
        // KeyDigest is SHA-256 of a string; the policy's length keeps ("a", "bc") apart from ("ab", "c").
        let digest =
            infergate_crds::key::KeyDigest::of(&format!("infergate-end-user\0{}\0{policy}{user}", policy.len()));
        EndUser(u64::from_be_bytes(digest.0[..8].try_into().expect("8 bytes")))
    }
}

impl std::fmt::Display for EndUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "u_{:016x}", self.0)
    }
}

impl std::fmt::Debug for EndUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A JWS compact serialisation of a JSON header (`{"` is `eyJ` in base64url): three dot-separated parts. API keys
/// start with `sk_`, so the two never look alike and no key is ever handed to the JWT parser.
pub fn looks_like_token(presented: &str) -> bool {
    presented.starts_with("eyJ") && presented.bytes().filter(|b| *b == b'.').count() == 2
}

/// The identity behind a verified token, checked in `snapshot` as the key itself would be at `now`.
pub fn identify(
    snapshot: &Snapshot,
    verified: &VerifiedToken,
    leeway: Duration,
    now: DateTime<Utc>,
) -> Result<Identity, Refusal> {
    let claims = &verified.claims;
    let unknown = || {
        Refusal::new(
            RefusalCode::UnknownKey,
            "the API key this token was minted from is not known here any more (its policy was deleted or the key \
             retired); request a new token with the current key",
        )
    };
    let (key, grant) = derived(verified, leeway);
    let key = key.ok_or_else(|| {
        Refusal::new(
            RefusalCode::BadToken,
            "token refused (malformed): its client_id is not a key id; request a new one",
        )
    })?;
    let record = snapshot.key_in_policy(key, &claims.sub).ok_or_else(unknown)?;
    let environment = snapshot.policy(record.policy).environment;
    let mut identity = admission::identify_record(snapshot, &record, environment, now)?;
    grant.check_live(now)?;
    identity.token = Some(grant);
    Ok(identity)
}

/// What a token's claims give the gateway, whatever the snapshot and the clock: the key id it was minted from
/// and its grant. Built on the token's first use and kept with the cached token, so every cache hit shares them.
struct Derived {
    leeway: Duration,
    key: Option<KeyRef>,
    grant: Arc<TokenGrant>,
}

fn derived(verified: &VerifiedToken, leeway: Duration) -> (Option<KeyRef>, Arc<TokenGrant>) {
    let build = || {
        let claims = &verified.claims;
        let expires_at = claims.expires_at();
        let grant = Arc::new(TokenGrant {
            jti: claims.jti.clone(),
            scope: claims.granted(),
            expires_at,
            valid_until: expires_at + chrono::Duration::from_std(leeway).unwrap_or_default(),
            end_user: claims.end_user().map(|user| EndUser::of(&claims.sub, user)),
            max_audio_seconds: claims.max_audio_seconds,
            codecs: claims.codecs.clone(),
        });
        Derived { leeway, key: KeyRef::parse(&claims.client_id), grant }
    };
    match verified.derived.get_or_init(build) {
        Some(memo) if memo.leeway == leeway => (memo.key, Arc::clone(&memo.grant)),
        _ => {
            let fresh = build();
            (fresh.key, fresh.grant)
        }
    }
}

impl TokenGrant {
    /// Refuses a token past its expiry (a stream start or a ticket redeemed after the token ran out).
    pub fn check_live(&self, now: DateTime<Utc>) -> Result<(), Refusal> {
        if now >= self.valid_until {
            return Err(refusal(&TokenError::Expired));
        }
        Ok(())
    }

    /// Refuses a codec the token does not allow (`cdc`); the endpoint's own list is checked first.
    pub fn check_codec(&self, codec: &str) -> Result<(), Refusal> {
        match &self.codecs {
            Some(codecs) if !codecs.contains(codec) => Err(Refusal::new(
                RefusalCode::UnsupportedCodec,
                format!(
                    "this session token allows only {} audio, not {codec}; send one of those, or request a token \
                     with codecs={codec}",
                    codecs.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The audio seconds one request or stream may carry: the endpoint's maximum, or the token's `mas` if lower.
    /// Returns the cap and whether the token set it (for the refusal's wording).
    pub fn audio_cap(token: Option<&TokenGrant>, endpoint_max: f64) -> (f64, bool) {
        match token.and_then(|t| t.max_audio_seconds) {
            Some(mas) if f64::from(mas) < endpoint_max => (f64::from(mas), true),
            _ => (endpoint_max, false),
        }
    }

    /// Refuses a model or feature outside the token's narrowed scope (the policy's scope is checked first).
    pub fn check_scope(&self, model: &str, feature: Feature) -> Result<(), Refusal> {
        if self.scope.allows(model, feature.as_str()) {
            return Ok(());
        }
        Err(Refusal::new(
            RefusalCode::OutOfScope,
            format!(
                "the token's scope ({}) does not include feature {} on model {:?}; request a token with scope \
                 model:{} feature:{}, or use the key",
                self.scope,
                feature.as_str(),
                model,
                model,
                feature.as_str()
            ),
        ))
    }
}

/// How a token that did not verify is refused. The message names the check that failed (the error's stable
/// category and its text), never the token or a claim value.
pub fn refusal(error: &TokenError) -> Refusal {
    match error {
        TokenError::Expired => Refusal::new(
            RefusalCode::TokenExpired,
            "token has expired; request a new one from POST /v1/oauth/token (or refresh the stream) before it does",
        ),
        other => Refusal::new(RefusalCode::BadToken, format!("token refused ({}): {other}", other.category())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Request;
    use crate::snapshot::SnapshotOptions;
    use crate::testing::{key, mk_endpoint, mk_policy, t0};
    use infergate_crds::key::KeyDigest;
    use infergate_token::Claims;

    fn world() -> Snapshot {
        let transcribe = |p: crate::testing::PolicyBuilder| {
            p.scope("whisper", "whisper-1", &[Feature::Transcribe]).scope("other", "other-1", &[Feature::Transcribe])
        };
        let shards = vec![
            mk_endpoint("whisper", "whisper-1").shard(),
            mk_endpoint("other", "other-1").shard(),
            transcribe(mk_policy("app").key(&key(1)).revoked(&key(2))).shard(),
            transcribe(mk_policy("paused").key(&key(3)).suspended()).shard(),
        ];
        let (snapshot, warnings) = Snapshot::build(&shards, SnapshotOptions::default());
        assert_eq!(warnings, vec![]);
        snapshot
    }

    fn now() -> DateTime<Utc> {
        t0() + chrono::Duration::minutes(1)
    }

    fn kid(n: u8) -> String {
        KeyRef::of(&KeyDigest::of(key(n).expose())).to_string()
    }

    fn verified(client_id: String, sub: &str, models: Option<&[&str]>) -> VerifiedToken {
        let iat = now().timestamp() as u64;
        VerifiedToken {
            kid: "sig_1".into(),
            claims: Claims {
                iss: "http://gw".into(),
                sub: sub.into(),
                aud: "infergate".into(),
                exp: iat + 600,
                iat,
                nbf: None,
                jti: "jti_1".into(),
                client_id,
                tier: "free".into(),
                models: models.map(|m| m.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()),
                features: None,
                max_audio_seconds: None,
                codecs: None,
                act: None,
            },
            derived: Default::default(),
        }
    }

    fn refused(token: VerifiedToken) -> RefusalCode {
        identify(&world(), &token, Duration::ZERO, now()).expect_err("expected a refusal").code
    }

    const WHISPER: Request<'static> = Request { model: "whisper-1", feature: Feature::Transcribe, origin: None };

    #[test]
    fn a_token_is_its_key_in_its_policy() {
        let identity = identify(&world(), &verified(kid(1), "default/app", None), Duration::from_secs(60), now());
        let identity = identity.unwrap();
        assert_eq!(identity.key.to_string(), kid(1));
        assert_eq!(identity.digest, KeyDigest::of(key(1).expose()));
        let token = identity.token.unwrap();
        assert_eq!(token.jti, "jti_1");
        assert_eq!(token.valid_until, now() + chrono::Duration::seconds(660));
    }

    #[test]
    fn a_tokens_grant_is_built_once_per_leeway_and_revocation_still_applies_to_a_cached_token() {
        let token = verified(kid(1), "default/app", None);
        let leeway = Duration::from_secs(60);
        let first = identify(&world(), &token, leeway, now()).unwrap().token.unwrap();
        let again = identify(&world(), &token, leeway, now()).unwrap().token.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a cache hit shares the grant");
        let other = identify(&world(), &token, Duration::ZERO, now()).unwrap().token.unwrap();
        assert_eq!(other.valid_until, other.expires_at, "another leeway gets its own expiry");
        assert_eq!(first.valid_until, first.expires_at + chrono::Duration::seconds(60));
        assert_eq!(token.clone().derived, token.derived, "derived data is not part of a token's value");
        // The key behind it revoked in a newer snapshot: the shared grant does not stand in for the key check.
        let shards = vec![
            mk_endpoint("whisper", "whisper-1").shard(),
            mk_policy("app").scope("whisper", "whisper-1", &[Feature::Transcribe]).revoked(&key(1)).shard(),
        ];
        let (revoked, _) = Snapshot::build(&shards, SnapshotOptions::default());
        let refusal = identify(&revoked, &token, leeway, now()).expect_err("revoked");
        assert_eq!(refusal.code, RefusalCode::KeyRevoked);
    }

    #[test]
    fn a_revoked_key_refuses_its_tokens_with_the_key_code() {
        assert_eq!(refused(verified(kid(2), "default/app", None)), RefusalCode::KeyRevoked);
    }

    #[test]
    fn a_suspended_policy_refuses_its_tokens() {
        assert_eq!(refused(verified(kid(3), "default/paused", None)), RefusalCode::KeySuspended);
    }

    #[test]
    fn a_token_naming_another_policy_finds_no_key() {
        assert_eq!(refused(verified(kid(1), "default/paused", None)), RefusalCode::UnknownKey);
        assert_eq!(refused(verified(kid(1), "nopolicy", None)), RefusalCode::UnknownKey);
    }

    #[test]
    fn a_client_id_that_is_not_a_key_id_is_a_bad_token() {
        for bad in ["kid_XYZ", "kid_0123", "kid_0123456789ABCDEF", "sk_live_x", ""] {
            assert_eq!(refused(verified(bad.into(), "default/app", None)), RefusalCode::BadToken, "{bad:?}");
        }
    }

    #[test]
    fn the_token_scope_narrows_the_policy_scope() {
        let snap = world();
        let token = verified(kid(1), "default/app", Some(&["whisper-1"]));
        let identity = identify(&snap, &token, Duration::ZERO, now()).unwrap();
        assert!(crate::admission::authorize(&snap, identity.clone(), &WHISPER).is_ok());
        let other = Request { model: "other-1", ..WHISPER };
        let refusal = crate::admission::authorize(&snap, identity, &other).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::OutOfScope);
        assert_eq!(
            refusal.message,
            "the token's scope (model:whisper-1) does not include feature transcribe on model \"other-1\"; request a \
             token with scope model:other-1 feature:transcribe, or use the key"
        );
    }

    #[test]
    fn decide_keeps_the_token_and_refuses_it_once_expired() {
        let snap = world();
        let identity = identify(&snap, &verified(kid(1), "default/app", None), Duration::ZERO, now()).unwrap();
        let grant = crate::admission::decide(&snap, &identity, &WHISPER, now()).unwrap();
        assert_eq!(grant.identity.token, identity.token);
        let late = now() + chrono::Duration::seconds(600);
        let refusal = crate::admission::decide(&snap, &identity, &WHISPER, late).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::TokenExpired);
    }

    #[test]
    fn token_refusals_name_the_check_never_the_token() {
        assert_eq!(refusal(&TokenError::Expired).code, RefusalCode::TokenExpired);
        let bad = refusal(&TokenError::UnknownKid);
        assert_eq!(bad.code, RefusalCode::BadToken);
        assert!(bad.message.starts_with("token refused (unknown_kid): "), "{}", bad.message);
        assert_eq!(refusal(&TokenError::AlgNotAllowed).code, RefusalCode::BadToken);
    }

    #[test]
    fn tokens_and_keys_look_different() {
        assert!(looks_like_token("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_token(key(1).expose()));
        assert!(!looks_like_token("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0"));
    }

    #[test]
    fn key_ids_parse_back_to_their_key_ref() {
        let reference = KeyRef::of(&KeyDigest::of(key(1).expose()));
        assert_eq!(KeyRef::parse(&reference.to_string()), Some(reference));
        assert_eq!(KeyRef::parse("kid_00000000000000ff"), Some(KeyRef(255)));
        assert_eq!(KeyRef::parse("kid_00000000000000FF"), None);
        assert_eq!(KeyRef::parse("kid_ff"), None);
    }
}
