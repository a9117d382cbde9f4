//! Orphaned shards: a shard whose policy or endpoint is gone must go too, since nothing else removes it (a
//! namespaced owner cannot own an object in the operator's namespace).
//!
//! ```text
//!  owner watch: Delete(obj) ─▶ Cleanup::Gone(kind, owner) ─┐
//!  owner watch: InitDone    ─▶ Cleanup::Sweep ─────────────┼─▶ run_cleanup (one task, after the caches sync)
//!  caches synced            ─▶ Cleanup::Sweep ─────────────┘     Gone:  delete the shard by its name
//!                                                                Sweep: delete every shard whose owner is gone
//! ```
use super::ReconcileError;
use super::context::Context;
use infergate_crds::NamespacedName;
use infergate_crds::gateway::{self, Shard, ShardKind};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the cleanup task is asked to do.
pub(super) enum Cleanup {
    Gone(ShardKind, NamespacedName),
    Sweep,
}

/// Turns one watch event of an owner kind into cleanup work.
pub(super) fn on_owner_event<K: Resource<DynamicType = ()> + ResourceExt>(
    tx: &mpsc::UnboundedSender<Cleanup>,
    kind: ShardKind,
    event: Result<watcher::Event<K>, watcher::Error>,
) {
    match event {
        Ok(watcher::Event::Delete(obj)) => {
            let owner = NamespacedName::new(obj.namespace().unwrap_or_default(), obj.name_any());
            let _ = tx.send(Cleanup::Gone(kind, owner));
        }
        // A (re)list may have hidden deletes that happened while the watch was down.
        Ok(watcher::Event::InitDone) => {
            let _ = tx.send(Cleanup::Sweep);
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(kind = kind.as_str(), error = %err, "watch failed; retrying with backoff")
        }
    }
}

/// Runs cleanup jobs one at a time until every sender is gone. A failed job is only logged: the next sweep
/// retries it.
pub(super) async fn run_cleanup(ctx: Arc<Context>, mut jobs: mpsc::UnboundedReceiver<Cleanup>) {
    while let Some(job) = jobs.recv().await {
        if ctx.wait_synced().await.is_err() {
            return;
        }
        let result = match job {
            Cleanup::Gone(kind, owner) => {
                if kind == ShardKind::Policy {
                    ctx.set_key_counts(&owner, [0; 3]);
                }
                ctx.delete_shard(kind, &owner).await
            }
            Cleanup::Sweep => sweep_orphans(&ctx).await,
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, category = err.category(), "shard cleanup failed; the next sweep retries");
        }
    }
}

/// Deletes every shard whose policy or endpoint no longer exists. Ownership is read from the shard's own JSON,
/// the authoritative record (an owner label may be shortened); a shard this operator version cannot parse is
/// left alone.
async fn sweep_orphans(ctx: &Context) -> Result<(), ReconcileError> {
    for secret in ctx.shards.state() {
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(gateway::SHARD_DATA_KEY)) else {
            continue;
        };
        let Ok(shard) = Shard::from_json(&bytes.0) else {
            continue;
        };
        // The signing shard belongs to the installation, not to an object: never an orphan.
        let Some(owner) = shard.owner() else {
            continue;
        };
        let exists = match shard.kind() {
            ShardKind::Policy => ctx.policies.get(&ObjectRef::new(&owner.name).within(&owner.namespace)).is_some(),
            ShardKind::Endpoint => ctx.endpoints.get(&ObjectRef::new(&owner.name).within(&owner.namespace)).is_some(),
            ShardKind::Signing => true,
        };
        if !exists {
            ctx.delete_shard(shard.kind(), owner).await?;
        }
    }
    Ok(())
}
