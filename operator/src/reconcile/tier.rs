//! The RateTier reconcile: a tier has no references of its own; its status counts the policies that use it.
use super::ReconcileError;
use super::context::Context;
use chrono::Utc;
use infergate_crds::RateTier;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub async fn reconcile_tier(tier: Arc<RateTier>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let _timer = ctx.start::<RateTier>().await?;
    let name = tier.name_any();
    let users = ctx.policies.state().iter().filter(|p| p.spec.tier == name).count() as u32;
    let status = infergate_compile::compile_tier(&tier, users, Utc::now());
    if tier.status.as_ref() != Some(&status) {
        ctx.write_status(tier.as_ref(), &status).await?;
    }
    Ok(Action::await_change())
}
