//! The shared state the core services ([`crate::oneshot`], [`crate::session`]) and the doors use: the swapped
//! snapshot, the limiter, open streams, connection caps, tickets, metrics and audit.
//!
//! ```text
//!  config source ─▶ Gateway::apply(snapshot) ─▶ ArcSwap ─▶ streams.enforce ─▶ audit revocation_enforced
//!  door ─▶ authenticate_recorded(credential, &mut outcome) ─▶ core ─▶ admitted / settle / charged
//!                                                         └─ any refusal ─▶ refused(&refusal, &mut outcome)
//! ```
//! Every refusal is recorded once, through [`Gateway::refused`]: metric, sampled audit line, and the
//! request's [`RequestOutcome`].
use crate::backend::Backends;
use crate::metrics::Metrics;
use crate::outcome::{Door, RequestOutcome};
use crate::tokens::TokenRefused;
use arc_swap::ArcSwap;
use chrono::Utc;
use infergate_crds::key::{Environment, KeyDigest};
use infergate_gate::admission::{self, Grant, Identity, TokenGrant};
use infergate_gate::audit::{Audit, RefusalEvent};
use infergate_gate::limiter::{Charge, Limiter};
use infergate_gate::refusal::{Refusal, RefusalCode};
use infergate_gate::snapshot::{KeyMap, KeyRef, Snapshot};
use infergate_gate::streams::Registry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) use crate::slots::CONNECTIONS_BUCKET;
pub use crate::slots::{KeyConnectionGuard, KeySlot, KeySlots, SlotsFull};
pub use crate::tickets::Tickets;

/// Agent-level settings (flags), as opposed to the config that arrives in shards.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Accept `?api_key=` on the WebSocket door. Off: such requests are refused (and the key is never logged).
    pub allow_query_keys: bool,
    /// Long-lived connections (WebSocket + gRPC streams, authenticated or not) the agent holds at once.
    pub max_connections: usize,
    /// Long-lived connections one key may hold, whatever its tier allows per endpoint.
    pub max_connections_per_key: u32,
    /// How long a WebSocket may stay open before it has authenticated and started.
    pub auth_timeout: Duration,
    /// How long a one-shot request body may take to arrive (slow senders are cut off).
    pub body_timeout: Duration,
    /// Largest one-shot upload.
    pub max_upload_bytes: usize,
    pub ticket_ttl: Duration,
    /// Unredeemed stream tickets one key may hold at once.
    pub max_live_tickets_per_key: usize,
    /// One-shot requests one key may have in flight on this agent.
    pub max_in_flight_per_key: u32,
    /// One-shot requests this agent serves at once.
    pub max_in_flight: usize,
    /// WebSockets from one client IP that may be open without having authenticated.
    pub max_unauthenticated_per_ip: u32,
    /// Bounds of the HTTP/WebSocket listener before authentication.
    pub listener: crate::doors::listener::ConnectionLimits,
    /// Stream audio is sent to the backend in segments of this many seconds (results come back per segment).
    pub segment_seconds: f64,
    /// How long a revoked stream may spend flushing its pending result before it is closed anyway.
    pub flush_deadline: Duration,
    /// How long the config source (the Kubernetes API) may be unreachable before `/readyz` calls the config
    /// stale. The agent keeps serving its last good config either way (fail static).
    pub config_stale_after: Duration,
    /// After SIGTERM: how long open streams get to receive their pending results and close (keep it under the
    /// pod's terminationGracePeriodSeconds).
    pub shutdown_grace: Duration,
    /// Share of successful requests written to the access log (0 = none, 1 = all).
    pub access_log_sample: f64,
    /// The `iss` of the session tokens this agent mints and accepts (`--token-issuer`).
    pub token_issuer: String,
    /// The `aud` of the session tokens (`--token-audience`).
    pub token_audience: String,
    /// How long a token stream runs past its token's `exp` without a refresh (`--token-grace`).
    pub token_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_query_keys: false,
            max_connections: 10_000,
            max_connections_per_key: 256,
            auth_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_upload_bytes: 25 * 1024 * 1024,
            ticket_ttl: Duration::from_secs(30),
            max_live_tickets_per_key: 16,
            access_log_sample: 1.0,
            max_in_flight_per_key: 64,
            max_in_flight: 4096,
            max_unauthenticated_per_ip: 32,
            listener: crate::doors::listener::ConnectionLimits {
                header_read_timeout: Duration::from_secs(10),
                keep_alive_timeout: Duration::from_secs(60),
                max_connections: 16_384,
                max_connections_per_ip: 512,
            },
            segment_seconds: 5.0,
            flush_deadline: Duration::from_millis(700),
            shutdown_grace: Duration::from_secs(25),
            config_stale_after: Duration::from_secs(30),
            token_issuer: "http://127.0.0.1:8080".into(),
            token_audience: "infergate".into(),
            token_grace: Duration::from_secs(5),
        }
    }
}

pub struct Gateway {
    pub settings: Settings,
    snapshot: ArcSwap<Snapshot>,
    pub limiter: Arc<Limiter>,
    pub streams: Arc<Registry>,
    pub metrics: Metrics,
    pub audit: Audit,
    pub backends: Backends,
    pub tickets: Tickets,
    /// Session tokens: the signing ring, the verifier and its cache.
    pub tokens: crate::tokens::Tokens,
    connections: AtomicUsize,
    per_key_connections: Arc<KeySlots>,
    /// One-shot requests in flight, per key and agent-wide (`--max-in-flight-per-key`, `--max-in-flight`).
    in_flight: Arc<KeySlots>,
    /// WebSockets that have not authenticated yet, per client IP (`--max-unauthenticated-per-ip`).
    unauthenticated: Arc<KeySlots>,
    /// GPU-seconds charged per key since start: per-key usage without key ids in metric labels.
    usage: Mutex<KeyMap<f64>>,
    ready: AtomicBool,
    /// Why the last config change was not applied while the previous config keeps serving; shown by `/readyz`.
    /// It names fields and rules, never a key.
    config_problem: Mutex<Option<String>>,
    revision: watch::Sender<Arc<Snapshot>>,
    /// The GPU limit policy, when the agent runs one: follows every snapshot's tiers.
    gpu: std::sync::OnceLock<Arc<crate::gpu::Gpu>>,
    /// Each built-in model's state (`ready`, or `missing: <why>`), for `/readyz` and the agent Lease.
    models: std::sync::OnceLock<crate::builtin::ModelStates>,
    /// The redaction hash key and NER model (set once at start-up; without it, redaction uses patterns only
    /// and refuses rules that need the model).
    redaction: std::sync::OnceLock<Arc<crate::redaction::Engine>>,
    /// Set once at SIGTERM: open streams flush and close with `shutting_down`.
    draining: watch::Sender<bool>,
    /// Since when the config source has failed without a success since (cluster mode).
    config_source_down_since: Mutex<Option<std::time::Instant>>,
    /// `GET /v1/models` bodies per policy for the current snapshot (a key-only caller's list depends on nothing
    /// else): serialising the list was the largest single cost of that route.
    pub model_lists: crate::memo::PolicyMemo<bytes::Bytes>,
}

impl Gateway {
    pub fn new(settings: Settings, limiter: Arc<Limiter>, backends: Backends) -> Arc<Self> {
        let per_key_connections = KeySlots::new(settings.max_connections_per_key, usize::MAX);
        let in_flight = KeySlots::new(settings.max_in_flight_per_key, settings.max_in_flight);
        let unauthenticated = KeySlots::new(settings.max_unauthenticated_per_ip, usize::MAX);
        let empty = Arc::new(Snapshot::empty());
        let (revision, _) = watch::channel(Arc::clone(&empty));
        let metrics = Metrics::new();
        let tokens = crate::tokens::Tokens::new(
            settings.token_issuer.clone(),
            settings.token_audience.clone(),
            &metrics.registry,
        );
        Arc::new(Gateway {
            tickets: Tickets::new(settings.ticket_ttl, settings.max_live_tickets_per_key),
            tokens,
            settings,
            snapshot: ArcSwap::new(empty),
            limiter,
            streams: Arc::new(Registry::default()),
            metrics,
            audit: Audit::default(),
            backends,
            connections: AtomicUsize::new(0),
            per_key_connections,
            in_flight,
            unauthenticated,
            usage: Mutex::default(),
            ready: AtomicBool::new(false),
            config_problem: Mutex::default(),
            revision,
            gpu: std::sync::OnceLock::new(),
            models: std::sync::OnceLock::new(),
            redaction: std::sync::OnceLock::new(),
            draining: watch::channel(false).0,
            config_source_down_since: Mutex::default(),
            model_lists: Default::default(),
        })
    }

    /// Attaches the GPU policy (once, at start-up): its factors are exported as metrics and its tiers follow
    /// each applied snapshot. The limiter must have been built with [`crate::gpu::Gpu::refill`].
    pub fn attach_gpu(&self, gpu: Arc<crate::gpu::Gpu>) {
        if let Err(error) = infergate_gpu::GpuMetrics::register(&self.metrics.registry, Arc::clone(&gpu.limits)) {
            tracing::warn!(error = %error, "GPU metrics not registered");
        }
        gpu.set_tiers(&self.snapshot());
        let _ = self.gpu.set(gpu);
    }

    pub fn gpu(&self) -> Option<&Arc<crate::gpu::Gpu>> {
        self.gpu.get()
    }

    /// Attaches the built-in models' states (once, at start-up; models loaded on first use update them).
    pub fn attach_models(&self, models: crate::builtin::ModelStates) {
        let _ = self.models.set(models);
    }

    /// Records whether the config source answered: the first failure starts the stale clock, a success stops it.
    pub fn config_source_up(&self, up: bool) {
        let mut since = self.config_source_down_since.lock().unwrap_or_else(|e| e.into_inner());
        match (up, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(std::time::Instant::now()),
            (false, Some(_)) => {}
        }
    }

    /// Starts the drain: every open stream flushes its pending result and closes with `shutting_down`.
    pub fn begin_drain(&self) {
        self.draining.send_replace(true);
    }

    /// Resolves once the drain has begun. Cancel-safe.
    pub async fn drained(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Attaches the redaction engine (once, at start-up).
    pub fn attach_redaction(&self, engine: crate::redaction::Engine) {
        let _ = self.redaction.set(Arc::new(engine));
    }

    pub fn redaction(&self) -> Arc<crate::redaction::Engine> {
        self.redaction.get().cloned().unwrap_or_default()
    }

    /// `{"whisper-tiny.en": "ready", "whisper-base": "missing: ..."}`; empty before start-up sets it.
    pub fn models_json(&self) -> serde_json::Value {
        let states = self.models.get().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone());
        serde_json::to_value(states.unwrap_or_default()).unwrap_or_default()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Installs a new snapshot, then closes the open streams whose key it no longer accepts.
    pub fn apply(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.metrics.snapshot_keys.set(snapshot.key_count() as i64);
        self.snapshot.store(Arc::clone(&snapshot));
        if let Some(gpu) = self.gpu.get() {
            gpu.set_tiers(&snapshot);
        }
        self.metrics.snapshot_swaps.inc();
        self.audit.config_applied(&snapshot.revision);
        self.ready.store(true, Ordering::Release);
        self.enforce_streams();
        self.revision.send_replace(snapshot);
    }

    /// Re-checks open streams against the current snapshot and clock (also run on a one-second tick).
    pub fn enforce_streams(&self) {
        let snapshot = self.snapshot();
        for closed in self.streams.enforce(&snapshot, Utc::now()) {
            self.audit.revocation_enforced(
                closed.key,
                closed.reason,
                closed.stream_id,
                closed.door,
                &closed.endpoint,
                &snapshot.revision,
            );
        }
    }

    /// Follows snapshot swaps (for the Lease publisher).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.revision.subscribe()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Starts a request's record and span (see [`RequestOutcome`]); `traceparent` is the client's, if sent.
    pub fn begin(&self, door: crate::outcome::Door, route: &'static str, traceparent: Option<&str>) -> RequestOutcome {
        RequestOutcome::new(door, route, traceparent, self.metrics.requests.clone(), self.settings.access_log_sample)
    }

    /// Records (or clears, with `None`) why the latest config change was rejected.
    pub fn set_config_problem(&self, problem: Option<String>) {
        *self.config_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// `/readyz`: ready once a snapshot is applied (before that every key would be refused as unknown). A rejected
    /// later change keeps the agent ready on its last good config, and the answer says what was rejected.
    pub fn readiness(&self) -> Result<String, String> {
        if !self.is_ready() {
            return Err("no gateway config applied yet".into());
        }
        let revision = &self.snapshot().revision;
        // A shared counter store that is down degrades every agent at once; failing readiness would take them all
        // out of the Service together, so the agent stays ready and says so (the tiers' onStoreFailure decides).
        let degraded = if self.limiter.store().is_up() {
            ""
        } else {
            " (degraded: counter store unreachable; tiers apply their onStoreFailure policy)"
        };
        // A missing model answers 503 on its own endpoints; it is no reason to take the node's other endpoints out
        // of the Service, so it is reported on a second line, not as unreadiness.
        let models = format!("models {}", self.models_json());
        // Still ready (fail static: the last good config keeps serving, and taking every agent out of the Service
        // at once during an API outage would be worse), but say so, for probes' logs and people.
        let down_for = self.config_source_down_since.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed());
        let degraded = match down_for {
            Some(d) if d >= self.settings.config_stale_after => format!(
                "{degraded} (stale: the config source has been unreachable for {}s; serving the last good config)",
                d.as_secs()
            ),
            _ => degraded.to_string(),
        };
        match self.config_problem.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
            None => Ok(format!("ok revision={revision}{degraded}\n{models}")),
            Some(problem) => Ok(format!(
                "ok revision={revision} (serving the last good config; latest change rejected: {problem}){degraded}\n{models}"
            )),
        }
    }

    pub fn authenticate(&self, snapshot: &Snapshot, credential: &Credential<'_>) -> Result<Identity, Refusal> {
        self.authenticate_at(snapshot, credential, infergate_gate::clock::now()).map_err(|refused| refused.refusal)
    }

    fn authenticate_at(
        &self,
        snapshot: &Snapshot,
        credential: &Credential<'_>,
        now: chrono::DateTime<Utc>,
    ) -> Result<Identity, TokenRefused> {
        let plain = |refusal| TokenRefused { refusal, key: None, jti: None };
        match credential {
            // Every door trims the credential the same way, whether it came from a header, the query string
            // or a WebSocket auth message; a token goes wherever a key goes.
            Credential::Key(presented) if infergate_gate::token::looks_like_token(presented.trim()) => {
                self.tokens.identify(snapshot, presented.trim(), now)
            }
            Credential::Key(key) => admission::authenticate(snapshot, key.trim(), now).map_err(plain),
            Credential::Identity { digest, environment, token } => {
                let mut identity = admission::identify(snapshot, digest, *environment, now).map_err(plain)?;
                if let Some(token) = token {
                    token.check_live(now).map_err(plain)?;
                    identity.token = Some(Arc::clone(token));
                }
                Ok(identity)
            }
        }
    }

    /// [`authenticate`](Self::authenticate) against the current snapshot. Fills the outcome with the caller;
    /// a refusal is recorded (with the key id when the key is genuine but refused, e.g. revoked, and the token's
    /// `jti` when a verified token's key was refused).
    pub fn authenticate_recorded(
        &self,
        credential: &Credential<'_>,
        outcome: &mut RequestOutcome,
    ) -> Result<Identity, Refusal> {
        let authenticated =
            self.authenticate_at(&self.snapshot(), credential, infergate_gate::clock::now()).and_then(|identity| {
                // Mutual TLS, where the policy asks for it: the key alone is not enough.
                admission::check_client_certificate(&identity.policy, outcome.client_cert.as_deref())
                    .map_err(|refusal| TokenRefused { refusal, key: Some(identity.key), jti: None })?;
                Ok(identity)
            });
        match authenticated {
            Ok(identity) => {
                outcome.identity(&identity);
                Ok(identity)
            }
            Err(TokenRefused { refusal, key, jti }) => {
                let genuine = !matches!(
                    refusal.code,
                    RefusalCode::MalformedKey
                        | RefusalCode::BadChecksum
                        | RefusalCode::UnknownKey
                        | RefusalCode::MissingKey
                        | RefusalCode::BadToken
                        | RefusalCode::TokenExpired
                );
                if let Some(jti) = &jti {
                    outcome.token(jti);
                }
                outcome.key = match credential {
                    _ if key.is_some() => key,
                    Credential::Key(presented) if infergate_gate::token::looks_like_token(presented.trim()) => None,
                    Credential::Key(presented) if genuine => Some(KeyRef::of(&KeyDigest::of(presented.trim()))),
                    Credential::Identity { digest, .. } if genuine => Some(KeyRef::of(digest)),
                    _ => outcome.key,
                };
                self.refused(&refusal, outcome);
                Err(refusal)
            }
        }
    }

    /// Records one refusal: metric, a sampled audit line, and the request's outcome code.
    pub fn refused(&self, refusal: &Refusal, outcome: &mut RequestOutcome) {
        outcome.refused(refusal);
        let endpoint = outcome.endpoint.as_deref();
        self.metrics.refused(refusal.code.as_str(), outcome.tier().unwrap_or(""), endpoint.unwrap_or(""));
        self.audit.refusal(RefusalEvent {
            key: outcome.key,
            code: refusal.code.as_str(),
            door: outcome.door.as_str(),
            endpoint,
            request_id: &outcome.request_id,
        });
    }

    pub fn admitted(&self, grant: &Grant) {
        self.metrics.admitted(grant.tier(), &grant.endpoint.label);
    }

    /// Records GPU-seconds charged to a key (after settlement, or per stream chunk).
    pub fn charged(&self, grant: &Grant, gpu_seconds: f64) {
        self.metrics.charged(grant.tier(), &grant.endpoint.label, gpu_seconds);
        let key = grant.key();
        self.limiter.store().record_usage(key.0, gpu_seconds);
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        *usage.entry(key).or_insert(0.0) += gpu_seconds;
        drop(usage);
        if let Some(user) = grant.identity.token.as_ref().and_then(|t| t.end_user) {
            self.tokens.end_users.charged(key, user, gpu_seconds);
        }
    }

    /// The one settlement path, for one-shot requests and stream segments alike: settles the pre-charge
    /// against the measured GPU time in the limiter and counts what came back.
    pub fn settle(&self, charge: Charge, measured_gpu_seconds: Option<f64>) -> Settled {
        let charged = self.limiter.settle(charge, measured_gpu_seconds);
        let delta = charged - charge.gpu_seconds;
        if delta < 0.0 {
            self.metrics.refunded_gpu_seconds.inc_by(-delta);
        }
        Settled { charged, delta }
    }

    /// GPU-seconds charged per key by this agent.
    pub fn usage(&self) -> Vec<(KeyRef, f64)> {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = usage.iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// GPU-seconds charged per key by every agent sharing the counter store (`None` with the in-memory store,
    /// or while the shared store cannot answer).
    pub async fn global_usage(&self) -> Option<Vec<(KeyRef, f64)>> {
        let usage = self.limiter.store().usage().await.ok()??;
        Some(usage.into_iter().map(|(k, v)| (KeyRef(k), v)).collect())
    }

    /// Takes one of the agent's long-lived connection slots.
    pub fn connection(self: &Arc<Self>, door: Door) -> Result<ConnectionGuard, Refusal> {
        let previous = self.connections.fetch_add(1, Ordering::AcqRel);
        if previous >= self.settings.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::new(
                RefusalCode::ServerBusy,
                format!(
                    "this agent holds its maximum of {} connections; retry shortly or use another agent",
                    self.settings.max_connections
                ),
            )
            .with_retry_after(1.0));
        }
        self.metrics.open_connections.with_label_values(&[door.as_str()]).inc();
        Ok(ConnectionGuard { gateway: Arc::clone(self), door })
    }

    /// Takes one of the key's connection slots: the per-key cap on this agent and, with a shared counter store,
    /// the same cap across every agent sharing it (a slot with a heartbeat, like a stream slot). While the shared
    /// store is unreachable only this agent's cap applies.
    pub async fn key_connection(&self, key: KeyRef) -> Result<KeyConnectionGuard, Refusal> {
        let cap = self.settings.max_connections_per_key;
        let full = |scope: &str| {
            Refusal::new(
                RefusalCode::ConnectionCap,
                format!("key {key} holds the maximum of {cap} connections per key {scope}; close some"),
            )
            .with_retry_after(1.0)
        };
        let local = self.per_key_connections.take(key).map_err(|_| full("on this agent"))?;
        let store = self.limiter.store();
        if !store.is_shared() {
            return Ok(KeyConnectionGuard { _local: local, global: None });
        }
        let bucket = infergate_gate::limiter::BucketKey { policy: key.0, endpoint: CONNECTIONS_BUCKET };
        match store.acquire_stream(bucket, cap).await {
            Ok(true) => Ok(KeyConnectionGuard { _local: local, global: Some((Arc::clone(store), bucket)) }),
            Ok(false) => Err(full("across the agents sharing the counter store")),
            Err(_) => Ok(KeyConnectionGuard { _local: local, global: None }),
        }
    }

    /// Takes an in-flight slot for a one-shot request: per key, so one key's burst of slow uploads cannot hold
    /// every backend connection, and agent-wide. Refused with 429 and a short Retry-After.
    pub fn one_shot_slot(&self, key: KeyRef) -> Result<KeySlot, Refusal> {
        self.in_flight.take(key).map_err(|full| {
            let message = match full {
                SlotsFull::Key => format!(
                    "key {key} already has {} requests in flight on this agent, the most it may; wait for one to \
                     finish",
                    self.settings.max_in_flight_per_key
                ),
                SlotsFull::Total => format!(
                    "this agent already serves {} one-shot requests, the most it may; retry shortly",
                    self.settings.max_in_flight
                ),
            };
            Refusal::new(RefusalCode::RateLimited, message).with_retry_after(1.0)
        })
    }
}

impl Gateway {
    /// Takes one of a client IP's slots for a WebSocket that has not authenticated yet; given back when it does
    /// (or closes). Refused with 429 once the IP holds `--max-unauthenticated-per-ip` of them.
    pub fn unauthenticated_slot(&self, ip: std::net::IpAddr) -> Result<KeySlot, Refusal> {
        // The slots are keyed by a 64-bit hash of the address: a collision only makes two addresses share a cap.
        let hashed = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            ip.hash(&mut hasher);
            KeyRef(hasher.finish())
        };
        self.unauthenticated.take(hashed).map_err(|_| {
            Refusal::new(
                RefusalCode::ConnectionCap,
                format!(
                    "this address holds {} WebSockets that have not authenticated, the most it may; send the key \
                     with the upgrade (Authorization header or a ticket) or authenticate the open ones",
                    self.settings.max_unauthenticated_per_ip
                ),
            )
            .with_retry_after(1.0)
        })
    }
}

/// A settled charge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settled {
    /// GPU-seconds finally charged.
    pub charged: f64,
    /// `charged` minus the pre-charge: negative when GPU-seconds went back to the bucket.
    pub delta: f64,
}

/// How a caller proves who it is: a presented key or session token (told apart by their form), or an identity
/// already established (a redeemed ticket, with the token it was minted with, if any).
pub enum Credential<'a> {
    Key(&'a str),
    Identity { digest: KeyDigest, environment: Environment, token: Option<Arc<TokenGrant>> },
}

pub struct ConnectionGuard {
    gateway: Arc<Gateway>,
    door: Door,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gateway.connections.fetch_sub(1, Ordering::AcqRel);
        self.gateway.metrics.open_connections.with_label_values(&[self.door.as_str()]).dec();
    }
}

#[cfg(test)]
impl Gateway {
    /// A gateway with default settings and an in-process counter store, serving `shards` (which must compile
    /// without warnings) with `backends`: the set-up the crate's tests share.
    pub(crate) fn serving(
        shards: &[infergate_crds::gateway::Shard],
        backends: std::collections::HashMap<infergate_crds::endpoint::BuiltinModel, Arc<dyn crate::backend::Backend>>,
    ) -> Arc<Gateway> {
        let (snapshot, warnings) = Snapshot::build(shards, infergate_gate::snapshot::SnapshotOptions::default());
        assert_eq!(warnings, vec![]);
        let limiter = Arc::new(Limiter::new(Arc::new(infergate_gate::limiter::InMemoryStore::default())));
        let gateway = Gateway::new(Settings::default(), limiter, Backends::new(backends));
        gateway.apply(snapshot);
        gateway
    }
}
