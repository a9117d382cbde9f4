//! End users inside a key's limits (`RateTier.spec.endUser`) and tokens bound to one stream
//! (`oneStreamPerToken`): the limiter's two-bucket charge and its stream slots.
use crate::admission::{Grant, Request, TokenGrant, admit};
use crate::limiter::{InMemoryStore, Limiter};
use crate::refusal::RefusalCode;
use crate::snapshot::{Snapshot, SnapshotOptions};
use crate::testing::{key, mk_endpoint, mk_policy, t0, tier};
use crate::token::EndUser;
use infergate_crds::endpoint::Feature;
use infergate_crds::tier::EndUserLimitsSpec;
use infergate_token::Granted;
use std::sync::Arc;

const TRANSCRIBE: Request<'static> = Request { model: "whisper-1", feature: Feature::Transcribe, origin: None };

/// Key budget: 6 GPU-s/min, burst 1, 4 streams. Each end user: burst 0.3, 1 stream.
fn world(one_stream_per_token: bool) -> Snapshot {
    let mut t = tier("users");
    t.max_concurrent_streams = 4;
    t.end_user = Some(EndUserLimitsSpec {
        gpu_seconds_per_minute: Some(0.6),
        burst_gpu_seconds: Some(0.3),
        max_concurrent_streams: Some(1),
    });
    t.one_stream_per_token = one_stream_per_token;
    let shards = [
        mk_endpoint("transcribe", "whisper-1").shard(),
        mk_policy("app").tier(t).key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
    ];
    Snapshot::build(&shards, SnapshotOptions::default()).0
}

/// The key's grant as a token for `user` (None: a token without end user) with id `jti`.
fn as_token(snapshot: &Snapshot, user: Option<&str>, jti: &str) -> Grant {
    let mut grant = admit(snapshot, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    grant.identity.token = Some(Arc::new(TokenGrant {
        jti: jti.into(),
        scope: Granted::everything(),
        expires_at: t0(),
        valid_until: t0() + chrono::Duration::minutes(10),
        end_user: user.map(|u| EndUser::of("default/app", u)),
        max_audio_seconds: None,
        codecs: None,
    }));
    grant
}

#[tokio::test]
async fn each_end_user_spends_from_a_budget_of_their_own_inside_the_keys() {
    let s = world(false);
    let limiter = Limiter::new(Arc::new(InMemoryStore::default()));
    let (alice, bob) = (as_token(&s, Some("alice"), "j1"), as_token(&s, Some("bob"), "j2"));
    let first = limiter.try_charge_at(&alice, 0.2, 0.0).await.unwrap();
    assert!(first.user.is_some());
    let refused = limiter.try_charge_at(&alice, 0.2, 0.0).await.unwrap_err();
    assert_eq!(refused.code, RefusalCode::RateLimited);
    assert!(refused.message.starts_with("end user u_"), "{}", refused.message);
    // 0.6 GPU-s/min refills 0.01/s: 0.1 missing is 10 s.
    assert!((refused.retry_after_seconds.unwrap() - 10.0).abs() < 1e-6);
    let _bob = limiter.try_charge_at(&bob, 0.2, 0.0).await.unwrap();
    // The key's own budget (burst 1) paid 0.4 so far; the key itself is not limited per user.
    let plain = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let key_charge = limiter.try_charge_at(&plain, 0.5, 0.0).await.unwrap();
    assert!(key_charge.user.is_none());
    // Settling refunds both buckets: alice measured 0.05 of her 0.2, so 0.15 of hers comes back.
    limiter.settle(first, Some(0.05));
    assert!(limiter.try_charge_at(&alice, 0.2, 0.0).await.is_ok());
}

#[tokio::test]
async fn a_user_charge_the_key_cannot_pay_is_given_back_to_the_user() {
    let s = world(false);
    let limiter = Limiter::new(Arc::new(InMemoryStore::default()));
    let plain = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let _all = limiter.try_charge_at(&plain, 1.0, 0.0).await.unwrap();
    let alice = as_token(&s, Some("alice"), "j1");
    let refused = limiter.try_charge_at(&alice, 0.2, 0.0).await.unwrap_err();
    assert!(refused.message.starts_with("GPU-second budget exhausted"), "{}", refused.message);
    let (bucket, params) = crate::limiter::end_user_budget(&alice, 1.0).unwrap();
    let balance = limiter.store().balance(bucket, params, 0.0).await.unwrap();
    assert!((balance - 0.3).abs() < 1e-9, "the user's bucket is full again: {balance}");
}

#[tokio::test]
async fn tokens_without_an_end_user_and_tiers_without_user_limits_charge_the_key_only() {
    let s = world(false);
    let limiter = Limiter::new(Arc::new(InMemoryStore::default()));
    let charge = limiter.try_charge_at(&as_token(&s, None, "j"), 0.9, 0.0).await.unwrap();
    assert!(charge.user.is_none());
    let plain_tier = Snapshot::build(
        &[
            mk_endpoint("transcribe", "whisper-1").shard(),
            mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[Feature::Transcribe]).shard(),
        ],
        SnapshotOptions::default(),
    )
    .0;
    // The same policy bucket as above: a limiter of its own.
    let limiter = Limiter::new(Arc::new(InMemoryStore::default()));
    let charge = limiter.try_charge_at(&as_token(&plain_tier, Some("alice"), "j"), 0.9, 0.0).await.unwrap();
    assert!(charge.user.is_none());
}

#[tokio::test]
async fn each_end_user_holds_at_most_their_streams() {
    let s = world(false);
    let limiter = Arc::new(Limiter::new(Arc::new(InMemoryStore::default())));
    let alice = as_token(&s, Some("alice"), "j1");
    let held = limiter.try_open_stream(&alice).await.unwrap();
    let refused = limiter.try_open_stream(&as_token(&s, Some("alice"), "j2")).await.err().unwrap();
    assert_eq!(refused.code, RefusalCode::StreamCap);
    assert!(refused.message.contains("already holds 1 open stream(s)"), "{}", refused.message);
    let _bob = limiter.try_open_stream(&as_token(&s, Some("bob"), "j3")).await.unwrap();
    // The refused attempt did not keep a key slot: 2 of the key's 4 are held.
    assert_eq!(limiter.store().open_streams(Limiter::bucket(&alice)).await.unwrap(), 2);
    drop(held);
    assert_eq!(limiter.store().open_streams(Limiter::bucket(&alice)).await.unwrap(), 1);
    assert!(limiter.try_open_stream(&alice).await.is_ok());
}

#[tokio::test]
async fn a_bound_token_holds_one_stream() {
    let limiter = Arc::new(Limiter::new(Arc::new(InMemoryStore::default())));
    let unbound = world(false);
    assert!(limiter.bind_token(&as_token(&unbound, None, "j1")).await.unwrap().is_none());
    let s = world(true);
    let binding = limiter.bind_token(&as_token(&s, None, "j1")).await.unwrap().expect("bound");
    let refused = limiter.bind_token(&as_token(&s, None, "j1")).await.err().unwrap();
    assert_eq!(refused.code, RefusalCode::StreamCap);
    assert!(refused.message.contains("jti j1"), "{}", refused.message);
    assert!(limiter.bind_token(&as_token(&s, None, "j2")).await.unwrap().is_some());
    drop(binding);
    assert!(limiter.bind_token(&as_token(&s, None, "j1")).await.unwrap().is_some());
    // A key has no token to bind.
    let plain = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    assert!(limiter.bind_token(&plain).await.unwrap().is_none());
}

#[test]
fn token_audio_caps_and_codecs() {
    let s = world(false);
    let mut grant = as_token(&s, None, "j");
    let token = Arc::make_mut(grant.identity.token.as_mut().unwrap());
    token.max_audio_seconds = Some(10);
    token.codecs = Some(["wav".to_string()].into());
    let token = grant.identity.token.as_deref();
    assert_eq!(TokenGrant::audio_cap(token, 30.0), (10.0, true));
    assert_eq!(TokenGrant::audio_cap(token, 5.0), (5.0, false));
    assert_eq!(TokenGrant::audio_cap(None, 30.0), (30.0, false));
    let token = token.unwrap();
    assert!(token.check_codec("wav").is_ok());
    let refused = token.check_codec("flac").unwrap_err();
    assert_eq!(refused.code, RefusalCode::UnsupportedCodec);
    assert!(refused.message.contains("allows only wav audio, not flac"), "{}", refused.message);
}

#[test]
fn trusted_issuers_are_found_with_their_policy_and_its_current_key() {
    let shards = [
        mk_endpoint("transcribe", "whisper-1").shard(),
        mk_policy("app")
            .key(&key(1))
            .retiring(&key(2), t0() + chrono::Duration::hours(1))
            .trusts("https://idp.example.com", "voice")
            .shard(),
        mk_policy("other")
            .key(&key(3))
            .trusts("https://idp.example.com", "other")
            .trusts("https://b.example", "x")
            .shard(),
        mk_policy("plain").key(&key(4)).shard(),
    ];
    let s = Snapshot::build(&shards, SnapshotOptions::default()).0;
    let trusting: Vec<_> =
        s.trusting("https://idp.example.com").map(|(p, t)| (p.name.name.clone(), t.audience.clone())).collect();
    assert_eq!(trusting, [("app".to_string(), "voice".to_string()), ("other".into(), "other".into())]);
    assert_eq!(s.trusting("https://nobody").count(), 0);
    let (app, _) = s.trusting("https://idp.example.com").next().unwrap();
    assert_eq!(app.current_key, Some(key(1).digest()), "the current key, not the retiring one");
    assert_eq!(
        s.jwks_uris(),
        [("https://b.example/jwks.json".to_string(), false), ("https://idp.example.com/jwks.json".into(), false)]
    );
}

/// The in-memory store answering futures only, as a shared store does: the limiter's async path.
struct FuturesOnly(InMemoryStore);
/// The in-memory store answering on the spot for every bucket but one (a lease that covers the user's bucket
/// and not the key's).
struct NowExcept(InMemoryStore, BucketKey);

macro_rules! delegate_store {
    () => {
        fn try_take(&self, b: BucketKey, amount: f64, p: BucketParams, now: f64) -> StoreFuture<'_, Result<(), f64>> {
            self.0.try_take(b, amount, p, now)
        }
        fn adjust(&self, b: BucketKey, amount: f64, p: BucketParams, now: f64) {
            self.0.adjust(b, amount, p, now)
        }
        fn balance(&self, b: BucketKey, p: BucketParams, now: f64) -> StoreFuture<'_, f64> {
            self.0.balance(b, p, now)
        }
        fn acquire_stream(&self, b: BucketKey, cap: u32) -> StoreFuture<'_, bool> {
            self.0.acquire_stream(b, cap)
        }
        fn release_stream(&self, b: BucketKey) {
            self.0.release_stream(b)
        }
        fn open_streams(&self, b: BucketKey) -> StoreFuture<'_, u32> {
            self.0.open_streams(b)
        }
    };
}
use crate::limiter::{BucketKey, BucketParams, CounterStore, StoreError, StoreFuture};
impl CounterStore for FuturesOnly {
    delegate_store!();
}
impl CounterStore for NowExcept {
    delegate_store!();
    fn try_take_now(
        &self,
        b: BucketKey,
        amount: f64,
        p: BucketParams,
        now: f64,
    ) -> Option<Result<Result<(), f64>, StoreError>> {
        if b == self.1 { None } else { self.0.try_take_now(b, amount, p, now) }
    }
}

/// One sequence of charges (two end users, the key itself, refusals of both kinds) decided on the spot
/// (`try_charge_now_at`, what the doors call first) and through the store's futures (`try_charge_at` against a
/// store without on-the-spot answers): the same charges, the same refusals, the same retry-after.
#[tokio::test]
async fn charging_on_the_spot_and_through_futures_decide_alike() {
    let s = world(false);
    let alice = as_token(&s, Some("alice"), "j1");
    let bob = as_token(&s, Some("bob"), "j2");
    let plain = admit(&s, key(1).expose(), &TRANSCRIBE, t0()).unwrap();
    let steps =
        [(&alice, 0.2), (&alice, 0.2), (&bob, 0.25), (&plain, 0.5), (&alice, 0.05), (&plain, 0.5), (&bob, 0.05)];
    let on_the_spot = Limiter::new(Arc::new(InMemoryStore::default()));
    let by_futures = Limiter::new(Arc::new(FuturesOnly(InMemoryStore::default())));
    let verdict = |r: Result<crate::limiter::Charge, crate::refusal::Refusal>| match r {
        Ok(c) => Ok((c.gpu_seconds, c.bucket, c.user.map(|u| u.bucket))),
        Err(e) => Err((e.code, e.retry_after_seconds.map(|s| (s * 1e6).round()), e.message)),
    };
    let (mut paid, mut refused) = (0, 0);
    for (i, (grant, cost)) in steps.into_iter().enumerate() {
        let t = i as f64 * 0.01;
        let now = on_the_spot.try_charge_now_at(grant, cost, t).expect("the in-memory store answers on the spot");
        assert!(by_futures.try_charge_now_at(grant, cost, t).is_none(), "a futures-only store never answers now");
        let later = by_futures.try_charge_at(grant, cost, t).await;
        if now.is_ok() {
            paid += 1
        } else {
            refused += 1
        }
        assert_eq!(verdict(now), verdict(later), "step {i}");
    }
    assert!(paid >= 3 && refused >= 2, "the sequence exercises both outcomes: {paid} paid, {refused} refused");
}

/// A store that can pay the user's bucket on the spot but not the key's: the on-the-spot attempt gives the
/// user's share back and answers `None`, and the async charge that follows takes each bucket exactly once.
#[tokio::test]
async fn an_on_the_spot_charge_that_must_wait_leaves_no_user_share_behind() {
    let s = world(false);
    let alice = as_token(&s, Some("alice"), "j1");
    let store = Arc::new(NowExcept(InMemoryStore::default(), Limiter::bucket(&alice)));
    let limiter = Limiter::new(store.clone());
    let (user_bucket, user_params) = crate::limiter::end_user_budget(&alice, 1.0).unwrap();
    assert!(limiter.try_charge_now_at(&alice, 0.2, 0.0).is_none());
    let balance = store.balance(user_bucket, user_params, 0.0).await.unwrap();
    assert!((balance - 0.3).abs() < 1e-9, "the user's share went back: {balance}");
    let charge = limiter.try_charge_at(&alice, 0.2, 0.0).await.unwrap();
    assert!(charge.user.is_some());
    let balance = store.balance(user_bucket, user_params, 0.0).await.unwrap();
    assert!((balance - 0.1).abs() < 1e-9, "the user paid once: {balance}");
    let key_params = limiter.params(&alice);
    let key_balance = store.balance(Limiter::bucket(&alice), key_params, 0.0).await.unwrap();
    assert!((key_balance - 0.8).abs() < 1e-9, "the key paid once: {key_balance}");
}
