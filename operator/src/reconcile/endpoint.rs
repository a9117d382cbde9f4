//! The InferenceEndpoint reconcile: compile against every endpoint (fallbacks, model names), publish or withdraw
//! the shard, write status and Events.
use super::ReconcileError;
use super::context::{Context, EndpointSnapshot, namespaced_name};
use super::policy::policies_scoping;
use chrono::Utc;
use infergate_crds::InferenceEndpoint;
use infergate_crds::gateway::{Shard, ShardKind};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

pub async fn reconcile_endpoint(endpoint: Arc<InferenceEndpoint>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let _timer = ctx.start::<InferenceEndpoint>().await?;
    let owner = namespaced_name(endpoint.as_ref())?;
    if endpoint.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let endpoints = EndpointSnapshot::of(&ctx.endpoints);
    let users = policies_scoping(&ctx.policies, &owner).len() as u32;
    let credentials = ctx.upstream_secrets.state();
    let credential = infergate_compile::upstream_credential(&endpoint, credentials.iter().map(|s| s.as_ref()));
    let outcome = infergate_compile::compile_endpoint(&endpoint, &endpoints, users, credential, Utc::now());
    let shard = outcome.shard.clone().map(|mut shard| {
        let nodes = ctx.nodes.state();
        let labelled = nodes.iter().map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n.labels()));
        shard.serving_nodes = infergate_compile::placement::serving_nodes(shard.node_selector.as_ref(), labelled);
        Shard::Endpoint(shard)
    });
    let existing = ctx.fetch_shard(ShardKind::Endpoint, &owner).await?;
    ctx.sync_shard(ShardKind::Endpoint, &owner, shard, existing.as_ref()).await?;
    if endpoint.status.as_ref() != Some(&outcome.status) {
        ctx.write_status(endpoint.as_ref(), &outcome.status).await?;
    }
    ctx.publish_events(&outcome.events).await;
    Ok(Action::await_change())
}
