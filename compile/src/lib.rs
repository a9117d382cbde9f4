//! infergate's compile step, the heart of the operator: a pure function from "what the user declared, what
//! exists, and the time" to "what should exist". No I/O, no `await`, no client: the reconciler reads, calls
//! this, and applies the result; `render` and the agent's standalone mode call the very same functions.
//!
//! ```text
//!  manifests (files, standalone/render) ─┐
//!  reflector stores (operator) ──────────┤
//!                                        ▼
//!  ApiKeyPolicy + its RateTier + its InferenceEndpoints + its existing key Secret + its published shard + now
//!        │ compile_policy (per object, so a reconcile costs O(1) at any number of policies)
//!        ▼
//!  desired key Secret (plaintext, policy namespace) · policy Shard (digests only) · status · events · audit · wake-up
//!        │ publish::shard_secret
//!        ▼
//!  gateway-config Secret (operator namespace, owner labels)
//! ```
//! Randomness is injected through [`KeySource`] so that tests are deterministic.
//!
//! This crate sits between `infergate-crds` and the I/O adapters: it depends on the contract types and nothing
//! that talks to a cluster. Validation against the generated schemas (structure and CEL) needs kube's CEL
//! evaluator, so it stays in the operator (`infergate_operator::validate`); [`manifests`] only reads and types
//! files, and callers that want API-server-like checks run the validator over [`manifests::load_documents`]
//! before [`manifests::into_set`].
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]
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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentReport {
    pub node: String,
    pub config_revision: Option<String>,
    /// Key ids the agent refuses as revoked (bounded list, most recent first).
    pub enforced_revocations: Vec<KeyId>,
    /// When the agent last renewed its Lease; stale agents are not counted.
    pub renewed_at: Option<DateTime<Utc>>,
    /// Where the agent listens (its pod IP and ports), when it says.
    pub address: Option<placement::AgentAddress>,
    /// The endpoints (`namespace/name`) it serves: those whose `nodeSelector` its node matches.
    pub serves: Vec<String>,
}

/// Everything `compile_policy` needs about one ApiKeyPolicy. Lookups are done by the caller (reflector
/// stores in the reconciler, plain maps in `render`/standalone).
pub struct PolicyInputs<'a> {
    pub policy: &'a ApiKeyPolicy,
    /// The RateTier named by `spec.tier`, if it exists.
    pub tier: Option<&'a RateTier>,
    /// Every InferenceEndpoint (the function resolves the scopes itself and reports the missing ones).
    pub endpoints: &'a dyn EndpointLookup,
    /// The object named by `spec.secretName` in the policy's namespace, if it exists, whatever its labels: one
    /// this policy does not own is a conflict, never overwritten.
    pub existing_secret: Option<&'a Secret>,
    /// The policy's gateway-config shard as last published, if any. It lives in the operator's namespace, which
    /// tenants cannot write, so it is the record of the retiring key and the revoked digests (see `keybook`).
    pub published_shard: Option<&'a PolicyShard>,
    /// The operator's own namespace: a policy there gets no key Secret (nothing is written next to the shards).
    /// `None` where there is no such namespace (standalone mode).
    pub operator_namespace: Option<&'a str>,
    pub agents: &'a [AgentReport],
    pub now: DateTime<Utc>,
}

/// Finds an endpoint by namespace/name.
pub trait EndpointLookup {
    fn get(&self, at: &NamespacedName) -> Option<&InferenceEndpoint>;
    /// Every endpoint whose `spec.model` is `model`, used to report model-name conflicts. The default finds
    /// none (no conflict detection); stores that can answer should.
    fn with_model(&self, model: &str) -> Vec<&InferenceEndpoint> {
        let _ = model;
        Vec::new()
    }
}

impl EndpointLookup for BTreeMap<NamespacedName, InferenceEndpoint> {
    fn get(&self, at: &NamespacedName) -> Option<&InferenceEndpoint> {
        BTreeMap::get(self, at)
    }
    fn with_model(&self, model: &str) -> Vec<&InferenceEndpoint> {
        self.values().filter(|e| e.spec.model == model).collect()
    }
}

/// The outcome for one ApiKeyPolicy. Its `Debug` shows the key Secret's name and the key id it carries, never
/// the Secret's data (which holds the plaintext key).
#[derive(Clone, PartialEq)]
pub struct PolicyOutcome {
    /// The key Secret to write (created when none exists, server-side-applied over this policy's own), or
    /// `None` when nothing may be written: the Secret name is taken by an object this policy does not own, or
    /// the policy is in the operator's namespace. Then status says so and nothing is touched.
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

impl std::fmt::Debug for PolicyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key_secret = self.key_secret.as_ref().map(|secret| {
            let key_id = secret
                .data
                .as_ref()
                .and_then(|d| d.get(infergate_crds::secret_keys::API_KEY))
                .and_then(|b| std::str::from_utf8(&b.0).ok())
                .and_then(|s| infergate_crds::key::ApiKey::parse(s.trim()).ok())
                .map(|k| k.id().to_string());
            format!(
                "Secret {} (key {})",
                secret.metadata.name.as_deref().unwrap_or("?"),
                key_id.as_deref().unwrap_or("none")
            )
        });
        f.debug_struct("PolicyOutcome")
            .field("key_secret", &key_secret)
            .field("shard", &self.shard)
            .field("status", &self.status)
            .field("events", &self.events)
            .field("audit", &self.audit)
            .field("next_wake", &self.next_wake)
            .finish()
    }
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

impl AuditRecord {
    /// Writes the record as an audit line: a `tracing` event with `audit = true` and snake_case fields, the one
    /// format the operator, standalone mode and the agent's gate share (`event` names what happened).
    pub fn log(&self) {
        tracing::info!(
            target: "infergate::audit",
            audit = true,
            at = %self.at.to_rfc3339(),
            event = self.action,
            action = self.action,
            policy = %self.policy,
            key_id = self.key_id.as_ref().map(|k| k.as_str()),
            reason = self.reason.as_deref(),
            requested_by = self.requested_by.as_deref(),
            "audit"
        );
    }
}

/// Whole-world inputs, for `render`, standalone mode and tests.
pub struct World<'a> {
    pub tiers: &'a [RateTier],
    pub endpoints: &'a [InferenceEndpoint],
    pub policies: &'a [ApiKeyPolicy],
    /// By reference: a caller that keeps its Secrets in a map (standalone mode) need not copy them per compile.
    pub key_secrets: &'a [&'a Secret],
    /// Secrets labelled `infergate.dev/upstream-credential: "true"`, where `backend.upstream.auth` points.
    pub upstream_secrets: &'a [Secret],
    /// The shards of the previous compile, fed back like `key_secrets` (the operator's own record of retiring
    /// and revoked keys); empty on a fresh start.
    pub shards: &'a [Shard],
    /// See [`PolicyInputs::operator_namespace`].
    pub operator_namespace: Option<&'a str>,
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

mod endpoint;
pub use endpoint::upstream_credential;
mod events;
mod keybook;
pub mod manifest_cache;
pub mod manifests;
pub mod memo;
pub use memo::CompileMemo;
pub mod placement;
mod policy;
pub mod publish;
#[cfg(test)]
mod tests;
pub mod validate;

pub use endpoint::{FALLBACK_RESOLVED, compile_endpoint, compile_tier};
pub use policy::{REFERENCES_RESOLVED, compile_policy};

/// An agent whose Lease was not renewed for this long is not counted in `agentsTotal`/`agentsEnforcing`.
pub const AGENT_STALE_AFTER_SECS: i64 = 120;

/// Stable `reason` strings for conditions and Events (UpperCamelCase, never built from input).
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const KEYS_ACTIVE: &str = "KeysActive";
    pub const PUBLISHED: &str = "Published";
    pub const ACCEPTED: &str = "Accepted";
    pub const KEY_ISSUED: &str = "KeyIssued";
    pub const KEY_ROTATED: &str = "KeyRotated";
    pub const KEY_RETIRED: &str = "KeyRetired";
    pub const KEY_REVOKED: &str = "KeyRevoked";
    pub const REVOCATION_UNMATCHED: &str = "RevocationUnmatched";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const OPERATOR_NAMESPACE: &str = "OperatorNamespace";
    pub const TIER_NOT_FOUND: &str = "TierNotFound";
    /// The tier names `spec.allowedNamespaces` and the policy's namespace is not among them.
    pub const TIER_NOT_ALLOWED: &str = "TierNotAllowed";
    pub const ENDPOINT_NOT_FOUND: &str = "EndpointNotFound";
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    pub const FEATURE_NOT_OFFERED: &str = "FeatureNotOffered";
    pub const EXPIRED: &str = "Expired";
    pub const SUSPENDED: &str = "Suspended";
    pub const FALLBACK_NOT_FOUND: &str = "FallbackNotFound";
    pub const UPSTREAM_CREDENTIAL_MISSING: &str = "UpstreamCredentialMissing";
    pub const MODEL_CONFLICT: &str = "ModelConflict";
    pub const NOT_READY: &str = "NotReady";

    const ALL: &[&str] = &[
        READY,
        KEYS_ACTIVE,
        PUBLISHED,
        ACCEPTED,
        KEY_ISSUED,
        KEY_ROTATED,
        KEY_RETIRED,
        KEY_REVOKED,
        REVOCATION_UNMATCHED,
        SECRET_CONFLICT,
        OPERATOR_NAMESPACE,
        TIER_NOT_FOUND,
        TIER_NOT_ALLOWED,
        ENDPOINT_NOT_FOUND,
        NAMESPACE_NOT_ALLOWED,
        FEATURE_NOT_OFFERED,
        EXPIRED,
        SUSPENDED,
        FALLBACK_NOT_FOUND,
        MODEL_CONFLICT,
    ];

    /// The static reason equal to `s` (conditions carry owned strings, Events need `&'static str`).
    pub fn from_str(s: &str) -> &'static str {
        ALL.iter().copied().find(|r| *r == s).unwrap_or(NOT_READY)
    }
}

/// Predictable keys for tests and examples: key `n` comes from entropy `[n; 32]`-like bytes. Never for
/// production: anyone can recompute them.
pub struct InsecureSequentialKeys {
    next: u64,
}

impl InsecureSequentialKeys {
    pub fn starting_at(seed: u64) -> Self {
        Self { next: seed }
    }
}

impl KeySource for InsecureSequentialKeys {
    fn new_key(&mut self, env: Environment) -> ApiKey {
        let mut entropy = [0u8; 32];
        entropy[..8].copy_from_slice(&self.next.to_be_bytes());
        entropy[8..16].copy_from_slice(&self.next.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        self.next += 1;
        ApiKey::from_entropy(env, &entropy)
    }
}

/// Runs every per-object compile over a whole world: what `render` prints and standalone mode serves.
pub fn compile(world: &World<'_>, keys: &mut dyn KeySource) -> Desired {
    compile_world(world, keys, None)
}

/// [`compile`] for a process that compiles the same world again and again: policies whose inputs did not change
/// since the previous call with the same `memo` are not compiled again (see [`memo`]).
pub fn compile_incremental(world: &World<'_>, keys: &mut dyn KeySource, memo: &mut CompileMemo) -> Desired {
    compile_world(world, keys, Some(memo))
}

fn compile_world(world: &World<'_>, keys: &mut dyn KeySource, memo: Option<&mut CompileMemo>) -> Desired {
    let endpoints: BTreeMap<NamespacedName, InferenceEndpoint> =
        world.endpoints.iter().map(|e| (endpoint_name(e), e.clone())).collect();
    let tiers: BTreeMap<&str, &RateTier> =
        world.tiers.iter().filter_map(|t| Some((t.metadata.name.as_deref()?, t))).collect();
    let secrets: BTreeMap<(&str, &str), &Secret> = world
        .key_secrets
        .iter()
        .filter_map(|s| Some(((s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?), *s)))
        .collect();
    let published: BTreeMap<&NamespacedName, &PolicyShard> = world
        .shards
        .iter()
        .filter_map(|s| match s {
            Shard::Policy(p) => Some((&p.policy, p)),
            Shard::Endpoint(_) | Shard::Signing(_) => None,
        })
        .collect();

    let mut tier_users: BTreeMap<&str, u32> = BTreeMap::new();
    let mut endpoint_users: BTreeMap<NamespacedName, u32> = BTreeMap::new();
    for p in world.policies {
        *tier_users.entry(p.spec.tier.as_str()).or_default() += 1;
        let own = p.metadata.namespace.clone().unwrap_or_default();
        let reached: std::collections::BTreeSet<NamespacedName> = p
            .spec
            .scopes
            .iter()
            .map(|s| NamespacedName::new(s.namespace.clone().unwrap_or_else(|| own.clone()), s.endpoint.clone()))
            .collect();
        for at in reached {
            *endpoint_users.entry(at).or_default() += 1;
        }
    }

    let mut out = Desired {
        policies: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        tiers: BTreeMap::new(),
        // Sized up front: shards are large, and growing the vector copies them all (at 10k policies, a page-fault
        // storm per reload).
        shards: Vec::with_capacity(endpoints.len() + world.policies.len()),
        next_wake: None,
    };
    for (name, tier) in &tiers {
        let users = tier_users.get(name).copied().unwrap_or(0);
        out.tiers.insert(name.to_string(), compile_tier(tier, users, world.now));
    }
    for (at, endpoint) in &endpoints {
        let users = endpoint_users.get(at).copied().unwrap_or(0);
        let credential = upstream_credential(endpoint, world.upstream_secrets);
        let outcome = compile_endpoint(endpoint, &endpoints, users, credential, world.now);
        if let Some(shard) = &outcome.shard {
            out.shards.push(Shard::Endpoint(shard.clone()));
        }
        out.endpoints.insert(at.clone(), outcome);
    }
    let mut policies: Vec<&ApiKeyPolicy> = world.policies.iter().collect();
    // Borrowed, not cloned, names: a keyed sort copied two Strings per comparison (~300k at 10k policies).
    policies.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
    });
    let mut memo =
        memo.map(|m| memo::Session::start(m, &endpoints, world.agents, world.operator_namespace, world.policies.len()));
    for policy in policies {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
        let owner = NamespacedName::new(namespace, policy.metadata.name.clone().unwrap_or_default());
        let inputs = PolicyInputs {
            policy,
            tier: tiers.get(policy.spec.tier.as_str()).copied(),
            endpoints: &endpoints,
            existing_secret: secrets.get(&(namespace, policy.spec.secret_name.as_str())).copied(),
            published_shard: published.get(&owner).copied(),
            operator_namespace: world.operator_namespace,
            agents: world.agents,
            now: world.now,
        };
        let outcome = match memo.as_mut().and_then(|m| m.recall(&owner, &inputs)) {
            Some(outcome) => outcome,
            None => {
                let outcome = compile_policy(&inputs, keys);
                if let Some(m) = memo.as_mut() {
                    m.remember(&owner, &inputs, &outcome);
                }
                outcome
            }
        };
        if let Some(shard) = &outcome.shard {
            out.shards.push(Shard::Policy(shard.clone()));
        }
        if let Some(t) = outcome.next_wake {
            out.next_wake = Some(out.next_wake.map_or(t, |w: DateTime<Utc>| w.min(t)));
        }
        out.policies.insert(owner, outcome);
    }
    if let Some(m) = memo {
        m.finish();
    }
    out
}

fn endpoint_name(e: &InferenceEndpoint) -> NamespacedName {
    NamespacedName::new(e.metadata.namespace.clone().unwrap_or_default(), e.metadata.name.clone().unwrap_or_default())
}
