//! The heart of the operator: a pure function from "what the user declared, what exists, and the time" to
//! "what should exist". No I/O, no `await`, no client: the reconciler reads, calls this, and applies the result;
//! `render` and the agent's standalone mode call the very same functions.
//!
//! ```text
//!  ApiKeyPolicy + its RateTier + its InferenceEndpoints + its existing key Secret + now
//!        │ compile_policy (per object, so a reconcile costs O(1) at any number of policies)
//!        ▼
//!  desired key Secret (plaintext, policy namespace) · policy Shard (digests only) · status · events · audit · wake-up
//! ```
//! Randomness is injected through [`KeySource`] so that tests are deterministic.
use chrono::{DateTime, Utc};
use infergate_crds::gateway::{EndpointShard, PolicyShard, Shard};
use infergate_crds::key::{ApiKey, Environment, KeyId};
use infergate_crds::{
    ApiKeyPolicy, ApiKeyPolicyStatus, InferenceEndpoint, InferenceEndpointStatus, NamespacedName, RateTier,
    RateTierStatus,
};
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;
use std::collections::BTreeMap;

/// Where new keys come from: the OS CSPRNG in production, a seeded sequence in tests.
pub trait KeySource {
    fn new_key(&mut self, env: Environment) -> ApiKey;
}

/// Keys from the operating system's CSPRNG.
pub struct OsKeys;

impl KeySource for OsKeys {
    fn new_key(&mut self, env: Environment) -> ApiKey {
        ApiKey::generate(env)
    }
}

/// What one agent reports on its Lease, as far as the operator cares.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentReport {
    pub node: String,
    pub config_revision: Option<String>,
    /// Key ids the agent refuses as revoked (bounded list, most recent first).
    pub enforced_revocations: Vec<KeyId>,
    /// When the agent last renewed its Lease; stale agents are not counted.
    pub renewed_at: Option<DateTime<Utc>>,
}

/// Everything `compile_policy` needs about one ApiKeyPolicy. Lookups are done by the caller (reflector
/// stores in the reconciler, plain maps in `render`/standalone).
pub struct PolicyInputs<'a> {
    pub policy: &'a ApiKeyPolicy,
    /// The RateTier named by `spec.tier`, if it exists.
    pub tier: Option<&'a RateTier>,
    /// Every InferenceEndpoint (the function resolves the scopes itself and reports the missing ones).
    pub endpoints: &'a dyn EndpointLookup,
    /// The key Secret named by `spec.secretName` in the policy's namespace, if it exists.
    pub existing_secret: Option<&'a Secret>,
    pub agents: &'a [AgentReport],
    pub now: DateTime<Utc>,
}

/// Finds an endpoint by namespace/name.
pub trait EndpointLookup {
    fn get(&self, at: &NamespacedName) -> Option<&InferenceEndpoint>;
}

impl EndpointLookup for BTreeMap<NamespacedName, InferenceEndpoint> {
    fn get(&self, at: &NamespacedName) -> Option<&InferenceEndpoint> {
        BTreeMap::get(self, at)
    }
}

/// The outcome for one ApiKeyPolicy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyOutcome {
    /// The key Secret to server-side-apply, or `None` when nothing may be written (e.g. the Secret name is
    /// taken by an object the operator does not own: then status says so and nothing is touched).
    pub key_secret: Option<Secret>,
    /// The policy's gateway-config shard; `None` while the policy is not Ready (missing tier, ...): then no key
    /// of it is accepted, which is the safe default.
    pub shard: Option<PolicyShard>,
    pub status: ApiKeyPolicyStatus,
    pub events: Vec<EventSpec>,
    pub audit: Vec<AuditRecord>,
    /// When this policy must be looked at again even if nothing changes (rotation, end of overlap, expiry).
    pub next_wake: Option<DateTime<Utc>>,
}

/// The outcome for one InferenceEndpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointOutcome {
    pub shard: Option<EndpointShard>,
    pub status: InferenceEndpointStatus,
    pub events: Vec<EventSpec>,
}

/// A Kubernetes Event to emit. Only emitted on state changes, so the same reconcile twice emits nothing twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub regarding: ObjectRef,
    pub warning: bool,
    /// UpperCamelCase, stable (e.g. `KeyIssued`, `KeyRotated`, `KeyRevoked`, `TierMissing`).
    pub reason: &'static str,
    /// Human text. Key ids only, never key material.
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
}

/// One JSON audit line (`"audit": true` in the operator's log stream). Key ids only, never key material.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    /// `key_issued`, `key_rotated`, `key_retired`, `key_revoked`, `policy_suspended`, `policy_expired`, ...
    pub action: &'static str,
    pub policy: NamespacedName,
    pub key_id: Option<KeyId>,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
}

/// Whole-world inputs, for `render`, standalone mode and tests.
pub struct World<'a> {
    pub tiers: &'a [RateTier],
    pub endpoints: &'a [InferenceEndpoint],
    pub policies: &'a [ApiKeyPolicy],
    pub key_secrets: &'a [Secret],
    pub agents: &'a [AgentReport],
    pub now: DateTime<Utc>,
}

/// Whole-world output.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub policies: BTreeMap<NamespacedName, PolicyOutcome>,
    pub endpoints: BTreeMap<NamespacedName, EndpointOutcome>,
    pub tiers: BTreeMap<String, RateTierStatus>,
    /// Every shard, policy and endpoint, as agents will see them.
    pub shards: Vec<Shard>,
    pub next_wake: Option<DateTime<Utc>>,
}
