//! The counter-store conformance suite: one body per check, run against every [`CounterStore`]: the in-memory
//! store and the Redis store in both modes, against a real `redis-server` on a loopback port (started once per
//! test binary, stopped when the binary exits). Each store gets one `#[test]` per check
//! (`redis_leased::refuses_with_exact_wait_then_admits`), so a failure names the check and the store.
use infergate_gate::limiter::{BucketKey, BucketParams, CounterStore, InMemoryStore};
use infergate_redis::{Clock, Mode, RedisStore, Settings};
use std::sync::{Arc, OnceLock};

mod server;

fn b(key: u64) -> BucketKey {
    BucketKey { policy: key, endpoint: 7 }
}
const P: BucketParams = BucketParams { rate_per_second: 0.5, capacity: 2.0 };

async fn new_bucket_starts_full(s: &dyn CounterStore) {
    assert_eq!(s.balance(b(1), P, 0.0).await.unwrap(), 2.0);
}

async fn refuses_with_exact_wait_then_admits(s: &dyn CounterStore) {
    assert_eq!(s.try_take(b(1), 1.5, P, 0.0).await.unwrap(), Ok(()));
    // 0.5 left, needs 1.5: 1.0 short at 0.5/s = 2 s.
    assert_eq!(s.try_take(b(1), 1.5, P, 0.0).await.unwrap(), Err(2.0));
    assert!(s.try_take(b(1), 1.5, P, 1.999).await.unwrap().is_err());
    assert_eq!(s.try_take(b(1), 1.5, P, 2.0).await.unwrap(), Ok(()));
    assert!((s.balance(b(1), P, 2.0).await.unwrap() - 0.0).abs() < 1e-9);
}

async fn charge_above_capacity_is_paid_by_waiting(s: &dyn CounterStore) {
    // 5 GPU-s against a 2 GPU-s bucket: admitted when full, balance goes to -3, refilled after 10 s.
    assert_eq!(s.try_take(b(2), 5.0, P, 0.0).await.unwrap(), Ok(()));
    assert_eq!(s.balance(b(2), P, 0.0).await.unwrap(), -3.0);
    assert_eq!(s.try_take(b(2), 5.0, P, 0.0).await.unwrap(), Err(10.0));
    assert_eq!(s.try_take(b(2), 5.0, P, 10.0).await.unwrap(), Ok(()));
}

async fn adjust_refunds_and_never_exceeds_capacity(s: &dyn CounterStore) {
    assert_eq!(s.try_take(b(3), 1.0, P, 0.0).await.unwrap(), Ok(()));
    s.adjust(b(3), 0.25, P, 0.0);
    assert_eq!(s.balance(b(3), P, 0.0).await.unwrap(), 0.75);
    s.adjust(b(3), -10.0, P, 0.0);
    assert_eq!(s.balance(b(3), P, 0.0).await.unwrap(), 2.0);
}

async fn an_extra_charge_after_admission_is_owed(s: &dyn CounterStore) {
    // Settlement charged more than the pre-charge: the next admission sees the debt.
    assert_eq!(s.try_take(b(9), 1.0, P, 0.0).await.unwrap(), Ok(()));
    s.adjust(b(9), 0.5, P, 0.0);
    assert_eq!(s.try_take(b(9), 1.0, P, 0.0).await.unwrap(), Err(1.0));
}

async fn buckets_are_independent(s: &dyn CounterStore) {
    assert_eq!(s.try_take(b(4), 2.0, P, 0.0).await.unwrap(), Ok(()));
    assert_eq!(s.balance(b(5), P, 0.0).await.unwrap(), 2.0);
    let other_endpoint = BucketKey { policy: 4, endpoint: 8 };
    assert_eq!(s.balance(other_endpoint, P, 0.0).await.unwrap(), 2.0);
}

async fn stream_slots_are_capped_and_released(s: &dyn CounterStore) {
    assert!(s.acquire_stream(b(6), 2).await.unwrap());
    assert!(s.acquire_stream(b(6), 2).await.unwrap());
    assert!(!s.acquire_stream(b(6), 2).await.unwrap());
    assert_eq!(s.open_streams(b(6)).await.unwrap(), 2);
    s.release_stream(b(6));
    assert!(s.acquire_stream(b(6), 2).await.unwrap());
    assert!(!s.acquire_stream(b(7), 0).await.unwrap());
    s.release_stream(b(7));
    assert_eq!(s.open_streams(b(7)).await.unwrap(), 0);
}

async fn zero_rate_never_refills(s: &dyn CounterStore) {
    let p = BucketParams { rate_per_second: 0.0, capacity: 1.0 };
    assert_eq!(s.try_take(b(8), 1.0, p, 0.0).await.unwrap(), Ok(()));
    assert_eq!(s.try_take(b(8), 1.0, p, 1e6).await.unwrap(), Err(f64::INFINITY));
}

/// A Redis store on the shared test server, under a prefix of its own so tests running at once never meet.
fn redis(mode: Mode) -> Arc<RedisStore> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static SERVER: OnceLock<server::RedisServer> = OnceLock::new();
    let server = SERVER.get_or_init(server::RedisServer::start);
    let mut settings = Settings::new(server.url(), mode);
    settings.clock = Clock::Caller;
    settings.prefix = format!("conf{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    RedisStore::start(settings).expect("a loopback redis:// URL is valid")
}

/// One module per store, one `#[test]` per check; `$make` builds an empty store (inside the test's runtime).
macro_rules! conformance {
    ($($store:ident => $make:expr),* $(,)?) => {$(
        mod $store {
            use super::*;
            macro_rules! check {
                ($check:ident) => {
                    #[tokio::test]
                    async fn $check() {
                        let store = $make;
                        super::$check(&*store).await
                    }
                };
            }
            check!(new_bucket_starts_full);
            check!(refuses_with_exact_wait_then_admits);
            check!(charge_above_capacity_is_paid_by_waiting);
            check!(adjust_refunds_and_never_exceeds_capacity);
            check!(an_extra_charge_after_admission_is_owed);
            check!(buckets_are_independent);
            check!(stream_slots_are_capped_and_released);
            check!(zero_rate_never_refills);
        }
    )*};
}

conformance! {
    in_memory => Arc::new(InMemoryStore::default()),
    redis_exact => redis(Mode::Exact),
    redis_leased => redis(Mode::Leased),
}
