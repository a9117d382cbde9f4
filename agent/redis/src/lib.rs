//! The shared [`CounterStore`] on Redis (or Valkey): one GPU-second budget and one stream cap per key across
//! every agent.
//!
//! ```text
//!  exact:   try_take ──▶ BUCKET.lua (server time, refill, take)           one round trip per admission
//!  leased:  try_take ──▶ local lease covers it? ── yes ─▶ spend locally     no I/O on the hot path
//!                                               └─ no ──▶ BUCKET.lua takes `need`, plus for a key active on
//!                                                         this agent a block of 0.1 s of its rate (<= 2% of
//!                                                         burst); unused lease returns after `lease_ttl` (or
//!                                                         is lost with a crashed agent)
//!  both:    refused ──▶ the refusal is cached until its refill time (a refused key does not hammer Redis)
//!           adjust (settle/refund) ──▶ local; applied with the bucket's next script call or the 100 ms flush
//!  streams: acquire ──▶ SLOTS.lua: drop expired members, add one if fewer than cap (member = agent:n, TTL)
//!           release ──▶ queued and sent at once by the flusher; a heartbeat every ttl/3 (at most 1 s) keeps
//!           held members and this agent's entry in the agents set alive
//!  down:    any error or timeout marks the store down; calls fail at once (the Limiter applies the tier's
//!           onStoreFailure) and a 500 ms PING probe brings it back without a restart
//! ```
//! Keys are hash-tagged per bucket (`ig:{<policy>.<endpoint>}:b` and `:s`), so a bucket's keys share a
//! Cluster slot. Accuracy: in both modes the admitted total never exceeds what the shared bucket held; leased
//! mode strands at most one unused block (<= 2% of burst) per agent per key until it is returned.
use arc_swap::ArcSwapOption;
use infergate_gate::limiter::{BucketKey, BucketParams, CounterStore, StoreError, StoreFuture};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

mod counter_store;
mod scripts;
mod settings;
use scripts::{AGENTS_LUA, BUCKET_LUA, HEARTBEAT_LUA, SLOTS_LUA};
pub use settings::{Clock, ConfigError, Mode, Settings};

const EPSILON: f64 = 1e-9;
/// A lease block is at most this share of the bucket's burst: what one agent can strand per key...
const BLOCK_SHARE_OF_BURST: f64 = 0.02;
/// ...and at most this many seconds of the tier's refill rate.
const BLOCK_SECONDS_OF_RATE: f64 = 0.1;
const SHARDS: usize = 64;

/// Per-bucket state this agent keeps.
#[derive(Default)]
struct Local {
    params: Option<BucketParams>,
    /// Leased GPU-seconds not yet spent (negative: a settlement's extra charge not yet paid to Redis).
    lease: f64,
    leased_at: Option<Instant>,
    /// Exact mode: adjustments not yet sent.
    pending: f64,
    /// The last caller `now` seen (for Clock::Caller flushes).
    last_now: f64,
    /// The shared balance at the last reply, and when (caller clock).
    shared_seen: f64,
    shared_seen_at: f64,
    denied_until: f64,
    denied_need: f64,
    /// When this agent last took from the shared bucket for this key: a key that did within `lease_ttl` is
    /// active and gets lease blocks; a cold key takes only what each request needs.
    last_topup: Option<Instant>,
    /// Stream-slot members this agent holds, and released members not yet removed in Redis.
    held: Vec<String>,
    releases: Vec<String>,
}

struct Inner {
    settings: Settings,
    conn: ArcSwapOption<ConnectionManager>,
    up: AtomicBool,
    agents: AtomicU32,
    locals: Vec<Mutex<HashMap<BucketKey, Local>>>,
    usage: Mutex<HashMap<u64, f64>>,
    slot_counter: AtomicU64,
    wake: Notify,
    bucket_script: redis::Script,
    slots_script: redis::Script,
    heartbeat_script: redis::Script,
    agents_script: redis::Script,
    errors: AtomicU64,
    calls: AtomicU64,
}

/// The Redis counter store. Dropping it stops its background task.
pub struct RedisStore {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What BUCKET.lua answered.
struct BucketReply {
    granted: Option<f64>,
    balance: f64,
    wait: f64,
}

impl RedisStore {
    /// Builds the store and starts its background task (flush, heartbeat, probe). Must run inside a Tokio
    /// runtime. Does not connect: an unreachable server at start-up is a degraded store, not a failed agent.
    pub fn start(settings: Settings) -> Result<Arc<RedisStore>, ConfigError> {
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(|e| ConfigError(format!("not a usable redis:// or rediss:// URL ({})", e.category())))?;
        let info = match &settings.password {
            Some(password) => {
                let redis = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(redis)
            }
            None => info,
        };
        let client = match &settings.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| ConfigError(format!("cannot use the counter store settings ({})", e.category())))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(250))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ConfigError(format!("cannot set up the Redis connection ({})", e.category())))?;
        let inner = Arc::new(Inner {
            settings,
            conn: ArcSwapOption::from_pointee(manager),
            up: AtomicBool::new(true),
            agents: AtomicU32::new(1),
            locals: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            usage: Mutex::new(HashMap::new()),
            slot_counter: AtomicU64::new(0),
            wake: Notify::new(),
            bucket_script: redis::Script::new(BUCKET_LUA),
            slots_script: redis::Script::new(SLOTS_LUA),
            heartbeat_script: redis::Script::new(HEARTBEAT_LUA),
            agents_script: redis::Script::new(AGENTS_LUA),
            errors: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        });
        let task = tokio::spawn(background(Arc::clone(&inner)));
        Ok(Arc::new(RedisStore { inner, task }))
    }

    pub fn mode(&self) -> Mode {
        self.inner.settings.mode
    }

    /// Round trips to Redis since start (scripts, pipelines, probes).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Calls that failed (error or timeout) since start.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn shard(bucket: &BucketKey) -> usize {
        ((bucket.policy ^ bucket.endpoint.rotate_left(17)) as usize) % SHARDS
    }

    fn with_local<T>(&self, bucket: BucketKey, f: impl FnOnce(&mut Local) -> T) -> T {
        let mut map = self.locals[Self::shard(&bucket)].lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(bucket).or_default())
    }

    fn key(&self, bucket: &BucketKey, suffix: &str) -> String {
        format!("{}:{{{:016x}.{:016x}}}:{suffix}", self.settings.prefix, bucket.policy, bucket.endpoint)
    }

    fn now_arg(&self, now: f64) -> String {
        match self.settings.clock {
            Clock::Server => String::new(),
            Clock::Caller => format!("{now:.17e}"),
        }
    }

    fn unavailable(&self) -> StoreError {
        StoreError { message: "counter store unreachable".into(), transient: true }
    }

    /// Runs one Redis call under the store timeout; any failure marks the store down.
    async fn call<'a, T: redis::FromRedisValue>(
        &'a self,
        invocation: impl FnOnce(ConnectionManager) -> futures_like::BoxFut<'a, T>,
    ) -> Result<T, StoreError> {
        let Some(conn) = self.conn.load_full() else { return Err(self.unavailable()) };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(self.settings.timeout, invocation((*conn).clone())).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                self.mark_down(err.category());
                Err(StoreError { message: format!("counter store error ({})", err.category()), transient: true })
            }
            Err(_) => {
                self.mark_down("timeout");
                Err(StoreError { message: "counter store timed out".into(), transient: true })
            }
        }
    }

    fn mark_down(&self, why: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(reason = why, "counter store unreachable; tiers apply their onStoreFailure policy");
            self.forget_denials();
            self.wake.notify_one();
        }
    }

    /// Cached refusals describe the store as it was; after it went away or came back, the tier's failure policy
    /// or the store itself decides again.
    fn forget_denials(&self) {
        for shard in &self.locals {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            map.values_mut().for_each(|l| l.denied_until = 0.0);
        }
    }

    async fn bucket_call(
        &self,
        bucket: &BucketKey,
        now: f64,
        params: BucketParams,
        pending: f64,
        take: Option<(f64, f64, f64)>,
    ) -> Result<BucketReply, StoreError> {
        let (need, take, want) = take.unwrap_or((0.0, -1.0, 0.0));
        let key = self.key(bucket, "b");
        let now_arg = self.now_arg(now);
        let mut invocation = self.bucket_script.key(key);
        invocation
            .arg(now_arg)
            .arg(params.rate_per_second)
            .arg(params.capacity)
            .arg(pending)
            .arg(need)
            .arg(take)
            .arg(want);
        let reply: (String, String, String) =
            self.call(move |mut conn| Box::pin(async move { invocation.invoke_async(&mut conn).await })).await?;
        let num = |s: &str| s.parse::<f64>().unwrap_or(0.0);
        let granted = num(&reply.0);
        let wait = num(&reply.2);
        Ok(BucketReply {
            granted: (granted >= 0.0).then_some(granted),
            balance: num(&reply.1),
            wait: if wait < 0.0 { f64::INFINITY } else { wait },
        })
    }

    async fn try_take(
        &self,
        bucket: BucketKey,
        amount: f64,
        params: BucketParams,
        now: f64,
    ) -> Result<Result<(), f64>, StoreError> {
        let leased = self.settings.mode == Mode::Leased;
        let lease_ttl = self.settings.lease_ttl;
        let threshold = amount.min(params.capacity).max(0.0);
        // Decide locally what can be decided locally.
        let plan = self.with_local(bucket, |l| {
            l.params = Some(params);
            l.last_now = now;
            if leased && l.lease + EPSILON >= amount {
                l.lease -= amount;
                return Err(Ok(()));
            }
            let lease = if leased { l.lease } else { 0.0 };
            let need = (threshold - lease).max(0.0);
            if now < l.denied_until && need + EPSILON >= l.denied_need {
                return Err(Err(l.denied_until - now));
            }
            let take = amount - lease;
            // The block adapts to the key: nothing for a cold key (its first request takes what it needs, so a
            // quiet key never strands budget), a tenth of a second of its tier's rate (at most 2% of burst) for a
            // key this agent served within the lease TTL.
            let active = l.last_topup.is_some_and(|t| t.elapsed() < lease_ttl);
            let block = if leased && active {
                (params.rate_per_second * BLOCK_SECONDS_OF_RATE).min(params.capacity * BLOCK_SHARE_OF_BURST).max(0.0)
            } else {
                0.0
            };
            let pending = std::mem::take(&mut l.pending);
            Ok((need, take, take + block, pending))
        });
        let (need, take, want, pending) = match plan {
            Err(decided) => return Ok(decided),
            Ok(plan) => plan,
        };
        if !self.up.load(Ordering::Acquire) {
            self.with_local(bucket, |l| l.pending += pending);
            return Err(self.unavailable());
        }
        let reply = match self.bucket_call(&bucket, now, params, pending, Some((need, take, want))).await {
            Ok(reply) => reply,
            Err(err) => {
                self.with_local(bucket, |l| l.pending += pending);
                return Err(err);
            }
        };
        Ok(self.with_local(bucket, |l| {
            l.shared_seen = reply.balance;
            l.shared_seen_at = now;
            match reply.granted {
                Some(granted) => {
                    if leased {
                        l.lease += granted - amount;
                        let at = Instant::now();
                        l.last_topup = Some(at);
                        l.leased_at = Some(at);
                    }
                    l.denied_until = 0.0;
                    Ok(())
                }
                None => {
                    l.denied_until = now + reply.wait;
                    l.denied_need = need;
                    Err(reply.wait)
                }
            }
        }))
    }

    fn adjust(&self, bucket: BucketKey, amount: f64, params: BucketParams, now: f64) {
        let leased = self.settings.mode == Mode::Leased;
        self.with_local(bucket, |l| {
            l.params = Some(params);
            if leased {
                l.lease -= amount;
                // A refund cannot make this agent hold more than the bucket could: the shared side refilled
                // meanwhile, and anything above capacity would be spent twice.
                let shared =
                    (l.shared_seen + (now - l.shared_seen_at).max(0.0) * params.rate_per_second).min(params.capacity);
                l.lease = l.lease.min((params.capacity - shared).max(0.0));
                if l.leased_at.is_none() {
                    l.leased_at = Some(Instant::now());
                }
            } else {
                l.pending += amount;
            }
            l.denied_until = 0.0;
        });
    }

    async fn balance(&self, bucket: BucketKey, params: BucketParams, now: f64) -> Result<f64, StoreError> {
        let (pending, lease) = self.with_local(bucket, |l| (std::mem::take(&mut l.pending), l.lease));
        if !self.up.load(Ordering::Acquire) {
            self.with_local(bucket, |l| l.pending += pending);
            return Err(self.unavailable());
        }
        match self.bucket_call(&bucket, now, params, pending, None).await {
            Ok(reply) => Ok((reply.balance + lease).min(params.capacity)),
            Err(err) => {
                self.with_local(bucket, |l| l.pending += pending);
                Err(err)
            }
        }
    }

    /// SLOTS.lua for one bucket: removes this agent's released members first, then counts or acquires.
    async fn slots(&self, bucket: BucketKey, member: Option<&str>, cap: u32) -> Result<i64, StoreError> {
        let releases = self.with_local(bucket, |l| std::mem::take(&mut l.releases));
        if !self.up.load(Ordering::Acquire) {
            self.with_local(bucket, |l| l.releases.extend(releases));
            return Err(self.unavailable());
        }
        let mut invocation = self.slots_script.key(self.key(&bucket, "s"));
        invocation.arg(member.unwrap_or("")).arg(cap).arg(self.settings.slot_ttl.as_millis() as u64);
        for r in &releases {
            invocation.arg(r);
        }
        let result: Result<i64, StoreError> =
            self.call(move |mut conn| Box::pin(async move { invocation.invoke_async(&mut conn).await })).await;
        if result.is_err() {
            self.with_local(bucket, |l| l.releases.extend(releases));
        }
        result
    }

    async fn acquire_stream(&self, bucket: BucketKey, cap: u32) -> Result<bool, StoreError> {
        if cap == 0 {
            return Ok(false);
        }
        let n = self.slot_counter.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}:{n}", self.settings.agent_id);
        let acquired = self.slots(bucket, Some(&member), cap).await? == -1;
        if acquired {
            self.with_local(bucket, |l| l.held.push(member));
        }
        Ok(acquired)
    }

    fn release_stream(&self, bucket: BucketKey) {
        let released = self.with_local(bucket, |l| {
            let member = l.held.pop();
            if let Some(m) = &member {
                l.releases.push(m.clone());
            }
            member.is_some()
        });
        if released {
            self.wake.notify_one();
        }
    }

    /// Sends queued work. `all`: also leases that have not reached their TTL (tests, shutdown).
    async fn flush(&self, all: bool) {
        if !self.up.load(Ordering::Acquire) {
            return;
        }
        let lease_ttl = self.settings.lease_ttl;
        let mut work = Vec::new();
        for shard in &self.locals {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (bucket, l) in map.iter_mut() {
                let expired = l.leased_at.is_some_and(|at| all || at.elapsed() >= lease_ttl);
                let lease = if expired && l.lease.abs() > EPSILON {
                    l.leased_at = None;
                    std::mem::take(&mut l.lease)
                } else {
                    if expired {
                        l.leased_at = None;
                        l.lease = 0.0;
                    }
                    0.0
                };
                let pending = std::mem::take(&mut l.pending);
                let releases = !l.releases.is_empty();
                if let Some(params) = l.params
                    && (pending.abs() > EPSILON || lease.abs() > EPSILON)
                {
                    // A returned lease is a refund of what was taken and not spent.
                    work.push((*bucket, Some((params, pending - lease, l.last_now)), releases));
                } else if releases {
                    work.push((*bucket, None, true));
                }
            }
            // Buckets with nothing left to remember are dropped (the map would otherwise grow with every key).
            map.retain(|_, l| {
                l.held.len() + l.releases.len() > 0
                    || l.lease.abs() > EPSILON
                    || l.pending.abs() > EPSILON
                    || l.last_topup.is_some_and(|t| t.elapsed() < Duration::from_secs(60))
                    || l.denied_until > l.last_now
            });
        }
        for (bucket, adjust, releases) in work {
            if let Some((params, amount, now)) = adjust
                && self.bucket_call(&bucket, now, params, amount, None).await.is_err()
            {
                // Kept for the next flush: the amount is owed either way.
                self.with_local(bucket, |l| l.pending += amount);
            }
            if releases {
                let _ = self.slots(bucket, None, 0).await;
            }
        }
        self.flush_usage().await;
    }

    /// Sends the usage recorded since the last flush (one pipeline); kept for the next one if it fails.
    async fn flush_usage(&self) {
        if !self.up.load(Ordering::Acquire) {
            return;
        }
        let usage: Vec<(u64, f64)> = {
            let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            usage.drain().collect()
        };
        if !usage.is_empty() {
            let key = format!("{}:usage", self.settings.prefix);
            let mut pipe = redis::pipe();
            for (k, v) in &usage {
                pipe.cmd("HINCRBYFLOAT").arg(&key).arg(format!("{k:016x}")).arg(*v).ignore();
            }
            let sent: Result<(), StoreError> =
                self.call(move |mut conn| Box::pin(async move { pipe.query_async(&mut conn).await })).await;
            if sent.is_err() {
                let mut pending = self.usage.lock().unwrap_or_else(|p| p.into_inner());
                for (k, v) in usage {
                    *pending.entry(k).or_insert(0.0) += v;
                }
            }
        }
    }

    /// Keeps this agent's slots and its entry in the agents set alive.
    async fn heartbeat(&self) {
        let ttl = self.settings.slot_ttl.as_millis() as u64;
        let mut held: Vec<(BucketKey, Vec<String>)> = Vec::new();
        for shard in &self.locals {
            let map = shard.lock().unwrap_or_else(|p| p.into_inner());
            held.extend(map.iter().filter(|(_, l)| !l.held.is_empty()).map(|(b, l)| (*b, l.held.clone())));
        }
        for (bucket, members) in held {
            let mut invocation = self.heartbeat_script.key(self.key(&bucket, "s"));
            invocation.arg(ttl);
            for m in &members {
                invocation.arg(m);
            }
            let _: Result<i64, _> =
                self.call(move |mut conn| Box::pin(async move { invocation.invoke_async(&mut conn).await })).await;
        }
        let mut invocation = self.agents_script.key(format!("{}:agents", self.settings.prefix));
        invocation.arg(&self.settings.agent_id).arg(ttl);
        if let Ok(n) =
            self.call::<u32>(move |mut conn| Box::pin(async move { invocation.invoke_async(&mut conn).await })).await
        {
            self.agents.store(n.max(1), Ordering::Relaxed);
        }
    }

    async fn probe(&self) -> bool {
        let Some(conn) = self.conn.load_full() else { return false };
        let mut conn = (*conn).clone();
        let ping = tokio::time::timeout(self.settings.timeout.max(Duration::from_millis(250)), async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        matches!(ping, Ok(Ok(_)))
    }
}

/// Flush every 100 ms (or at once when a slot is released), heartbeat every ttl/3, probe every 500 ms while down.
async fn background(inner: Arc<Inner>) {
    let flush_every = Duration::from_millis(100);
    // Also how soon an idle agent notices the store went away (readiness, metrics): at least once a second.
    let heartbeat_every = (inner.settings.slot_ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let mut last_heartbeat: Option<Instant> = None;
    loop {
        if !inner.up.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if inner.probe().await {
                inner.forget_denials();
                inner.up.store(true, Ordering::Release);
                tracing::info!("counter store reachable again; shared limits apply");
                last_heartbeat = None;
            }
            continue;
        }
        if last_heartbeat.is_none_or(|t| t.elapsed() >= heartbeat_every) {
            inner.heartbeat().await;
            last_heartbeat = Some(Instant::now());
        }
        inner.flush(false).await;
        tokio::select! {
            _ = tokio::time::sleep(flush_every) => {}
            _ = inner.wake.notified() => {}
        }
    }
}

/// A boxed future without pulling in the `futures` crate.
mod futures_like {
    pub type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = redis::RedisResult<T>> + Send + 'a>>;
}
