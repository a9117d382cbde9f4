//! Controller wiring: one watch per kind into a shared reflector store, the three controllers over those
//! streams, the cleanup task, and the gate that holds every reconcile until all stores have listed.
//!
//! ```text
//!  shared_reflector(kind) ─▶ (Store, subscriber) ─┬─▶ Controller::for_shared_stream(...).watches_shared_stream(...)
//!                          └─ on_event: pending-write bookkeeping, cleanup jobs
//!  key Secrets: metadata-only watch, no store ─▶ owns_stream (a changed or deleted Secret re-reconciles its policy)
//!  wait_until_listed(every store) ─▶ synced=true ─▶ reconciles run · Cleanup::Sweep
//! ```
//! Key Secrets and gateway-config shards are not cached: a reconcile reads the two it needs from the API server.
//! They are most of what the operator would hold (at 10k policies, 20k Secrets against 10k policies), the key
//! Secrets hold key material the operator then never keeps, and a read is never older than the reconcile's own
//! last write, so no pending-write bookkeeping is needed for them.
use super::cleanup::{Cleanup, on_owner_event, run_cleanup};
use super::context::{Context, Reconciled};
use super::pending::PendingWrites;
use super::policy::{policies_scoping, policies_using_tier};
use super::{ReconcileError, reconcile_endpoint, reconcile_policy, reconcile_tier};
use crate::metrics::Metrics;
use futures::{StreamExt, future};
use infergate_crds::gateway::{self, ShardKind};
use infergate_crds::{ApiKeyPolicy, ApiKeyPolicyStatus, InferenceEndpoint, NamespacedName, RateTier};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How many events a shared stream buffers for its slowest subscriber before the watch applies backpressure.
const SHARED_BUFFER: usize = 1024;
/// Reconciles in flight per controller. Each is a few small API calls, so the API server's latency, not CPU,
/// bounds throughput; this keeps a cold start over thousands of policies short without flooding the server.
const CONCURRENCY: u16 = 64;
const ERROR_REQUEUE: Duration = Duration::from_secs(10);
const COUNT_DEBOUNCE: Duration = Duration::from_secs(1);

type WatchEvent<K> = Result<watcher::Event<K>, watcher::Error>;

/// Starts a watch of `api` into a shared store, feeding every event to `on_event` as well; returns the store and
/// a subscriber for a controller. Managed fields are dropped from every cached object: the operator never reads
/// them and they are the bulk of an object's size.
fn shared_reflector<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    config: watcher::Config,
    on_event: impl Fn(WatchEvent<K>) + Send + 'static,
) -> (Store<K>, ReflectHandle<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
    let subscriber = writer.subscribe().expect("a shared store has a dispatcher");
    let stream =
        watcher(api, config).default_backoff().modify(|o| o.managed_fields_mut().clear()).reflect_shared(writer);
    tasks.spawn(stream.for_each(move |ev| {
        on_event(ev);
        future::ready(())
    }));
    (reader, subscriber)
}

/// Waits for one store's initial list, naming it in the log now and then so a stuck watch is visible. Re-polled
/// on a short timer: a waiter that registers just as the store turns ready can miss its wake-up in kube-runtime
/// 5's DelayedInit (seen here as a start that hung until the next poll).
async fn wait_until_listed<K>(store: &Store<K>, what: &'static str) -> Result<(), reflector::store::WriterDropped>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let started = Instant::now();
    let mut told = Duration::ZERO;
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(result) => return result,
            Err(_) if started.elapsed() >= told + Duration::from_secs(10) => {
                told = started.elapsed();
                tracing::info!(cache = what, "waiting for the initial list");
            }
            Err(_) => {}
        }
    }
}

/// The stores the gate waits for before any reconcile runs.
struct Stores {
    policies: Store<ApiKeyPolicy>,
    tiers: Store<RateTier>,
    endpoints: Store<InferenceEndpoint>,
    upstream_secrets: Store<Secret>,
    agent_leases: Store<Lease>,
}

impl Stores {
    /// One at a time, in a fixed order, so the log names the one still listing.
    async fn wait_until_listed(&self) -> Result<(), reflector::store::WriterDropped> {
        wait_until_listed(&self.policies, "apikeypolicies").await?;
        wait_until_listed(&self.tiers, "ratetiers").await?;
        wait_until_listed(&self.endpoints, "inferenceendpoints").await?;
        wait_until_listed(&self.upstream_secrets, "upstream credential secrets").await?;
        wait_until_listed(&self.agent_leases, "agent leases").await
    }
}

/// Reconciles wait for this: compiling a policy against a half-listed tier store would mark it not Ready and
/// pull its keys out of the gateway config for a moment.
async fn open_gate(
    stores: Stores,
    synced: watch::Sender<bool>,
    cleanup: mpsc::UnboundedSender<Cleanup>,
    on_synced: impl FnOnce(),
) {
    if stores.wait_until_listed().await.is_err() {
        return;
    }
    tracing::info!(
        policies = stores.policies.len(),
        tiers = stores.tiers.len(),
        endpoints = stores.endpoints.len(),
        "caches synced; reconciling"
    );
    let _ = synced.send(true);
    let _ = cleanup.send(Cleanup::Sweep);
    on_synced();
    // Keep the sender alive: dropping it would read as "caches gone" in every reconcile.
    future::pending::<()>().await;
}

fn error_policy<K: Reconciled>() -> impl Fn(Arc<K>, &ReconcileError, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        ctx.metrics.reconcile_failed(K::METRIC_KIND, err.category());
        tracing::warn!(
            kind = K::METRIC_KIND,
            namespace = obj.namespace().as_deref(),
            name = %obj.name_any(),
            category = err.category(),
            error = %err,
            "reconcile failed; retrying"
        );
        Action::requeue(ERROR_REQUEUE)
    }
}

/// Remembers the last `metadata.generation` seen per object: `changed` is true on first sight and on spec changes,
/// false for status-only and metadata-only updates.
#[derive(Default)]
struct GenerationFilter(Mutex<HashMap<(Option<String>, String), Option<i64>>>);

impl GenerationFilter {
    fn changed<K: ResourceExt>(&self, obj: &K) -> bool {
        let key = (obj.namespace(), obj.name_any());
        let generation = obj.meta().generation;
        let mut seen = self.0.lock().expect("generation filter poisoned");
        seen.insert(key, generation) != Some(generation)
    }
}

/// Runs each reconcile inside one `reconcile` span: `kind`, `object` (`namespace/name`) and `generation` up
/// front, `outcome` (`ok` or the error's stable category) when it ends. Every write, Event and audit line of the
/// reconcile happens inside it.
fn traced<K, Fut>(
    kind: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
) -> impl FnMut(Arc<K>, Arc<Context>) -> futures::future::BoxFuture<'static, Result<Action, ReconcileError>>
where
    K: Resource + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    use tracing::Instrument as _;
    move |object, ctx| {
        let name = match object.meta().namespace.as_deref() {
            Some(namespace) => format!("{namespace}/{}", object.name_any()),
            None => object.name_any(),
        };
        let span = tracing::info_span!(
            "reconcile",
            kind,
            object = %name,
            generation = object.meta().generation,
            outcome = tracing::field::Empty,
        );
        let run = reconcile(object, ctx);
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = run.await;
                recorded.record("outcome", result.as_ref().map_or_else(ReconcileError::category, |_| "ok"));
                result
            }
            .instrument(span),
        )
    }
}

/// Remembers each object's labels: `changed` is true on first sight and when the labels differ, false for every
/// other update (a Node's status heartbeat every few seconds must not re-reconcile endpoints).
#[derive(Default)]
struct LabelFilter(Mutex<HashMap<String, std::collections::BTreeMap<String, String>>>);

impl LabelFilter {
    fn changed<K: ResourceExt>(&self, obj: &K) -> bool {
        let mut seen = self.0.lock().expect("label filter poisoned");
        seen.insert(obj.name_any(), obj.labels().clone()).as_ref() != Some(obj.labels())
    }
}

/// Starts the reflectors and the three controllers; returns when `shutdown` fires (controllers drain first).
/// `on_synced` is called once every store has listed.
pub async fn run_controllers(
    client: Client,
    namespace: String,
    config_namespace: String,
    metrics: Metrics,
    reporter: Reporter,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let (cleanup_tx, cleanup_rx) = mpsc::unbounded_channel::<Cleanup>();
    // Every background task of this leadership term; dropping the set (return, or abort on a lost Lease) ends
    // them all, so a standby keeps no watch open.
    let mut tasks = JoinSet::new();

    let pending_status: Arc<PendingWrites<ApiKeyPolicyStatus>> = Arc::default();
    let (policies, policy_sub) = {
        let (tx, pending) = (cleanup_tx.clone(), pending_status.clone());
        shared_reflector(&mut tasks, Api::<ApiKeyPolicy>::all(client.clone()), watcher::Config::default(), move |ev| {
            pending.forget_on(&ev);
            on_owner_event(&tx, ShardKind::Policy, ev)
        })
    };
    metrics.watch_policies(policies.clone());
    let (endpoints, endpoint_sub) = {
        let tx = cleanup_tx.clone();
        shared_reflector(
            &mut tasks,
            Api::<InferenceEndpoint>::all(client.clone()),
            watcher::Config::default(),
            move |ev| on_owner_event(&tx, ShardKind::Endpoint, ev),
        )
    };
    let (tiers, tier_sub) =
        shared_reflector(&mut tasks, Api::<RateTier>::all(client.clone()), watcher::Config::default(), |_| {});
    // Only the Secrets the operator labelled, and only their metadata (the API server strips the data): enough
    // to map an edited or deleted key Secret to its policy by owner reference. Nothing is stored.
    let key_selector = format!("{}={}", infergate_crds::labels::COMPONENT, infergate_crds::labels::API_KEY);
    let key_secret_changes = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default().labels(&key_selector),
    )
    .default_backoff()
    .touched_objects();
    // Upstream credentials: only Secrets their owners labelled for it, never a namespace's other Secrets.
    let upstream_selector = format!("{}=true", gateway::UPSTREAM_CREDENTIAL_LABEL);
    let (upstream_secrets, upstream_secret_sub) = shared_reflector(
        &mut tasks,
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&upstream_selector),
        |_| {},
    );
    let (agent_leases, lease_sub) = shared_reflector(
        &mut tasks,
        Api::<Lease>::namespaced(client.clone(), &namespace),
        watcher::Config::default().labels(gateway::lease::AGENT_LEASE_LABEL),
        |_| {},
    );
    // Node labels only: status and spec are dropped before they reach the store (a Node's status is large and
    // changes every few seconds).
    let (nodes, node_sub) = {
        let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
        let subscriber = writer.subscribe().expect("a shared store has a dispatcher");
        let stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|node| {
                node.managed_fields_mut().clear();
                node.status = None;
                node.spec = None;
            })
            .reflect_shared(writer);
        tasks.spawn(stream.for_each(|_| future::ready(())));
        (reader, subscriber)
    };
    let (synced_tx, synced_rx) = watch::channel(false);
    let ctx = Arc::new(Context {
        client: client.clone(),
        namespace: namespace.clone(),
        config_namespace: config_namespace.clone(),
        policies: policies.clone(),
        tiers: tiers.clone(),
        endpoints: endpoints.clone(),
        upstream_secrets: upstream_secrets.clone(),
        agent_leases: agent_leases.clone(),
        nodes: nodes.clone(),
        reporter,
        metrics,
        synced: synced_rx,
        pending_status,
        key_counts: Mutex::default(),
    });

    let stores = Stores {
        policies: policies.clone(),
        tiers: tiers.clone(),
        endpoints: endpoints.clone(),
        upstream_secrets: upstream_secrets.clone(),
        agent_leases,
    };
    tasks.spawn(open_gate(stores, synced_tx, cleanup_tx.clone(), on_synced));
    tasks.spawn(run_cleanup(ctx.clone(), cleanup_rx));
    // Services for endpoints with a nodeSelector, listing the agents that serve them.
    tasks.spawn(super::placement::run(ctx.clone()));
    // The session-token signing ring: generated once, rotated on schedule, published as the signing shard.
    tasks.spawn(super::signing::run(ctx.clone()));

    let config = ControllerConfig::default().concurrency(CONCURRENCY);
    // Tier and endpoint statuses count the policies that use them, so every policy event asks for a recount; at
    // thousands of policies a short trailing debounce turns that storm into one recount per quiet second.
    let counting_config = ControllerConfig::default().concurrency(CONCURRENCY).debounce(COUNT_DEBOUNCE);
    let policy_controller = {
        let (for_tiers, for_endpoints, for_leases) = (policies.clone(), policies.clone(), policies.clone());
        Controller::for_shared_stream(policy_sub.clone(), policies.clone())
            .with_config(config.clone())
            .owns_stream(key_secret_changes)
            // Only spec changes (and appearance) matter to policies: a tier's or endpoint's own status write
            // must not re-reconcile every policy that uses it.
            .watches_shared_stream(tier_sub.clone(), {
                let seen = GenerationFilter::default();
                move |tier: Arc<RateTier>| {
                    if !seen.changed(tier.as_ref()) {
                        return Vec::new();
                    }
                    policies_using_tier(&for_tiers, &tier.name_any())
                }
            })
            .watches_shared_stream(endpoint_sub.clone(), {
                let seen = GenerationFilter::default();
                move |ep: Arc<InferenceEndpoint>| {
                    if !seen.changed(ep.as_ref()) {
                        return Vec::new();
                    }
                    let at = NamespacedName::new(ep.namespace().unwrap_or_default(), ep.name_any());
                    policies_scoping(&for_endpoints, &at)
                }
            })
            // Agents report which revocations they enforce; only policies with revocations show that in status.
            .watches_shared_stream(lease_sub, move |_lease: Arc<Lease>| {
                for_leases
                    .state()
                    .iter()
                    .filter(|p| !p.spec.revocations.is_empty())
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(traced("ApiKeyPolicy", reconcile_policy), error_policy(), ctx.clone())
            .for_each(|_| future::ready(()))
    };
    let endpoint_controller = {
        let for_fallbacks = endpoints.clone();
        Controller::for_shared_stream(endpoint_sub.clone(), endpoints.clone())
            .with_config(counting_config.clone())
            // An endpoint's status counts the policies that reach it.
            .watches_shared_stream(policy_sub.clone(), |p: Arc<ApiKeyPolicy>| {
                let own = p.namespace().unwrap_or_default();
                p.spec
                    .scopes
                    .iter()
                    .map(|s| ObjectRef::new(&s.endpoint).within(s.namespace.as_deref().unwrap_or(&own)))
                    .collect::<Vec<_>>()
            })
            // A rotated (or new, or deleted) upstream credential reaches the endpoints that name it.
            .watches_shared_stream(upstream_secret_sub, {
                let naming = endpoints.clone();
                move |secret: Arc<Secret>| {
                    let ns = secret.namespace();
                    let name = secret.name_any();
                    naming
                        .state()
                        .iter()
                        .filter(|e| {
                            e.namespace() == ns
                                && e.spec
                                    .backend
                                    .upstream
                                    .as_ref()
                                    .and_then(|u| u.auth.as_ref())
                                    .map(|a| a.secret_name.as_str())
                                    == Some(name.as_str())
                        })
                        .map(|e| ObjectRef::from_obj(e.as_ref()))
                        .collect::<Vec<_>>()
                }
            })
            // Endpoints with a nodeSelector list the nodes that serve them: re-check them when a node's labels change.
            .watches_shared_stream(node_sub, {
                let (seen, selecting) = (LabelFilter::default(), endpoints.clone());
                move |node: Arc<Node>| {
                    if !seen.changed(node.as_ref()) {
                        return Vec::new();
                    }
                    selecting
                        .state()
                        .iter()
                        .filter(|e| e.spec.node_selector.is_some())
                        .map(|e| ObjectRef::from_obj(e.as_ref()))
                        .collect::<Vec<_>>()
                }
            })
            // An endpoint's status reports whether its fallback exists: re-check the endpoints that name this one.
            // The last user of the handle takes it: a subscriber nobody polls would stall the watch.
            .watches_shared_stream(endpoint_sub, move |ep: Arc<InferenceEndpoint>| {
                let ns = ep.namespace();
                let name = ep.name_any();
                for_fallbacks
                    .state()
                    .iter()
                    .filter(|o| o.namespace() == ns && o.spec.fallback.as_deref() == Some(name.as_str()))
                    .map(|o| ObjectRef::from_obj(o.as_ref()))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(traced("InferenceEndpoint", reconcile_endpoint), error_policy(), ctx.clone())
            .for_each(|_| future::ready(()))
    };
    let tier_controller = {
        Controller::for_shared_stream(tier_sub, tiers.clone())
            .with_config(counting_config)
            // A tier's status counts the policies that use it.
            .watches_shared_stream(policy_sub, |p: Arc<ApiKeyPolicy>| [ObjectRef::new(&p.spec.tier)])
            .graceful_shutdown_on(shutdown)
            .run(traced("RateTier", reconcile_tier), error_policy(), ctx.clone())
            .for_each(|_| future::ready(()))
    };
    tokio::join!(policy_controller, endpoint_controller, tier_controller);
}
