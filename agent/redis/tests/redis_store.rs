//! What only a shared store has to show, against a real `redis-server`: leasing keeps round trips off the hot
//! path, agents sharing a bucket never admit more than it holds, a vanished agent's slots expire, the store
//! goes down and comes back without a restart, and usage adds up across agents.
use infergate_gate::limiter::{BucketKey, BucketParams, CounterStore};
use infergate_redis::{Clock, Mode, RedisStore, Settings};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod server;

static SERVER: std::sync::OnceLock<server::RedisServer> = std::sync::OnceLock::new();
static PREFIX: AtomicU64 = AtomicU64::new(0);

fn fresh_prefix() -> String {
    format!("t{}-{}", std::process::id(), PREFIX.fetch_add(1, Ordering::Relaxed))
}

fn settings(url: &str, mode: Mode, prefix: &str) -> Settings {
    let mut s = Settings::new(url, mode);
    s.prefix = prefix.to_string();
    s
}

fn shared_url() -> String {
    SERVER.get_or_init(server::RedisServer::start).url()
}

const B: BucketKey = BucketKey { policy: 11, endpoint: 22 };

#[tokio::test]
async fn leased_mode_keeps_round_trips_off_the_hot_path() {
    let mut s = settings(&shared_url(), Mode::Leased, &fresh_prefix());
    s.clock = Clock::Caller;
    let store = RedisStore::start(s).unwrap();
    // A 10 GPU-s/s key at half its rate: blocks of 0.1 s of rate (0.2 GPU-s, 2% of burst 10) cover 20 admissions.
    let params = BucketParams { rate_per_second: 10.0, capacity: 10.0 };
    let before = store.calls();
    for i in 0..1000 {
        let now = i as f64 * 0.002;
        assert_eq!(store.try_take(B, 0.01, params, now).await.unwrap(), Ok(()), "admission {i}");
    }
    let calls = store.calls() - before;
    assert!(calls <= 100, "1000 admissions took {calls} round trips");
}

#[tokio::test]
async fn exact_mode_asks_redis_for_every_admission() {
    let mut s = settings(&shared_url(), Mode::Exact, &fresh_prefix());
    s.clock = Clock::Caller;
    let store = RedisStore::start(s).unwrap();
    let params = BucketParams { rate_per_second: 10.0, capacity: 10.0 };
    let before = store.calls();
    for i in 0..200 {
        assert_eq!(store.try_take(B, 0.01, params, i as f64 * 0.002).await.unwrap(), Ok(()));
    }
    assert!(store.calls() - before >= 200);
}

/// Two agents hammering one bucket that never refills: together they admit exactly what it held, never more.
async fn agents_never_admit_more_than_the_bucket_holds(mode: Mode) {
    let prefix = fresh_prefix();
    let a = RedisStore::start(settings(&shared_url(), mode, &prefix)).unwrap();
    let b = RedisStore::start(settings(&shared_url(), mode, &prefix)).unwrap();
    let params = BucketParams { rate_per_second: 0.0, capacity: 1.0 };
    let spend = |store: Arc<RedisStore>| async move {
        let mut admitted = 0u32;
        for _ in 0..150 {
            if store.try_take(B, 0.01, params, 0.0).await.unwrap().is_ok() {
                admitted += 1;
            }
        }
        admitted
    };
    let (x, y) = tokio::join!(tokio::spawn(spend(Arc::clone(&a))), tokio::spawn(spend(Arc::clone(&b))));
    let admitted = x.unwrap() + y.unwrap();
    // 1.0 GPU-s at 0.01 each: 100 admissions (a float sum may leave one short), never 101.
    assert!((99..=100).contains(&admitted), "{mode:?}: {admitted} admissions from a bucket of 100");
}

#[tokio::test]
async fn leased_agents_never_admit_more_than_the_bucket_holds() {
    agents_never_admit_more_than_the_bucket_holds(Mode::Leased).await
}

#[tokio::test]
async fn exact_agents_never_admit_more_than_the_bucket_holds() {
    agents_never_admit_more_than_the_bucket_holds(Mode::Exact).await
}

#[tokio::test]
async fn an_unused_lease_goes_back_to_the_shared_bucket() {
    let prefix = fresh_prefix();
    // The caller's clock stands still at 0: no refill muddles the balances.
    let mut s = settings(&shared_url(), Mode::Leased, &prefix);
    s.lease_ttl = Duration::from_millis(300);
    s.clock = Clock::Caller;
    let a = RedisStore::start(s).unwrap();
    let mut s = settings(&shared_url(), Mode::Exact, &prefix);
    s.clock = Clock::Caller;
    let b = RedisStore::start(s).unwrap();
    let params = BucketParams { rate_per_second: 1.0, capacity: 1.0 };
    // Two admissions: the second, on an active key, takes a block (2% of burst) for later.
    for _ in 0..2 {
        assert!(a.try_take(B, 0.1, params, 0.0).await.unwrap().is_ok());
    }
    let seen_by_b = b.balance(B, params, 0.0).await.unwrap();
    assert!((seen_by_b - 0.78).abs() < 1e-9, "a holds a 0.02 block: {seen_by_b}");
    // After the lease TTL the block is returned: the other agent sees 0.8 again.
    let start = Instant::now();
    loop {
        let now = b.balance(B, params, 0.0).await.unwrap();
        if (now - 0.8).abs() < 1e-9 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "the lease was not returned: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_vanished_agents_stream_slots_expire_after_the_ttl() {
    let prefix = fresh_prefix();
    let mut s = settings(&shared_url(), Mode::Leased, &prefix);
    s.slot_ttl = Duration::from_secs(1);
    let doomed = RedisStore::start(s.clone()).unwrap();
    let survivor = RedisStore::start(s).unwrap();
    assert!(doomed.acquire_stream(B, 1).await.unwrap());
    assert!(!survivor.acquire_stream(B, 1).await.unwrap());
    // Dropping the store stops its heartbeat without releasing anything: a crash, as far as Redis can tell.
    drop(doomed);
    let start = Instant::now();
    while !survivor.acquire_stream(B, 1).await.unwrap() {
        assert!(start.elapsed() < Duration::from_millis(2500), "slot still held after 2.5 s (TTL 1 s)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn usage_adds_up_across_agents() {
    let prefix = fresh_prefix();
    let a = RedisStore::start(settings(&shared_url(), Mode::Leased, &prefix)).unwrap();
    let b = RedisStore::start(settings(&shared_url(), Mode::Exact, &prefix)).unwrap();
    a.record_usage(7, 1.5);
    b.record_usage(7, 2.0);
    b.record_usage(9, 0.25);
    b.flush().await.unwrap();
    let usage = a.usage().await.unwrap().unwrap();
    assert_eq!(usage, vec![(7, 3.5), (9, 0.25)]);
}

#[tokio::test]
async fn a_store_that_goes_away_fails_fast_and_comes_back_without_a_restart() {
    let mut own = server::RedisServer::start();
    let mut s = settings(&own.url(), Mode::Exact, &fresh_prefix());
    s.timeout = Duration::from_millis(100);
    let store = RedisStore::start(s).unwrap();
    let params = BucketParams { rate_per_second: 1.0, capacity: 1.0 };
    assert!(store.try_take(B, 0.1, params, 0.0).await.unwrap().is_ok());
    assert!(store.is_up());
    own.stop();
    // The first call after the server left fails within the timeout; the next ones fail at once.
    let t = Instant::now();
    assert!(store.try_take(B, 0.1, params, 0.0).await.is_err());
    assert!(t.elapsed() < Duration::from_millis(1500), "first failure took {:?}", t.elapsed());
    assert!(!store.is_up());
    let t = Instant::now();
    for _ in 0..100 {
        assert!(store.try_take(B, 0.1, params, 0.0).await.is_err());
    }
    assert!(t.elapsed() < Duration::from_millis(100), "failing while down took {:?}", t.elapsed());
    own.restart();
    let back = Instant::now();
    while !store.is_up() {
        assert!(back.elapsed() < Duration::from_secs(5), "not back within 5 s of the server returning");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.try_take(B, 0.1, params, 0.0).await.unwrap().is_ok());
}
