//! `infergate-agent cluster`: config from the operator's gateway-config Secrets, revision on this node's Lease.
//!
//! ```text
//!  watcher(Secrets, label infergate.dev/component=gateway-config, --namespace only)
//!     ─▶ shards by Secret name (last good version kept when one fails to parse) ─▶ Snapshot::build ─▶ apply
//!                                                    └─ the signing shard, when it changed ─▶ Tokens::set_ring
//!  every swap and every 10 s ─▶ server-side apply Lease infergate-agent-<node>
//!        (config revision, applied-at, enforced revocation ids; label infergate.dev/component=agent)
//! ```
//! Until the first full list has arrived the agent is not ready (`/readyz` 503), so it never serves an empty config.
use crate::cli::ClusterArgs;
use crate::gateway::Gateway;
use crate::serve::Listeners;
use crate::snapshot::{Snapshot, SnapshotOptions};
use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use infergate_crds::gateway::{SHARD_DATA_KEY, SHARD_SELECTOR, Shard, agent_lease_name, lease};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const FIELD_MANAGER: &str = "infergate-agent";
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_DURATION_SECONDS: i32 = 30;

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let scheme = if args.common.tls_cert.is_some() { "https" } else { "http" };
    let gateway = crate::build_gateway(&args.common, format!("{scheme}://{}", args.http_addr))?;
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or kubeconfig)")?;
    let config_namespace = args.config_namespace.as_deref().unwrap_or(&args.namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), config_namespace);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.namespace);
    let options = SnapshotOptions {
        environment: args.common.environment,
        node_name: Some(args.node_name.clone()),
        service_namespace: Some(args.namespace.clone()),
    };
    let config = tokio::spawn(watch_config(Arc::clone(&gateway), secrets, options));
    let address = args.pod_ip.map(
        |ip| serde_json::json!({"ip": ip.to_string(), "http": args.http_addr.port(), "grpc": args.grpc_addr.port(), "admin": args.admin_addr.port()}),
    );
    let publisher = tokio::spawn(publish_lease(Arc::clone(&gateway), leases, args.node_name.clone(), address));
    let listeners = Listeners::new(args.http_addr, args.grpc_addr, args.admin_addr, &args.common);
    let result = crate::serve::serve(gateway, listeners).await;
    config.abort();
    publisher.abort();
    result
}

/// Shards by Secret name, each with its revision (hashed once, when it arrives), and the rebuild after every
/// change.
#[derive(Default)]
pub struct ShardSet {
    shards: BTreeMap<String, (Shard, String)>,
    listing: Option<BTreeMap<String, (Shard, String)>>,
}

impl ShardSet {
    /// Applies one watch event; returns whether the set changed and a snapshot should be rebuilt.
    pub fn on_event(&mut self, event: Event<Secret>, gateway: &Gateway) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(secret) => {
                if let (Some(listing), Some((name, shard))) = (self.listing.as_mut(), parse(&secret, gateway)) {
                    let revision = shard.revision();
                    listing.insert(name, (shard, revision));
                }
                false
            }
            Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.shards = listing;
                }
                true
            }
            Event::Apply(secret) => match parse(&secret, gateway) {
                Some((name, shard)) if self.shards.get(&name).is_some_and(|(s, _)| *s == shard) => false,
                Some((name, shard)) => {
                    let revision = shard.revision();
                    self.shards.insert(name, (shard, revision));
                    true
                }
                // A shard that does not parse keeps its last good version: dropping it would refuse its keys.
                None => false,
            },
            Event::Delete(secret) => self.shards.remove(&secret.metadata.name.unwrap_or_default()).is_some(),
        }
    }

    #[cfg(test)]
    pub fn shards(&self) -> Vec<Shard> {
        self.shards.values().map(|(shard, _)| shard.clone()).collect()
    }

    /// Every shard with its revision, for [`Snapshot::build_revised`] (no copies, no re-hashing).
    pub fn revised(&self) -> impl Iterator<Item = (&Shard, &str)> {
        self.shards.values().map(|(shard, revision)| (shard, revision.as_str()))
    }

    /// The session-token signing ring the operator publishes, if it has.
    pub fn signing_ring(&self) -> Option<&infergate_token::StoredRing> {
        self.shards.values().find_map(|(shard, _)| match shard {
            Shard::Signing(signing) => Some(&signing.ring),
            _ => None,
        })
    }
}

/// Installs the published ring when it differs from the one installed last (`installed`). Re-installing the same
/// ring would only empty the verified-token cache. A ring that does not load keeps the previous one.
fn install_ring(gateway: &Gateway, set: &ShardSet, installed: &mut Option<infergate_token::StoredRing>) {
    let Some(stored) = set.signing_ring() else {
        return;
    };
    if installed.as_ref() == Some(stored) {
        return;
    }
    let loaded = infergate_token::KeyRing::from_stored(stored)
        .map_err(|e| anyhow::anyhow!("{} ({})", e.category(), e))
        .and_then(|ring| gateway.tokens.set_ring(ring));
    match loaded {
        Ok(()) => {
            let kids: Vec<&str> = stored.keys.iter().map(|k| k.kid.as_str()).collect();
            tracing::info!(signing_keys = ?kids, "session-token signing keys applied");
            *installed = Some(stored.clone());
        }
        Err(err) => {
            gateway.metrics.config_errors.inc();
            tracing::warn!(error = %err, "the published signing-key ring does not load; keeping the previous one");
        }
    }
}

fn parse(secret: &Secret, gateway: &Gateway) -> Option<(String, Shard)> {
    let name = secret.metadata.name.clone()?;
    let bytes = secret.data.as_ref().and_then(|d| d.get(SHARD_DATA_KEY)).map(|b| b.0.as_slice());
    let Some(bytes) = bytes else {
        gateway.metrics.config_errors.inc();
        tracing::warn!(secret = %name, "gateway-config Secret has no {SHARD_DATA_KEY}; ignoring it");
        return None;
    };
    match Shard::from_json(bytes) {
        Ok(shard) => Some((name, shard)),
        Err(err) => {
            gateway.metrics.config_errors.inc();
            tracing::warn!(secret = %name, category = err.category(), error = %err, "gateway-config shard ignored");
            None
        }
    }
}

async fn watch_config(gateway: Arc<Gateway>, secrets: Api<Secret>, options: SnapshotOptions) {
    let mut set = ShardSet::default();
    let mut installed_ring = None;
    let mut events =
        watcher::watcher(secrets, watcher::Config::default().labels(SHARD_SELECTOR)).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                // Any event (a re-list after an outage starts with one) means the API server answers again.
                gateway.config_source_up(true);
                if set.on_event(event, &gateway) {
                    // Keys first: a token minted from a new key may arrive with the config that announces it.
                    install_ring(&gateway, &set, &mut installed_ring);
                    let (snapshot, warnings) = Snapshot::build_revised(set.revised(), options.clone());
                    for w in warnings {
                        tracing::warn!(problem = %w.0, "gateway config");
                    }
                    tracing::info!(revision = %snapshot.revision, keys = snapshot.key_count(), "config applied");
                    gateway.apply(snapshot);
                }
            }
            Err(err) => {
                gateway.config_source_up(false);
                gateway.metrics.config_errors.inc();
                tracing::warn!(error = %err, "watching gateway-config Secrets failed; retrying with backoff");
            }
        }
    }
}

/// Lease annotation with the agent's GPU mode and per-tier refill factors (JSON, from [`crate::gpu::Gpu::status_json`]).
pub const GPU_LIMITS_ANNOTATION: &str = "infergate.dev/gpu-limits";
/// Lease annotation with each built-in model's state (JSON object: model name to `ready` or `missing: ...`).
pub const MODELS_ANNOTATION: &str = "infergate.dev/models";

/// The Lease body this agent publishes.
pub fn lease_body(node: &str, namespace: Option<&str>, snapshot: &Snapshot) -> serde_json::Value {
    let (label_key, label_value) = lease::AGENT_LEASE_LABEL.split_once('=').expect("label selector has key=value");
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let revocations: Vec<String> =
        snapshot.revoked_key_ids(lease::MAX_PUBLISHED_REVOCATIONS).into_iter().map(|k| k.0).collect();
    let mut metadata = serde_json::json!({
        "name": agent_lease_name(node),
        "labels": { label_key: label_value },
        "annotations": {
            lease::CONFIG_REVISION: snapshot.revision,
            lease::CONFIG_APPLIED_AT: now,
            lease::ENFORCED_REVOCATIONS: revocations.join(","),
            lease::SERVES: serde_json::to_string(&snapshot.endpoints().iter().map(|e| e.label.as_str()).collect::<Vec<_>>())
                .unwrap_or_default(),
        },
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = ns.into();
    }
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": { "holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now },
    })
}

async fn publish_lease(gateway: Arc<Gateway>, leases: Api<Lease>, node: String, address: Option<serde_json::Value>) {
    let name = agent_lease_name(&node);
    let mut changes = gateway.subscribe();
    loop {
        if gateway.is_ready() {
            let mut body = lease_body(&node, None, &gateway.snapshot());
            if let Some(address) = &address {
                body["metadata"]["annotations"][lease::ADDRESS] = address.to_string().into();
            }
            body["metadata"]["annotations"][MODELS_ANNOTATION] = gateway.models_json().to_string().into();
            if let Some(gpu) = gateway.gpu() {
                // CPU/GPU mode and each tier's current refill factor, refreshed with every renewal.
                body["metadata"]["annotations"][GPU_LIMITS_ANNOTATION] = gpu.status_json().to_string().into();
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            if let Err(err) = leases.patch(&name, &params, &Patch::Apply(&body)).await {
                tracing::warn!(lease = %name, error = %err, "cannot update this agent's Lease; the operator will count it as stale");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LEASE_RENEW) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_crds::endpoint::Feature;
    use infergate_gate::testing::{key, mk_endpoint, mk_policy};
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    fn secret(name: &str, shard: &Shard) -> Secret {
        Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            data: Some([(SHARD_DATA_KEY.to_string(), ByteString(shard.to_json()))].into()),
            ..Secret::default()
        }
    }

    fn gateway() -> Arc<Gateway> {
        Gateway::new(
            Default::default(),
            Arc::new(infergate_gate::limiter::Limiter::new(
                Arc::new(infergate_gate::limiter::InMemoryStore::default()),
            )),
            crate::backend::Backends::new(Default::default()),
        )
    }

    fn signing_shard(ring: &infergate_token::KeyRing) -> Shard {
        Shard::Signing(infergate_crds::gateway::SigningShard {
            schema_version: infergate_crds::gateway::SHARD_SCHEMA_VERSION,
            ring: ring.to_stored(),
        })
    }

    #[test]
    fn the_signing_shard_installs_the_ring_and_leaves_the_snapshot_alone() {
        let gateway = gateway();
        let endpoint = mk_endpoint("transcribe", "whisper-1").shard();
        let policy = mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard();
        let ring = infergate_token::KeyRing::bootstrap(Utc::now());
        let mut set = ShardSet::default();
        let mut installed = None;
        for event in [Event::Init, Event::InitApply(secret("e", &endpoint)), Event::InitApply(secret("p", &policy))] {
            set.on_event(event, &gateway);
        }
        set.on_event(Event::InitApply(secret(&signing_shard(&ring).secret_name(), &signing_shard(&ring))), &gateway);
        assert!(set.on_event(Event::InitDone, &gateway));
        install_ring(&gateway, &set, &mut installed);
        assert_eq!(gateway.tokens.jwks(), ring.jwks());
        let (with, _) = Snapshot::build(&set.shards(), SnapshotOptions::default());
        let (without, _) = Snapshot::build(&[endpoint, policy], SnapshotOptions::default());
        assert_eq!((with.key_count(), with.endpoints().len()), (without.key_count(), without.endpoints().len()));
        assert_ne!(with.revision, without.revision, "the agent's revision names the ring it runs");
        // Revisions hashed on arrival give the same snapshot revision as hashing at build time.
        let (revised, _) = Snapshot::build_revised(set.revised(), SnapshotOptions::default());
        assert_eq!((revised.revision.as_str(), revised.key_count()), (with.revision.as_str(), with.key_count()));
        // A rotated ring is installed; a ring that does not load leaves the installed one in place.
        let mut rotated = ring.clone();
        let next = rotated.plan(Utc::now() + chrono::Duration::days(7), &Default::default());
        rotated.apply(&next, Utc::now(), infergate_token::SigningKey::generate);
        let name = signing_shard(&ring).secret_name();
        assert!(set.on_event(Event::Apply(secret(&name, &signing_shard(&rotated))), &gateway));
        install_ring(&gateway, &set, &mut installed);
        assert_eq!(gateway.tokens.jwks().keys.len(), 2);
        let mut broken = rotated.to_stored();
        broken.keys[0].pkcs8 = "bm90IGEga2V5".into();
        let broken = Shard::Signing(infergate_crds::gateway::SigningShard { schema_version: 1, ring: broken });
        assert!(set.on_event(Event::Apply(secret(&name, &broken)), &gateway));
        install_ring(&gateway, &set, &mut installed);
        assert_eq!(gateway.tokens.jwks(), rotated.jwks());
    }

    #[test]
    fn watch_events_rebuild_only_on_change_and_keep_last_good_shards() {
        let gateway = gateway();
        let endpoint = mk_endpoint("transcribe", "whisper-1").shard();
        let policy = mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard();
        let mut set = ShardSet::default();
        assert!(!set.on_event(Event::Init, &gateway));
        assert!(!set.on_event(Event::InitApply(secret("e", &endpoint)), &gateway));
        assert!(!set.on_event(Event::InitApply(secret("p", &policy)), &gateway));
        assert!(set.on_event(Event::InitDone, &gateway));
        assert_eq!(set.shards().len(), 2);
        assert!(!set.on_event(Event::Apply(secret("p", &policy)), &gateway), "same content: no rebuild");
        let mut broken = secret("p", &policy);
        broken.data = Some([(SHARD_DATA_KEY.to_string(), ByteString(b"{".to_vec()))].into());
        assert!(!set.on_event(Event::Apply(broken), &gateway));
        assert_eq!(set.shards().len(), 2, "the last good shard stays");
        assert!(set.on_event(Event::Delete(secret("p", &policy)), &gateway));
        assert_eq!(set.shards(), vec![endpoint]);
    }

    #[test]
    fn lease_carries_revision_and_revocations() {
        let policy = mk_policy("app")
            .key(&key(1))
            .revoked(&key(3))
            .scope("transcribe", "whisper-1", &[Feature::Transcribe])
            .shard();
        let (snapshot, _) =
            Snapshot::build(&[mk_endpoint("transcribe", "whisper-1").shard(), policy], SnapshotOptions::default());
        let body = lease_body("node-a", Some("infergate-system"), &snapshot);
        assert_eq!(body["metadata"]["name"], "infergate-agent-node-a");
        assert_eq!(body["metadata"]["labels"]["infergate.dev/component"], "agent");
        let ann = &body["metadata"]["annotations"];
        assert_eq!(ann[lease::CONFIG_REVISION], snapshot.revision.as_str());
        assert_eq!(ann[lease::ENFORCED_REVOCATIONS], key(3).id().as_str());
        assert_eq!(body["spec"]["holderIdentity"], "node-a");
    }
}
