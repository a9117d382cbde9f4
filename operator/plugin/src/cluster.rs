//! The Kubernetes side: one client from the kubeconfig (as kubectl finds it), and the few reads and writes the
//! commands make. Every failure becomes an [`Error`] that says which call failed and how the API server answered.
use crate::error::{Error, is_not_found};
use crate::keys::FIELD_MANAGER;
use infergate_crds::gateway::{self, SHARD_DATA_KEY, Shard};
use infergate_crds::{ApiKeyPolicy, NamespacedName};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub struct Cluster {
    client: Client,
    /// The namespace of the kubeconfig context (kubectl's default for `-n`).
    pub default_namespace: String,
    /// `--context`, or `None` for the current context.
    context: Option<String>,
}

impl Cluster {
    /// A client the way kubectl makes one: `KUBECONFIG` (or `~/.kube/config`) and its current context, or the
    /// in-cluster service account when there is no kubeconfig.
    pub async fn connect(context: Option<String>) -> Result<Self, Error> {
        let config = match &context {
            Some(name) => {
                let options = KubeConfigOptions { context: Some(name.clone()), ..Default::default() };
                Config::from_kubeconfig(&options).await.map_err(|e| Error::Config(e.to_string()))?
            }
            None => Config::infer().await.map_err(|e| Error::Config(e.to_string()))?,
        };
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { client, default_namespace, context })
    }

    fn policies_in(&self, namespace: &str) -> Api<ApiKeyPolicy> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub async fn policy(&self, at: &NamespacedName) -> Result<ApiKeyPolicy, Error> {
        self.policies_in(&at.namespace).get(&at.name).await.map_err(|e| {
            if is_not_found(&e) {
                Error::PolicyNotFound(at.clone())
            } else {
                Error::api(format!("reading ApiKeyPolicy {at}"), e)
            }
        })
    }

    /// Every policy in `namespace`, or in every namespace.
    pub async fn policies(&self, namespace: Option<&str>) -> Result<Vec<ApiKeyPolicy>, Error> {
        let (api, shown) = match namespace {
            Some(ns) => (self.policies_in(ns), format!("namespace {ns}")),
            None => (Api::all(self.client.clone()), "all namespaces".to_string()),
        };
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::api(format!("listing ApiKeyPolicies in {shown}"), e))?;
        Ok(list.items)
    }

    /// A merge patch of the policy's metadata, recorded under the plugin's field manager.
    pub async fn patch_metadata(&self, at: &NamespacedName, patch: &serde_json::Value) -> Result<ApiKeyPolicy, Error> {
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..Default::default() };
        self.policies_in(&at.namespace).patch(&at.name, &params, &Patch::Merge(patch)).await.map_err(|e| {
            if is_not_found(&e) {
                Error::PolicyNotFound(at.clone())
            } else {
                Error::api(format!("annotating ApiKeyPolicy {at}"), e)
            }
        })
    }

    /// Server-side apply as the plugin's field manager, without `force`: a conflict with another manager's field is
    /// reported, never taken over.
    pub async fn apply(&self, at: &NamespacedName, body: &serde_json::Value) -> Result<ApiKeyPolicy, Error> {
        let params = PatchParams::apply(FIELD_MANAGER);
        self.policies_in(&at.namespace)
            .patch(&at.name, &params, &Patch::Apply(body))
            .await
            .map_err(|e| Error::api(format!("applying spec.revocations to ApiKeyPolicy {at}"), e))
    }

    /// The agents' Leases in the operator's namespace.
    pub async fn agent_leases(&self, namespace: &str) -> Result<Vec<Lease>, Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().labels(gateway::lease::AGENT_LEASE_LABEL);
        let list = api
            .list(&params)
            .await
            .map_err(|e| Error::api(format!("listing agent Leases in namespace {namespace}"), e))?;
        Ok(list.items)
    }

    /// The published gateway-config shards, parsed as an agent parses them (shards it would ignore are left out).
    pub async fn shards(&self, namespace: &str) -> Result<Vec<Shard>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&ListParams::default().labels(gateway::SHARD_SELECTOR))
            .await
            .map_err(|e| Error::api(format!("listing gateway-config Secrets in namespace {namespace}"), e))?;
        Ok(list
            .items
            .iter()
            .filter_map(|s| s.data.as_ref()?.get(SHARD_DATA_KEY))
            .filter_map(|bytes| Shard::from_json(&bytes.0).ok())
            .collect())
    }

    /// Who the API server says we are (SelfSubjectReview); where it cannot say, the kubeconfig context's user name.
    pub async fn who_am_i(&self) -> Option<String> {
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        if let Ok(review) = api.create(&PostParams::default(), &SelfSubjectReview::default()).await {
            let name = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                return Some(name);
            }
        }
        let kubeconfig = Kubeconfig::read().ok()?;
        let context = self.context.clone().or(kubeconfig.current_context)?;
        kubeconfig.contexts.into_iter().find(|c| c.name == context)?.context?.user.filter(|u| !u.is_empty())
    }
}
