//! The limiter's onStoreFailure policies, against a shared store that is down.
use crate::admission::{Request, admit};
use crate::limiter::Limiter;
use crate::refusal::RefusalCode;
use crate::snapshot::{Snapshot, SnapshotOptions};
use crate::testing::{key, mk_endpoint, mk_policy, t0, tier};
use infergate_crds::endpoint::Feature;
use std::sync::Arc;

const TRANSCRIBE: Request<'static> = Request { model: "whisper-1", feature: Feature::Transcribe, origin: None };

/// A shared store that is down: every decision fails as a Redis timeout would.
struct DownStore;
impl crate::limiter::CounterStore for DownStore {
    fn try_take(
        &self,
        _: crate::limiter::BucketKey,
        _: f64,
        _: crate::limiter::BucketParams,
        _: f64,
    ) -> crate::limiter::StoreFuture<'_, Result<(), f64>> {
        Box::pin(async { Err(crate::limiter::StoreError { message: "timed out".into(), transient: true }) })
    }
    fn adjust(&self, _: crate::limiter::BucketKey, _: f64, _: crate::limiter::BucketParams, _: f64) {
        panic!("a charge taken while the store is down is never settled against it");
    }
    fn balance(
        &self,
        _: crate::limiter::BucketKey,
        _: crate::limiter::BucketParams,
        _: f64,
    ) -> crate::limiter::StoreFuture<'_, f64> {
        Box::pin(async { Err(crate::limiter::StoreError { message: "timed out".into(), transient: true }) })
    }
    fn acquire_stream(&self, _: crate::limiter::BucketKey, _: u32) -> crate::limiter::StoreFuture<'_, bool> {
        Box::pin(async { Err(crate::limiter::StoreError { message: "timed out".into(), transient: true }) })
    }
    fn release_stream(&self, _: crate::limiter::BucketKey) {
        panic!("a slot taken while the store is down is never released to it");
    }
    fn open_streams(&self, _: crate::limiter::BucketKey) -> crate::limiter::StoreFuture<'_, u32> {
        Box::pin(async { Ok(0) })
    }
    fn agents(&self) -> u32 {
        4
    }
    fn is_up(&self) -> bool {
        false
    }
}

fn world_with_failure(policy: infergate_crds::tier::OnStoreFailure) -> Snapshot {
    let mut t = tier("shared");
    t.gpu_seconds_per_minute = 60.0;
    t.burst_gpu_seconds = 4.0;
    t.max_concurrent_streams = 2;
    t.on_store_failure = policy;
    Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("app").tier(t).key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0
}

#[tokio::test]
async fn store_down_local_policy_enforces_this_agents_share() {
    use crate::limiter::Origin;
    let s = world_with_failure(infergate_crds::tier::OnStoreFailure::Local);
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let limiter = Arc::new(Limiter::new(Arc::new(DownStore)));
    // Burst 4 over 4 agents: this agent may spend 1 GPU-s, refilling at 1/s / 4.
    let c = limiter.try_charge_at(&g, 1.0, 0.0).await.unwrap();
    assert_eq!(c.origin, Origin::Local);
    let refused = limiter.try_charge_at(&g, 1.0, 0.0).await.unwrap_err();
    assert_eq!(refused.code, RefusalCode::RateLimited);
    assert!((refused.retry_after_seconds.unwrap() - 4.0).abs() < 1e-9);
    // Settlement goes back to the local counters (DownStore panics if it were asked).
    limiter.settle(c, Some(0.5));
    assert!(limiter.try_charge_at(&g, 0.5, 0.0).await.is_ok());
    // Streams: a cap of 2 over 4 agents rounds up to 1 here.
    let slot = limiter.try_open_stream(&g).await.unwrap();
    assert_eq!(limiter.try_open_stream(&g).await.map(|_| ()).unwrap_err().code, RefusalCode::StreamCap);
    drop(slot);
    assert!(limiter.try_open_stream(&g).await.is_ok());
    assert!(limiter.store_failures().local.load(std::sync::atomic::Ordering::Relaxed) >= 4);
}

#[tokio::test]
async fn store_down_fail_open_admits_without_counting() {
    let s = world_with_failure(infergate_crds::tier::OnStoreFailure::FailOpen);
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let limiter = Arc::new(Limiter::new(Arc::new(DownStore)));
    for _ in 0..100 {
        let c = limiter.try_charge_at(&g, 1.0, 0.0).await.unwrap();
        assert_eq!(c.origin, crate::limiter::Origin::Unmetered);
        limiter.settle(c, Some(2.0));
    }
    let slots: Vec<_> = futures_join(&limiter, &g, 5).await;
    assert!(slots.iter().all(|s| s.is_ok()));
}

#[tokio::test]
async fn store_down_fail_closed_refuses_with_503_and_retry_after() {
    let s = world_with_failure(infergate_crds::tier::OnStoreFailure::FailClosed);
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let limiter = Arc::new(Limiter::new(Arc::new(DownStore)));
    let refused = limiter.try_charge_at(&g, 0.1, 0.0).await.unwrap_err();
    assert_eq!(refused.code, RefusalCode::BackendUnavailable);
    assert_eq!(refused.retry_after_header(), Some(1));
    assert!(refused.message.contains("failClosed"), "{}", refused.message);
    let stream = limiter.try_open_stream(&g).await.map(|_| ()).unwrap_err();
    assert_eq!(stream.code, RefusalCode::BackendUnavailable);
    // A queued charge does not wait on a store failure: it is refused at once.
    assert_eq!(limiter.charge(&g, 0.1).await.unwrap_err().code, RefusalCode::BackendUnavailable);
}

async fn futures_join(
    limiter: &Arc<Limiter>,
    g: &crate::admission::Grant,
    n: usize,
) -> Vec<Result<crate::limiter::StreamSlot, crate::refusal::Refusal>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(limiter.try_open_stream(g).await);
    }
    out
}

/// A store that cannot answer on the spot (every shared store) gets no on-the-spot decision: `None`, nothing
/// taken, and no failure counted (the async charge that follows decides, and counts, once).
#[tokio::test]
async fn a_down_store_gets_no_on_the_spot_decision_and_no_failure_counted_twice() {
    let s = world_with_failure(infergate_crds::tier::OnStoreFailure::FailOpen);
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let limiter = Limiter::new(Arc::new(DownStore));
    assert!(limiter.try_charge_now_at(&g, 1.0, 0.0).is_none());
    assert_eq!(limiter.store_failures().fail_open.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(limiter.try_charge_at(&g, 1.0, 0.0).await.is_ok());
    assert_eq!(limiter.store_failures().fail_open.load(std::sync::atomic::Ordering::Relaxed), 1);
}
