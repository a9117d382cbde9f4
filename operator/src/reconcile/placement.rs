//! Keeps the per-endpoint Services and EndpointSlices ([`infergate_compile::placement`]) in step with the
//! endpoints and the agents' Leases, in the operator's namespace.
//!
//! ```text
//!  every 5 s (leader only): endpoints + agent reports ─▶ endpoint_services (pure) ─▶ desired objects
//!     changed since the last apply ─▶ server-side apply (field manager infergate-operator)
//!     applied before (or found labelled at start) and no longer desired ─▶ delete
//! ```
//! A poll rather than a watch-driven controller: agents renew their Leases every 10 s anyway, and a few seconds
//! of delay before a new agent joins an endpoint's Service is what a Deployment rollout already tolerates.
use super::context::Context;
use chrono::Utc;
use infergate_compile::placement::{COMPONENT, endpoint_services};
use infergate_crds::InferenceEndpoint;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(5);

/// What is applied, by `service/<name>` or `slice/<name>`, as the JSON last written.
type Applied = BTreeMap<String, String>;

pub(super) async fn run(ctx: Arc<Context>) {
    if ctx.wait_synced().await.is_err() {
        return;
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{}={COMPONENT}", infergate_crds::labels::COMPONENT);
    // Objects left by an earlier leader are "applied" with unknown content: kept if desired, else deleted.
    let mut applied = Applied::new();
    if let Ok(list) = services.list(&ListParams::default().labels(&selector)).await {
        applied.extend(
            list.items.into_iter().filter_map(|s| s.metadata.name).map(|n| (format!("service/{n}"), String::new())),
        );
    }
    if let Ok(list) = slices.list(&ListParams::default().labels(&selector)).await {
        applied.extend(
            list.items.into_iter().filter_map(|s| s.metadata.name).map(|n| (format!("slice/{n}"), String::new())),
        );
    }
    loop {
        sync(&ctx, &services, &slices, &mut applied).await;
        tokio::time::sleep(EVERY).await;
    }
}

async fn sync(ctx: &Context, services: &Api<Service>, slices: &Api<EndpointSlice>, applied: &mut Applied) {
    let endpoints = ctx.endpoints.state();
    let endpoints: Vec<&InferenceEndpoint> = endpoints.iter().map(|e| e.as_ref()).collect();
    let desired = endpoint_services(&endpoints, &ctx.agent_reports(), &ctx.namespace, Utc::now());
    let params = PatchParams::apply("infergate-operator").force();
    let mut wanted = Vec::new();
    for entry in &desired {
        let name = entry.service.metadata.name.clone().unwrap_or_default();
        wanted.push(format!("service/{name}"));
        apply(services, "service", &name, &entry.service, &params, applied).await;
        for slice in &entry.slices {
            let name = slice.metadata.name.clone().unwrap_or_default();
            wanted.push(format!("slice/{name}"));
            apply(slices, "slice", &name, slice, &params, applied).await;
        }
    }
    let gone: Vec<String> = applied.keys().filter(|k| !wanted.contains(k)).cloned().collect();
    for key in gone {
        let (kind, name) = key.split_once('/').expect("keys are kind/name");
        let deleted = match kind {
            "service" => services.delete(name, &DeleteParams::default()).await.map(|_| ()),
            _ => slices.delete(name, &DeleteParams::default()).await.map(|_| ()),
        };
        let gone_already = matches!(&deleted, Err(kube::Error::Api(e)) if e.code == 404);
        match deleted {
            Ok(()) => {
                applied.remove(&key);
            }
            Err(_) if gone_already => {
                applied.remove(&key);
            }
            Err(err) => tracing::warn!(kind, name, error = %err, "cannot delete an endpoint Service object; retrying"),
        }
    }
}

async fn apply<K>(api: &Api<K>, kind: &str, name: &str, object: &K, params: &PatchParams, applied: &mut Applied)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let json = serde_json::to_string(object).unwrap_or_default();
    let key = format!("{kind}/{name}");
    if applied.get(&key) == Some(&json) {
        return;
    }
    match api.patch(name, params, &Patch::Apply(object)).await {
        Ok(_) => {
            applied.insert(key, json);
        }
        Err(err) => tracing::warn!(kind, name, error = %err, "cannot apply an endpoint Service object; retrying"),
    }
}
