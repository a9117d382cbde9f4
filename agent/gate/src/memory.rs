//! The in-process [`CounterStore`]: every agent counting alone, and the fallback a [`crate::limiter::Limiter`]
//! counts in while a shared store is down (a tier's `local` failure policy).
use crate::limiter::{BucketKey, BucketParams, CounterStore, StoreFuture, ready};
use std::collections::HashMap;
use std::sync::Mutex;

/// Bucket ids are digest bits of configured names, or of end-user ids an app chooses: hashed with a per-process
/// seed (foldhash) rather than SipHash, which cost more than the bucket arithmetic.
type Map<V> = HashMap<BucketKey, V, foldhash::fast::RandomState>;

const EPSILON: f64 = 1e-9;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    balance: f64,
    updated: f64,
}

impl Bucket {
    fn refilled(mut self, params: BucketParams, now: f64) -> Self {
        let elapsed = (now - self.updated).max(0.0);
        self.balance = (self.balance + elapsed * params.rate_per_second).min(params.capacity);
        self.updated = now.max(self.updated);
        self
    }
}

/// Seconds until `balance` reaches `threshold` at `rate` (infinite when the rate is zero).
pub fn seconds_until(balance: f64, threshold: f64, rate: f64) -> f64 {
    if balance + EPSILON >= threshold {
        0.0
    } else if rate <= 0.0 {
        f64::INFINITY
    } else {
        (threshold - balance) / rate
    }
}

const SHARDS: usize = 64;

/// The in-process store: sharded mutexes held for a few arithmetic operations, never across I/O. Also the
/// fallback a [`Limiter`] counts in while a shared store is down (a tier's `local` failure policy).
pub struct InMemoryStore {
    buckets: Vec<Mutex<Map<Bucket>>>,
    streams: Vec<Mutex<Map<u32>>>,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self {
            buckets: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            streams: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
        }
    }
}

impl InMemoryStore {
    fn shard(bucket: &BucketKey) -> usize {
        ((bucket.policy ^ bucket.endpoint) as usize) % SHARDS
    }

    fn with_bucket<T>(&self, bucket: BucketKey, params: BucketParams, now: f64, f: impl FnOnce(&mut Bucket) -> T) -> T {
        // A poisoned shard only means another thread panicked mid-update of plain numbers; the data is usable.
        let mut map = self.buckets[Self::shard(&bucket)].lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(bucket).or_insert(Bucket { balance: params.capacity, updated: now });
        *entry = entry.refilled(params, now);
        f(entry)
    }

    /// [`CounterStore::try_take`], synchronously.
    pub fn take_now(&self, bucket: BucketKey, amount: f64, params: BucketParams, now: f64) -> Result<(), f64> {
        self.with_bucket(bucket, params, now, |b| {
            let threshold = amount.min(params.capacity).max(0.0);
            let wait = seconds_until(b.balance, threshold, params.rate_per_second);
            if wait == 0.0 {
                b.balance -= amount;
                Ok(())
            } else {
                Err(wait)
            }
        })
    }

    /// [`CounterStore::adjust`], returning the new balance.
    pub fn adjust_now(&self, bucket: BucketKey, amount: f64, params: BucketParams, now: f64) -> f64 {
        self.with_bucket(bucket, params, now, |b| {
            b.balance = (b.balance - amount).min(params.capacity);
            b.balance
        })
    }

    pub fn balance_now(&self, bucket: BucketKey, params: BucketParams, now: f64) -> f64 {
        self.with_bucket(bucket, params, now, |b| b.balance)
    }

    pub fn acquire_now(&self, bucket: BucketKey, cap: u32) -> bool {
        let mut map = self.streams[Self::shard(&bucket)].lock().unwrap_or_else(|p| p.into_inner());
        let open = map.entry(bucket).or_insert(0);
        if *open < cap {
            *open += 1;
            true
        } else {
            if *open == 0 {
                map.remove(&bucket);
            }
            false
        }
    }

    pub fn release_now(&self, bucket: BucketKey) {
        let mut map = self.streams[Self::shard(&bucket)].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = map.get_mut(&bucket) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                map.remove(&bucket);
            }
        }
    }

    pub fn open_now(&self, bucket: BucketKey) -> u32 {
        let map = self.streams[Self::shard(&bucket)].lock().unwrap_or_else(|p| p.into_inner());
        map.get(&bucket).copied().unwrap_or(0)
    }
}

impl CounterStore for InMemoryStore {
    fn try_take(
        &self,
        bucket: BucketKey,
        amount: f64,
        params: BucketParams,
        now: f64,
    ) -> StoreFuture<'_, Result<(), f64>> {
        ready(self.take_now(bucket, amount, params, now))
    }

    fn try_take_now(
        &self,
        bucket: BucketKey,
        amount: f64,
        params: BucketParams,
        now: f64,
    ) -> Option<Result<Result<(), f64>, crate::limiter::StoreError>> {
        Some(Ok(self.take_now(bucket, amount, params, now)))
    }

    fn adjust(&self, bucket: BucketKey, amount: f64, params: BucketParams, now: f64) {
        self.adjust_now(bucket, amount, params, now);
    }

    fn balance(&self, bucket: BucketKey, params: BucketParams, now: f64) -> StoreFuture<'_, f64> {
        ready(self.balance_now(bucket, params, now))
    }

    fn acquire_stream(&self, bucket: BucketKey, cap: u32) -> StoreFuture<'_, bool> {
        ready(self.acquire_now(bucket, cap))
    }

    fn release_stream(&self, bucket: BucketKey) {
        self.release_now(bucket)
    }

    fn open_streams(&self, bucket: BucketKey) -> StoreFuture<'_, u32> {
        ready(self.open_now(bucket))
    }
}
