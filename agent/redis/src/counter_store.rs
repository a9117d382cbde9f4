//! [`CounterStore`] for [`RedisStore`]: the trait's calls, each a thin door onto the store's `Inner`.
use super::*;

impl CounterStore for RedisStore {
    fn try_take(
        &self,
        bucket: BucketKey,
        amount: f64,
        params: BucketParams,
        now: f64,
    ) -> StoreFuture<'_, Result<(), f64>> {
        Box::pin(self.inner.try_take(bucket, amount, params, now))
    }

    fn adjust(&self, bucket: BucketKey, amount: f64, params: BucketParams, now: f64) {
        self.inner.adjust(bucket, amount, params, now)
    }

    fn balance(&self, bucket: BucketKey, params: BucketParams, now: f64) -> StoreFuture<'_, f64> {
        Box::pin(self.inner.balance(bucket, params, now))
    }

    fn acquire_stream(&self, bucket: BucketKey, cap: u32) -> StoreFuture<'_, bool> {
        Box::pin(self.inner.acquire_stream(bucket, cap))
    }

    fn release_stream(&self, bucket: BucketKey) {
        self.inner.release_stream(bucket)
    }

    fn open_streams(&self, bucket: BucketKey) -> StoreFuture<'_, u32> {
        Box::pin(async move { Ok(self.inner.slots(bucket, None, 0).await?.max(0) as u32) })
    }

    fn agents(&self) -> u32 {
        self.inner.agents.load(Ordering::Relaxed).max(1)
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// Every queued adjustment, unused lease (returned early), release and usage, now.
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.inner.flush(true).await;
            Ok(())
        })
    }

    fn record_usage(&self, key: u64, gpu_seconds: f64) {
        let mut usage = self.inner.usage.lock().unwrap_or_else(|p| p.into_inner());
        *usage.entry(key).or_insert(0.0) += gpu_seconds;
    }

    fn usage(&self) -> StoreFuture<'_, Option<Vec<(u64, f64)>>> {
        Box::pin(async move {
            // Only this agent's unsent usage: a /usage read need not return leases or send settlements.
            self.inner.flush_usage().await;
            let key = format!("{}:usage", self.inner.settings.prefix);
            let all: HashMap<String, String> = self
                .inner
                .call(move |mut conn| {
                    Box::pin(async move { redis::cmd("HGETALL").arg(key).query_async(&mut conn).await })
                })
                .await?;
            let mut out: Vec<(u64, f64)> = all
                .into_iter()
                .filter_map(|(k, v)| Some((u64::from_str_radix(&k, 16).ok()?, v.parse().ok()?)))
                .collect();
            out.sort_by_key(|(k, _)| *k);
            Ok(Some(out))
        })
    }
}
