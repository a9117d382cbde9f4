//! Tokens of the external OpenID Connect issuers policies trust (`ApiKeyPolicy.spec.trustedIssuers`): the
//! agent keeps each issuer's JWKS and verifies their tokens locally, like its own.
//!
//! ```text
//!  refresh loop (every second) ─▶ snapshot.jwks_uris() ─▶ fetch each missing, stale (5 min) or asked-for
//!                                  (unknown kid, at most every 10 s) JWKS ─▶ ArcSwap<uri ─▶ IssuerKeys>
//!  door ─▶ Tokens::identify ─▶ our own verifier refused it ─▶ unverified iss ─▶ snapshot.trusting(iss)
//!        ─▶ verify_external(that issuer's keys, its audience) ─▶ the policy's current key ─▶ admission::identify
//!        ─▶ Identity { token: TokenGrant { scope from the scope claim, end user from the user claim } }
//! ```
//! An external token is charged to the policy through its current key, so the key's state decides for it as
//! for the policy's own tokens: suspending the policy, or revoking its current key, refuses them at once.
//! While an issuer's keys cannot be fetched, the last good set keeps verifying (an identity provider's outage
//! does not take the gateway down with it); before the first fetch, its tokens are refused with `bad_token`.
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use infergate_gate::admission::{self, Identity, TokenGrant};
use infergate_gate::refusal::{Refusal, RefusalCode};
use infergate_gate::snapshot::Snapshot;
use infergate_gate::token::EndUser;
use infergate_token::{Allowed, Granted, IssuerKeys, IssuerRules, TokenError, narrow, verify_external};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A JWKS older than this is fetched again (identity providers rotate with overlap; 5 minutes is their usual
/// cache lifetime).
const MAX_AGE: Duration = Duration::from_secs(300);
/// The soonest a JWKS is fetched again after a token named a kid it lacks.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

struct Fetched {
    keys: Arc<IssuerKeys>,
    at: Instant,
}

pub struct ExternalIssuers {
    keys: ArcSwap<HashMap<String, Arc<IssuerKeys>>>,
    fetched: Mutex<HashMap<String, Fetched>>,
    /// URIs whose JWKS lacked a token's kid: fetched again at the next turn (rate-limited).
    wanted: Mutex<HashSet<String>>,
    client: reqwest::Client,
}

impl Default for ExternalIssuers {
    fn default() -> Self {
        Self::new()
    }
}

impl ExternalIssuers {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain HTTP client builds");
        ExternalIssuers { keys: ArcSwap::default(), fetched: Mutex::default(), wanted: Mutex::default(), client }
    }

    /// One turn of the refresh loop: fetches the JWKS documents the snapshot's policies need and have not got
    /// fresh, and forgets those no policy names any more.
    pub async fn refresh(&self, snapshot: &Snapshot) {
        let uris = snapshot.jwks_uris();
        let due: Vec<(String, bool)> = {
            let fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            let due: Vec<(String, bool)> = uris
                .iter()
                .filter(|(uri, _)| match fetched.get(uri) {
                    None => true,
                    Some(f) => f.at.elapsed() >= MAX_AGE || (wanted.contains(uri) && f.at.elapsed() >= MIN_REFETCH),
                })
                .cloned()
                .collect();
            for (uri, _) in &due {
                wanted.remove(uri);
            }
            due
        };
        for (uri, insecure) in due {
            match self.fetch(&uri, insecure).await {
                Ok(keys) => {
                    let mut fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
                    fetched.insert(uri.clone(), Fetched { keys: Arc::new(keys), at: Instant::now() });
                }
                Err(why) => {
                    // The last good set stays; retry at the refetch pace, not every second.
                    tracing::warn!(jwks_uri = %uri, reason = why, "could not fetch a trusted issuer's JWKS");
                    let mut fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(f) = fetched.get_mut(&uri) {
                        f.at = Instant::now() - MAX_AGE + MIN_REFETCH;
                    } else {
                        fetched.insert(
                            uri.clone(),
                            Fetched { keys: Arc::default(), at: Instant::now() - MAX_AGE + MIN_REFETCH },
                        );
                    }
                }
            }
        }
        let mut fetched = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
        fetched.retain(|uri, _| uris.iter().any(|(u, _)| u == uri));
        let current = fetched.iter().map(|(uri, f)| (uri.clone(), Arc::clone(&f.keys))).collect();
        self.keys.store(Arc::new(current));
    }

    async fn fetch(&self, uri: &str, insecure: bool) -> Result<IssuerKeys, &'static str> {
        if !uri.starts_with("https://") && !(insecure && uri.starts_with("http://")) {
            return Err("jwksUri is not https:// (set allowInsecureHttp for a test issuer)");
        }
        let response = self.client.get(uri).send().await.map_err(|_| "request failed")?;
        if !response.status().is_success() {
            return Err("the issuer answered with an error status");
        }
        if response.content_length().is_some_and(|n| n as usize > MAX_JWKS_BYTES) {
            return Err("the JWKS is too large");
        }
        let body = response.bytes().await.map_err(|_| "the body could not be read")?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("the JWKS is too large");
        }
        IssuerKeys::from_jwks_json(&body).map(|(keys, _skipped)| keys).map_err(|_| "not a usable JWKS")
    }

    /// The identity behind `token` when a policy in `snapshot` trusts its issuer; `None` when none does (the
    /// token is then refused as the agent's own verifier refused it).
    pub fn identify(
        &self,
        snapshot: &Snapshot,
        token: &str,
        leeway: Duration,
        now: DateTime<Utc>,
    ) -> Option<Result<Identity, Refusal>> {
        let iss = infergate_token::unverified_issuer(token)?;
        let keys = self.keys.load();
        let mut last = None;
        for (policy, trusted) in snapshot.trusting(&iss) {
            let Some(issuer_keys) = keys.get(&trusted.jwks_uri).filter(|k| !k.is_empty()) else {
                self.want(&trusted.jwks_uri);
                last = Some(Err(Refusal::new(
                    RefusalCode::BadToken,
                    "token refused (unknown_kid): the issuer's signing keys are not loaded yet; retry in a few seconds",
                )));
                continue;
            };
            let rules = IssuerRules {
                issuer: &trusted.issuer,
                audience: &trusted.audience,
                scope_claim: trusted.scope_claim(),
                end_user_claim: trusted.end_user_claim(),
                leeway,
            };
            let verified = match verify_external(token, issuer_keys, rules, now) {
                Ok(verified) => verified,
                // Another policy may trust the same issuer for another audience.
                Err(TokenError::WrongAudience) => {
                    last = Some(Err(infergate_gate::token::refusal(&TokenError::WrongAudience)));
                    continue;
                }
                Err(error) => {
                    if error == TokenError::UnknownKid {
                        self.want(&trusted.jwks_uri);
                    }
                    return Some(Err(infergate_gate::token::refusal(&error)));
                }
            };
            return Some(grant(snapshot, policy, &verified, token, leeway, now));
        }
        last
    }

    fn want(&self, uri: &str) {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner()).insert(uri.to_owned());
    }
}

/// The identity of a verified external token: the policy's current key, narrowed by the token's scope.
fn grant(
    snapshot: &Snapshot,
    policy: &infergate_gate::snapshot::PolicyConfig,
    verified: &infergate_token::ExternalToken,
    token: &str,
    leeway: Duration,
    now: DateTime<Utc>,
) -> Result<Identity, Refusal> {
    let digest = policy.current_key.ok_or_else(|| {
        Refusal::new(
            RefusalCode::UnknownKey,
            format!("policy {} trusts this token's issuer but has no current key to charge it to", policy.name),
        )
    })?;
    let mut identity = admission::identify(snapshot, &digest, policy.environment, now)?;
    let allowed = policy.scopes.iter().fold(Allowed::new(), |allowed, (endpoint, features)| {
        allowed.model(snapshot.endpoint(*endpoint).shard.model.clone(), features.iter().map(|f| f.as_str()))
    });
    // Only the gateway's own scope words count; an identity provider's (`openid`, `profile`) are not ours.
    let ours: Vec<&str> = verified
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .filter(|s| s.starts_with("model:") || s.starts_with("feature:"))
        .collect();
    let scope = if ours.is_empty() {
        Granted::everything()
    } else {
        narrow(&ours.join(" "), &allowed).map_err(|e| {
            Refusal::new(
                RefusalCode::OutOfScope,
                format!(
                    "the token's scope asks for more than policy {} allows ({e}); ask the issuer for less",
                    policy.name
                ),
            )
        })?
    };
    let expires_at = DateTime::from_timestamp(i64::try_from(verified.exp).unwrap_or(i64::MAX), 0)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let policy_name = policy.name.to_string();
    // A token without `jti` still needs an id for logs and stream binding: a digest of the token itself.
    let jti = verified.jti.clone().unwrap_or_else(|| {
        let digest = infergate_crds::key::KeyDigest::of(token);
        format!("ext-{}", &digest.to_hex()[..16])
    });
    let grant = TokenGrant {
        jti,
        scope,
        expires_at,
        valid_until: expires_at + chrono::Duration::from_std(leeway).unwrap_or_default(),
        end_user: verified.end_user.as_deref().map(|user| EndUser::of(&policy_name, user)),
        max_audio_seconds: None,
        codecs: None,
    };
    grant.check_live(now)?;
    identity.token = Some(Arc::new(grant));
    Ok(identity)
}
