//! The counter-store conformance suite: one body per check, run against every [`CounterStore`].
//! Each store gets one `#[test]` per check (`in_memory::refuses_with_exact_wait_then_admits`), so a failure
//! names the check and the store. A new store (Redis) plugs in with one line in the `conformance!` list at the end.
use infergate_gate::limiter::{BucketKey, BucketParams, CounterStore, InMemoryStore};

fn b(key: u64) -> BucketKey {
    BucketKey { policy: key, endpoint: 7 }
}
const P: BucketParams = BucketParams { rate_per_second: 0.5, capacity: 2.0 };

fn new_bucket_starts_full(s: &impl CounterStore) {
    assert_eq!(s.balance(b(1), P, 0.0).unwrap(), 2.0);
}

fn refuses_with_exact_wait_then_admits(s: &impl CounterStore) {
    assert_eq!(s.try_take(b(1), 1.5, P, 0.0).unwrap(), Ok(()));
    // 0.5 left, needs 1.5: 1.0 short at 0.5/s = 2 s.
    assert_eq!(s.try_take(b(1), 1.5, P, 0.0).unwrap(), Err(2.0));
    assert!(s.try_take(b(1), 1.5, P, 1.999).unwrap().is_err());
    assert_eq!(s.try_take(b(1), 1.5, P, 2.0).unwrap(), Ok(()));
    assert!((s.balance(b(1), P, 2.0).unwrap() - 0.0).abs() < 1e-9);
}

fn charge_above_capacity_is_paid_by_waiting(s: &impl CounterStore) {
    // 5 GPU-s against a 2 GPU-s bucket: admitted when full, balance goes to -3, refilled after 10 s.
    assert_eq!(s.try_take(b(2), 5.0, P, 0.0).unwrap(), Ok(()));
    assert_eq!(s.balance(b(2), P, 0.0).unwrap(), -3.0);
    assert_eq!(s.try_take(b(2), 5.0, P, 0.0).unwrap(), Err(10.0));
    assert_eq!(s.try_take(b(2), 5.0, P, 10.0).unwrap(), Ok(()));
}

fn adjust_refunds_and_never_exceeds_capacity(s: &impl CounterStore) {
    assert_eq!(s.try_take(b(3), 1.0, P, 0.0).unwrap(), Ok(()));
    assert_eq!(s.adjust(b(3), 0.25, P, 0.0).unwrap(), 0.75);
    assert_eq!(s.adjust(b(3), -10.0, P, 0.0).unwrap(), 2.0);
}

fn buckets_are_independent(s: &impl CounterStore) {
    assert_eq!(s.try_take(b(4), 2.0, P, 0.0).unwrap(), Ok(()));
    assert_eq!(s.balance(b(5), P, 0.0).unwrap(), 2.0);
    let other_endpoint = BucketKey { policy: 4, endpoint: 8 };
    assert_eq!(s.balance(other_endpoint, P, 0.0).unwrap(), 2.0);
}

fn stream_slots_are_capped_and_released(s: &impl CounterStore) {
    assert!(s.acquire_stream(b(6), 2).unwrap());
    assert!(s.acquire_stream(b(6), 2).unwrap());
    assert!(!s.acquire_stream(b(6), 2).unwrap());
    assert_eq!(s.open_streams(b(6)).unwrap(), 2);
    s.release_stream(b(6)).unwrap();
    assert!(s.acquire_stream(b(6), 2).unwrap());
    assert!(!s.acquire_stream(b(7), 0).unwrap());
    s.release_stream(b(7)).unwrap();
    assert_eq!(s.open_streams(b(7)).unwrap(), 0);
}

fn zero_rate_never_refills(s: &impl CounterStore) {
    let p = BucketParams { rate_per_second: 0.0, capacity: 1.0 };
    assert_eq!(s.try_take(b(8), 1.0, p, 0.0).unwrap(), Ok(()));
    assert_eq!(s.try_take(b(8), 1.0, p, 1e6).unwrap(), Err(f64::INFINITY));
}

/// One module per store, one `#[test]` per check; `$make` builds an empty store.
macro_rules! conformance {
    ($($store:ident => $make:expr),* $(,)?) => {$(
        mod $store {
            use super::*;
            #[test] fn new_bucket_starts_full() { super::new_bucket_starts_full(&$make) }
            #[test] fn refuses_with_exact_wait_then_admits() { super::refuses_with_exact_wait_then_admits(&$make) }
            #[test] fn charge_above_capacity_is_paid_by_waiting() { super::charge_above_capacity_is_paid_by_waiting(&$make) }
            #[test] fn adjust_refunds_and_never_exceeds_capacity() { super::adjust_refunds_and_never_exceeds_capacity(&$make) }
            #[test] fn buckets_are_independent() { super::buckets_are_independent(&$make) }
            #[test] fn stream_slots_are_capped_and_released() { super::stream_slots_are_capped_and_released(&$make) }
            #[test] fn zero_rate_never_refills() { super::zero_rate_never_refills(&$make) }
        }
    )*};
}

conformance! {
    in_memory => InMemoryStore::default(),
}
