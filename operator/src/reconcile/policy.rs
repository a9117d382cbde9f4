//! The ApiKeyPolicy reconcile: read the policy's world from the stores, compile, apply in a safe order.
//!
//! ```text
//!  key Secret: GET by name ─────────────────┐
//!  policy shard: GET by name ───────────────┼─▶ compile_policy ─▶ key Secret (create, or SSA; first)
//!  tier, endpoints, agent Leases: stores ───┘                  ─▶ shard (apply / delete)
//!                                        ─▶ status (SSA) ─▶ Events · audit ─▶ requeue at next_wake
//! ```
//! The key Secret is read by name before anything is written, labelled or not: an unlabelled Secret of that name
//! is then a conflict, never overwritten. A policy in the operator's namespace is not looked up at all (compile
//! refuses it). The published shard is the operator's record of the policy's retiring and revoked keys (tenants
//! cannot write the operator's namespace).
use super::context::{Context, EndpointSnapshot, namespaced_name, published_policy_shard, secret_differs};
use super::{ReconcileError, requeue_at};
use crate::kube_apply;
use chrono::Utc;
use infergate_compile::{OsKeys, PolicyInputs, PolicyOutcome};
use infergate_crds::gateway::{Shard, ShardKind};
use infergate_crds::policy::KeyState;
use infergate_crds::{ApiKeyPolicy, NamespacedName};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

pub async fn reconcile_policy(policy: Arc<ApiKeyPolicy>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let _timer = ctx.start::<ApiKeyPolicy>().await?;
    let owner = namespaced_name(policy.as_ref())?;
    let (namespace, name) = (owner.namespace.clone(), owner.name.clone());
    if policy.meta().deletion_timestamp.is_some() {
        // Going away: the key Secret follows by garbage collection, the shard by the cleanup task.
        return Ok(Action::await_change());
    }

    // The policy as last written by this operator, if the store has not caught up with that write yet.
    let mut policy_view = (*policy).clone();
    if let Some(status) = ctx.pending_status.view((namespace.clone(), name.clone()), policy.resource_version()) {
        policy_view.status = Some(status);
    }
    // Both operator-held namespaces are off limits to policies: the compile step refuses the one the policy is in.
    let operator_namespace = if namespace == ctx.config_namespace { &ctx.config_namespace } else { &ctx.namespace };
    // The key Secret and the shard are read now, not from a cache (see the controller module): each read also
    // sees this operator's own last write.
    let existing_secret = if namespace != *operator_namespace {
        fetch_secret(&ctx, &namespace, &policy.spec.secret_name).await?
    } else {
        None
    };
    let stored_shard = ctx.fetch_shard(ShardKind::Policy, &owner).await?;
    let published_shard = published_policy_shard(stored_shard.as_ref());
    // The inputs borrow from the stores' snapshots; scoped so nothing borrowed lives across an await.
    let outcome = {
        let tier = ctx.tiers.get(&ObjectRef::new(&policy.spec.tier));
        let endpoints = EndpointSnapshot::of(&ctx.endpoints);
        let agents = ctx.agent_reports();
        let inputs = PolicyInputs {
            policy: &policy_view,
            tier: tier.as_deref(),
            endpoints: &endpoints,
            existing_secret: existing_secret.as_ref(),
            published_shard: published_shard.as_ref(),
            operator_namespace: Some(operator_namespace),
            agents: &agents,
            now: Utc::now(),
        };
        infergate_compile::compile_policy(&inputs, &mut OsKeys)
    };

    // Order matters: the key Secret first, so a key is never in the gateway config before the application can
    // read it, and a failed Secret write never leaves a config pointing at a key nobody holds.
    // The first write is a create: should an object of that name appear after the lookup, the create fails
    // (the retry finds it and reports the conflict) instead of taking it over.
    if let Some(desired) = &outcome.key_secret {
        if existing_secret.as_ref().is_none_or(|e| secret_differs(desired, e)) {
            let secret_name = desired.metadata.name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let write = match existing_secret {
                None => kube_apply::create_secret(&api, desired).await,
                Some(_) => kube_apply::apply_secret(&api, desired).await,
            };
            write
                .map_err(|source| ReconcileError::KeySecret { secret: format!("{namespace}/{secret_name}"), source })?;
        }
    }
    // Not Ready (missing tier, ...): no key of this policy may be accepted, so no shard may exist.
    ctx.sync_shard(ShardKind::Policy, &owner, outcome.shard.clone().map(Shard::Policy), stored_shard.as_ref()).await?;
    ctx.set_key_counts(&owner, key_counts(&outcome));

    if policy_view.status.as_ref() != Some(&outcome.status) {
        let written = ctx.write_status(policy.as_ref(), &outcome.status).await?;
        ctx.pending_status.record(
            (namespace.clone(), name.clone()),
            policy.resource_version(),
            written.status.unwrap_or_else(|| outcome.status.clone()),
        );
    }
    ctx.publish_events(&outcome.events).await;
    outcome.audit.iter().for_each(infergate_compile::AuditRecord::log);
    Ok(requeue_at(outcome.next_wake))
}

/// The object named `name` in `namespace`, labelled or not, straight from the API server.
async fn fetch_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|source| ReconcileError::KeySecretRead { secret: format!("{namespace}/{name}"), source })
}

/// Keys of the published shard by state: current, retiring, revoked (all zero when nothing is published).
fn key_counts(outcome: &PolicyOutcome) -> [i64; 3] {
    let mut counts = [0i64; 3];
    if let Some(shard) = &outcome.shard {
        for key in &shard.keys {
            counts[if key.state == KeyState::Current { 0 } else { 1 }] += 1;
        }
        counts[2] = shard.revoked.len() as i64;
    }
    counts
}

/// Policies that name `tier`.
pub(super) fn policies_using_tier(
    store: &kube::runtime::reflector::Store<ApiKeyPolicy>,
    tier: &str,
) -> Vec<ObjectRef<ApiKeyPolicy>> {
    store.state().iter().filter(|p| p.spec.tier == tier).map(|p| ObjectRef::from_obj(p.as_ref())).collect()
}

/// Policies with a scope on the endpoint `at`.
pub(super) fn policies_scoping(
    store: &kube::runtime::reflector::Store<ApiKeyPolicy>,
    at: &NamespacedName,
) -> Vec<ObjectRef<ApiKeyPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| {
            let p_ns = p.metadata.namespace.as_deref().unwrap_or_default();
            p.spec
                .scopes
                .iter()
                .any(|s| s.endpoint == at.name && s.namespace.as_deref().unwrap_or(p_ns) == at.namespace)
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}
