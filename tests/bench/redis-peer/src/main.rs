//! Per-admission cost of a GPU-second check with its counters on Redis (loopback), one core, one process:
//! infergate's Redis store (leased and exact) against limitador's AsyncRedisStorage (one round trip per check)
//! and CachedRedisStorage (local cache, batched flush), with both in-memory stores for reference.
//! Run by tests/bench/redis.sh, which starts redis-server and prints the table into docs/benchmarks.md.
use infergate_gate::limiter::{BucketKey, BucketParams, CounterStore, InMemoryStore};
use infergate_redis::{Clock, Mode, RedisStore, Settings};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const KEYS: u64 = 1000;

/// Budgets no run can exhaust: every contender admits every call, as in limitador's own benches.
const UNBOUNDED: BucketParams = BucketParams { rate_per_second: 1e12, capacity: 1e12 };

async fn time_it<F: AsyncFnMut(u64)>(n: u64, mut f: F) -> f64 {
    // One sequence of call numbers: paced contenders derive their clock from it, which must never go back.
    let warm = n / 10;
    for i in 0..warm {
        f(i).await;
    }
    let start = Instant::now();
    for i in warm..warm + n {
        f(i).await;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn bucket(i: u64) -> BucketKey {
    BucketKey { policy: i % KEYS, endpoint: 1 }
}

async fn infergate(store: &dyn CounterStore, n: u64) -> f64 {
    time_it(n, async |i| {
        let ok = store.try_take(bucket(i), 0.01, UNBOUNDED, 0.0).await.expect("store answers");
        assert!(ok.is_ok());
    })
    .await
}

/// One key on a 10 GPU-s/s tier paying 0.01 GPU-s per admission while the clock advances `step` seconds per call:
/// `step` 0.002 asks for half its rate (the bucket keeps headroom: lease blocks of 0.1 s of rate, at most 2% of
/// burst, amortise the round trip); 0.0005 asks for twice its rate (the bucket is empty: half the calls are
/// refused from the cached denial, every admitted one needs Redis). Refusals count as calls: both are decisions.
async fn infergate_paced(store: &dyn CounterStore, n: u64, step: f64, policy: u64) -> f64 {
    let params = BucketParams { rate_per_second: 10.0, capacity: 10.0 };
    time_it(n, async |i| {
        let now = i as f64 * step;
        black_box(store.try_take(BucketKey { policy, endpoint: 2 }, 0.01, params, now).await.ok());
    })
    .await
}

async fn limitador(lim: &limitador::AsyncRateLimiter, n: u64) -> f64 {
    let namespace: limitador::limit::Namespace = "bench".into();
    let contexts: Vec<limitador::limit::Context<'_>> =
        (0..KEYS).map(|k| HashMap::from([("key".to_string(), format!("k{k}"))]).into()).collect();
    time_it(n, async |i| {
        let r = lim.check_rate_limited_and_update(&namespace, &contexts[(i % KEYS) as usize], 1).await;
        assert!(!r.expect("limitador answers").limited);
    })
    .await
}

async fn limitador_memory(lim: &limitador::RateLimiter, n: u64) -> f64 {
    let namespace: limitador::limit::Namespace = "bench".into();
    let contexts: Vec<limitador::limit::Context<'_>> =
        (0..KEYS).map(|k| HashMap::from([("key".to_string(), format!("k{k}"))]).into()).collect();
    time_it(n, async |i| {
        let r = lim.check_rate_limited_and_update(&namespace, &contexts[(i % KEYS) as usize], 1);
        assert!(!r.expect("limitador answers").limited);
    })
    .await
}

fn limit() -> limitador::limit::Limit {
    limitador::limit::Limit::new(
        "bench",
        u64::MAX / 2,
        60,
        Vec::<limitador::limit::Predicate>::new(),
        vec!["key".try_into().expect("the variable `key` parses")],
    )
}

fn redis_store(url: &str, mode: Mode, clock: Clock, prefix: &str) -> Arc<RedisStore> {
    let mut s = Settings::new(url, mode);
    s.clock = clock;
    s.prefix = prefix.into();
    RedisStore::start(s).expect("valid URL")
}

// Two runtime threads pinned to one core by the script: the stores' background tasks (lease returns,
// limitador's batch flusher) get scheduled while the measuring loop runs.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::args().nth(1).expect("usage: infergate-redis-bench redis://127.0.0.1:PORT/");
    let fast = 2_000_000;
    let rtt = 20_000;

    let memory = InMemoryStore::default();
    let leased = redis_store(&url, Mode::Leased, Clock::Server, "bench-leased");
    let leased_rate = redis_store(&url, Mode::Leased, Clock::Caller, "bench-rate");
    let exact = redis_store(&url, Mode::Exact, Clock::Server, "bench-exact");

    let lim_memory = limitador::RateLimiter::new(KEYS * 2);
    lim_memory.add_limit(limit());
    let lim_redis = limitador::AsyncRateLimiter::new_with_storage(Box::new(
        limitador::storage::redis::AsyncRedisStorage::new(&url).await.expect("limitador connects"),
    ));
    let lim_cached = limitador::AsyncRateLimiter::new_with_storage(Box::new(
        limitador::storage::redis::CachedRedisStorage::new(&url).await.expect("limitador connects"),
    ));
    for l in [&lim_redis, &lim_cached] {
        l.add_limit(limit());
    }

    let mut rows: Vec<(&str, f64)> = Vec::new();
    let mut row = |name: &'static str, ns: f64| {
        eprintln!("{name}: {ns:.0} ns");
        rows.push((name, ns));
    };
    row("infergate in-memory", infergate(&memory, fast).await);
    row("infergate redis leased (budget never runs out)", infergate(&*leased, fast).await);
    row("infergate redis leased (one key asking half its rate)", infergate_paced(&*leased_rate, fast, 0.002, 1).await);
    row("infergate redis leased (one key asking twice its rate)", infergate_paced(&*leased_rate, rtt * 5, 0.0005, 2).await);
    row("infergate redis exact", infergate(&*exact, rtt).await);
    row("limitador in-memory", limitador_memory(&lim_memory, fast).await);
    row("limitador redis (AsyncRedisStorage)", limitador(&lim_redis, rtt).await);
    row("limitador redis cached (CachedRedisStorage)", limitador(&lim_cached, rtt).await);
    let redis_peer = rows[6].1;
    println!("| contender | ns per admission | limitador AsyncRedisStorage / this |");
    println!("|---|---:|---:|");
    for (name, ns) in rows {
        println!("| {name} | {ns:.0} | {:.1}x |", redis_peer / ns);
    }
}
