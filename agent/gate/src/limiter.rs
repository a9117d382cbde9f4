//! GPU-second limits: a token bucket per (key, endpoint), a concurrent-stream cap per (key, endpoint), and a
//! short per-key wait queue, over a swappable [`CounterStore`].
//!
//! ```text
//!  request ─▶ pre-charge = max(audio_seconds × cost, minimum) ─▶ try_take ─┬─ ok ─▶ run ─▶ settle(measured)
//!                                                                           │           (refund or extra)
//!                                                                           └─ short ─▶ queue (≤ depth, ≤ timeout)
//!                                                                                     └─▶ 429 Retry-After
//!  stream  ─▶ open slot (cap) ─▶ each audio chunk: try_take(chunk_seconds × cost), waiting ≤ queue timeout
//! ```
//! Bucket rule: a bucket holds at most `burst` GPU-seconds and refills at `rate × refill_factor`. A charge is
//! admitted when the balance covers `min(charge, burst)`, and may then drive the balance negative: a request
//! bigger than the burst is not refused forever, it is paid for by waiting afterwards. `Retry-After` is exactly
//! the time until the balance reaches `min(charge, burst)` again, rounded up, so retrying after it succeeds.
use crate::admission::Grant;
use crate::refusal::{Refusal, RefusalCode};
use crate::snapshot::{KeyMap, KeyRef};
use infergate_crds::tier::OnStoreFailure;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which bucket: one per policy and endpoint, so every key of a policy (the current key and a retiring one
/// during a rotation overlap) spends from one budget. `policy` is [`crate::snapshot::PolicyConfig::bucket_id`],
/// `endpoint` is [`crate::snapshot::EndpointConfig::bucket_id`]; both are stable across snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub policy: u64,
    pub endpoint: u64,
}

/// A bucket's shape at the moment of a call. The refill rate may change between calls (GPU load).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketParams {
    pub rate_per_second: f64,
    pub capacity: f64,
}

/// A storage failure. Transient errors (a network blip to Redis) fail the one request with 503 and are
/// retried by the client; permanent ones are configuration errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("counter store error: {message}")]
pub struct StoreError {
    pub message: String,
    pub transient: bool,
}

/// What a store call returns: boxed so the trait stays object-safe (the agent picks the store at start-up).
/// For the in-memory store the future is ready at once; the box is the only cost (~20 ns).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Balances and stream counts. Times are seconds on the caller's monotonic clock, so implementations stay
/// deterministic under test (a shared store may use its server's clock instead: agents' clocks differ).
/// Calls that decide admission are async (a shared store may ask its server); settlements and releases never
/// wait: a shared store applies them in order before its next decision for the bucket, or soon after.
pub trait CounterStore: Send + Sync + 'static {
    /// Takes `amount` when the balance covers `min(amount, capacity)`; otherwise takes nothing and returns
    /// `Ok(Err(seconds))`: how long until it would.
    fn try_take(
        &self,
        bucket: BucketKey,
        amount: f64,
        params: BucketParams,
        now: f64,
    ) -> StoreFuture<'_, Result<(), f64>>;
    /// [`try_take`](Self::try_take) decided on the spot, for stores that answer from memory: `None` means "ask
    /// `try_take`". The limiter tries it first, so an in-process decision allocates no boxed future (that
    /// allocation and free were a tenth of an admission).
    fn try_take_now(
        &self,
        _bucket: BucketKey,
        _amount: f64,
        _params: BucketParams,
        _now: f64,
    ) -> Option<Result<Result<(), f64>, StoreError>> {
        None
    }
    /// Unconditionally removes `amount` (negative: refunds), never above capacity. Never waits.
    fn adjust(&self, bucket: BucketKey, amount: f64, params: BucketParams, now: f64);
    /// The balance now (after refill and every earlier `adjust`), for diagnostics and tests.
    fn balance(&self, bucket: BucketKey, params: BucketParams, now: f64) -> StoreFuture<'_, f64>;
    /// Takes one stream slot when fewer than `cap` are held.
    fn acquire_stream(&self, bucket: BucketKey, cap: u32) -> StoreFuture<'_, bool>;
    /// Gives one slot back. Never waits.
    fn release_stream(&self, bucket: BucketKey);
    fn open_streams(&self, bucket: BucketKey) -> StoreFuture<'_, u32>;
    /// Agents sharing this store, as last seen (1 for an in-process store): the divisor of a tier's `local`
    /// failure policy.
    fn agents(&self) -> u32 {
        1
    }
    /// Whether other agents count in this store too (caps that are per agent in memory become global).
    fn is_shared(&self) -> bool {
        false
    }
    /// Whether the store answered its last call or probe. Stores that cannot fail are always up.
    fn is_up(&self) -> bool {
        true
    }
    /// Adds settled GPU-seconds to a key's usage (`key` is the key's [`crate::snapshot::KeyRef`]) where every
    /// agent sees it. Never waits. In-process stores keep no usage: the agent counts its own.
    fn record_usage(&self, _key: u64, _gpu_seconds: f64) {}
    /// Sends what is queued (settlements, unused leases, released slots, usage) before the agent exits.
    fn flush(&self) -> StoreFuture<'_, ()> {
        ready(())
    }
    /// Usage by key across every agent sharing the store, or `None` when the store keeps none.
    fn usage(&self) -> StoreFuture<'_, Option<Vec<(u64, f64)>>> {
        ready(None)
    }
}

const EPSILON: f64 = 1e-9;

pub use crate::memory::{InMemoryStore, seconds_until};
pub use crate::stream_slots::StreamSlot;

/// What one bucket said (paid, or the wait until it could), where it was counted and with what shape; or the
/// refusal of a tier whose store failed closed.
type Taken = Result<(Result<(), f64>, Origin, BucketParams), Refusal>;

pub(crate) fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

/// Scales a tier's refill rate, e.g. down when the node's GPUs are saturated. The GPU-telemetry crate
/// provides the real one (the agent's `gpu::GpuRefill`); without it every tier runs at its nominal rate.
/// Both the tier's name and priority are passed: the GPU policy keys factors by name (each tier has its own
/// bounds), simpler policies may only need the priority.
pub trait RefillFactor: Send + Sync + 'static {
    fn refill_factor(&self, _tier_name: &str, _tier_priority: u32) -> f64 {
        1.0
    }
}

/// Every tier at its nominal rate.
pub struct Nominal;
impl RefillFactor for Nominal {}

/// Which counters a charge or a stream slot was taken from, so it is settled or released in the same place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configured store (in memory, or shared across agents).
    Store,
    /// This agent's own memory, while a shared store is unreachable and the tier's policy is `local`.
    Local,
    /// Not counted: the store was unreachable and the tier's policy is `failOpen`.
    Unmetered,
}

/// A pre-charge to settle when the work is done.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use = "settle the charge with the measured GPU time, or refund it"]
pub struct Charge {
    pub bucket: BucketKey,
    pub params: BucketParams,
    pub gpu_seconds: f64,
    pub origin: Origin,
    /// The end user's bucket, charged the same amount, when the token acts for a user whose tier limits users.
    pub user: Option<SubCharge>,
}

/// The end-user part of a [`Charge`]: settled and refunded together with the key's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubCharge {
    pub bucket: BucketKey,
    pub params: BucketParams,
    pub origin: Origin,
}

impl Charge {
    /// Folds a later charge on the same bucket into this one, so the chunks of a stream segment settle once
    /// against the segment's measured time. The later bucket shape wins (the refill rate follows GPU load).
    /// Charges from different counters (the store went down mid-segment) are not folded: the caller keeps the
    /// earlier one at its estimate and settles only the later one.
    pub fn absorb(&mut self, later: Charge) {
        debug_assert_eq!(self.bucket, later.bucket, "charges of one segment share a bucket");
        self.gpu_seconds += later.gpu_seconds;
        self.params = later.params;
        if let (Some(user), Some(later)) = (&mut self.user, later.user) {
            user.params = later.params;
        }
    }
}

/// Decisions taken without the shared store, by tier policy, for the agent's metrics.
#[derive(Default)]
pub struct StoreFailureCounts {
    pub local: AtomicU64,
    pub fail_open: AtomicU64,
    pub fail_closed: AtomicU64,
}

pub struct Limiter {
    pub(crate) store: Arc<dyn CounterStore>,
    /// Where a tier with `onStoreFailure: local` counts while the store is unreachable.
    pub(crate) fallback: InMemoryStore,
    refill: Arc<dyn RefillFactor>,
    /// [`crate::clock::monotonic_seconds`] when this limiter started.
    epoch: f64,
    /// Requests waiting per key, bounded by the tier's queue depth.
    waiting: Mutex<KeyMap<u32>>,
    queue_depth: AtomicI64,
    pub(crate) failures: StoreFailureCounts,
}

impl Limiter {
    pub fn new(store: Arc<dyn CounterStore>) -> Self {
        Self::with_refill(store, Arc::new(Nominal))
    }

    pub fn with_refill(store: Arc<dyn CounterStore>, refill: Arc<dyn RefillFactor>) -> Self {
        Limiter {
            store,
            fallback: InMemoryStore::default(),
            refill,
            epoch: crate::clock::monotonic_seconds(),
            waiting: Mutex::default(),
            queue_depth: AtomicI64::new(0),
            failures: StoreFailureCounts::default(),
        }
    }

    /// The hook the GPU-telemetry crate drives; 1.0 without it.
    pub fn refill_factor(&self, tier_name: &str, tier_priority: u32) -> f64 {
        let factor = self.refill.refill_factor(tier_name, tier_priority);
        // NaN from a broken policy must not freeze the bucket (NaN rates never refill): treat as nominal.
        if factor.is_finite() { factor.max(0.0) } else { 1.0 }
    }

    /// Seconds since this limiter started: the clock every store call uses. The kernel's coarse monotonic
    /// clock (one tick, 1-10 ms): a bucket refills in tick-sized steps, never early (see [`crate::clock`]).
    pub fn now(&self) -> f64 {
        crate::clock::monotonic_seconds() - self.epoch
    }

    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    /// Decisions taken by failure policy while the store was unreachable.
    pub fn store_failures(&self) -> &StoreFailureCounts {
        &self.failures
    }

    /// Requests currently waiting in any queue.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    pub fn bucket(grant: &Grant) -> BucketKey {
        BucketKey { policy: grant.identity.policy.bucket_id, endpoint: grant.endpoint.bucket_id }
    }

    pub fn params(&self, grant: &Grant) -> BucketParams {
        let factor = self.factor(grant);
        BucketParams {
            rate_per_second: grant.limits.gpu_seconds_per_minute / 60.0 * factor,
            capacity: grant.limits.burst_gpu_seconds.max(0.0),
        }
    }

    /// The pre-charge for `audio_seconds` of audio under the endpoint's cost model.
    pub fn estimate(grant: &Grant, audio_seconds: f64) -> f64 {
        let cost = &grant.endpoint.shard.cost;
        (audio_seconds.max(0.0) * cost.gpu_seconds_per_audio_second).max(cost.minimum_gpu_seconds)
    }

    /// A stream chunk's charge: audio seconds × cost, without the per-request minimum.
    pub fn estimate_stream(grant: &Grant, audio_seconds: f64) -> f64 {
        audio_seconds.max(0.0) * grant.endpoint.shard.cost.gpu_seconds_per_audio_second
    }

    /// This agent's share of a bucket while the shared store is down: the tier's limits divided by the agents.
    pub(crate) fn local_share(&self, params: BucketParams) -> BucketParams {
        let agents = f64::from(self.store.agents().max(1));
        BucketParams { rate_per_second: params.rate_per_second / agents, capacity: params.capacity / agents }
    }

    /// Takes `amount` from one bucket, or from this agent's memory, or not at all, as the tier's store-failure
    /// policy says when the store cannot answer. Returns what the bucket said, where it was counted, and the shape
    /// it was counted with.
    async fn take(&self, grant: &Grant, bucket: BucketKey, amount: f64, params: BucketParams, now: f64) -> Taken {
        let taken = match self.store.try_take_now(bucket, amount, params, now) {
            Some(taken) => taken,
            None => self.store.try_take(bucket, amount, params, now).await,
        };
        self.by_policy(grant, bucket, amount, params, now, taken)
    }

    /// [`take`](Self::take) when the store answers on the spot; `None` when it would have to wait.
    fn take_now(&self, grant: &Grant, bucket: BucketKey, amount: f64, params: BucketParams, now: f64) -> Option<Taken> {
        let taken = self.store.try_take_now(bucket, amount, params, now)?;
        Some(self.by_policy(grant, bucket, amount, params, now, taken))
    }

    /// The store's answer, or what the tier's store-failure policy decides when the store failed.
    fn by_policy(
        &self,
        grant: &Grant,
        bucket: BucketKey,
        amount: f64,
        params: BucketParams,
        now: f64,
        taken: Result<Result<(), f64>, StoreError>,
    ) -> Taken {
        match taken {
            Ok(taken) => Ok((taken, Origin::Store, params)),
            Err(err) => match grant.identity.policy.tier.on_store_failure {
                OnStoreFailure::Local => {
                    self.failures.local.fetch_add(1, Ordering::Relaxed);
                    let share = self.local_share(params);
                    Ok((self.fallback.take_now(bucket, amount, share, now), Origin::Local, share))
                }
                OnStoreFailure::FailOpen => {
                    self.failures.fail_open.fetch_add(1, Ordering::Relaxed);
                    Ok((Ok(()), Origin::Unmetered, params))
                }
                OnStoreFailure::FailClosed => {
                    self.failures.fail_closed.fetch_add(1, Ordering::Relaxed);
                    Err(store_refusal(err))
                }
            },
        }
    }

    /// Takes `gpu_seconds` now or refuses with an honest retry-after. The hot path: one store call (two when
    /// the token acts for an end user whose tier limits users: the user's bucket first, then the key's).
    /// Callers on the hot path try [`try_charge_now`](Self::try_charge_now) first and come here on `None`; this
    /// path does not try it again.
    pub async fn try_charge_at(&self, grant: &Grant, gpu_seconds: f64, now: f64) -> Result<Charge, Refusal> {
        let user = match end_user_budget(grant, self.factor(grant)) {
            Some((bucket, params)) => Some(self.user_charged(
                grant,
                gpu_seconds,
                bucket,
                self.take(grant, bucket, gpu_seconds, params, now).await,
            )?),
            None => None,
        };
        let bucket = Self::bucket(grant);
        let taken = self.take(grant, bucket, gpu_seconds, self.params(grant), now).await;
        self.charged(grant, gpu_seconds, bucket, user, taken)
    }

    /// [`try_charge`](Self::try_charge) decided without a future, for a store that answers on the spot
    /// ([`CounterStore::try_take_now`]: the in-process store; shared stores answer through futures). `None`: the
    /// store would have to wait and nothing was taken, so call `try_charge`. The doors try this first: building,
    /// moving and polling the async version's nested futures was a tenth of an admission decision, for an answer
    /// that was ready all along.
    pub fn try_charge_now(&self, grant: &Grant, gpu_seconds: f64) -> Option<Result<Charge, Refusal>> {
        self.try_charge_now_at(grant, gpu_seconds, self.now())
    }

    /// [`try_charge_now`](Self::try_charge_now) at a given time on the limiter's clock.
    pub fn try_charge_now_at(&self, grant: &Grant, gpu_seconds: f64, now: f64) -> Option<Result<Charge, Refusal>> {
        let user = match end_user_budget(grant, self.factor(grant)) {
            Some((bucket, params)) => {
                let taken = self.take_now(grant, bucket, gpu_seconds, params, now)?;
                match self.user_charged(grant, gpu_seconds, bucket, taken) {
                    Ok(user) => Some(user),
                    Err(refusal) => return Some(Err(refusal)),
                }
            }
            None => None,
        };
        let bucket = Self::bucket(grant);
        let Some(taken) = self.take_now(grant, bucket, gpu_seconds, self.params(grant), now) else {
            // The user's bucket answered now but the key's cannot: the user's share goes back, and the caller's
            // `try_charge` takes both again.
            if let Some(user) = &user {
                self.adjust_in(user.origin, user.bucket, -gpu_seconds, user.params);
            }
            return None;
        };
        Some(self.charged(grant, gpu_seconds, bucket, user, taken))
    }

    /// The end user's part of a charge, or the refusal that ends it.
    fn user_charged(
        &self,
        grant: &Grant,
        gpu_seconds: f64,
        bucket: BucketKey,
        taken: Taken,
    ) -> Result<SubCharge, Refusal> {
        match taken? {
            (Ok(()), origin, params) => Ok(SubCharge { bucket, params, origin }),
            (Err(wait), ..) => Err(end_user_rate_limited(grant, gpu_seconds, wait)),
        }
    }

    /// The charge once the key's bucket has answered; a refusal gives the end user's part back.
    fn charged(
        &self,
        grant: &Grant,
        gpu_seconds: f64,
        bucket: BucketKey,
        user: Option<SubCharge>,
        taken: Taken,
    ) -> Result<Charge, Refusal> {
        match taken {
            Ok((Ok(()), origin, params)) => Ok(Charge { bucket, params, gpu_seconds, origin, user }),
            refused => {
                // The key's budget refused after the user's paid: the user gets it back.
                if let Some(user) = &user {
                    self.adjust_in(user.origin, user.bucket, -gpu_seconds, user.params);
                }
                match refused {
                    Ok((Err(wait), ..)) => Err(rate_limited(grant, gpu_seconds, wait)),
                    Err(refusal) => Err(refusal),
                    Ok((Ok(()), ..)) => unreachable!("matched above"),
                }
            }
        }
    }

    fn factor(&self, grant: &Grant) -> f64 {
        let tier = &grant.identity.policy.tier;
        self.refill_factor(&tier.name, tier.priority)
    }

    pub async fn try_charge(&self, grant: &Grant, gpu_seconds: f64) -> Result<Charge, Refusal> {
        self.try_charge_at(grant, gpu_seconds, self.now()).await
    }

    fn adjust(&self, charge: &Charge, amount: f64) {
        self.adjust_in(charge.origin, charge.bucket, amount, charge.params);
        if let Some(user) = &charge.user {
            self.adjust_in(user.origin, user.bucket, amount, user.params);
        }
    }

    fn adjust_in(&self, origin: Origin, bucket: BucketKey, amount: f64, params: BucketParams) {
        match origin {
            Origin::Store => self.store.adjust(bucket, amount, params, self.now()),
            Origin::Local => {
                self.fallback.adjust_now(bucket, amount, params, self.now());
            }
            Origin::Unmetered => {}
        }
    }

    /// Settles a pre-charge against the measured GPU time: refunds the difference or charges the extra.
    /// Returns the GPU-seconds finally charged. Never waits (settlement runs in drop guards).
    pub fn settle(&self, charge: Charge, measured_gpu_seconds: Option<f64>) -> f64 {
        let Some(measured) = measured_gpu_seconds.filter(|m| m.is_finite() && *m >= 0.0) else {
            return charge.gpu_seconds;
        };
        let delta = measured - charge.gpu_seconds;
        if delta.abs() > EPSILON {
            self.adjust(&charge, delta);
        }
        measured
    }

    /// Gives a pre-charge back in full (the request failed before any GPU work).
    pub fn refund(&self, charge: Charge) {
        self.adjust(&charge, -charge.gpu_seconds);
    }

    /// Like [`try_charge`](Self::try_charge), but waits in the key's queue (bounded depth, tier timeout) when
    /// the bucket will be able to pay soon. A wait that cannot end before the timeout is refused at once.
    pub async fn charge(&self, grant: &Grant, gpu_seconds: f64) -> Result<Charge, Refusal> {
        let first = match self.try_charge_now(grant, gpu_seconds) {
            Some(decided) => decided,
            None => self.try_charge(grant, gpu_seconds).await,
        };
        let first = match first {
            Ok(charge) => return Ok(charge),
            Err(refusal) => refusal,
        };
        let tier = &grant.identity.policy.tier;
        let timeout = Duration::from_millis(tier.queue_timeout_ms);
        let wait = first.retry_after_seconds.unwrap_or(f64::INFINITY);
        if first.code != RefusalCode::RateLimited || tier.queue_max_depth == 0 || wait > timeout.as_secs_f64() {
            return Err(first);
        }
        let _slot = self.enter_queue(grant)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = wait;
        loop {
            let until = (tokio::time::Instant::now() + Duration::from_secs_f64(wait.max(0.001))).min(deadline);
            tokio::time::sleep_until(until).await;
            match self.try_charge(grant, gpu_seconds).await {
                Ok(charge) => return Ok(charge),
                Err(refusal) if refusal.code != RefusalCode::RateLimited => return Err(refusal),
                Err(refusal) if tokio::time::Instant::now() >= deadline => {
                    return Err(Refusal {
                        code: RefusalCode::QueueTimeout,
                        message: format!(
                            "waited the tier's queue timeout ({} ms) and the key's GPU-second budget on {} still cannot pay; retry after the given seconds",
                            tier.queue_timeout_ms, grant.endpoint.label
                        )
                        .into(),
                        retry_after_seconds: refusal.retry_after_seconds,
                    });
                }
                Err(refusal) => wait = refusal.retry_after_seconds.unwrap_or(0.05),
            }
        }
    }

    pub(crate) fn enter_queue(&self, grant: &Grant) -> Result<QueueSlot<'_>, Refusal> {
        let key = grant.key();
        let max = grant.identity.policy.tier.queue_max_depth;
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let depth = waiting.entry(key).or_insert(0);
        if *depth >= max {
            return Err(Refusal::new(
                RefusalCode::QueueFull,
                format!("{max} request(s) of this key are already waiting for capacity; retry shortly"),
            )
            .with_retry_after(1.0));
        }
        *depth += 1;
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
        Ok(QueueSlot { limiter: self, key })
    }
}

pub(crate) struct QueueSlot<'a> {
    limiter: &'a Limiter,
    key: KeyRef,
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        let mut waiting = self.limiter.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(depth) = waiting.get_mut(&self.key) {
            *depth -= 1;
            if *depth == 0 {
                waiting.remove(&self.key);
            }
        }
        self.limiter.queue_depth.fetch_sub(1, Ordering::Relaxed);
    }
}

fn rate_limited(grant: &Grant, gpu_seconds: f64, wait: f64) -> Refusal {
    let refusal = Refusal::new(
        RefusalCode::RateLimited,
        format!(
            "GPU-second budget exhausted on {} for tier {} ({} GPU-s/min, burst {}); this request needs {:.3} GPU-s; retry after the given seconds",
            grant.endpoint.label,
            grant.tier(),
            grant.limits.gpu_seconds_per_minute,
            grant.limits.burst_gpu_seconds,
            gpu_seconds
        ),
    );
    if wait.is_finite() { refusal.with_retry_after(wait) } else { refusal }
}

pub(crate) fn store_refusal(err: StoreError) -> Refusal {
    let mut r = Refusal::new(
        RefusalCode::BackendUnavailable,
        "the shared rate-limit counters are unreachable and this key's tier refuses while they are (onStoreFailure: failClosed); retry shortly",
    );
    if err.transient {
        r = r.with_retry_after(1.0);
    }
    r
}

/// The end user's bucket on the grant's endpoint and its shape, when the token acts for a user and the tier
/// limits users' GPU-seconds. A limit the tier leaves unset is the key's.
pub(crate) fn end_user_budget(grant: &Grant, factor: f64) -> Option<(BucketKey, BucketParams)> {
    let user = grant.identity.token.as_ref()?.end_user?;
    let limits = grant.identity.policy.tier.end_user.as_ref()?;
    if limits.gpu_seconds_per_minute.is_none() && limits.burst_gpu_seconds.is_none() {
        return None;
    }
    let rate = limits.gpu_seconds_per_minute.unwrap_or(grant.limits.gpu_seconds_per_minute);
    let burst = limits.burst_gpu_seconds.unwrap_or(grant.limits.burst_gpu_seconds);
    let params = BucketParams { rate_per_second: rate / 60.0 * factor, capacity: burst.max(0.0) };
    Some((end_user_bucket(user, grant), params))
}

/// One bucket (and one stream count) per end user and endpoint. The user's hash already covers the policy.
pub(crate) fn end_user_bucket(user: crate::token::EndUser, grant: &Grant) -> BucketKey {
    BucketKey { policy: user.0, endpoint: grant.endpoint.bucket_id }
}

fn end_user_rate_limited(grant: &Grant, gpu_seconds: f64, wait: f64) -> Refusal {
    let user = grant.identity.token.as_ref().and_then(|t| t.end_user);
    let user = user.map(|u| u.to_string()).unwrap_or_default();
    let refusal = Refusal::new(
        RefusalCode::RateLimited,
        format!(
            "end user {user}'s GPU-second budget is exhausted on {} (tier {} limits each end user); this request \
             needs {gpu_seconds:.3} GPU-s; retry after the given seconds",
            grant.endpoint.label,
            grant.tier(),
        ),
    );
    if wait.is_finite() { refusal.with_retry_after(wait) } else { refusal }
}
