//! The admission decision against two well-known Rust rate limiters, in one criterion run.
//!
//! Every contender answers the same question for a key drawn at random (fixed seed) from the scenario's key
//! population: "may this key spend one more unit now?", and every bucket is warmed first so the numbers are the
//! steady state, not first-insert cost.
//!
//! ```text
//!  infergate  presented key ─▶ prefix, length ─▶ SHA-256 ─▶ digest lookup ─▶ validity/scope ─▶ token bucket charge
//!  governor   RateLimiter::keyed (DashMap store), check_key(&presented key)            (rate check only)
//!  limitador  RateLimiter (in-memory), one Limit with variable `key`, check_rate_limited_and_update(ctx)
//! ```
//! infergate does strictly more work per call (it authenticates the key); the others only count. Run:
//! `cargo bench -p infergate-agent --bench admission -- --warm-up-time 1 --measurement-time 3`.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use infergate_crds::NamespacedName;
use infergate_crds::endpoint::Feature;
use infergate_crds::gateway::{KeyEntry, PolicyShard, SHARD_SCHEMA_VERSION, ScopeEntry, Shard, TierLimits};
use infergate_crds::key::{ApiKey, Environment};
use infergate_crds::policy::KeyState;
use infergate_gate::admission::{Request, admit};
use infergate_gate::limiter::{InMemoryStore, Limiter};
use infergate_gate::snapshot::{Snapshot, SnapshotOptions};
use infergate_gate::testing::mk_endpoint;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;

const SEED: u64 = 0x1f6e_a7e5_2026_0001;
/// Random draws precomputed per scenario, so the generator's cost is not in any measurement.
const DRAWS: usize = 1 << 20;
const MODEL: &str = "whisper-bench";

/// The scenario table: key population and how it is spread over policies.
struct Scenario {
    name: &'static str,
    keys: usize,
    keys_per_policy: usize,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "100k_keys", keys: 100_000, keys_per_policy: 100 },
    Scenario { name: "1k_keys", keys: 1_000, keys_per_policy: 100 },
    Scenario { name: "1m_keys", keys: 1_000_000, keys_per_policy: 100 },
];

/// `INFERGATE_BENCH_SCENARIOS=1k_keys,100k_keys` limits the contender groups to those scenarios (fixtures for
/// 1M keys take a while to build, and a profile of one scenario should not include the others' setup).
fn wanted(s: &Scenario) -> bool {
    std::env::var("INFERGATE_BENCH_SCENARIOS").map_or(true, |list| list.split(',').any(|n| n.trim() == s.name))
}

/// splitmix64: tiny, seedable, and good enough to pick keys uniformly.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Limits no benchmark run can exhaust: every contender always admits, like limitador's own benches.
fn tier() -> TierLimits {
    TierLimits {
        name: "bench".into(),
        priority: 100,
        gpu_seconds_per_minute: 1e12,
        burst_gpu_seconds: 1e12,
        max_concurrent_streams: 1000,
        queue_max_depth: 0,
        queue_timeout_ms: 1000,
        target_utilization_percent: 85,
        min_factor: 1.0,
        max_factor: 1.0,
        on_store_failure: Default::default(),
        endpoint_overrides: BTreeMap::new(),
        token_lifetime_seconds: None,
        end_user: None,
        one_stream_per_token: false,
    }
}

struct Fixture {
    keys: Vec<String>,
    draws: Vec<u32>,
}

fn fixture(s: &Scenario) -> (Fixture, Vec<Shard>) {
    let mut rng = SplitMix(SEED);
    let keys: Vec<ApiKey> = (0..s.keys)
        .map(|_| {
            let mut entropy = [0u8; 32];
            for chunk in entropy.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            ApiKey::from_entropy(Environment::Test, &entropy)
        })
        .collect();
    let endpoint = NamespacedName::new("default", "whisper");
    let mut shards = vec![mk_endpoint("whisper", MODEL).shard()];
    for (p, chunk) in keys.chunks(s.keys_per_policy).enumerate() {
        shards.push(Shard::Policy(PolicyShard {
            schema_version: SHARD_SCHEMA_VERSION,
            policy: NamespacedName::new("bench", format!("policy-{p}")),
            generation: 1,
            environment: Environment::Test,
            tier: tier(),
            keys: chunk
                .iter()
                .map(|k| KeyEntry {
                    key_id: k.id(),
                    digest: k.digest(),
                    state: KeyState::Current,
                    valid_from: t0(),
                    valid_until: None,
                })
                .collect(),
            revoked: vec![],
            suspended: false,
            expires_at: None,
            scopes: vec![ScopeEntry {
                endpoint: endpoint.clone(),
                model: MODEL.into(),
                features: vec![Feature::Transcribe],
            }],
            allowed_origins: vec![],
            allow_client_embeddings: false,
            require_client_certificate: None,
            redaction: None,
            trusted_issuers: vec![],
        }));
    }
    let draws = (0..DRAWS).map(|_| (rng.next() % s.keys as u64) as u32).collect();
    let keys = keys.iter().map(|k| k.expose().to_string()).collect();
    (Fixture { keys, draws }, shards)
}

/// Decisions timed per batch: the batch's presented keys are copied into fresh buffers first (not timed), as a
/// door holds the key it just read from the request, hot in cache. What stays cold at 100k+ keys is each
/// contender's own state, which is what the comparison is about.
const BATCH: usize = 256;

/// Times `decide` over batches of inputs that `prepare` builds (untimed) from the precomputed draws.
fn hot_batches<I, O>(
    b: &mut criterion::Bencher<'_>,
    draws: &[u32],
    prepare: impl Fn(u32) -> I,
    mut decide: impl FnMut(&I) -> O,
) {
    let mut next = 0usize;
    b.iter_custom(|iters| {
        let mut elapsed = std::time::Duration::ZERO;
        let mut left = iters as usize;
        while left > 0 {
            let n = left.min(BATCH);
            let batch: Vec<I> = (0..n).map(|j| prepare(draws[(next + j) & (DRAWS - 1)])).collect();
            next = (next + n) & (DRAWS - 1);
            let start = std::time::Instant::now();
            for input in &batch {
                black_box(decide(input));
            }
            elapsed += start.elapsed();
            drop(batch);
            left -= n;
        }
        elapsed
    });
}

/// The three contenders over one scenario's keys, each decision's input hot (see [`BATCH`]) or, with `cold`, read
/// from the scenario's key list at a random place (that read then misses the cache for every contender alike).
fn contenders(c: &mut Criterion, group_name: &str, cold: bool) {
    let mut group = c.benchmark_group(group_name);
    for s in SCENARIOS.iter().filter(|s| (!cold || s.keys <= 100_000) && wanted(s)) {
        let (fx, shards) = fixture(s);

        // infergate: the whole decision a door makes before it runs a request, including its clock reads (the
        // doors' coarse clocks, infergate_gate::clock, as the doors read them).
        let (snapshot, warnings) = Snapshot::build(&shards, SnapshotOptions::default());
        assert!(warnings.is_empty(), "bench snapshot has warnings: {warnings:?}");
        assert_eq!(snapshot.key_count(), s.keys);
        let limiter = Arc::new(Limiter::new(Arc::new(InMemoryStore::default())));
        let request = Request { model: MODEL, feature: Feature::Transcribe, origin: None };
        let decide = |key: &str| {
            let grant = admit(&snapshot, key, &request, infergate_gate::clock::now()).expect("bench key is admitted");
            // As the doors charge (`oneshot::pre_charge`): the in-memory store answers without a future.
            limiter.try_charge_now(&grant, 0.001).expect("in memory: answers now").expect("bench limits never refuse")
        };
        fx.keys.iter().for_each(|k| {
            let _ = decide(k);
        });
        let key_of = |i: u32| fx.keys[i as usize].clone();
        group.bench_function(BenchmarkId::new("infergate_admit_and_charge", s.name), |b| {
            if cold {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (DRAWS - 1);
                    black_box(decide(&fx.keys[fx.draws[i] as usize]))
                })
            } else {
                hot_batches(b, &fx.draws, key_of, |k| decide(k))
            }
        });

        // governor: keyed GCRA with its default DashMap store, keyed by the presented key.
        let quota = governor::Quota::per_second(NonZeroU32::new(u32::MAX).unwrap());
        let gov = governor::RateLimiter::keyed(quota);
        fx.keys.iter().for_each(|k| drop(gov.check_key(k)));
        group.bench_function(BenchmarkId::new("governor_keyed_check", s.name), |b| {
            if cold {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (DRAWS - 1);
                    black_box(gov.check_key(&fx.keys[fx.draws[i] as usize]).is_ok())
                })
            } else {
                hot_batches(b, &fx.draws, key_of, |k| gov.check_key(k).is_ok())
            }
        });
        drop(gov);

        // limitador: one limit whose counter is qualified by the variable `key`; its context built from the key
        // (untimed: per batch when hot, once per key when cold).
        let lim = limitador::RateLimiter::new((s.keys as u64) * 2);
        lim.add_limit(limitador::limit::Limit::new(
            "infergate-bench",
            u64::MAX,
            60,
            Vec::<limitador::limit::Predicate>::new(),
            vec!["key".try_into().expect("limitador parses the variable `key`")],
        ));
        let namespace: limitador::limit::Namespace = "infergate-bench".into();
        let contexts: Vec<limitador::limit::Context<'_>> =
            fx.keys.iter().map(|k| HashMap::from([("key".to_string(), k.clone())]).into()).collect();
        contexts.iter().for_each(|ctx| {
            assert!(!lim.check_rate_limited_and_update(&namespace, ctx, 1).unwrap().limited);
        });
        group.bench_function(BenchmarkId::new("limitador_check_and_update", s.name), |b| {
            if cold {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (DRAWS - 1);
                    let ctx = &contexts[fx.draws[i] as usize];
                    black_box(lim.check_rate_limited_and_update(&namespace, ctx, 1).unwrap().limited)
                })
            } else {
                hot_batches(
                    b,
                    &fx.draws,
                    |i| -> limitador::limit::Context<'_> {
                        HashMap::from([("key".to_string(), fx.keys[i as usize].clone())]).into()
                    },
                    |ctx| lim.check_rate_limited_and_update(&namespace, ctx, 1).unwrap().limited,
                )
            }
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    contenders(c, "admission", false);
    contenders(c, "admission_cold_key", true);
}

/// Where the infergate decision's time goes (100k keys, presented keys hot): each step adds one stage to the
/// previous.
fn breakdown(c: &mut Criterion) {
    let s = &SCENARIOS[0];
    let (fx, shards) = fixture(s);
    let (snapshot, _) = Snapshot::build(&shards, SnapshotOptions::default());
    let limiter = Arc::new(Limiter::new(Arc::new(InMemoryStore::default())));
    let request = Request { model: MODEL, feature: Feature::Transcribe, origin: None };
    let now = Utc::now();
    let mut group = c.benchmark_group("admission_breakdown_100k");
    macro_rules! stage {
        ($name:literal, |$key:ident| $body:expr) => {
            group.bench_function($name, |b| {
                hot_batches(
                    b,
                    &fx.draws,
                    |i| fx.keys[i as usize].clone(),
                    |$key: &String| {
                        let $key: &str = $key;
                        $body
                    },
                )
            });
        };
    }
    stage!("1_shape_sha256", |key| (ApiKey::check_shape(key).is_ok(), infergate_crds::key::KeyDigest::of(key)));
    stage!("2_authenticate", |key| infergate_gate::admission::authenticate(&snapshot, key, now).is_ok());
    stage!("3_admit", |key| admit(&snapshot, key, &request, now).is_ok());
    stage!("4_admit_and_charge", |key| {
        let grant = admit(&snapshot, key, &request, now).expect("admitted");
        limiter.try_charge_now(&grant, 0.001).expect("in memory: answers now").is_ok()
    });
    // Not a stage of an admitted key's path: what a key the lookup did not find adds to tell a typo from a key
    // never issued (alphabet and checksum).
    stage!("checksum_on_refusal", |key| ApiKey::check_format(key).is_ok());
    group.finish();
}

/// Session tokens next to API keys (100k keys in the snapshot, 1,000 of them presenting): the same decision,
/// `admit` for a key against cached token verification + the key lookup + `authorize` for a token minted from
/// it, and the same without the cache (a token's first use). Issue 14's targets: cached <= 1.2x the key path,
/// uncached <= 60 us.
fn tokens(c: &mut Criterion) {
    use infergate_token::{Grant, Granted, KeyRing, Verifier, VerifyCache, mint};
    let s = &SCENARIOS[0];
    let (fx, shards) = fixture(s);
    let (snapshot, _) = Snapshot::build(&shards, SnapshotOptions::default());
    let request = Request { model: MODEL, feature: Feature::Transcribe, origin: None };
    let now = Utc::now();
    let ring = KeyRing::bootstrap(now - chrono::Duration::minutes(1));
    let signing = ring.signing_key(now).clone();
    let leeway = std::time::Duration::from_secs(30);
    let verifier = Verifier::new("https://gw.bench", "infergate", leeway, ring.public_keys()).expect("one key");
    const PRESENTING: usize = 1_000;
    let presenting: Vec<&str> = fx.draws[..PRESENTING].iter().map(|&i| fx.keys[i as usize].as_str()).collect();
    let tokens: Vec<String> = presenting
        .iter()
        .map(|key| {
            let identity = infergate_gate::admission::authenticate(&snapshot, key, now).expect("bench key");
            let grant = Grant {
                issuer: "https://gw.bench".into(),
                audience: "infergate".into(),
                policy: identity.policy.name.to_string(),
                key_id: identity.key.to_string(),
                tier: identity.policy.tier.name.clone(),
                scope: Granted::everything(),
                max_audio_seconds: None,
                codecs: None,
                end_user: None,
                not_before: None,
            };
            mint(&signing, &grant, now, std::time::Duration::from_secs(600)).expect("mints").token
        })
        .collect();
    let cache = VerifyCache::new(16_384);
    let by_token = |cache: Option<&VerifyCache>, token: &str| {
        let verified = match cache {
            Some(cache) => cache.verify(&verifier, token, now).expect("verifies"),
            None => Arc::new(verifier.verify(token, now).expect("verifies")),
        };
        let identity = infergate_gate::token::identify(&snapshot, &verified, leeway, now).expect("key found");
        infergate_gate::admission::authorize(&snapshot, identity, &request).is_ok()
    };
    tokens.iter().for_each(|t| assert!(by_token(Some(&cache), t)));
    let mut group = c.benchmark_group("tokens_100k");
    let mut i = 0usize;
    group.bench_function("api_key_admit", |b| {
        b.iter(|| {
            i = (i + 1) % PRESENTING;
            black_box(admit(&snapshot, presenting[i], &request, now).is_ok())
        })
    });
    group.bench_function("token_cached_admit", |b| {
        b.iter(|| {
            i = (i + 1) % PRESENTING;
            black_box(by_token(Some(&cache), &tokens[i]))
        })
    });
    group.bench_function("token_uncached_admit", |b| {
        b.iter(|| {
            i = (i + 1) % PRESENTING;
            black_box(by_token(None, &tokens[i]))
        })
    });
    group.finish();
}

/// A config change as the agent applies it: `Snapshot::build` over every shard (issue 15: a change is live in
/// <= 50 ms at 10k policies / 100k keys). Shards are already parsed here, as the agent holds them between changes.
fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_build");
    group.sample_size(10);
    for (name, keys, keys_per_policy) in
        [("1k_policies_100k_keys", 100_000, 100), ("10k_policies_100k_keys", 100_000, 10)]
    {
        let (_, shards) = fixture(&Scenario { name, keys, keys_per_policy });
        group.bench_function(format!("{name}/hashing_every_shard"), |b| {
            b.iter(|| black_box(Snapshot::build(&shards, SnapshotOptions::default())))
        });
        // Cluster mode: revisions were hashed when each shard arrived (`ShardSet`).
        let revisions: Vec<String> = shards.iter().map(|s| s.revision()).collect();
        group.bench_function(format!("{name}/revisions_known"), |b| {
            b.iter(|| {
                let revised = shards.iter().zip(revisions.iter().map(String::as_str));
                black_box(Snapshot::build_revised(revised, SnapshotOptions::default()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, breakdown, tokens, rebuild);
criterion_main!(benches);
