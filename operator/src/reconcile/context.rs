//! What the reconcilers share: the reflector stores, the client, and the writes every kind makes the same way
//! (shard read, apply or delete, status apply).
//!
//! ```text
//!  reflector stores ─▶ Context ─▶ reconcile_{policy,endpoint,tier}
//!                                    ├─▶ fetch_shard (GET): published_policy_shard, the record of a policy's keys
//!                                    └─▶ sync_shard (apply if changed / delete if present) · write_status (SSA)
//! ```
use super::ReconcileError;
use super::pending::PendingWrites;
use crate::kube_apply;
use crate::metrics::{Metrics, ReconcileTimer};
use infergate_compile::{AgentReport, EndpointLookup};
use infergate_crds::gateway::{self, PolicyShard, Shard, ShardKind};
use infergate_crds::key::KeyId;
use infergate_crds::{ApiKeyPolicy, ApiKeyPolicyStatus, InferenceEndpoint, NamespacedName, RateTier};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Everything the reconcilers share.
pub struct Context {
    pub client: Client,
    /// The operator's namespace: its Lease and the agents' Leases.
    pub namespace: String,
    /// Where the gateway-config shards live (`--config-namespace`, else `namespace`).
    pub config_namespace: String,
    pub policies: Store<ApiKeyPolicy>,
    pub tiers: Store<RateTier>,
    pub endpoints: Store<InferenceEndpoint>,
    /// Secrets labelled as upstream credentials (`backend.upstream.auth`).
    pub upstream_secrets: Store<Secret>,
    pub agent_leases: Store<Lease>,
    /// Nodes, labels only: which nodes serve an endpoint with a `nodeSelector`.
    pub nodes: Store<k8s_openapi::api::core::v1::Node>,
    /// Who the operator's Events say reported them.
    pub reporter: Reporter,
    pub metrics: Metrics,
    pub(super) synced: watch::Receiver<bool>,
    pub(super) pending_status: Arc<PendingWrites<ApiKeyPolicyStatus>>,
    /// Keys per policy by state (current, retiring, revoked), summed into the `keys` gauge.
    pub(super) key_counts: Mutex<HashMap<NamespacedName, [i64; 3]>>,
}

const KEY_STATES: [&str; 3] = ["current", "retiring", "revoked"];

impl Context {
    pub(super) async fn wait_synced(&self) -> Result<(), ReconcileError> {
        let mut rx = self.synced.clone();
        rx.wait_for(|s| *s).await.map(|_| ()).map_err(|_| ReconcileError::CachesGone)
    }

    /// Where every reconcile starts: the caches have synced, and the duration is measured until the returned
    /// guard drops.
    pub(super) async fn start<K: Reconciled>(&self) -> Result<ReconcileTimer, ReconcileError> {
        self.wait_synced().await?;
        Ok(self.metrics.reconcile_started(K::METRIC_KIND))
    }

    pub(super) fn shards_api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config_namespace)
    }

    pub(super) fn agent_reports(&self) -> Vec<AgentReport> {
        self.agent_leases.state().iter().map(|lease| agent_report(lease)).collect()
    }

    pub(super) fn set_key_counts(&self, policy: &NamespacedName, counts: [i64; 3]) {
        let mut all = self.key_counts.lock().expect("key count map poisoned");
        let old =
            if counts == [0; 3] { all.remove(policy) } else { all.insert(policy.clone(), counts) }.unwrap_or([0; 3]);
        for (i, state) in KEY_STATES.iter().enumerate() {
            self.metrics.keys.with_label_values(&[state]).add(counts[i] - old[i]);
        }
    }

    /// The shard Secret of `owner` as the API server holds it now. Read, never cached: a policy's shard is the
    /// record of its retiring and revoked keys, so a reconcile must never see one older than its own last write,
    /// and a cache of every shard would hold every key digest in the operator's memory.
    pub(super) async fn fetch_shard(
        &self,
        kind: ShardKind,
        owner: &NamespacedName,
    ) -> Result<Option<Secret>, ReconcileError> {
        let name = gateway::shard_secret_name(kind, owner);
        self.shards_api().get_opt(&name).await.map_err(|source| ReconcileError::ShardRead { secret: name, source })
    }

    /// Publishes `shard` for `owner` over `existing` (what [`fetch_shard`](Self::fetch_shard) returned), or,
    /// when there is none (the owner is not Ready), makes sure no shard of it exists: an owner that is not Ready
    /// must not be served from a stale shard.
    pub(super) async fn sync_shard(
        &self,
        kind: ShardKind,
        owner: &NamespacedName,
        shard: Option<Shard>,
        existing: Option<&Secret>,
    ) -> Result<(), ReconcileError> {
        match shard {
            Some(shard) => {
                let desired = infergate_compile::publish::shard_secret(&shard, &self.config_namespace);
                if existing.is_some_and(|e| !secret_differs(&desired, e)) {
                    return Ok(());
                }
                let name = desired.metadata.name.clone().unwrap_or_default();
                kube_apply::apply_secret(&self.shards_api(), &desired)
                    .await
                    .map(|_| ())
                    .map_err(|source| ReconcileError::ShardWrite { secret: name, source })
            }
            None if existing.is_some() => self.delete_shard(kind, owner).await,
            None => Ok(()),
        }
    }

    /// Deletes `owner`'s shard; one that is already gone is done.
    pub(super) async fn delete_shard(&self, kind: ShardKind, owner: &NamespacedName) -> Result<(), ReconcileError> {
        let name = gateway::shard_secret_name(kind, owner);
        let deleted = kube_apply::delete_secret(&self.shards_api(), &name)
            .await
            .map_err(|source| ReconcileError::ShardDelete { secret: name.clone(), source })?;
        if deleted {
            tracing::info!(shard = %name, owner = %owner, kind = kind.as_str(), "deleted gateway-config shard");
        }
        Ok(())
    }

    /// Server-side-applies `status` on `obj`'s `/status`; returns the object as written.
    pub(super) async fn write_status<K: Reconciled, S: Serialize>(
        &self,
        obj: &K,
        status: &S,
    ) -> Result<K, ReconcileError> {
        let name = obj.name_any();
        let shown = match obj.namespace() {
            Some(ns) => NamespacedName::new(ns, &name).to_string(),
            None => name.clone(),
        };
        kube_apply::apply_status(&K::api_for(self.client.clone(), obj), &name, status)
            .await
            .map_err(|source| ReconcileError::Status { kind: K::KIND, name: shown, source })
    }
}

/// The kinds the operator reconciles, with the fixed names their logs, errors and metrics use.
pub trait Reconciled: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The Kubernetes kind, as in error messages.
    const KIND: &'static str;
    /// The `kind` metric label.
    const METRIC_KIND: &'static str;
    /// The API that addresses `obj`: its namespace for namespaced kinds, the cluster for cluster-scoped ones.
    fn api_for(client: Client, obj: &Self) -> Api<Self>;
}

impl Reconciled for ApiKeyPolicy {
    const KIND: &'static str = "ApiKeyPolicy";
    const METRIC_KIND: &'static str = "apikeypolicy";
    fn api_for(client: Client, obj: &Self) -> Api<Self> {
        Api::namespaced(client, &obj.namespace().unwrap_or_default())
    }
}

impl Reconciled for InferenceEndpoint {
    const KIND: &'static str = "InferenceEndpoint";
    const METRIC_KIND: &'static str = "inferenceendpoint";
    fn api_for(client: Client, obj: &Self) -> Api<Self> {
        Api::namespaced(client, &obj.namespace().unwrap_or_default())
    }
}

impl Reconciled for RateTier {
    const KIND: &'static str = "RateTier";
    const METRIC_KIND: &'static str = "ratetier";
    fn api_for(client: Client, _: &Self) -> Api<Self> {
        Api::all(client)
    }
}

/// The namespace and name of a namespaced object; one without a namespace cannot be reconciled.
pub(super) fn namespaced_name<K: Reconciled>(obj: &K) -> Result<NamespacedName, ReconcileError> {
    let name = obj.name_any();
    match obj.namespace() {
        Some(namespace) => Ok(NamespacedName::new(namespace, name)),
        None => Err(ReconcileError::MissingNamespace { kind: K::KIND, name }),
    }
}

/// An agent's Lease as the pure function sees it (see `infergate_crds::gateway::lease`).
pub fn agent_report(lease: &Lease) -> AgentReport {
    let name = lease.name_any();
    let annotations = lease.annotations();
    let spec = lease.spec.as_ref();
    AgentReport {
        node: name.strip_prefix(gateway::lease::AGENT_LEASE_PREFIX).unwrap_or(&name).to_string(),
        config_revision: annotations.get(gateway::lease::CONFIG_REVISION).cloned(),
        enforced_revocations: annotations
            .get(gateway::lease::ENFORCED_REVOCATIONS)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .take(gateway::lease::MAX_PUBLISHED_REVOCATIONS)
                    .map(|s| KeyId(s.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        renewed_at: spec.and_then(|s| s.renew_time.as_ref()).map(|t| infergate_crds::conditions::from_jiff(t.0)),
        address: annotations.get(gateway::lease::ADDRESS).and_then(|json| serde_json::from_str(json).ok()),
        serves: annotations
            .get(gateway::lease::SERVES)
            .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
            .unwrap_or_default(),
    }
}

/// The policy shard in `stored` (a shard Secret this operator published, read by
/// [`Context::fetch_shard`]), if it holds one. It lives in the operator's namespace, which tenants cannot write,
/// so it is what `compile_policy` trusts about retiring and revoked keys.
pub(super) fn published_policy_shard(stored: Option<&Secret>) -> Option<PolicyShard> {
    match Shard::from_json(&stored?.data.as_ref()?.get(gateway::SHARD_DATA_KEY)?.0) {
        Ok(Shard::Policy(shard)) => Some(shard),
        _ => None,
    }
}

/// True when applying `desired` would change `existing`: the fields the operator sets differ. Fields other
/// writers added (labels, annotations) are not the operator's concern and do not count.
pub fn secret_differs(desired: &Secret, existing: &Secret) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>, have: &Option<BTreeMap<String, String>>| {
        want.iter().flatten().all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    desired.data != existing.data
        || desired.type_.as_ref().is_some_and(|t| existing.type_.as_ref() != Some(t))
        || !subset(&desired.metadata.labels, &existing.metadata.labels)
        || !subset(&desired.metadata.annotations, &existing.metadata.annotations)
        || desired
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| existing.metadata.owner_references.as_ref() != Some(o))
}

/// Every endpoint in the store, keyed as the pure function looks them up.
pub(super) struct EndpointSnapshot(BTreeMap<NamespacedName, Arc<InferenceEndpoint>>);

impl EndpointSnapshot {
    pub(super) fn of(store: &Store<InferenceEndpoint>) -> Self {
        Self(
            store
                .state()
                .into_iter()
                .map(|e| (NamespacedName::new(e.namespace().unwrap_or_default(), e.name_any()), e))
                .collect(),
        )
    }
}

impl EndpointLookup for EndpointSnapshot {
    fn get(&self, at: &NamespacedName) -> Option<&InferenceEndpoint> {
        self.0.get(at).map(|e| e.as_ref())
    }
    fn with_model(&self, model: &str) -> Vec<&InferenceEndpoint> {
        self.0.values().filter(|e| e.spec.model == model).map(|e| e.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn secret(data: &[(&str, &str)], labels: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("k".into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_differ_only_in_what_the_operator_sets() {
        let desired = secret(&[("api-key", "a")], &[("infergate.dev/component", "api-key")]);
        let mut existing = secret(&[("api-key", "a")], &[("infergate.dev/component", "api-key"), ("team", "x")]);
        existing.metadata.resource_version = Some("9".into());
        assert!(!secret_differs(&desired, &existing), "extra labels and server fields are not a difference");
        assert!(secret_differs(&desired, &secret(&[("api-key", "b")], &[("infergate.dev/component", "api-key")])));
        assert!(secret_differs(&desired, &secret(&[("api-key", "a")], &[])));
    }

    #[test]
    fn agent_leases_become_reports() {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("infergate-agent-node-a".into()),
                annotations: Some(BTreeMap::from([
                    (gateway::lease::CONFIG_REVISION.to_string(), "abc123".to_string()),
                    (
                        gateway::lease::ENFORCED_REVOCATIONS.to_string(),
                        "kid_00000000000000aa, kid_00000000000000bb,".to_string(),
                    ),
                ])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())),
                ..Default::default()
            }),
        };
        assert_eq!(
            agent_report(&lease),
            AgentReport {
                node: "node-a".into(),
                config_revision: Some("abc123".into()),
                enforced_revocations: vec![KeyId("kid_00000000000000aa".into()), KeyId("kid_00000000000000bb".into())],
                renewed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0),
                ..AgentReport::default()
            }
        );
    }
}
