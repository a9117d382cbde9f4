//! The admission decision: plain synchronous functions over one [`Snapshot`], no I/O, no locks, and no
//! allocation unless the answer is a refusal.
//!
//! ```text
//!  presented key ─▶ prefix, length ─▶ SHA-256 ─▶ lookup by KeyId bits ─▶ ct_eq(digest) ─▶ revoked?
//!                                                   └─ not found: alphabet, checksum ─▶ bad_checksum | unknown_key
//!      ─▶ validity window (valid_from / retiring valid_until / policy expiry) ─▶ suspended?
//!      ─▶ scope: model ─▶ endpoint ∈ scopes, feature ∈ endpoint ∩ scope, environment ─▶ Origin
//!      ─▶ limits (crate::limiter)
//! ```
//! [`authenticate`] + [`authorize`] = [`admit`]. Streams and tickets re-run [`identify`] from the digest they
//! keep, never from the plaintext key.
use crate::refusal::{Refusal, RefusalCode};
use crate::snapshot::{EndpointConfig, KeyRecord, KeyRef, KeyStatus, PolicyConfig, Snapshot};
pub use crate::token::TokenGrant;
use chrono::{DateTime, Utc};
use infergate_crds::endpoint::Feature;
use infergate_crds::gateway::EndpointLimits;
use infergate_crds::key::{ApiKey, Environment, KeyDigest, KeyFormatError};
use std::sync::Arc;

/// What the caller wants to do.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The model name the client asked for (OpenAI `model`, gRPC/WebSocket `model`).
    pub model: &'a str,
    pub feature: Feature,
    /// The browser `Origin` header, if any. Absent for non-browser clients.
    pub origin: Option<&'a str>,
}

/// An authenticated key: which key, and the policy it belongs to.
#[derive(Clone, Debug)]
pub struct Identity {
    pub key: KeyRef,
    pub digest: KeyDigest,
    pub environment: Environment,
    pub policy: Arc<PolicyConfig>,
    /// Set when the caller presented a session token minted from the key (not the key itself): its narrower
    /// scope applies on top of the policy's, and it ends at the token's expiry.
    pub token: Option<Arc<TokenGrant>>,
}

/// An admitted request: the identity plus the endpoint, feature and limits that apply.
#[derive(Clone, Debug)]
pub struct Grant {
    pub identity: Identity,
    pub endpoint: Arc<EndpointConfig>,
    pub feature: Feature,
    pub limits: EndpointLimits,
}

impl Grant {
    pub fn key(&self) -> KeyRef {
        self.identity.key
    }
    pub fn tier(&self) -> &str {
        &self.identity.policy.tier.name
    }
}

/// Prefix and length, lookup, validity window, suspension and environment: everything about *who* is calling.
///
/// The alphabet and checksum are checked only when the lookup finds nothing, to tell a mistyped key
/// (`bad_checksum`, `malformed_key`) from one never issued (`unknown_key`). A key the snapshot lists needs no such
/// check: its SHA-256 equals a listed digest, so it is the very string that digest was taken of (a key infergate
/// issued, and checked, itself); only the config's writer could list a malformed one, and the writer can list
/// any key it likes. Prefix and length come first, so nothing but a key-sized string is hashed.
pub fn authenticate(snapshot: &Snapshot, presented: &str, now: DateTime<Utc>) -> Result<Identity, Refusal> {
    let environment = ApiKey::check_shape(presented).map_err(format_refusal)?;
    match snapshot.key_by_digest(&KeyDigest::of(presented)) {
        Some(record) => identify_record(snapshot, &record, environment, now),
        None => {
            ApiKey::check_format(presented).map_err(format_refusal)?;
            Err(unknown_key())
        }
    }
}

/// Like [`authenticate`] for a key known only by its digest (stream re-checks, tickets).
pub fn identify(
    snapshot: &Snapshot,
    digest: &KeyDigest,
    environment: Environment,
    now: DateTime<Utc>,
) -> Result<Identity, Refusal> {
    identify_with_env(snapshot, digest, environment, now)
}

fn identify_with_env(
    snapshot: &Snapshot,
    digest: &KeyDigest,
    environment: Environment,
    now: DateTime<Utc>,
) -> Result<Identity, Refusal> {
    // By the full digest: another policy's record that shares this key's id bits can never stand in for it.
    match snapshot.key_by_digest(digest) {
        Some(record) => identify_record(snapshot, &record, environment, now),
        None => Err(unknown_key()),
    }
}

fn unknown_key() -> Refusal {
    Refusal::new(
        RefusalCode::UnknownKey,
        "API key not recognised: it was never issued, or its policy was deleted; use the key from the policy's Secret",
    )
}

/// The checks after the lookup, for a caller that already holds the snapshot's record (a session token finds
/// it by key id and policy; looking it up again by digest would find the same record).
pub(crate) fn identify_record(
    snapshot: &Snapshot,
    record: &KeyRecord,
    environment: Environment,
    now: DateTime<Utc>,
) -> Result<Identity, Refusal> {
    let digest = &record.digest;
    let key = KeyRef::of(digest);
    let policy = snapshot.policy(record.policy);
    match record.status {
        KeyStatus::Revoked { .. } => {
            return Err(Refusal::new(
                RefusalCode::KeyRevoked,
                format!("key {key} was revoked; use the current key from the policy's Secret"),
            ));
        }
        KeyStatus::Active { valid_from, valid_until } => {
            // The doors' clock is the kernel's coarse one (crate::clock), up to a tick behind the issuer's: a key
            // issued in the last tick is valid, not "from the future". (The slack is added only when needed: a
            // chrono addition costs more than the comparison.)
            if now < valid_from && now + crate::clock::ADMISSION_SLACK < valid_from {
                return Err(Refusal::new(
                    RefusalCode::KeyNotYetValid,
                    format!(
                        "key {key} is not valid yet (valid from {}); check the gateway's clock",
                        valid_from.to_rfc3339()
                    ),
                ));
            }
            if valid_until.is_some_and(|until| now >= until) {
                return Err(Refusal::new(
                    RefusalCode::KeyExpired,
                    format!(
                        "key {key} was rotated out and its overlap has ended; use the current key from the policy's Secret"
                    ),
                ));
            }
        }
    }
    if policy.expires_at.is_some_and(|at| now >= at) {
        return Err(Refusal::new(
            RefusalCode::KeyExpired,
            format!("key {key} expired: policy {} has passed its expiresAt", policy.name),
        ));
    }
    if policy.suspended {
        return Err(Refusal::new(
            RefusalCode::KeySuspended,
            format!("key {key} is suspended: policy {} has suspended: true; ask its owner to lift it", policy.name),
        ));
    }
    if environment != policy.environment {
        return Err(Refusal::new(RefusalCode::WrongEnvironment, "key prefix does not match its policy's environment"));
    }
    if let Some(only) = snapshot.options.environment
        && only != environment
    {
        return Err(Refusal::new(
            RefusalCode::WrongEnvironment,
            format!(
                "this gateway accepts {} keys only ({}...); this is a {} key",
                only.as_str(),
                only.prefix(),
                environment.as_str()
            ),
        ));
    }
    Ok(Identity { key, digest: *digest, environment, policy: Arc::clone(policy), token: None })
}

/// The identity in a client certificate the agent's TLS listener verified: the subject common name(s) and the
/// subject alternative names (DNS names and URIs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCert {
    pub common_names: Vec<String>,
    pub sans: Vec<String>,
}

/// A policy with `requireClientCertificate` accepts its keys only over mutual TLS, from the identities it names.
pub fn check_client_certificate(policy: &PolicyConfig, client: Option<&ClientCert>) -> Result<(), Refusal> {
    let Some(required) = &policy.require_client_certificate else { return Ok(()) };
    let Some(client) = client else {
        return Err(Refusal::new(
            RefusalCode::ClientCertificateRequired,
            format!(
                "policy {} requires mutual TLS: connect with a client certificate signed by the gateway's client CA",
                policy.name
            ),
        ));
    };
    let open = required.subjects.is_empty() && required.sans.is_empty();
    let named = client.common_names.iter().any(|cn| required.subjects.contains(cn))
        || client.sans.iter().any(|san| required.sans.contains(san));
    if open || named {
        return Ok(());
    }
    let mut expected: Vec<String> = required.subjects.iter().map(|s| format!("CN={s}")).collect();
    expected.extend(required.sans.iter().map(|s| format!("SAN {s}")));
    Err(Refusal::new(
        RefusalCode::ClientCertificateRequired,
        format!(
            "policy {} accepts client certificates for {} only; this one is for {}",
            policy.name,
            expected.join(", "),
            client
                .common_names
                .iter()
                .map(|cn| format!("CN={}", truncated(cn)))
                .chain(client.sans.iter().map(|s| format!("SAN {}", truncated(s))))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// [`identify`] the caller again and [`authorize`] the request, both against `snapshot`: the one decision a
/// request or stream start gets, whatever snapshot its earlier authentication saw. A request authenticated before
/// a slow upload, or a WebSocket authenticated before its `start`, is decided on the config of the moment, never
/// on a mix of two.
pub fn decide(
    snapshot: &Snapshot,
    identity: &Identity,
    request: &Request<'_>,
    now: DateTime<Utc>,
) -> Result<Grant, Refusal> {
    let mut current = identify(snapshot, &identity.digest, identity.environment, now)?;
    if let Some(token) = &identity.token {
        token.check_live(now)?;
        current.token = Some(Arc::clone(token));
    }
    authorize(snapshot, current, request)
}

/// Scope (endpoint by model, feature) and Origin: everything about *what* the key may do.
pub fn authorize(snapshot: &Snapshot, identity: Identity, request: &Request<'_>) -> Result<Grant, Refusal> {
    let Some(endpoint) = snapshot.endpoint_by_model(request.model) else {
        if let Some(endpoint) = snapshot.served_elsewhere(request.model) {
            let service = infergate_crds::gateway::endpoint_service_name(endpoint);
            let service = match &snapshot.options.service_namespace {
                Some(namespace) => format!("{service}.{namespace}.svc"),
                None => service,
            };
            return Err(Refusal::new(
                RefusalCode::ServedElsewhere,
                format!(
                    "model {:?} is served by the agents on other nodes (endpoint {endpoint}, by its nodeSelector); send \
                     its requests to the endpoint's Service {service}",
                    truncated(request.model)
                ),
            ));
        }
        return Err(Refusal::new(
            RefusalCode::UnknownModel,
            format!(
                "no endpoint serves model {:?}; GET /v1/models lists the models this key may use",
                truncated(request.model)
            ),
        ));
    };
    if !endpoint.features.contains(request.feature) {
        return Err(Refusal::new(
            RefusalCode::UnsupportedFeature,
            format!(
                "model {:?} does not offer {}; it offers: {}",
                endpoint.shard.model,
                request.feature.as_str(),
                endpoint.features.iter().map(Feature::as_str).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if !endpoint.shard.environment.admits(identity.environment) {
        return Err(Refusal::new(
            RefusalCode::WrongEnvironment,
            format!(
                "endpoint {} admits {} keys only; this is a {} key ({}...)",
                endpoint.label,
                match endpoint.shard.environment {
                    infergate_crds::endpoint::EndpointEnvironment::Live => "live (sk_live_...)",
                    _ => "test (sk_test_...)",
                },
                identity.environment.as_str(),
                identity.environment.prefix()
            ),
        ));
    }
    let policy = &identity.policy;
    match policy.scope_for(endpoint.index) {
        None => {
            return Err(Refusal::new(
                RefusalCode::OutOfScope,
                format!(
                    "missing scope: endpoint {} (model {:?}); policy {} does not list it in spec.scopes",
                    endpoint.label, endpoint.shard.model, policy.name
                ),
            ));
        }
        Some(features) if !features.contains(request.feature) => {
            return Err(Refusal::new(
                RefusalCode::OutOfScope,
                format!(
                    "missing scope: feature {} on endpoint {}; policy {} allows only: {}",
                    request.feature.as_str(),
                    endpoint.label,
                    policy.name,
                    features.iter().map(Feature::as_str).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Some(_) => {}
    }
    if let Some(token) = &identity.token {
        token.check_scope(&endpoint.shard.model, request.feature)?;
    }
    if let Some(origin) = request.origin
        && !policy.origin_allowed(origin)
    {
        return Err(Refusal::new(
            RefusalCode::OriginNotAllowed,
            format!(
                "browser Origin {:?} is not allowed for this key; add it to policy {} spec.allowedOrigins",
                truncated(origin),
                policy.name
            ),
        ));
    }
    let limits = snapshot.limits(policy, endpoint);
    Ok(Grant { endpoint: Arc::clone(endpoint), feature: request.feature, limits, identity })
}

/// [`authenticate`] then [`authorize`].
pub fn admit(
    snapshot: &Snapshot,
    presented: &str,
    request: &Request<'_>,
    now: DateTime<Utc>,
) -> Result<Grant, Refusal> {
    let identity = authenticate(snapshot, presented, now)?;
    authorize(snapshot, identity, request)
}

fn format_refusal(err: KeyFormatError) -> Refusal {
    let code = match err {
        KeyFormatError::BadChecksum => RefusalCode::BadChecksum,
        _ => RefusalCode::MalformedKey,
    };
    Refusal::new(code, err.to_string())
}

/// Client-supplied strings are echoed only in part, so a refusal never carries a pasted secret in full.
fn truncated(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
