//! Session tokens on an open stream: the token's expiry with a grace, and in-stream refresh.
//!
//! ```text
//!  ready ─▶ client learns token_expires_at (exp, Unix seconds) and token_grace_seconds
//!  refresh {token} ─▶ verify (signature, exp, the key in the current snapshot: revocation applies)
//!                  ─▶ check_refresh: same key, policy and end user, scope within the stream's, stream's model+feature allowed
//!                  ─▶ accepted: the stream runs on the new token (its exp) ─▶ "refreshed"
//!                  ─▶ refused: "refresh_refused" {code, message}; the stream goes on under its old token
//!  exp + grace, no refresh ─▶ the session flushes the pending segment, sends the final, closes token_expired
//! ```
//! A refused refresh does not end the stream: the old token still holds until its own expiry, and a client whose
//! refresh raced a clock or asked for the wrong scope can still send a correct one. The stream ends only when its
//! token has run out.
use crate::gateway::Gateway;
use chrono::{DateTime, Utc};
use infergate_gate::admission::{Grant, Identity, TokenGrant};
use infergate_gate::refusal::{Refusal, RefusalCode};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A token a client presented on a running stream. Its `Debug` never shows it.
pub struct Presented(pub String);

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Presented(<token>)")
    }
}

/// What the `ready` message tells a client of a token stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    /// The token's `exp`.
    pub expires_at: DateTime<Utc>,
    /// How long the stream runs on after `expires_at` without a refresh.
    pub grace: Duration,
}

impl Terms {
    pub fn of(identity: &Identity, grace: Duration) -> Option<Terms> {
        identity.token.as_ref().map(|token| Terms { expires_at: token.expires_at, grace })
    }

    /// When the stream closes for its token, on the session's clock (`clock` is `now` there): `exp` + grace, or
    /// at once when that has passed.
    pub fn close_at(&self, now: DateTime<Utc>, clock: Instant) -> Instant {
        let grace = chrono::Duration::from_std(self.grace).unwrap_or_default();
        clock + (self.expires_at + grace - now).to_std().unwrap_or(Duration::ZERO)
    }
}

/// When a stream of `identity` closes for its token, on the tokio clock; `None` for a stream opened with a key.
pub fn close_at(identity: &Identity, grace: Duration) -> Option<Instant> {
    Terms::of(identity, grace).map(|terms| terms.close_at(Utc::now(), Instant::now()))
}

/// The refusal a stream closes with when its token ran out.
pub fn expired(grace: Duration) -> Refusal {
    Refusal::new(
        RefusalCode::TokenExpired,
        format!(
            "the stream's session token expired and was not refreshed within {} s; the pending result was sent. \
             Refresh before exp ({{\"type\":\"refresh\",\"token\":...}}) or open a new stream with a new token",
            grace.as_secs()
        ),
    )
}

/// Whether `fresh` (a token verified and identified in the current snapshot) may replace `current`'s token on a
/// stream admitted for `grant`'s model and feature. Returns the new token's grant.
pub fn check_refresh(current: &Identity, fresh: &Identity, grant: &Grant) -> Result<Arc<TokenGrant>, Refusal> {
    let Some(old) = &current.token else {
        return Err(Refusal::bad_request(
            "this stream was opened with an API key, not a session token: there is nothing to refresh",
        ));
    };
    let new = fresh.token.as_ref().expect("identified from a token");
    if fresh.key != current.key || fresh.policy.name != current.policy.name {
        return Err(Refusal::new(
            RefusalCode::BadToken,
            "refresh refused: the token was minted from another key or policy than the stream's; refresh with a \
             token minted from the same key",
        ));
    }
    if new.end_user != old.end_user {
        return Err(Refusal::new(
            RefusalCode::BadToken,
            "refresh refused: the token acts for another end user than the stream's (or for none); refresh with a \
             token minted for the same end_user",
        ));
    }
    if !new.scope.within(&old.scope) {
        return Err(Refusal::new(
            RefusalCode::OutOfScope,
            format!(
                "refresh refused: the token's scope ({}) is wider than the stream's ({}); request the same scope or \
                 a narrower one",
                new.scope, old.scope
            ),
        ));
    }
    new.check_scope(&grant.endpoint.shard.model, grant.feature)?;
    Ok(Arc::clone(new))
}

/// Checks a refresh against the stream: the presented token must verify, name the same key, policy and end
/// user, and not widen the scope. Changes nothing (the session binds the new token, then [`apply`]s it).
pub fn check(gateway: &Gateway, grant: &Grant, presented: &Presented) -> Result<Arc<TokenGrant>, Refusal> {
    if !infergate_gate::token::looks_like_token(presented.0.trim()) {
        return Err(Refusal::new(
            RefusalCode::BadToken,
            "refresh refused (malformed): send a session token from POST /v1/oauth/token, not an API key",
        ));
    }
    let snapshot = gateway.snapshot();
    gateway
        .tokens
        .identify(&snapshot, presented.0.trim(), Utc::now())
        .map_err(|refused| refused.refusal)
        .and_then(|fresh| check_refresh(&grant.identity, &fresh, grant))
}

/// Puts a checked refresh into effect, or records its refusal (the stream goes on under its current token):
/// metrics and the audit line (the `jti`s, never a token).
pub fn apply(
    gateway: &Gateway,
    grant: &mut Grant,
    checked: Result<Arc<TokenGrant>, Refusal>,
    stream_id: u64,
) -> Result<Terms, Refusal> {
    let tokens = &gateway.tokens;
    let old_jti = grant.identity.token.as_ref().map(|t| t.jti.clone()).unwrap_or_default();
    match checked {
        Ok(new) => {
            tokens.metrics.refreshed("accepted");
            tracing::info!(
                target: "infergate::audit",
                event = "stream_token_refreshed",
                stream_id,
                jti = %old_jti,
                new_jti = %new.jti,
                "stream token refreshed"
            );
            let terms = Terms { expires_at: new.expires_at, grace: gateway.settings.token_grace };
            grant.identity.token = Some(new);
            Ok(terms)
        }
        Err(refusal) => {
            tokens.metrics.refreshed(refusal.code.as_str());
            tracing::info!(
                target: "infergate::audit",
                event = "stream_token_refresh_refused",
                stream_id,
                jti = %old_jti,
                code = refusal.code.as_str(),
                "stream token refresh refused; the stream goes on under its current token"
            );
            Err(refusal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_crds::endpoint::Feature;
    use infergate_gate::admission::{self, Request};
    use infergate_gate::snapshot::{Snapshot, SnapshotOptions};
    use infergate_gate::testing::{key, mk_endpoint, mk_policy, t0};
    use infergate_token::Granted;

    fn world() -> Snapshot {
        let scoped = |p: infergate_gate::testing::PolicyBuilder| {
            p.scope("whisper", "whisper-1", &[Feature::Transcribe]).scope("other", "other-1", &[Feature::Transcribe])
        };
        let shards = vec![
            mk_endpoint("whisper", "whisper-1").shard(),
            mk_endpoint("other", "other-1").shard(),
            scoped(mk_policy("app").key(&key(1))).shard(),
            scoped(mk_policy("else").key(&key(2))).shard(),
        ];
        Snapshot::build(&shards, SnapshotOptions::default()).0
    }

    /// The identity of key `n` as if it came from a token with `scope`.
    fn token_identity(snapshot: &Snapshot, n: u8, scope: &str, jti: &str) -> Identity {
        let mut identity = admission::authenticate(snapshot, key(n).expose(), t0()).unwrap();
        let granted = if scope.is_empty() {
            Granted::everything()
        } else {
            let allowed =
                infergate_token::Allowed::new().model("whisper-1", ["transcribe"]).model("other-1", ["transcribe"]);
            infergate_token::narrow(scope, &allowed).unwrap()
        };
        identity.token = Some(Arc::new(TokenGrant {
            jti: jti.into(),
            scope: granted,
            expires_at: t0(),
            valid_until: t0() + chrono::Duration::seconds(60),
            end_user: None,
            max_audio_seconds: None,
            codecs: None,
        }));
        identity
    }

    fn stream_grant(snapshot: &Snapshot, identity: &Identity) -> Grant {
        let request = Request { model: "whisper-1", feature: Feature::Transcribe, origin: None };
        admission::authorize(snapshot, identity.clone(), &request).unwrap()
    }

    #[test]
    fn a_same_or_narrower_token_of_the_same_key_refreshes() {
        let snapshot = world();
        let current = token_identity(&snapshot, 1, "", "old");
        let grant = stream_grant(&snapshot, &current);
        let same = token_identity(&snapshot, 1, "", "new");
        assert_eq!(check_refresh(&current, &same, &grant).unwrap().jti, "new");
        let narrower = token_identity(&snapshot, 1, "model:whisper-1", "narrow");
        assert_eq!(check_refresh(&current, &narrower, &grant).unwrap().jti, "narrow");
    }

    #[test]
    fn a_wider_token_is_refused_as_out_of_scope() {
        let snapshot = world();
        let current = token_identity(&snapshot, 1, "model:whisper-1", "old");
        let grant = stream_grant(&snapshot, &current);
        let wider = token_identity(&snapshot, 1, "", "wide");
        assert_eq!(check_refresh(&current, &wider, &grant).unwrap_err().code, RefusalCode::OutOfScope);
    }

    #[test]
    fn a_token_that_no_longer_reaches_the_streams_model_is_refused() {
        let snapshot = world();
        let current = token_identity(&snapshot, 1, "", "old");
        let grant = stream_grant(&snapshot, &current);
        let elsewhere = token_identity(&snapshot, 1, "model:other-1", "other");
        assert_eq!(check_refresh(&current, &elsewhere, &grant).unwrap_err().code, RefusalCode::OutOfScope);
    }

    #[test]
    fn a_token_of_another_key_is_refused_as_bad_token() {
        let snapshot = world();
        let current = token_identity(&snapshot, 1, "", "old");
        let grant = stream_grant(&snapshot, &current);
        let foreign = token_identity(&snapshot, 2, "", "foreign");
        assert_eq!(check_refresh(&current, &foreign, &grant).unwrap_err().code, RefusalCode::BadToken);
    }

    #[test]
    fn a_key_stream_has_nothing_to_refresh() {
        let snapshot = world();
        let current = admission::authenticate(&snapshot, key(1).expose(), t0()).unwrap();
        let grant = stream_grant(&snapshot, &current);
        let fresh = token_identity(&snapshot, 1, "", "new");
        assert_eq!(check_refresh(&current, &fresh, &grant).unwrap_err().code, RefusalCode::BadRequest);
    }

    #[test]
    fn the_stream_closes_grace_after_exp() {
        let terms = Terms { expires_at: t0() + chrono::Duration::seconds(10), grace: Duration::from_secs(5) };
        let clock = Instant::now();
        assert_eq!(terms.close_at(t0(), clock), clock + Duration::from_secs(15));
        // In the grace: what is left of it; past it: now. Never a deadline that moves on with the clock.
        assert_eq!(terms.close_at(t0() + chrono::Duration::seconds(12), clock), clock + Duration::from_secs(3));
        assert_eq!(terms.close_at(t0() + chrono::Duration::seconds(60), clock), clock);
        assert_eq!(format!("{:?}", Presented("eyJ.secret.token".into())), "Presented(<token>)");
    }
}
