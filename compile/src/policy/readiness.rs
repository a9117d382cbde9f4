//! The policy's conditions: `ReferencesResolved` (tier, endpoints, features) and `Ready` (resolved, not
//! expired, not suspended). Pure functions of the compile's findings; events for a change come from
//! [`Log::ready_transition`](super::super::events::Log::ready_transition).
use super::super::keybook::{CurrentKey, format_time};
use super::references::{Problem, Resolved};
use crate::reasons;
use chrono::{DateTime, Utc};
use infergate_crds::ApiKeyPolicySpec;
use infergate_crds::conditions::{self, READY};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Condition type: every reference (tier, endpoints, features) resolves.
pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";

pub(super) fn references_condition(
    references: &Result<Resolved, Problem>,
    spec: &ApiKeyPolicySpec,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    match references {
        Ok(resolved) => conditions::condition(
            REFERENCES_RESOLVED,
            true,
            "Resolved",
            format!("RateTier {:?} and {} endpoint(s) resolve", spec.tier, resolved.scopes.len()),
            generation,
            now,
        ),
        Err(problem) => {
            conditions::condition(REFERENCES_RESOLVED, false, problem.reason, problem.message.clone(), generation, now)
        }
    }
}

/// What `Ready` says about a policy whose key Secret is ours. The first failing check wins: references, then
/// expiry, then suspension.
pub(super) fn ready_condition(
    references: &Result<Resolved, Problem>,
    spec: &ApiKeyPolicySpec,
    expired: bool,
    current: &CurrentKey,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    match (references, expired, spec.suspended) {
        (Err(problem), _, _) => {
            conditions::condition(READY, false, problem.reason, problem.message.clone(), generation, now)
        }
        (Ok(_), true, _) => conditions::condition(
            READY,
            false,
            reasons::EXPIRED,
            format!(
                "spec.expiresAt ({}) has passed: the gateway refuses this policy's keys as expired; \
                 move spec.expiresAt forward to restore them",
                format_time(spec.expires_at.unwrap_or(now))
            ),
            generation,
            now,
        ),
        (Ok(_), false, true) => conditions::condition(
            READY,
            false,
            reasons::SUSPENDED,
            "spec.suspended is true: the gateway refuses this policy's keys as suspended; set it to false to restore them",
            generation,
            now,
        ),
        (Ok(resolved), false, false) => conditions::condition(
            READY,
            true,
            reasons::KEYS_ACTIVE,
            format!(
                "key {} is active on {} endpoint(s){}",
                current.key.id(),
                resolved.scopes.len(),
                skew_note(current, now)
            ),
            generation,
            now,
        ),
    }
}

/// A Secret issued "in the future" means the clocks disagree: say so where an operator looks.
fn skew_note(current: &CurrentKey, now: DateTime<Utc>) -> String {
    if current.issued_at <= now {
        return String::new();
    }
    format!(
        "; note: the key Secret says key {} was issued at {}, after the operator's clock ({}): \
         treating it as issued now and not rotating early; check the clocks",
        current.key.id(),
        format_time(current.issued_at),
        format_time(now)
    )
}

/// `Ready` when the Secret name is taken by an object the operator does not own.
pub(super) fn secret_conflict_condition(
    namespace: &str,
    spec: &ApiKeyPolicySpec,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let message = format!(
        "Secret {}/{} exists and is not owned by this ApiKeyPolicy; the operator will not overwrite it. \
         Choose another spec.secretName or delete that Secret",
        namespace, spec.secret_name
    );
    conditions::condition(READY, false, reasons::SECRET_CONFLICT, message, generation, now)
}

/// `Ready` for a policy in the operator's own namespace: no key Secret is written there.
pub(super) fn operator_namespace_condition(namespace: &str, generation: Option<i64>, now: DateTime<Utc>) -> Condition {
    let message = format!(
        "namespace {namespace} is the infergate operator's own namespace, which holds the gateway config: the \
         operator writes no key Secret there. Create the ApiKeyPolicy in an application namespace"
    );
    conditions::condition(READY, false, reasons::OPERATOR_NAMESPACE, message, generation, now)
}
