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
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
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

/// Shards per list page of a sweep: a page is held only while it is checked (shards are not cached).
const SWEEP_PAGE: u32 = 500;

/// Deletes every shard whose policy or endpoint no longer exists, listing the shards page by page. Ownership is
/// read from the shard's own JSON, the authoritative record (an owner label may be shortened); a shard this
/// operator version cannot parse is left alone.
async fn sweep_orphans(ctx: &Context) -> Result<(), ReconcileError> {
    let api = ctx.shards_api();
    let mut params = ListParams::default().labels(gateway::SHARD_SELECTOR).limit(SWEEP_PAGE);
    loop {
        let page = api.list(&params).await.map_err(|source| ReconcileError::ShardList { source })?;
        for (kind, owner) in page.items.iter().filter_map(shard_owner) {
            let exists = match kind {
                ShardKind::Policy => ctx.policies.get(&ObjectRef::new(&owner.name).within(&owner.namespace)).is_some(),
                ShardKind::Endpoint => {
                    ctx.endpoints.get(&ObjectRef::new(&owner.name).within(&owner.namespace)).is_some()
                }
                ShardKind::Signing => true,
            };
            if !exists {
                ctx.delete_shard(kind, &owner).await?;
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

/// The kind and owner a shard Secret's JSON names; `None` for the signing shard (it belongs to the installation,
/// never an orphan) and for a Secret this version cannot read.
fn shard_owner(secret: &Secret) -> Option<(ShardKind, NamespacedName)> {
    let bytes = secret.data.as_ref()?.get(gateway::SHARD_DATA_KEY)?;
    let shard = Shard::from_json(&bytes.0).ok()?;
    Some((shard.kind(), shard.owner()?.clone()))
}
