//! The gateway-config contract between the operator and the agents.
//!
//! The operator publishes one **shard** per ApiKeyPolicy and one per InferenceEndpoint, each a Secret in the
//! operator's namespace labelled `infergate.dev/component=gateway-config`, holding one JSON document under
//! [`SHARD_DATA_KEY`]. Sharding keeps every object far below the 1 MiB object limit at any number of policies,
//! lets a change rewrite one small object, and lets agents read config with RBAC limited to that namespace.
//! Shards hold key *digests* and ids, never plaintext keys. They are Secrets, not ConfigMaps, because even
//! digests, scopes and upstream URLs are not for every reader of the namespace.
//!
//! ```text
//!  operator ──writes──▶ Secret infergate-cfg-policy-<hash>   {"kind":"policy",...}
//!                       Secret infergate-cfg-endpoint-<hash> {"kind":"endpoint",...}
//!                       Secret infergate-cfg-signing-keys    {"kind":"signing",...}  (one per installation)
//!  agent ──watches (label selector, one namespace)──▶ builds an immutable snapshot, swaps it atomically
//!  agent ──writes──▶ Lease infergate-agent-<node> (config revision, revocations it enforces)
//! ```
use crate::NamespacedName;
use crate::endpoint::{BackendSpec, CostModel, EndpointEnvironment, Feature, RequestLimits};
use crate::key::{Environment, KeyDigest, KeyId};
use crate::policy::KeyState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Bumped on any incompatible change; agents refuse shards with a newer version and keep their last snapshot.
pub const SHARD_SCHEMA_VERSION: u32 = 1;
/// The data key of the JSON document inside a shard Secret.
pub const SHARD_DATA_KEY: &str = "shard.json";
/// The label selector agents use to watch shards.
pub const SHARD_SELECTOR: &str = "infergate.dev/component=gateway-config";

/// One shard: everything the gateway needs to know about one policy or one endpoint, or the installation's
/// session-token signing keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Shard {
    Policy(PolicyShard),
    Endpoint(EndpointShard),
    Signing(SigningShard),
}

/// The session-token signing-key ring. The operator's record of it (read back on every start, never regenerated
/// while it exists) and its publication to agents at once: agents mint tokens, so they need the private keys,
/// and the Secret sits in the config namespace that only the operator writes and only agents read. Its `Debug`
/// shows key ids and schedule only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningShard {
    pub schema_version: u32,
    pub ring: infergate_token::StoredRing,
}

/// The name of the Secret that holds the [`SigningShard`]: one per installation (per config namespace).
pub const SIGNING_SHARD_SECRET: &str = "infergate-cfg-signing-keys";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyShard {
    pub schema_version: u32,
    pub policy: NamespacedName,
    pub generation: i64,
    pub environment: Environment,
    pub tier: TierLimits,
    /// Keys the gateway accepts (current, and retiring during an overlap). Revoked and retired keys are absent.
    pub keys: Vec<KeyEntry>,
    /// Revoked keys, kept only so the gateway can answer "key revoked" instead of "unknown key" and close
    /// their open streams. Never accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<RevokedKey>,
    /// While true, every key of the policy is refused with "key suspended".
    #[serde(default)]
    pub suspended: bool,
    /// After this instant every key of the policy is refused with "key expired".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<ScopeEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allow_client_embeddings: bool,
    /// The policy's `requireClientCertificate`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_certificate: Option<crate::policy::ClientCertificateRequirement>,
    /// The policy's `spec.redaction`, applied on top of each endpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<crate::redaction::Redaction>,
    /// The policy's `spec.trustedIssuers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_issuers: Vec<crate::policy::TrustedIssuer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    pub key_id: KeyId,
    pub digest: KeyDigest,
    pub state: KeyState,
    pub valid_from: DateTime<Utc>,
    /// Set for a retiring key: the end of its overlap window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedKey {
    pub key_id: KeyId,
    pub digest: KeyDigest,
    pub revoked_at: DateTime<Utc>,
}

/// One endpoint a key may call, resolved to the endpoint's model name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeEntry {
    pub endpoint: NamespacedName,
    pub model: String,
    /// Features allowed there: the policy's list intersected with what the endpoint offers.
    pub features: Vec<Feature>,
}

/// A tier's limits as the gateway applies them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierLimits {
    pub name: String,
    pub priority: u32,
    pub gpu_seconds_per_minute: f64,
    pub burst_gpu_seconds: f64,
    pub max_concurrent_streams: u32,
    pub queue_max_depth: u32,
    pub queue_timeout_ms: u64,
    pub target_utilization_percent: u32,
    pub min_factor: f64,
    pub max_factor: f64,
    /// What the agent does with this tier while a shared counter store is unreachable.
    #[serde(default, skip_serializing_if = "crate::tier::OnStoreFailure::is_default")]
    pub on_store_failure: crate::tier::OnStoreFailure,
    /// Per-endpoint overrides (already merged with the tier's defaults).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_overrides: BTreeMap<String, EndpointLimits>,
    // Absent when the tier leaves `tokenLifetime` unset, so shards of tiers without it keep their revision.
    /// The tier's `tokenLifetime` in seconds; `None`: [`crate::tier::DEFAULT_TOKEN_LIFETIME_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_seconds: Option<u64>,
    /// Per end user limits (`spec.endUser`), each already capped at the key's own. Absent when the tier sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<crate::tier::EndUserLimitsSpec>,
    /// `spec.oneStreamPerToken`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_stream_per_token: bool,
}

/// The limits that can differ per endpoint. Keyed in [`TierLimits::endpoint_overrides`] by `namespace/name`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointLimits {
    pub gpu_seconds_per_minute: f64,
    pub burst_gpu_seconds: f64,
    pub max_concurrent_streams: u32,
}

impl TierLimits {
    /// The limits that apply on one endpoint.
    /// On the admission hot path: no allocation (overrides are few; compare `namespace/name` piecewise).
    pub fn for_endpoint(&self, endpoint: &NamespacedName) -> EndpointLimits {
        let is_this = |k: &String| {
            k.len() == endpoint.namespace.len() + 1 + endpoint.name.len()
                && k.starts_with(endpoint.namespace.as_str())
                && k.as_bytes()[endpoint.namespace.len()] == b'/'
                && k.ends_with(endpoint.name.as_str())
        };
        self.endpoint_overrides.iter().find(|(k, _)| is_this(k)).map(|(_, v)| *v).unwrap_or(EndpointLimits {
            gpu_seconds_per_minute: self.gpu_seconds_per_minute,
            burst_gpu_seconds: self.burst_gpu_seconds,
            max_concurrent_streams: self.max_concurrent_streams,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointShard {
    pub schema_version: u32,
    pub endpoint: NamespacedName,
    pub generation: i64,
    pub model: String,
    pub features: Vec<Feature>,
    /// Which keys the endpoint admits ([`EndpointEnvironment::admits`]): the agent refuses a `sk_test_` key on a
    /// `live` endpoint before any work. Absent in shards written before the field existed, which mean `both`;
    /// not written when `both`, so those shards keep their revision.
    #[serde(default, skip_serializing_if = "EndpointEnvironment::is_both")]
    pub environment: EndpointEnvironment,
    pub backend: BackendSpec,
    pub cost: CostModel,
    pub limits: RequestLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<NamespacedName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// With a `node_selector`: the nodes whose labels match it, as the operator last saw them; only agents on these
    /// nodes serve the endpoint (the agents read no Node objects themselves). Absent with a selector (a shard
    /// from a writer that does not know the nodes): agents in cluster mode serve it nowhere (fail closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_nodes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_threshold: Option<f64>,
    /// The upstream's credential, resolved from `backend.upstream.auth` (header name and the exact value to send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_credential: Option<UpstreamCredential>,
    /// The endpoint's `spec.redaction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<crate::redaction::Redaction>,
}

/// A header the agent adds to every upstream request. The value is a secret: never in Debug output or logs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamCredential {
    pub header: String,
    pub value: String,
}

impl std::fmt::Debug for UpstreamCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCredential").field("header", &self.header).field("value", &"<redacted>").finish()
    }
}

/// The label an upstream-credential Secret carries, so the operator can watch exactly those Secrets.
pub const UPSTREAM_CREDENTIAL_LABEL: &str = "infergate.dev/upstream-credential";

impl Shard {
    /// The object the shard describes; `None` for the signing shard, which belongs to the installation.
    pub fn owner(&self) -> Option<&NamespacedName> {
        match self {
            Shard::Policy(p) => Some(&p.policy),
            Shard::Endpoint(e) => Some(&e.endpoint),
            Shard::Signing(_) => None,
        }
    }

    pub fn kind(&self) -> ShardKind {
        match self {
            Shard::Policy(_) => ShardKind::Policy,
            Shard::Endpoint(_) => ShardKind::Endpoint,
            Shard::Signing(_) => ShardKind::Signing,
        }
    }

    /// The name of the Secret that holds this shard.
    pub fn secret_name(&self) -> String {
        match self.owner() {
            Some(owner) => shard_secret_name(self.kind(), owner),
            None => SIGNING_SHARD_SECRET.to_string(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("shards serialize")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, ShardError> {
        // Check the version before the full parse so a newer operator gives a clear message, not a field error.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(ShardError::Malformed)?;
        if probe.schema_version > SHARD_SCHEMA_VERSION {
            return Err(ShardError::NewerSchema(probe.schema_version));
        }
        serde_json::from_slice(bytes).map_err(ShardError::Malformed)
    }

    /// A content hash: equal shards have equal revisions, so agents and status can name what they run.
    pub fn revision(&self) -> String {
        revision_of(&self.to_json())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShardKind {
    Policy,
    Endpoint,
    Signing,
}

impl ShardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardKind::Policy => "policy",
            ShardKind::Endpoint => "endpoint",
            ShardKind::Signing => "signing",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("gateway-config shard is not valid JSON for this agent version: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error(
        "gateway-config shard has schema version {0}, newer than this agent understands ({SHARD_SCHEMA_VERSION}); upgrade the agent"
    )]
    NewerSchema(u32),
}

impl ShardError {
    pub fn category(&self) -> &'static str {
        match self {
            ShardError::Malformed(_) => "malformed",
            ShardError::NewerSchema(_) => "newer_schema",
        }
    }
}

/// `infergate-cfg-<kind>-<16 hex>`: stable, DNS-safe and short whatever the owner's name length.
pub fn shard_secret_name(kind: ShardKind, owner: &NamespacedName) -> String {
    let digest = Sha256::digest(owner.to_string().as_bytes());
    format!("infergate-cfg-{}-{}", kind.as_str(), hex::encode(&digest[..8]))
}

/// The Service through which clients reach an endpoint that has a `nodeSelector` (in the operator's namespace;
/// its EndpointSlices list the agents that serve the endpoint). A DNS-1035 label of at most 63 characters.
pub fn endpoint_service_name(endpoint: &NamespacedName) -> String {
    let digest = Sha256::digest(endpoint.to_string().as_bytes());
    let name: String = endpoint
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    format!("ig-{}-{}", name.trim_matches('-'), hex::encode(&digest[..4]))
}

/// Whether a node with `labels` matches `selector` (no selector: every node).
pub fn selector_matches(selector: Option<&BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_none_or(|required| required.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Whether the agent on `node` serves this endpoint. `node` is `None` in standalone mode, which serves everything.
pub fn served_on(shard: &EndpointShard, node: Option<&str>) -> bool {
    match (&shard.node_selector, node) {
        (None, _) | (Some(_), None) => true,
        (Some(_), Some(node)) => shard.serving_nodes.as_ref().is_some_and(|nodes| nodes.iter().any(|n| n == node)),
    }
}

/// First 16 hex characters of SHA-256.
pub fn revision_of(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// What each agent publishes about itself, on a Lease named [`agent_lease_name`] in the operator's namespace.
pub mod lease {
    /// Annotation: the agent's whole-config revision (hash over the shard revisions it runs).
    pub const CONFIG_REVISION: &str = "infergate.dev/config-revision";
    /// Annotation: when that revision was applied (RFC 3339).
    pub const CONFIG_APPLIED_AT: &str = "infergate.dev/config-applied-at";
    /// Annotation: comma-separated key ids the agent refuses as revoked, most recent first (bounded by
    /// [`MAX_PUBLISHED_REVOCATIONS`]); the operator counts agents per revocation from it.
    pub const ENFORCED_REVOCATIONS: &str = "infergate.dev/enforced-revocations";
    pub const MAX_PUBLISHED_REVOCATIONS: usize = 200;
    /// Annotation: the agent's pod address and ports, JSON `{"ip":"10.0.3.7","http":8080,"grpc":50051}`; the
    /// operator lists it in the Services of the endpoints this agent serves.
    pub const ADDRESS: &str = "infergate.dev/address";
    /// Annotation: JSON list of the endpoints (`namespace/name`) this agent serves: those whose `nodeSelector`
    /// matches its node's labels.
    pub const SERVES: &str = "infergate.dev/serves";
    pub const AGENT_LEASE_PREFIX: &str = "infergate-agent-";
    /// Label on every agent Lease so the operator can list them.
    pub const AGENT_LEASE_LABEL: &str = "infergate.dev/component=agent";
}

pub fn agent_lease_name(node: &str) -> String {
    format!("{}{node}", lease::AGENT_LEASE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_stable_and_dns_safe() {
        let a = shard_secret_name(ShardKind::Policy, &NamespacedName::new("team-a", "checkout"));
        assert_eq!(a, shard_secret_name(ShardKind::Policy, &NamespacedName::new("team-a", "checkout")));
        assert!(a.starts_with("infergate-cfg-policy-") && a.len() == "infergate-cfg-policy-".len() + 16);
        assert_ne!(a, shard_secret_name(ShardKind::Endpoint, &NamespacedName::new("team-a", "checkout")));
    }

    #[test]
    fn endpoint_overrides_match_exactly() {
        let limits = EndpointLimits { gpu_seconds_per_minute: 1.0, burst_gpu_seconds: 2.0, max_concurrent_streams: 3 };
        let tier = TierLimits {
            name: "t".into(),
            priority: 1,
            gpu_seconds_per_minute: 10.0,
            burst_gpu_seconds: 20.0,
            max_concurrent_streams: 30,
            queue_max_depth: 0,
            queue_timeout_ms: 0,
            target_utilization_percent: 80,
            min_factor: 0.5,
            max_factor: 1.0,
            on_store_failure: Default::default(),
            endpoint_overrides: [("speech/whisper".to_string(), limits)].into(),
            token_lifetime_seconds: None,
            end_user: None,
            one_stream_per_token: false,
        };
        assert_eq!(tier.for_endpoint(&NamespacedName::new("speech", "whisper")), limits);
        for other in [("speech", "whisper-large"), ("speec", "h/whisper"), ("team", "whisper")] {
            assert_eq!(
                tier.for_endpoint(&NamespacedName::new(other.0, other.1)).max_concurrent_streams,
                30,
                "{other:?}"
            );
        }
    }

    const OLD_ENDPOINT_SHARD: &str = r#"{"kind":"endpoint","schemaVersion":1,
        "endpoint":{"namespace":"speech","name":"whisper"},"generation":3,"model":"whisper-1",
        "features":["transcribe"],"backend":{"upstream":{"url":"http://whisper.speech.svc:8000/v1","timeout":"2m"}},
        "cost":{"gpuSecondsPerAudioSecond":0.1,"minimumGpuSeconds":0.0},
        "limits":{"maxAudioSeconds":600.0,"maxChunkBytes":65536,"maxMessagesPerSecond":100,"idleTimeout":"30s",
                  "maxSessionDuration":"1h","codecs":["pcm16","wav"]}}"#;

    fn endpoint_shard(json: &str) -> EndpointShard {
        match Shard::from_json(json.as_bytes()).unwrap() {
            Shard::Endpoint(e) => e,
            other => panic!("expected an endpoint shard, got {other:?}"),
        }
    }

    #[test]
    fn endpoint_shards_written_before_environment_existed_admit_both() {
        let shard = endpoint_shard(OLD_ENDPOINT_SHARD);
        assert_eq!(shard.environment, EndpointEnvironment::Both);
        assert!(shard.environment.admits(Environment::Test) && shard.environment.admits(Environment::Live));
        let upstream = shard.backend.upstream.as_ref().unwrap();
        assert!(!upstream.allow_private_network, "old shards do not opt in to private upstreams");
        // Re-serialised, a `both` shard is byte-for-byte what an old operator wrote: its revision is unchanged.
        let reserialised = Shard::Endpoint(shard.clone()).to_json();
        assert!(!String::from_utf8_lossy(&reserialised).contains("environment"));
    }

    #[test]
    fn a_live_endpoint_shard_carries_its_environment_to_the_agent() {
        let mut shard = endpoint_shard(OLD_ENDPOINT_SHARD);
        shard.environment = EndpointEnvironment::Live;
        let json = Shard::Endpoint(shard).to_json();
        assert!(String::from_utf8_lossy(&json).contains(r#""environment":"live""#));
        let back = endpoint_shard(std::str::from_utf8(&json).unwrap());
        assert_eq!(back.environment, EndpointEnvironment::Live);
        assert!(!back.environment.admits(Environment::Test));
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        let err = Shard::from_json(br#"{"kind":"policy","schemaVersion":99}"#).unwrap_err();
        assert_eq!(err.category(), "newer_schema");
        assert!(err.to_string().contains("upgrade the agent"));
        assert_eq!(Shard::from_json(b"{").unwrap_err().category(), "malformed");
    }
}
