//! infergate's API contract, shared by the operator and the agent. No I/O lives here.
//!
//! ```text
//!   RateTier ─┐
//!   InferenceEndpoint ─┼─▶ operator::compile ─▶ key Secret (plaintext, tenant namespace)
//!   ApiKeyPolicy ─┘                         └─▶ gateway-config Secrets (digests only) ─▶ agent snapshot
//! ```
//! - [`tier`], [`endpoint`], [`policy`]: the three custom resources (`infergate.dev/v1alpha1`).
//! - [`key`]: the API-key format (prefix, base62 body, CRC32 checksum), key ids, digests.
//! - [`gateway`]: what the operator publishes for agents: one shard per policy and per endpoint.
//! - [`duration`]: Go-style durations (`720h`, `90s`) as used by cert-manager and metav1.Duration.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod conditions;
pub mod crdgen;
pub mod duration;
pub mod endpoint;
pub mod gateway;
pub mod key;
pub mod policy;
pub mod redaction;
pub mod tier;

pub use duration::GoDuration;
pub use endpoint::{InferenceEndpoint, InferenceEndpointSpec, InferenceEndpointStatus};
pub use policy::{ApiKeyPolicy, ApiKeyPolicySpec, ApiKeyPolicyStatus};
pub use tier::{RateTier, RateTierSpec, RateTierStatus};

/// API group of every infergate resource.
pub const GROUP: &str = "infergate.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "infergate-operator";

/// Label keys. Agents and the operator's shard watch select config Secrets with `COMPONENT=GATEWAY_CONFIG`. The
/// owner labels name a shard's owner for people (`kubectl get -l`); the operator finds orphans by the owner named
/// in the shard JSON, since a long owner name is shortened in its label.
pub mod labels {
    pub const COMPONENT: &str = "infergate.dev/component";
    /// Value of [`COMPONENT`] on the gateway-config shards in the operator's namespace.
    pub const GATEWAY_CONFIG: &str = "gateway-config";
    /// Value of [`COMPONENT`] on the key Secret written into the policy's namespace.
    pub const API_KEY: &str = "api-key";
    /// `policy` or `endpoint`: which kind of object a gateway-config shard describes.
    pub const SHARD_KIND: &str = "infergate.dev/shard-kind";
    pub const OWNER_NAMESPACE: &str = "infergate.dev/owner-namespace";
    pub const OWNER_NAME: &str = "infergate.dev/owner-name";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "infergate-operator";
}

/// Annotation keys.
pub mod annotations {
    /// Set (to any new value, conventionally an RFC 3339 time) to force a rotation. Each distinct value rotates once.
    pub const ROTATE_REQUESTED_AT: &str = "infergate.dev/rotate-requested-at";
    // The key Secret's bookkeeping (digests and ids only; the plaintext is in the Secret's data). The Secret is in
    // the tenant's namespace, so the operator reads back only what concerns the current key (current-*,
    // rotation-handled); the previous-* and revoked-key-digests values are a copy for people, and the record the
    // gateway config is built from is the policy's shard in the operator's namespace (compile's `keybook`).
    pub const CURRENT_KEY_ID: &str = "infergate.dev/current-key-id";
    pub const CURRENT_ISSUED_AT: &str = "infergate.dev/current-issued-at";
    pub const PREVIOUS_KEY_ID: &str = "infergate.dev/previous-key-id";
    pub const PREVIOUS_KEY_DIGEST: &str = "infergate.dev/previous-key-digest";
    pub const PREVIOUS_RETIRES_AT: &str = "infergate.dev/previous-retires-at";
    /// The rotate-requested-at value already honoured, so one annotation value rotates exactly once.
    pub const ROTATION_HANDLED: &str = "infergate.dev/rotation-handled";
    /// When the retiring key was issued (RFC 3339), so status and config can show its validity window.
    pub const PREVIOUS_ISSUED_AT: &str = "infergate.dev/previous-issued-at";
    /// Comma-separated SHA-256 digests (hex) of this policy's keys that were revoked while still listed in
    /// `spec.revocations` (a copy of the policy shard's `revoked` list; never read back).
    pub const REVOKED_KEY_DIGESTS: &str = "infergate.dev/revoked-key-digests";
    /// On a gateway-config shard Secret: the shard's content revision ([`crate::gateway::Shard::revision`]).
    pub const SHARD_REVISION: &str = "infergate.dev/shard-revision";
}

/// Data keys inside the policy's key Secret.
pub mod secret_keys {
    /// The current plaintext API key, for the consuming application.
    pub const API_KEY: &str = "api-key";
    /// The current key's non-secret id.
    pub const KEY_ID: &str = "key-id";
}

/// The name of an object in a namespace, used where a cluster-wide unique reference is needed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
