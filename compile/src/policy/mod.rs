//! `compile_policy`: one ApiKeyPolicy, its references, its key Secret and the clock -> what should exist.
//!
//! ```text
//!  PolicyInputs ─▶ references      resolve tier, endpoints, features (ReferencesResolved)
//!               ─▶ placement       policy in the operator's namespace? write nothing, say why, stop
//!               ─▶ ownership       Secret name taken by someone else? write nothing, say why, stop
//!               ─▶ key book        current key from the Secret, retiring + revoked from the published shard
//!               ─▶ lifecycle       retire the retiring key · issue / replace revoked / rotate the current one
//!               ─▶ revocations     status records, KeyRevoked / RevocationUnmatched on first sight
//!               ─▶ key entries     current + retiring (digests), revoked digests
//!               ─▶ readiness       Ready condition, shard only when every reference resolves (fail closed)
//!               ─▶ next wake-up    rotation, end of overlap, expiry
//!               ─▶ PolicyOutcome
//! ```
//! The order is fixed: never write where tenants' keys do not belong, never touch a Secret that is not ours; decide the keys before recording revocations
//! (a replaced key is revoked by the lifecycle step); build status last from what the steps decided.
mod entries;
mod lifecycle;
mod readiness;
mod references;
mod revocations;

use super::events::Log;
use super::keybook::{KeyBook, owned_by};
use super::{KeySource, ObjectRef, PolicyInputs, PolicyOutcome};
use chrono::{DateTime, Utc};
use infergate_crds::conditions;
use infergate_crds::gateway::{KeyEntry, PolicyShard, RevokedKey, SHARD_SCHEMA_VERSION, Shard};
use infergate_crds::{ApiKeyPolicy, ApiKeyPolicySpec, ApiKeyPolicyStatus, NamespacedName};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use references::Resolved;
use std::collections::BTreeSet;

pub use readiness::REFERENCES_RESOLVED;

/// How often a policy whose Secret name is taken looks again (the name may have been given back).
const CONFLICT_RECHECK_SECS: i64 = 60;

pub fn compile_policy(inputs: &PolicyInputs<'_>, keys: &mut dyn KeySource) -> PolicyOutcome {
    let policy = inputs.policy;
    let now = inputs.now;
    let spec = &policy.spec;
    let owner = owner_of(policy);
    let generation = policy.metadata.generation;
    let previous_status = policy.status.clone().unwrap_or_default();
    let mut log = Log::new(owner.clone(), regarding(policy), now);

    let references = references::resolve_references(policy, inputs);
    let resolved_condition = readiness::references_condition(&references, spec, generation, now);

    if let Some(namespace) = in_operator_namespace(inputs) {
        let ready = readiness::operator_namespace_condition(namespace, generation, now);
        return write_nothing(inputs, ready, previous_status, resolved_condition, log, None);
    }
    if secret_is_foreign(inputs) {
        let ready = readiness::secret_conflict_condition(&owner.namespace, spec, generation, now);
        // The operator does not watch Secrets it did not label: look again now and then, so that deleting the
        // conflicting one is noticed without another change to the policy.
        let recheck = now + chrono::Duration::seconds(CONFLICT_RECHECK_SECS);
        return write_nothing(inputs, ready, previous_status, resolved_condition, log, Some(recheck));
    }

    let expired = spec.expires_at.is_some_and(|t| t <= now);
    let revoked_ids: BTreeSet<&str> = spec.revocations.iter().map(|r| r.key_id.as_str()).collect();
    // Only this policy's own shard is its record (the caller looks it up by name; the JSON names the owner).
    let published_shard = inputs.published_shard.filter(|s| s.policy == owner);
    let mut book = KeyBook::read(inputs.existing_secret, published_shard, lifecycle::overlap(spec), now);
    let request = lifecycle::Request {
        spec,
        now,
        expired,
        revoked_ids: &revoked_ids,
        rotate_request: lifecycle::rotate_request(policy),
        had_secret: inputs.existing_secret.is_some(),
    };
    lifecycle::end_overlap(&mut book, &request, &mut log);
    let current = lifecycle::advance_current(&mut book, &request, keys, &mut log);
    // A Secret issued "in the future" means the clocks disagree. Schedule from now and never rotate early.
    let effective_issued_at = current.issued_at.min(now);

    let revocations = revocations::revocation_statuses(
        &spec.revocations,
        &previous_status.revocations,
        &book,
        inputs.agents,
        now,
        &mut log,
    );
    revocations::forget_unlisted(&mut book, &revoked_ids);

    let key_entries = entries::key_entries(&current, effective_issued_at, &book);
    let key_statuses = entries::key_statuses(&key_entries, &current);
    let revoked_entries = entries::revoked_entries(&book, &revocations, now);

    let next_rotation_at =
        spec.rotation.as_ref().filter(|_| !expired).map(|r| effective_issued_at + r.every.to_chrono());
    let shard =
        references.as_ref().ok().map(|resolved| policy_shard(policy, &owner, resolved, key_entries, revoked_entries));
    let ready = readiness::ready_condition(&references, spec, expired, &current, generation, now);
    log.ready_transition(&previous_status.conditions, &ready);
    let next_wake = next_wake(next_rotation_at, &book, spec, now);

    let status = ApiKeyPolicyStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous_status.conditions, vec![ready, resolved_condition]),
        current_key_id: Some(current.key.id().to_string()),
        keys: key_statuses,
        next_rotation_at,
        revocations,
        config_revision: shard.as_ref().map(|s| Shard::Policy(s.clone()).revision()),
    };
    PolicyOutcome {
        key_secret: Some(book.to_secret(policy)),
        shard,
        status,
        events: log.events,
        audit: log.audit,
        next_wake,
    }
}

/// Placement: the policy sits in the operator's own namespace (next to the gateway-config shards, and in a real
/// install the Helm release and TLS Secrets), where the operator writes no key Secret for anyone.
fn in_operator_namespace<'a>(inputs: &PolicyInputs<'a>) -> Option<&'a str> {
    let namespace = inputs.policy.metadata.namespace.as_deref()?;
    inputs.operator_namespace.filter(|ns| *ns == namespace)
}

/// Ownership: the object named by `spec.secretName` exists and is not ours (labels play no part).
fn secret_is_foreign(inputs: &PolicyInputs<'_>) -> bool {
    inputs.existing_secret.is_some_and(|s| !owned_by(s, inputs.policy))
}

/// The outcome when nothing may be written (the Secret name is taken, or the namespace is the operator's):
/// write nothing, publish nothing, say why in `ready`. Revocation records are carried over unchanged so that
/// resolving the problem loses none of them.
fn write_nothing(
    inputs: &PolicyInputs<'_>,
    ready: Condition,
    previous_status: ApiKeyPolicyStatus,
    resolved_condition: Condition,
    mut log: Log,
    next_wake: Option<DateTime<Utc>>,
) -> PolicyOutcome {
    let generation = inputs.policy.metadata.generation;
    log.ready_transition(&previous_status.conditions, &ready);
    let status = ApiKeyPolicyStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous_status.conditions, vec![ready, resolved_condition]),
        current_key_id: None,
        keys: vec![],
        next_rotation_at: None,
        revocations: previous_status.revocations,
        config_revision: None,
    };
    PolicyOutcome { key_secret: None, shard: None, status, events: log.events, audit: log.audit, next_wake }
}

/// The policy's gateway-config shard: digests only, never a key.
fn policy_shard(
    policy: &ApiKeyPolicy,
    owner: &NamespacedName,
    resolved: &Resolved,
    keys: Vec<KeyEntry>,
    revoked: Vec<RevokedKey>,
) -> PolicyShard {
    let spec = &policy.spec;
    PolicyShard {
        schema_version: SHARD_SCHEMA_VERSION,
        policy: owner.clone(),
        generation: policy.metadata.generation.unwrap_or(0),
        environment: spec.environment,
        tier: resolved.tier.clone(),
        keys,
        revoked,
        suspended: spec.suspended,
        expires_at: spec.expires_at,
        scopes: resolved.scopes.clone(),
        allowed_origins: spec.allowed_origins.clone(),
        allow_client_embeddings: spec.allow_client_embeddings,
        require_client_certificate: spec.require_client_certificate.clone(),
        redaction: spec.redaction.clone(),
        trusted_issuers: spec.trusted_issuers.clone(),
    }
}

/// The earliest of: the next scheduled rotation, the end of the running overlap, and expiry (if still ahead).
fn next_wake(
    next_rotation_at: Option<DateTime<Utc>>,
    book: &KeyBook,
    spec: &ApiKeyPolicySpec,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    [next_rotation_at, book.previous.as_ref().map(|p| p.retires_at), spec.expires_at.filter(|t| *t > now)]
        .into_iter()
        .flatten()
        .min()
}

fn owner_of(policy: &ApiKeyPolicy) -> NamespacedName {
    NamespacedName::new(
        policy.metadata.namespace.clone().unwrap_or_default(),
        policy.metadata.name.clone().unwrap_or_default(),
    )
}

fn regarding(policy: &ApiKeyPolicy) -> ObjectRef {
    ObjectRef {
        kind: "ApiKeyPolicy",
        namespace: policy.metadata.namespace.clone(),
        name: policy.metadata.name.clone().unwrap_or_default(),
        uid: policy.metadata.uid.clone(),
    }
}
