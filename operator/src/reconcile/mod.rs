//! The kube-runtime controllers around the pure `compile` functions. Each reconcile reads from reflector stores,
//! calls one pure function, and applies what it returned; no decision is made here.
//!
//! ```text
//!  one watch per kind ─▶ reflector store ─┬─▶ ApiKeyPolicy controller ◀─ tier / endpoint / key Secret / agent
//!  (policies, tiers, endpoints,           │     │                          Lease changes, mapped to policies
//!   agent Leases; key Secrets: metadata)  │     ├─ GET its key Secret and its shard (never cached)
//!                                         │     ├─ key Secret (policy namespace, owner-referenced): create, then SSA;
//!                                         │     │  never written over a Secret it does not own
//!                                         │     ├─ SSA shard Secret (operator namespace) or delete it
//!                                         │     ├─ SSA /status · Events · audit log lines
//!                                         │     └─ requeue at next_wake (rotation, end of overlap, expiry)
//!                                         ├─▶ InferenceEndpoint controller: shard + status + Events
//!                                         └─▶ RateTier controller: status
//!  policy / endpoint deleted, or relisted ─▶ shard cleanup: delete shards whose owner is gone
//!  every minute (and at the ring's next rotation) ─▶ signing-key Secret: generate once, rotate, publish
//! ```
//! Key Secrets go with their policy by owner-reference garbage collection. Shards live in the operator's
//! namespace, where a namespaced owner cannot own them, so they are removed by the cleanup task: on every delete
//! event (by the shard's deterministic name) and, because watch events can be missed while disconnected, by a
//! sweep after every (re)list of an owner kind over the listed shards, whose JSON names their owner. No finalizer is used:
//! deleting a policy never waits for the operator.
//!
//! One module per concern: [`policy`], [`endpoint`] and [`tier`] reconcile one kind each; [`context`] holds
//! what they share (stores, the shard writes); [`pending`] bridges writes the watch has not delivered yet;
//! [`events`] writes Events and audit lines; [`cleanup`] removes orphaned shards; [`signing`] keeps the
//! session-token signing keys; [`controller`] wires the watches, reflectors and controllers together.
mod cleanup;
mod context;
mod controller;
mod endpoint;
mod events;
mod pending;
mod placement;
mod policy;
mod signing;
mod tier;

pub use context::{Context, agent_report, secret_differs};
pub use controller::run_controllers;
pub use endpoint::reconcile_endpoint;
pub use policy::reconcile_policy;
pub use tier::reconcile_tier;

/// The requeue for a compile's `next_wake`: at that time, or on the next change when there is none.
fn requeue_at(next_wake: Option<chrono::DateTime<chrono::Utc>>) -> kube::runtime::controller::Action {
    use kube::runtime::controller::Action;
    match next_wake {
        Some(at) => {
            let wait = (at - chrono::Utc::now()).to_std().unwrap_or(std::time::Duration::ZERO);
            // Never spin: a wake-up in the past still waits a moment.
            Action::requeue(wait.max(std::time::Duration::from_millis(500)))
        }
        None => Action::await_change(),
    }
}

/// Why a reconcile failed. `category()` is the metric label: a fixed set, never an error string.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{kind} {name} has no namespace; it cannot be reconciled")]
    MissingNamespace { kind: &'static str, name: String },
    #[error("reading Secret {secret} (named by spec.secretName) failed: {source}")]
    KeySecretRead {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the key Secret {secret} failed: {source}")]
    KeySecret {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading gateway-config shard {secret} failed: {source}")]
    ShardRead {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the gateway-config shards failed: {source}")]
    ShardList {
        #[source]
        source: kube::Error,
    },
    #[error("writing gateway-config shard {secret} failed: {source}")]
    ShardWrite {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting gateway-config shard {secret} failed: {source}")]
    ShardDelete {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of {kind} {name} failed: {source}")]
    Status {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the operator's caches stopped before they synced")]
    CachesGone,
}

impl ReconcileError {
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::MissingNamespace { .. } => "invalid_object",
            ReconcileError::KeySecretRead { .. } => "key_secret_read",
            ReconcileError::KeySecret { .. } => "key_secret_write",
            ReconcileError::ShardRead { .. } => "shard_read",
            ReconcileError::ShardList { .. } => "shard_list",
            ReconcileError::ShardWrite { .. } => "shard_write",
            ReconcileError::ShardDelete { .. } => "shard_delete",
            ReconcileError::Status { .. } => "status_write",
            ReconcileError::CachesGone => "cache",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::Utc;
    use kube::runtime::controller::Action;
    use std::time::Duration;

    #[test]
    fn error_categories_are_fixed_labels() {
        let err = ReconcileError::MissingNamespace { kind: "ApiKeyPolicy", name: "x".into() };
        assert_eq!(err.category(), "invalid_object");
        assert_eq!(ReconcileError::CachesGone.category(), "cache");
    }

    #[test]
    fn requeue_never_spins() {
        assert_eq!(
            requeue_at(Some(Utc::now() - chrono::Duration::hours(1))),
            Action::requeue(Duration::from_millis(500))
        );
        assert_eq!(requeue_at(None), Action::await_change());
    }
}
