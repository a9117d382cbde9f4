//! Admission-core tests: small builders, exact assertions on whole outcomes.
use crate::admission::{Request, admit, authenticate};
use crate::limiter::{InMemoryStore, Limiter};
use crate::refusal::RefusalCode;
use crate::snapshot::{KeyRef, Snapshot, SnapshotOptions};
use crate::testing::{key, mk_endpoint, mk_policy, t0, tier};
use chrono::Duration;
use infergate_crds::NamespacedName;
use infergate_crds::endpoint::Feature;
use infergate_crds::gateway::EndpointLimits;
use infergate_crds::key::{ApiKey, Environment};
use std::sync::Arc;

fn world() -> Snapshot {
    let shards = vec![
        mk_endpoint("transcribe", "whisper-1").shard(),
        mk_endpoint("speaker", "spk").features(&[Feature::Embed, Feature::Verify]).shard(),
        mk_policy("app")
            .key(&key(1))
            .retiring(&key(2), t0() + Duration::hours(1))
            .revoked(&key(3))
            .scope("transcribe", "whisper-1", &[Feature::Transcribe])
            .scope("speaker", "spk", &[Feature::Embed])
            .origins(&["https://app.example.com"])
            .shard(),
        mk_policy("paused").key(&key(4)).suspended().scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        mk_policy("old").key(&key(5)).expires(t0()).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
    ];
    let (snapshot, warnings) = Snapshot::build(&shards, SnapshotOptions::default());
    assert_eq!(warnings, vec![]);
    snapshot
}

const TRANSCRIBE: Request<'static> = Request { model: "whisper-1", feature: Feature::Transcribe, origin: None };

fn code(r: Result<impl std::fmt::Debug, crate::refusal::Refusal>) -> RefusalCode {
    r.expect_err("expected a refusal").code
}

#[test]
fn valid_keys_are_admitted_with_their_limits() {
    let s = world();
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    assert_eq!(g.key(), KeyRef::of(&key(1).digest()));
    assert_eq!(g.key().key_id(), key(1).id());
    assert_eq!(g.endpoint.label, "default/transcribe");
    assert_eq!(g.identity.policy.name, NamespacedName::new("default", "app"));
    assert_eq!(
        g.limits,
        EndpointLimits { gpu_seconds_per_minute: 6.0, burst_gpu_seconds: 1.0, max_concurrent_streams: 2 }
    );
    // The retiring key works until the end of its overlap.
    assert!(admit(&s, key(2).expose(), &TRANSCRIBE, t0()).is_ok());
}

#[test]
fn every_identity_failure_has_its_own_code() {
    let s = world();
    let good = key(1);
    let mut typo = good.expose().to_string().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(code(admit(&s, &typo, &TRANSCRIBE, t0())), RefusalCode::BadChecksum);
    assert_eq!(code(admit(&s, "sk_test_short", &TRANSCRIBE, t0())), RefusalCode::MalformedKey);
    assert_eq!(code(admit(&s, "Bearer nonsense", &TRANSCRIBE, t0())), RefusalCode::MalformedKey);
    // Key-sized with a key's prefix, so it is hashed and looked up first: still told apart from an unknown key.
    let bad_char = format!("{}-{}", &good.expose()[..20], &good.expose()[21..]);
    assert_eq!(code(admit(&s, &bad_char, &TRANSCRIBE, t0())), RefusalCode::MalformedKey);
    assert_eq!(code(admit(&s, key(99).expose(), &TRANSCRIBE, t0())), RefusalCode::UnknownKey);
    assert_eq!(code(admit(&s, key(3).expose(), &TRANSCRIBE, t0())), RefusalCode::KeyRevoked);
    assert_eq!(code(admit(&s, key(2).expose(), &TRANSCRIBE, t0() + Duration::hours(1))), RefusalCode::KeyExpired);
    assert_eq!(code(admit(&s, key(5).expose(), &TRANSCRIBE, t0())), RefusalCode::KeyExpired);
    assert!(admit(&s, key(5).expose(), &TRANSCRIBE, t0() - Duration::seconds(1)).is_ok());
    assert_eq!(code(admit(&s, key(4).expose(), &TRANSCRIBE, t0())), RefusalCode::KeySuspended);
    assert_eq!(code(admit(&s, key(1).expose(), &TRANSCRIBE, t0() - Duration::days(2))), RefusalCode::KeyNotYetValid);
}

/// The doors read a coarse clock (crate::clock), up to a kernel tick behind the clock that issued the key: a key
/// that becomes valid within the slack is already valid; one further ahead is still "not yet valid".
#[test]
fn a_key_valid_within_the_clock_slack_is_admitted_and_one_beyond_it_is_not() {
    let s = world();
    let valid_from = t0() - Duration::days(1); // key(1), as world() builds it
    let k = key(1);
    assert!(admit(&s, k.expose(), &TRANSCRIBE, valid_from).is_ok());
    assert!(admit(&s, k.expose(), &TRANSCRIBE, valid_from - Duration::milliseconds(15)).is_ok());
    assert!(admit(&s, k.expose(), &TRANSCRIBE, valid_from - crate::clock::ADMISSION_SLACK).is_ok());
    assert_eq!(
        code(admit(
            &s,
            k.expose(),
            &TRANSCRIBE,
            valid_from - crate::clock::ADMISSION_SLACK - Duration::milliseconds(1)
        )),
        RefusalCode::KeyNotYetValid
    );
}

#[test]
fn scope_refusals_name_what_is_missing() {
    let s = world();
    let k = key(1);
    let verify = Request { model: "spk", feature: Feature::Verify, origin: None };
    let refusal = admit(&s, k.expose(), &verify, t0()).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::OutOfScope);
    assert_eq!(
        refusal.message,
        "missing scope: feature verify on endpoint default/speaker; policy default/app allows only: embed"
    );
    let vad = Request { model: "spk", feature: Feature::Vad, origin: None };
    assert_eq!(code(admit(&s, k.expose(), &vad, t0())), RefusalCode::UnsupportedFeature);
    let unknown = Request { model: "gpt-9", feature: Feature::Transcribe, origin: None };
    assert_eq!(code(admit(&s, k.expose(), &unknown, t0())), RefusalCode::UnknownModel);
    // A policy without the speaker scope.
    let paused_scope = admit(&world(), key(4).expose(), &TRANSCRIBE, t0());
    assert_eq!(code(paused_scope), RefusalCode::KeySuspended);
    let narrow = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_endpoint("speaker", "spk").features(&[Feature::Embed]).shard(),
            mk_policy("narrow").key(&key(6)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    let embed = Request { model: "spk", feature: Feature::Embed, origin: None };
    let refusal = admit(&narrow, key(6).expose(), &embed, t0()).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::OutOfScope);
    assert_eq!(
        refusal.message,
        "missing scope: endpoint default/speaker (model \"spk\"); policy default/narrow does not list it in spec.scopes"
    );
    assert!(admit(&narrow, key(6).expose(), &TRANSCRIBE, t0()).is_ok());
}

#[test]
fn origins_and_environments() {
    let s = world();
    let k = key(1);
    let ok = Request { origin: Some("https://app.example.com"), ..TRANSCRIBE };
    let bad = Request { origin: Some("https://evil.example.com"), ..TRANSCRIBE };
    assert!(admit(&s, k.expose(), &ok, t0()).is_ok());
    assert_eq!(code(admit(&s, k.expose(), &bad, t0())), RefusalCode::OriginNotAllowed);
    // No allowlist: any browser Origin is refused, non-browser clients are fine.
    assert_eq!(code(admit(&s, key(5).expose(), &ok, t0() - Duration::seconds(1))), RefusalCode::OriginNotAllowed);

    let live_only = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions { environment: Some(Environment::Live), ..SnapshotOptions::default() },
    )
    .0;
    assert_eq!(code(admit(&live_only, k.expose(), &TRANSCRIBE, t0())), RefusalCode::WrongEnvironment);
    let live_key = ApiKey::from_entropy(Environment::Live, &[1; 32]);
    let live = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("app").live().key(&live_key).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions { environment: Some(Environment::Live), ..SnapshotOptions::default() },
    )
    .0;
    assert!(admit(&live, live_key.expose(), &TRANSCRIBE, t0()).is_ok());
}

#[test]
fn revocation_wins_over_an_active_entry_and_is_published() {
    let s = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("app")
                .key(&key(1))
                .revoked(&key(1))
                .revoked(&key(3))
                .scope("transcribe", "whisper-1", &[Feature::Transcribe])
                .shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    assert_eq!(code(authenticate(&s, key(1).expose(), t0())), RefusalCode::KeyRevoked);
    let mut published = s.revoked_key_ids(10);
    published.sort();
    let mut expected = vec![key(1).id(), key(3).id()];
    expected.sort();
    assert_eq!(published, expected);
}

#[test]
fn duplicate_models_and_dangling_scopes_are_warned_and_skipped() {
    let (s, warnings) = Snapshot::build(
        &[
            mk_endpoint("a", "m").shard(),
            mk_endpoint("b", "m").shard(),
            mk_policy("p").key(&key(1)).scope("missing", "x", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    );
    assert_eq!(
        warnings.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        vec![
            "endpoint default/b serves model \"m\", already served by default/a; ignoring it (model names must be unique)",
            "policy default/p names endpoint default/missing which has no shard here; that scope is inactive",
        ]
    );
    assert_eq!(s.endpoints().len(), 1);
    assert_eq!(s.key_count(), 1);
}

#[test]
fn revision_is_order_independent() {
    let a = mk_endpoint("a", "m1").shard();
    let b = mk_policy("p").key(&key(1)).shard();
    let one = Snapshot::build(&[a.clone(), b.clone()], SnapshotOptions::default()).0;
    let two = Snapshot::build(&[b, a], SnapshotOptions::default()).0;
    assert_eq!(one.revision, two.revision);
    assert_ne!(one.revision, Snapshot::empty().revision);
}

#[tokio::test]
async fn precharge_settle_and_retry_after() {
    let s = world();
    let limiter = Limiter::new(Arc::new(InMemoryStore::default()));
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    // 6 GPU-s/min = 0.1/s, burst 1. Five seconds of audio at 0.1 GPU-s per second = 0.5 GPU-s.
    assert_eq!(Limiter::estimate(&g, 5.0), 0.5);
    let c1 = limiter.try_charge_at(&g, 0.5, 0.0).await.unwrap();
    let _c2 = limiter.try_charge_at(&g, 0.5, 0.0).await.unwrap();
    let refused = limiter.try_charge_at(&g, 0.5, 0.0).await.unwrap_err();
    assert_eq!(refused.code, RefusalCode::RateLimited);
    assert!((refused.retry_after_seconds.unwrap() - 5.0).abs() < 1e-9);
    assert_eq!(refused.retry_after_header(), Some(5));
    // The worker measured 0.2 GPU-s for the first request: 0.3 comes back.
    assert_eq!(limiter.settle(c1, Some(0.2)), 0.2);
    let bucket = Limiter::bucket(&g);
    let params = limiter.params(&g);
    let balance = limiter.store().balance(bucket, params, limiter.now()).await.unwrap();
    assert!((balance - 0.3).abs() < 0.01, "balance {balance}");
}

#[tokio::test]
async fn tier_overrides_apply_per_endpoint() {
    let mut t = tier("pro");
    t.endpoint_overrides.insert(
        "default/transcribe".into(),
        EndpointLimits { gpu_seconds_per_minute: 60.0, burst_gpu_seconds: 10.0, max_concurrent_streams: 1 },
    );
    let s = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("app").tier(t).key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    assert_eq!(g.limits.max_concurrent_streams, 1);
    let limiter = Arc::new(Limiter::new(Arc::new(InMemoryStore::default())));
    assert_eq!(limiter.params(&g).rate_per_second, 1.0);
    let slot = limiter.try_open_stream(&g).await.unwrap();
    assert_eq!(limiter.try_open_stream(&g).await.map(|_| ()).unwrap_err().code, RefusalCode::StreamCap);
    drop(slot);
    assert!(limiter.try_open_stream(&g).await.is_ok());
}

#[tokio::test]
async fn queue_absorbs_a_short_wait_and_refuses_a_long_one() {
    let mut t = tier("queued");
    t.gpu_seconds_per_minute = 60.0;
    t.burst_gpu_seconds = 0.1;
    t.queue_max_depth = 1;
    t.queue_timeout_ms = 5000;
    let s = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("app").tier(t).key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    let g = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let limiter = Limiter::new(Arc::new(InMemoryStore::default()));
    let _first = limiter.try_charge(&g, 0.1).await.unwrap();
    assert_eq!(limiter.try_charge(&g, 0.1).await.unwrap_err().code, RefusalCode::RateLimited);
    // About 0.1 s of refill needed, well inside the 5 s queue timeout: the queued call is admitted.
    let (queued, second) = tokio::join!(limiter.charge(&g, 0.1), async {
        tokio::task::yield_now().await;
        limiter.charge(&g, 0.1).await
    });
    assert!(queued.is_ok());
    // The queue holds one request per key: the second waiter is either refused as queue_full or, if the first
    // had already left the queue, admitted after its own wait. Never anything else.
    match second {
        Ok(_) => {}
        Err(r) => assert_eq!(r.code, RefusalCode::QueueFull),
    }
    // 100 GPU-s in debt: the bucket cannot pay within the 5 s queue timeout, so no waiting, an honest wait.
    limiter.store().adjust(Limiter::bucket(&g), 100.0, limiter.params(&g), limiter.now());
    let long = limiter.charge(&g, 0.1).await.unwrap_err();
    assert_eq!(long.code, RefusalCode::RateLimited);
    assert!(long.retry_after_seconds.unwrap() > 99.0);
    assert_eq!(limiter.queue_depth(), 0);
}

#[tokio::test]
async fn a_swap_that_revokes_a_key_signals_only_its_streams() {
    use crate::streams::{Enforced, Registry};
    let registry = Arc::new(Registry::default());
    let (k1, k2) = (key(1), key(7));
    let mut victim =
        registry.register(KeyRef::of(&k1.digest()), k1.digest(), Environment::Test, "default/transcribe", "websocket");
    let _bystander =
        registry.register(KeyRef::of(&k2.digest()), k2.digest(), Environment::Test, "default/transcribe", "grpc");
    let before = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("a").key(&k1).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
            mk_policy("b").key(&k2).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    assert_eq!(registry.enforce(&before, t0()), vec![]);
    let after = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("a").revoked(&k1).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
            mk_policy("b").key(&k2).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    assert_eq!(
        registry.enforce(&after, t0()),
        vec![Enforced {
            stream_id: victim.id,
            key: KeyRef::of(&k1.digest()),
            endpoint: "default/transcribe".into(),
            door: "websocket",
            reason: "key_revoked",
        }]
    );
    assert_eq!(victim.closed().await.code, RefusalCode::KeyRevoked);
    // Already signalled streams are not signalled twice.
    assert_eq!(registry.enforce(&after, t0()), vec![]);
    drop(victim);
    assert_eq!(registry.len(), 1);
}

#[test]
fn a_test_key_cannot_call_a_live_endpoint() {
    use infergate_crds::endpoint::EndpointEnvironment;
    let s = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").environment(EndpointEnvironment::Live).shard(),
            mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    let refusal = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::WrongEnvironment);
    assert_eq!(
        refusal.message,
        "endpoint default/transcribe admits live (sk_live_...) keys only; this is a test key (sk_test_...)"
    );
}

#[test]
fn a_decision_reads_one_snapshot_whatever_the_identity_saw() {
    use crate::admission::decide;
    // `app` may transcribe on `transcribe` only. It authenticates against `before`; then an endpoint whose name
    // sorts first is added, shifting every position. The decision on `after` must not widen the scope.
    let before = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_endpoint("other", "whisper-other").shard(),
            mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    let identity = authenticate(&before, key(1).expose(), t0()).unwrap();
    let after = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_endpoint("other", "whisper-other").shard(),
            mk_endpoint("aaa", "whisper-aaa").shard(),
            mk_endpoint("p-extra", "whisper-p-extra").shard(),
            mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    for model in ["whisper-aaa", "whisper-p-extra", "whisper-other"] {
        let request = Request { model, feature: Feature::Transcribe, origin: None };
        assert_eq!(code(decide(&after, &identity, &request, t0())), RefusalCode::OutOfScope, "{model}");
    }
    assert_eq!(decide(&after, &identity, &TRANSCRIBE, t0()).unwrap().endpoint.label, "default/transcribe");
}

#[tokio::test]
async fn both_keys_of_a_rotation_overlap_spend_one_bucket() {
    let s = world();
    let limiter = Limiter::new(Arc::new(InMemoryStore::default()));
    let current = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let retiring = admit(&s, key(2).expose(), &TRANSCRIBE, t0()).unwrap();
    assert_eq!(Limiter::bucket(&current), Limiter::bucket(&retiring));
    // The tier's burst is 1 GPU-s: the current key spends it, the retiring key finds it empty.
    let _spent = limiter.try_charge_at(&current, 1.0, 0.0).await.unwrap();
    assert_eq!(code(limiter.try_charge_at(&retiring, 0.5, 0.0).await), RefusalCode::RateLimited);
}

#[tokio::test]
async fn a_stream_that_loses_its_scope_endpoint_or_origin_is_signalled_with_that_code() {
    use crate::streams::{Registry, StreamScope};
    let k = key(1);
    let world = |scoped: bool, endpoint: bool, origin: &str| {
        let mut shards = vec![];
        if endpoint {
            shards.push(mk_endpoint("transcribe", "whisper-1").shard());
        }
        let mut policy = mk_policy("app").key(&k).origins(&[origin]);
        if scoped {
            policy = policy.scope("transcribe", "whisper-1", &[Feature::Transcribe]);
        }
        shards.push(policy.shard());
        Snapshot::build(&shards, SnapshotOptions::default()).0
    };
    let cases = [
        (world(false, true, "https://app.example.com"), RefusalCode::OutOfScope),
        (world(true, false, "https://app.example.com"), RefusalCode::UnknownModel),
        (world(true, true, "https://other.example.com"), RefusalCode::OriginNotAllowed),
    ];
    for (after, expected) in cases {
        let registry = Arc::new(Registry::default());
        let mut stream = registry.register_scoped(
            KeyRef::of(&k.digest()),
            k.digest(),
            Environment::Test,
            "default/transcribe",
            "websocket",
            StreamScope {
                model: "whisper-1".into(),
                feature: Feature::Transcribe,
                origin: Some("https://app.example.com".into()),
            },
        );
        assert_eq!(registry.enforce(&world(true, true, "https://app.example.com"), t0()), vec![]);
        let enforced = registry.enforce(&after, t0());
        assert_eq!(enforced.len(), 1, "{expected:?}");
        assert_eq!(enforced[0].reason, expected.as_str());
        assert_eq!(stream.closed().await.code, expected);
    }
}

#[test]
fn an_agent_serves_only_the_endpoints_its_node_matches() {
    use crate::admission::authorize;
    // Two endpoints share a model under disjoint selectors, a third lives only on the other node.
    let shards = vec![
        mk_endpoint("stt-a", "whisper-1").node_selector(&[("gpu", "a100")], &["node-a"]).shard(),
        mk_endpoint("stt-b", "whisper-1").node_selector(&[("gpu", "h100")], &["node-h"]).shard(),
        mk_endpoint("big", "whisper-large").node_selector(&[("gpu", "h100")], &["node-h"]).shard(),
        mk_policy("app")
            .key(&key(1))
            .scope("stt-a", "whisper-1", &[Feature::Transcribe])
            .scope("stt-b", "whisper-1", &[Feature::Transcribe])
            .scope("big", "whisper-large", &[Feature::Transcribe])
            .shard(),
    ];
    let on = |node: &str| {
        let options = SnapshotOptions {
            node_name: Some(node.to_string()),
            service_namespace: Some("infergate".into()),
            ..SnapshotOptions::default()
        };
        let (snapshot, warnings) = Snapshot::build(&shards, options);
        assert_eq!(warnings, vec![], "no model conflict and no inactive-scope warning on {node}");
        snapshot
    };
    let (a100, h100) = (on("node-a"), on("node-h"));
    assert_eq!(admit(&a100, key(1).expose(), &TRANSCRIBE, t0()).unwrap().endpoint.label, "default/stt-a");
    assert_eq!(admit(&h100, key(1).expose(), &TRANSCRIBE, t0()).unwrap().endpoint.label, "default/stt-b");
    let large = Request { model: "whisper-large", feature: Feature::Transcribe, origin: None };
    assert!(admit(&h100, key(1).expose(), &large, t0()).is_ok());
    let identity = authenticate(&a100, key(1).expose(), t0()).unwrap();
    let refusal = authorize(&a100, identity, &large).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::ServedElsewhere);
    let service = infergate_crds::gateway::endpoint_service_name(&NamespacedName::new("default", "big"));
    assert!(refusal.message.contains(&format!("Service {service}.infergate.svc")), "{}", refusal.message);
}

#[test]
fn a_policy_that_pins_client_certificates_needs_one_of_its_identities() {
    use crate::admission::{ClientCert, check_client_certificate};
    let policy = mk_policy("app")
        .key(&key(1))
        .scope("transcribe", "whisper-1", &[Feature::Transcribe])
        .client_certificate(&["checkout"], &["spiffe://c/s"]);
    let s =
        Snapshot::build(&[mk_endpoint("transcribe", "whisper-1").shard(), policy.shard()], SnapshotOptions::default())
            .0;
    let policy = &authenticate(&s, key(1).expose(), t0()).unwrap().policy;
    let cert = |cn: &str, san: &str| ClientCert { common_names: vec![cn.into()], sans: vec![san.into()] };
    assert_eq!(code(check_client_certificate(policy, None)), RefusalCode::ClientCertificateRequired);
    assert!(check_client_certificate(policy, Some(&cert("checkout", "dns.example"))).is_ok());
    assert!(check_client_certificate(policy, Some(&cert("other", "spiffe://c/s"))).is_ok());
    let wrong = check_client_certificate(policy, Some(&cert("other", "dns.example"))).unwrap_err();
    assert_eq!(
        wrong.message,
        "policy default/app accepts client certificates for CN=checkout, SAN spiffe://c/s only; this one is for CN=other, SAN dns.example"
    );
}
