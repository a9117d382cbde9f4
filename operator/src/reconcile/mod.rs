//! The kube-runtime controllers around the pure `compile` functions. Each reconcile reads from reflector stores,
//! calls one pure function, and applies what it returned; no decision is made here.
//!
//! ```text
//!  one watch per kind ─▶ reflector store ─┬─▶ ApiKeyPolicy controller ◀─ tier / endpoint / key Secret / agent
//!  (policies, tiers, endpoints,           │     │                          Lease changes, mapped to policies
//!   key Secrets, shards, agent Leases)    │     ├─ SSA key Secret (policy namespace, owner-referenced)
//!                                         │     ├─ SSA shard Secret (operator namespace) or delete it
//!                                         │     ├─ SSA /status · Events · audit log lines
//!                                         │     └─ requeue at next_wake (rotation, end of overlap, expiry)
//!                                         ├─▶ InferenceEndpoint controller: shard + status + Events
//!                                         └─▶ RateTier controller: status
//!  policy / endpoint deleted, or relisted ─▶ shard cleanup: delete shards whose owner is gone
//! ```
//! Key Secrets go with their policy by owner-reference garbage collection. Shards live in the operator's
//! namespace, where a namespaced owner cannot own them, so they are removed by the cleanup task: on every delete
//! event and, because watch events can be missed while disconnected, by a sweep over owner labels after every
//! (re)list. No finalizer is used: deleting a policy never waits for the operator.
use crate::compile::{self, AgentReport, EndpointLookup, EventSpec, OsKeys, PolicyInputs};
use crate::kube_apply;
use crate::metrics::Metrics;
use chrono::Utc;
use futures::{StreamExt, future};
use infergate_crds::gateway::{self, Shard, ShardKind};
use infergate_crds::key::KeyId;
use infergate_crds::policy::KeyState;
use infergate_crds::{ApiKeyPolicy, InferenceEndpoint, NamespacedName, RateTier};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const POLICY: &str = "apikeypolicy";
const ENDPOINT: &str = "inferenceendpoint";
const TIER: &str = "ratetier";
/// How many events a shared stream buffers for its slowest subscriber before the watch applies backpressure.
const SHARED_BUFFER: usize = 1024;
/// Reconciles in flight per controller. Each is a few small API calls, so the API server's latency, not CPU,
/// bounds throughput; this keeps a cold start over thousands of policies short without flooding the server.
const CONCURRENCY: u16 = 64;
const ERROR_REQUEUE: Duration = Duration::from_secs(10);
const COUNT_DEBOUNCE: Duration = Duration::from_secs(1);

/// Why a reconcile failed. `category()` is the metric label: a fixed set, never an error string.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{kind} {name} has no namespace; it cannot be reconciled")]
    MissingNamespace { kind: &'static str, name: String },
    #[error("writing the key Secret {secret} failed: {source}")]
    KeySecret {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing gateway-config shard {secret} failed: {source}")]
    ShardWrite {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting gateway-config shard {secret} failed: {source}")]
    ShardDelete {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of {kind} {name} failed: {source}")]
    Status {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the operator's caches stopped before they synced")]
    CachesGone,
}

impl ReconcileError {
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::MissingNamespace { .. } => "invalid_object",
            ReconcileError::KeySecret { .. } => "key_secret_write",
            ReconcileError::ShardWrite { .. } => "shard_write",
            ReconcileError::ShardDelete { .. } => "shard_delete",
            ReconcileError::Status { .. } => "status_write",
            ReconcileError::CachesGone => "cache",
        }
    }
}

/// A write whose watch event may not have reached the store yet. Trusted while the store still shows the version
/// from before the write; this keeps a reconcile that runs in between from, say, issuing a second first key.
/// Entries are dropped by the watch itself (see [`forget_pending`]) when the store moves on, never by a timer: a
/// slow API server can delay watch events by minutes, and a timed-out entry would mean a regenerated key.
struct Pending<T> {
    before: Option<String>,
    value: T,
}

type PendingMap<T> = Mutex<HashMap<(String, String), Pending<T>>>;

fn pending_view<T: Clone>(map: &PendingMap<T>, key: (String, String), stored_version: Option<String>) -> Option<T> {
    let mut map = map.lock().expect("pending-write map poisoned");
    match map.get(&key) {
        Some(p) if p.before == stored_version => Some(p.value.clone()),
        Some(_) => {
            map.remove(&key);
            None
        }
        None => None,
    }
}

fn pending_record<T>(map: &PendingMap<T>, key: (String, String), before: Option<String>, value: T) {
    map.lock().expect("pending-write map poisoned").insert(key, Pending { before, value });
}

/// Called for every watch event of the object: once the store holds anything newer than the version a pending
/// write started from (our write, a later one, or a delete), the store is the truth again.
fn forget_pending<T>(map: &PendingMap<T>, key: (String, String), event_version: Option<String>, deleted: bool) {
    let mut map = map.lock().expect("pending-write map poisoned");
    if map.get(&key).is_some_and(|p| deleted || p.before != event_version) {
        map.remove(&key);
    }
}

/// Everything the reconcilers share.
pub struct Context {
    pub client: Client,
    /// The operator's namespace: shards live here.
    pub namespace: String,
    pub policies: Store<ApiKeyPolicy>,
    pub tiers: Store<RateTier>,
    pub endpoints: Store<InferenceEndpoint>,
    pub key_secrets: Store<Secret>,
    pub shards: Store<Secret>,
    pub agent_leases: Store<Lease>,
    /// Who the operator's Events say reported them.
    pub reporter: Reporter,
    pub metrics: Metrics,
    synced: watch::Receiver<bool>,
    pending_secrets: Arc<PendingMap<Arc<Secret>>>,
    pending_status: Arc<PendingMap<infergate_crds::ApiKeyPolicyStatus>>,
    /// Keys per policy by state (current, retiring, revoked), summed into the `keys` gauge.
    key_counts: Mutex<HashMap<NamespacedName, [i64; 3]>>,
}

const KEY_STATES: [&str; 3] = ["current", "retiring", "revoked"];

impl Context {
    async fn wait_synced(&self) -> Result<(), ReconcileError> {
        let mut rx = self.synced.clone();
        rx.wait_for(|s| *s).await.map(|_| ()).map_err(|_| ReconcileError::CachesGone)
    }

    fn shards_api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn agent_reports(&self) -> Vec<AgentReport> {
        self.agent_leases.state().iter().map(|lease| agent_report(lease)).collect()
    }

    fn set_key_counts(&self, policy: &NamespacedName, counts: [i64; 3]) {
        let mut all = self.key_counts.lock().expect("key count map poisoned");
        let old =
            if counts == [0; 3] { all.remove(policy) } else { all.insert(policy.clone(), counts) }.unwrap_or([0; 3]);
        for (i, state) in KEY_STATES.iter().enumerate() {
            self.metrics.keys.with_label_values(&[state]).add(counts[i] - old[i]);
        }
    }

    /// Creates one `events.k8s.io/v1` Event per spec. Not kube's `Recorder`: `compile` already emits only on
    /// state changes, so the Recorder's series de-duplication has nothing to do, and its cache would hold every
    /// Event for minutes (thousands of them on a cold start over thousands of policies).
    async fn publish_events(&self, events: &[EventSpec]) {
        for spec in events {
            let now = k8s_openapi::jiff::Timestamp::now();
            let namespace = spec.regarding.namespace.clone().unwrap_or_else(|| "default".to_string());
            let event = KubeEvent {
                metadata: ObjectMeta {
                    name: Some(format!("{}.{:x}", spec.regarding.name, now.as_nanosecond())),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                event_time: Some(MicroTime(now)),
                type_: Some(if spec.warning { "Warning" } else { "Normal" }.to_string()),
                reason: Some(spec.reason.to_string()),
                note: Some(spec.note.clone()),
                action: Some("Reconcile".to_string()),
                regarding: Some(object_reference(&spec.regarding)),
                reporting_controller: Some(self.reporter.controller.clone()),
                reporting_instance: Some(
                    self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
                ),
                ..Default::default()
            };
            let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &namespace);
            // An Event is a courtesy: failing to write one must not fail (and repeat) the reconcile.
            if let Err(err) = api.create(&Default::default(), &event).await {
                tracing::warn!(reason = spec.reason, object = %spec.regarding.name, error = %err, "could not publish Event");
            }
        }
    }

    /// Writes `desired` (a shard Secret) unless the store already holds the same content.
    async fn apply_shard(&self, desired: &Secret) -> Result<(), ReconcileError> {
        let name = desired.metadata.name.clone().unwrap_or_default();
        let existing = self.shards.get(&ObjectRef::new(&name).within(&self.namespace));
        if existing.as_deref().is_some_and(|e| !secret_differs(desired, e)) {
            return Ok(());
        }
        kube_apply::apply_secret(&self.shards_api(), desired)
            .await
            .map(|_| ())
            .map_err(|source| ReconcileError::ShardWrite { secret: name, source })
    }

    async fn delete_shard(&self, kind: ShardKind, owner: &NamespacedName) -> Result<(), ReconcileError> {
        let name = gateway::shard_secret_name(kind, owner);
        if self.shards.get(&ObjectRef::new(&name).within(&self.namespace)).is_none() {
            return Ok(());
        }
        tracing::info!(shard = %name, owner = %owner, kind = kind.as_str(), "deleting gateway-config shard");
        kube_apply::delete_secret(&self.shards_api(), &name)
            .await
            .map_err(|source| ReconcileError::ShardDelete { secret: name, source })
    }
}

fn object_reference(r: &compile::ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/{}", infergate_crds::GROUP, infergate_crds::VERSION)),
        kind: Some(r.kind.to_string()),
        name: Some(r.name.clone()),
        namespace: r.namespace.clone(),
        uid: r.uid.clone(),
        ..Default::default()
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
struct EndpointSnapshot(BTreeMap<NamespacedName, Arc<InferenceEndpoint>>);

impl EndpointSnapshot {
    fn of(store: &Store<InferenceEndpoint>) -> Self {
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

fn requeue_at(next_wake: Option<chrono::DateTime<Utc>>) -> Action {
    match next_wake {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            // Never spin: a wake-up in the past still waits a moment.
            Action::requeue(wait.max(Duration::from_millis(500)))
        }
        None => Action::await_change(),
    }
}

fn audit(record: &compile::AuditRecord) {
    // One JSON object per line in the operator's log stream; `audit=true` lets log pipelines route it.
    tracing::info!(
        audit = true,
        action = record.action,
        at = %record.at.to_rfc3339(),
        policy = %record.policy,
        key_id = record.key_id.as_ref().map(|k| k.as_str()),
        reason = record.reason.as_deref(),
        requested_by = record.requested_by.as_deref(),
        "audit"
    );
}

pub async fn reconcile_policy(policy: Arc<ApiKeyPolicy>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.wait_synced().await?;
    let _timer = ctx.metrics.reconcile_started(POLICY);
    let name = policy.name_any();
    let namespace = policy
        .namespace()
        .ok_or_else(|| ReconcileError::MissingNamespace { kind: "ApiKeyPolicy", name: name.clone() })?;
    let owner = NamespacedName::new(&namespace, &name);
    if policy.meta().deletion_timestamp.is_some() {
        // Going away: the key Secret follows by garbage collection, the shard by the cleanup task.
        return Ok(Action::await_change());
    }

    // The policy as last written by this operator, if the store has not caught up with that write yet.
    let mut policy_view = (*policy).clone();
    if let Some(status) =
        pending_view(&ctx.pending_status, (namespace.clone(), name.clone()), policy.resource_version())
    {
        policy_view.status = Some(status);
    }
    let secret_ref = ObjectRef::<Secret>::new(&policy.spec.secret_name).within(&namespace);
    let stored_secret = ctx.key_secrets.get(&secret_ref);
    let existing_secret = pending_view(
        &ctx.pending_secrets,
        (namespace.clone(), policy.spec.secret_name.clone()),
        stored_secret.as_ref().and_then(|s| s.resource_version()),
    )
    .or(stored_secret.clone());
    // The inputs borrow from the stores' snapshots; scoped so nothing borrowed lives across an await.
    let outcome = {
        let tier = ctx.tiers.get(&ObjectRef::new(&policy.spec.tier));
        let endpoints = EndpointSnapshot::of(&ctx.endpoints);
        let agents = ctx.agent_reports();
        let inputs = PolicyInputs {
            policy: &policy_view,
            tier: tier.as_deref(),
            endpoints: &endpoints,
            existing_secret: existing_secret.as_deref(),
            agents: &agents,
            now: Utc::now(),
        };
        compile::compile_policy(&inputs, &mut OsKeys)
    };

    // Order matters: the key Secret first, so a key is never in the gateway config before the application can
    // read it, and a failed Secret write never leaves a config pointing at a key nobody holds.
    if let Some(desired) = &outcome.key_secret {
        if existing_secret.as_deref().is_none_or(|e| secret_differs(desired, e)) {
            let secret_name = desired.metadata.name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let written = kube_apply::apply_secret(&api, desired)
                .await
                .map_err(|source| ReconcileError::KeySecret { secret: format!("{namespace}/{secret_name}"), source })?;
            pending_record(
                &ctx.pending_secrets,
                (namespace.clone(), secret_name),
                stored_secret.as_ref().and_then(|s| s.resource_version()),
                Arc::new(written),
            );
        }
    }
    let mut counts = [0i64; 3];
    match &outcome.shard {
        Some(shard) => {
            for key in &shard.keys {
                counts[if key.state == KeyState::Current { 0 } else { 1 }] += 1;
            }
            counts[2] = shard.revoked.len() as i64;
            let desired = crate::publish::shard_secret(&Shard::Policy(shard.clone()), &ctx.namespace);
            ctx.apply_shard(&desired).await?;
        }
        // Not Ready (missing tier, ...): no key of this policy may be accepted, so no shard may exist.
        None => ctx.delete_shard(ShardKind::Policy, &owner).await?,
    }
    ctx.set_key_counts(&owner, counts);

    if policy_view.status.as_ref() != Some(&outcome.status) {
        let api: Api<ApiKeyPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        let written = kube_apply::apply_status(&api, &name, &outcome.status)
            .await
            .map_err(|source| ReconcileError::Status { kind: "ApiKeyPolicy", name: owner.to_string(), source })?;
        pending_record(
            &ctx.pending_status,
            (namespace.clone(), name.clone()),
            policy.resource_version(),
            written.status.unwrap_or_else(|| outcome.status.clone()),
        );
    }
    ctx.publish_events(&outcome.events).await;
    outcome.audit.iter().for_each(audit);
    Ok(requeue_at(outcome.next_wake))
}

pub async fn reconcile_endpoint(endpoint: Arc<InferenceEndpoint>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.wait_synced().await?;
    let _timer = ctx.metrics.reconcile_started(ENDPOINT);
    let name = endpoint.name_any();
    let namespace = endpoint
        .namespace()
        .ok_or_else(|| ReconcileError::MissingNamespace { kind: "InferenceEndpoint", name: name.clone() })?;
    let owner = NamespacedName::new(&namespace, &name);
    if endpoint.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let endpoints = EndpointSnapshot::of(&ctx.endpoints);
    let users = policies_scoping(&ctx.policies, &endpoint).len() as u32;
    let outcome = compile::compile_endpoint(&endpoint, &endpoints, users, Utc::now());
    match &outcome.shard {
        Some(shard) => {
            let desired = crate::publish::shard_secret(&Shard::Endpoint(shard.clone()), &ctx.namespace);
            ctx.apply_shard(&desired).await?;
        }
        None => ctx.delete_shard(ShardKind::Endpoint, &owner).await?,
    }
    if endpoint.status.as_ref() != Some(&outcome.status) {
        let api: Api<InferenceEndpoint> = Api::namespaced(ctx.client.clone(), &namespace);
        kube_apply::apply_status(&api, &name, &outcome.status).await.map_err(|source| ReconcileError::Status {
            kind: "InferenceEndpoint",
            name: owner.to_string(),
            source,
        })?;
    }
    ctx.publish_events(&outcome.events).await;
    Ok(Action::await_change())
}

pub async fn reconcile_tier(tier: Arc<RateTier>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.wait_synced().await?;
    let _timer = ctx.metrics.reconcile_started(TIER);
    let name = tier.name_any();
    let users = ctx.policies.state().iter().filter(|p| p.spec.tier == name).count() as u32;
    let status = compile::compile_tier(&tier, users, Utc::now());
    if tier.status.as_ref() != Some(&status) {
        let api: Api<RateTier> = Api::all(ctx.client.clone());
        kube_apply::apply_status(&api, &name, &status).await.map_err(|source| ReconcileError::Status {
            kind: "RateTier",
            name: name.clone(),
            source,
        })?;
    }
    Ok(Action::await_change())
}

fn error_policy<K: ResourceExt>(kind: &'static str) -> impl Fn(Arc<K>, &ReconcileError, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        ctx.metrics.reconcile_failed(kind, err.category());
        tracing::warn!(
            kind,
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

/// Policies that name `tier`.
fn policies_using_tier(store: &Store<ApiKeyPolicy>, tier: &str) -> Vec<ObjectRef<ApiKeyPolicy>> {
    store.state().iter().filter(|p| p.spec.tier == tier).map(|p| ObjectRef::from_obj(p.as_ref())).collect()
}

/// Policies with a scope on `endpoint`.
fn policies_scoping(store: &Store<ApiKeyPolicy>, endpoint: &InferenceEndpoint) -> Vec<ObjectRef<ApiKeyPolicy>> {
    let (ep_ns, ep_name) = (endpoint.namespace().unwrap_or_default(), endpoint.name_any());
    store
        .state()
        .iter()
        .filter(|p| {
            let p_ns = p.metadata.namespace.as_deref().unwrap_or_default();
            p.spec.scopes.iter().any(|s| s.endpoint == ep_name && s.namespace.as_deref().unwrap_or(p_ns) == ep_ns)
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// What the cleanup task is asked to do.
enum Cleanup {
    Gone(ShardKind, NamespacedName),
    Sweep,
}

/// Starts the reflectors and the three controllers; returns when `shutdown` fires (controllers drain first).
/// `on_synced` is called once every store has listed.
pub async fn run_controllers(
    client: Client,
    namespace: String,
    metrics: Metrics,
    reporter: Reporter,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let (cleanup_tx, mut cleanup_rx) = mpsc::unbounded_channel::<Cleanup>();
    // Every background task of this leadership term; dropping the set (return, or abort on a lost Lease) ends
    // them all, so a standby keeps no watch open.
    let mut tasks = tokio::task::JoinSet::new();

    // Managed fields are dropped from every cached object: the operator never reads them and they are the bulk
    // of an object's size.
    macro_rules! shared_reflector {
        ($api:expr, $config:expr, $on_event:expr) => {{
            let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
            let subscriber = writer.subscribe().expect("a shared store has a dispatcher");
            let stream = watcher($api, $config)
                .default_backoff()
                .modify(|o| o.managed_fields_mut().clear())
                .reflect_shared(writer);
            let on_event = $on_event;
            tasks.spawn(stream.for_each(move |ev| {
                on_event(ev);
                future::ready(())
            }));
            (reader, subscriber)
        }};
    }
    let pending_secrets: Arc<PendingMap<Arc<Secret>>> = Arc::default();
    let pending_status: Arc<PendingMap<infergate_crds::ApiKeyPolicyStatus>> = Arc::default();
    let tx = cleanup_tx.clone();
    let pending = pending_status.clone();
    let (policies, policy_sub) =
        shared_reflector!(Api::<ApiKeyPolicy>::all(client.clone()), watcher::Config::default(), move |ev: Result<
            watcher::Event<ApiKeyPolicy>,
            watcher::Error,
        >| {
            forget_pending_on(&pending, &ev);
            on_owner_event(&tx, ShardKind::Policy, ev)
        });
    let tx = cleanup_tx.clone();
    let (endpoints, endpoint_sub) = shared_reflector!(
        Api::<InferenceEndpoint>::all(client.clone()),
        watcher::Config::default(),
        move |ev: Result<watcher::Event<InferenceEndpoint>, watcher::Error>| on_owner_event(
            &tx,
            ShardKind::Endpoint,
            ev
        )
    );
    let (tiers, tier_sub) = shared_reflector!(Api::<RateTier>::all(client.clone()), watcher::Config::default(), |_| {});
    let key_selector = format!("{}={}", infergate_crds::labels::COMPONENT, infergate_crds::labels::API_KEY);
    let pending = pending_secrets.clone();
    let (key_secrets, key_secret_sub) = shared_reflector!(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&key_selector),
        move |ev: Result<watcher::Event<Secret>, watcher::Error>| forget_pending_on(&pending, &ev)
    );
    let (agent_leases, lease_sub) = shared_reflector!(
        Api::<Lease>::namespaced(client.clone(), &namespace),
        watcher::Config::default().labels(gateway::lease::AGENT_LEASE_LABEL),
        |_| {}
    );
    // Shards feed no controller, only lookups: a plain reflector.
    let (shards, shard_writer) = reflector::store::<Secret>();
    tasks.spawn(
        watcher(
            Api::<Secret>::namespaced(client.clone(), &namespace),
            watcher::Config::default().labels(gateway::SHARD_SELECTOR),
        )
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(shard_writer)
        .for_each(|_| future::ready(())),
    );

    let (synced_tx, synced_rx) = watch::channel(false);
    let ctx = Arc::new(Context {
        client: client.clone(),
        namespace: namespace.clone(),
        policies: policies.clone(),
        tiers: tiers.clone(),
        endpoints: endpoints.clone(),
        key_secrets: key_secrets.clone(),
        shards: shards.clone(),
        agent_leases: agent_leases.clone(),
        reporter,
        metrics,
        synced: synced_rx,
        pending_secrets,
        pending_status,
        key_counts: Mutex::default(),
    });

    // Reconciles wait for this: compiling a policy against a half-listed tier store would mark it not Ready and
    // pull its keys out of the gateway config for a moment.
    {
        let (p, t, e, k, s, l) = (
            policies.clone(),
            tiers.clone(),
            endpoints.clone(),
            key_secrets.clone(),
            shards.clone(),
            agent_leases.clone(),
        );
        let tx = cleanup_tx.clone();
        tasks.spawn(async move {
            let all = async {
                // One at a time, naming the one still listing now and then, so a stuck watch is visible in logs.
                // Re-polled on a short timer: a waiter that registers just as the store turns ready can miss its
                // wake-up in kube-runtime 5's DelayedInit (seen here as a start that hung until the next poll).
                macro_rules! ready {
                    ($store:expr, $what:literal) => {{
                        let started = Instant::now();
                        let mut told = Duration::ZERO;
                        loop {
                            match tokio::time::timeout(Duration::from_millis(100), $store.wait_until_ready()).await {
                                Ok(result) => break result,
                                Err(_) if started.elapsed() >= told + Duration::from_secs(10) => {
                                    told = started.elapsed();
                                    tracing::info!(cache = $what, "waiting for the initial list");
                                }
                                Err(_) => {}
                            }
                        }
                    }};
                }
                ready!(p, "apikeypolicies")?;
                ready!(t, "ratetiers")?;
                ready!(e, "inferenceendpoints")?;
                ready!(k, "key secrets")?;
                ready!(s, "gateway-config shards")?;
                ready!(l, "agent leases")
            };
            if all.await.is_ok() {
                tracing::info!(
                    policies = p.len(),
                    tiers = t.len(),
                    endpoints = e.len(),
                    key_secrets = k.len(),
                    shards = s.len(),
                    "caches synced; reconciling"
                );
                let _ = synced_tx.send(true);
                let _ = tx.send(Cleanup::Sweep);
                on_synced();
                // Keep the sender alive: dropping it would read as "caches gone" in every reconcile.
                future::pending::<()>().await;
            }
        });
    }

    let cleanup_ctx = ctx.clone();
    tasks.spawn(async move {
        while let Some(job) = cleanup_rx.recv().await {
            if cleanup_ctx.wait_synced().await.is_err() {
                return;
            }
            let result = match job {
                Cleanup::Gone(kind, owner) => {
                    if kind == ShardKind::Policy {
                        cleanup_ctx.set_key_counts(&owner, [0; 3]);
                    }
                    cleanup_ctx.delete_shard(kind, &owner).await
                }
                Cleanup::Sweep => sweep_orphans(&cleanup_ctx).await,
            };
            if let Err(err) = result {
                tracing::warn!(error = %err, category = err.category(), "shard cleanup failed; the next sweep retries");
            }
        }
    });

    let config = ControllerConfig::default().concurrency(CONCURRENCY);
    // Tier and endpoint statuses count the policies that use them, so every policy event asks for a recount; at
    // thousands of policies a short trailing debounce turns that storm into one recount per quiet second.
    let counting_config = ControllerConfig::default().concurrency(CONCURRENCY).debounce(COUNT_DEBOUNCE);
    let policy_controller = {
        let (for_tiers, for_endpoints, for_leases) = (policies.clone(), policies.clone(), policies.clone());
        Controller::for_shared_stream(policy_sub.clone(), policies.clone())
            .with_config(config.clone())
            .owns_shared_stream(key_secret_sub)
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
                    policies_scoping(&for_endpoints, &ep)
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
            .run(reconcile_policy, error_policy(POLICY), ctx.clone())
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
            .run(reconcile_endpoint, error_policy(ENDPOINT), ctx.clone())
            .for_each(|_| future::ready(()))
    };
    let tier_controller = {
        Controller::for_shared_stream(tier_sub, tiers.clone())
            .with_config(counting_config)
            // A tier's status counts the policies that use it.
            .watches_shared_stream(policy_sub, |p: Arc<ApiKeyPolicy>| [ObjectRef::new(&p.spec.tier)])
            .graceful_shutdown_on(shutdown)
            .run(reconcile_tier, error_policy(TIER), ctx.clone())
            .for_each(|_| future::ready(()))
    };
    tokio::join!(policy_controller, endpoint_controller, tier_controller);
}

fn forget_pending_on<K: ResourceExt, T>(map: &PendingMap<T>, event: &Result<watcher::Event<K>, watcher::Error>) {
    let (obj, deleted) = match event {
        Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => (o, false),
        Ok(watcher::Event::Delete(o)) => (o, true),
        _ => return,
    };
    forget_pending(map, (obj.namespace().unwrap_or_default(), obj.name_any()), obj.resource_version(), deleted);
}

fn on_owner_event<K: Resource<DynamicType = ()> + ResourceExt>(
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

/// Deletes every shard whose policy or endpoint no longer exists. Ownership is read from the shard's own JSON,
/// the authoritative record; a shard this operator version cannot parse is left alone.
async fn sweep_orphans(ctx: &Context) -> Result<(), ReconcileError> {
    for secret in ctx.shards.state() {
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(gateway::SHARD_DATA_KEY)) else {
            continue;
        };
        let Ok(shard) = Shard::from_json(&bytes.0) else {
            continue;
        };
        let owner = shard.owner();
        let exists = match shard.kind() {
            ShardKind::Policy => ctx.policies.get(&ObjectRef::new(&owner.name).within(&owner.namespace)).is_some(),
            ShardKind::Endpoint => ctx.endpoints.get(&ObjectRef::new(&owner.name).within(&owner.namespace)).is_some(),
        };
        if !exists {
            ctx.delete_shard(shard.kind(), owner).await?;
        }
    }
    Ok(())
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
    fn a_pending_write_is_trusted_until_the_store_moves() {
        let map: PendingMap<u32> = Mutex::default();
        let key = ("ns".to_string(), "name".to_string());
        assert_eq!(pending_view(&map, key.clone(), None), None);
        pending_record(&map, key.clone(), None, 7);
        // The store has not seen the write yet (still no object): the written value stands.
        assert_eq!(pending_view(&map, key.clone(), None), Some(7));
        // A watch event that still shows the old version changes nothing.
        forget_pending(&map, key.clone(), None, false);
        assert_eq!(pending_view(&map, key.clone(), None), Some(7));
        // The watch delivered the write: the store is the truth again, even if it later goes stale in a view.
        forget_pending(&map, key.clone(), Some("12".into()), false);
        assert_eq!(pending_view(&map, key.clone(), None), None);
        // A view that already shows a newer version also drops the entry.
        pending_record(&map, key.clone(), None, 8);
        assert_eq!(pending_view(&map, key.clone(), Some("13".into())), None);
        assert_eq!(pending_view(&map, key, None), None);
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
            }
        );
    }

    #[test]
    fn error_categories_are_fixed_labels() {
        let err = ReconcileError::MissingNamespace { kind: "ApiKeyPolicy", name: "x".into() };
        assert_eq!(err.category(), "invalid_object");
        assert_eq!(ReconcileError::CachesGone.category(), "cache");
    }

    #[test]
    fn requeue_never_spins() {
        assert_eq!(
            requeue_at(Some(Utc::now() - chrono::Duration::hours(1))),
            Action::requeue(Duration::from_millis(500))
        );
        assert_eq!(requeue_at(None), Action::await_change());
    }
}
