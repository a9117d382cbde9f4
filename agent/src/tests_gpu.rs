//! GPU-driven limits and degradation through the agent's own limiter and one-shot path.
use crate::backend::{Backend, BackendError, BackendRequest, BackendResponse, Backends};
use crate::gateway::{Credential, Gateway, Settings};
use crate::gpu::{Gpu, GpuRefill, Mode, tier_policies};
use crate::oneshot::{self, OneShot};
use crate::outcome::Door;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use infergate_crds::endpoint::{BuiltinModel, Feature};
use infergate_gate::admission::{Request, admit};
use infergate_gate::limiter::{InMemoryStore, Limiter};
use infergate_gate::refusal::RefusalCode;
use infergate_gate::snapshot::{Snapshot, SnapshotOptions};
use infergate_gate::testing::{key, mk_endpoint, mk_policy, t0, tier};
use infergate_gpu::{DynamicLimits, FakeTelemetry, LimitsConfig, Telemetry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const EMBED: Request<'static> = Request { model: "spk", feature: Feature::Embed, origin: None };

/// Two tiers on one endpoint, both nominally 1 GPU-s/s: `free` (lowest priority, may drop to 0) and
/// `premium` (tightened last, never below half).
fn two_tiers() -> Snapshot {
    let mut free = tier("free");
    (free.priority, free.gpu_seconds_per_minute, free.target_utilization_percent, free.min_factor) =
        (10, 60.0, 60, 0.0);
    let mut premium = tier("premium");
    (premium.priority, premium.gpu_seconds_per_minute, premium.target_utilization_percent, premium.min_factor) =
        (1000, 60.0, 60, 0.5);
    let shards = vec![
        mk_endpoint("speaker", "spk").features(&[Feature::Embed]).builtin(BuiltinModel::SpeakerEncoder).shard(),
        mk_policy("free").tier(free).key(&key(1)).scope("speaker", "spk", &[Feature::Embed]).shard(),
        mk_policy("premium").tier(premium).key(&key(2)).scope("speaker", "spk", &[Feature::Embed]).shard(),
    ];
    let (snapshot, warnings) = Snapshot::build(&shards, SnapshotOptions::default());
    assert_eq!(warnings, vec![]);
    snapshot
}

/// Utilisation ramps 20% -> 100% -> 20% (40 samples of 250 ms each); greedy clients of each tier take
/// 0.05 GPU-s as often as their bucket pays. Admitted GPU-seconds per tier and phase must follow the policy:
/// `free` stops when hot, `premium` halves, both recover when the GPUs cool.
#[test]
fn admitted_gpu_seconds_per_tier_follow_the_utilisation_ramp() {
    let snapshot = two_tiers();
    let limits = Arc::new(DynamicLimits::new(tier_policies(&snapshot), LimitsConfig::default()).unwrap());
    let limiter = Limiter::with_refill(Arc::new(InMemoryStore::default()), Arc::new(GpuRefill(Arc::clone(&limits))));
    let free = admit(&snapshot, key(1).expose(), &EMBED, t0()).unwrap();
    let premium = admit(&snapshot, key(2).expose(), &EMBED, t0()).unwrap();
    let phases = [20.0, 100.0, 20.0];
    let steps_per_phase = 40u64;
    let mut telemetry = FakeTelemetry::from_fn(move |step| phases[(step / steps_per_phase).min(2) as usize]);
    let start = Instant::now();
    let step = Duration::from_millis(250);
    let mut admitted = [[0.0f64; 2]; 3];
    let mut factors_seen = [[1.0f64; 2]; 3];
    // Drain the bursts first so every phase measures the refill rate, not the initial balance.
    for grant in [&free, &premium] {
        while limiter.try_charge_at(grant, 0.05, 0.0).now_or_never().expect("in memory: ready").is_ok() {}
    }
    for n in 0..3 * steps_per_phase {
        let sample = telemetry.sample().unwrap();
        limits.update(&sample, start + step * n as u32);
        let now = (n + 1) as f64 * step.as_secs_f64();
        let phase = (n / steps_per_phase) as usize;
        for (t, grant) in [&free, &premium].into_iter().enumerate() {
            while limiter.try_charge_at(grant, 0.05, now).now_or_never().expect("in memory: ready").is_ok() {
                admitted[phase][t] += 0.05;
            }
            factors_seen[phase][t] = limiter.refill_factor(grant.tier(), grant.identity.policy.tier.priority);
        }
    }
    // Phase length: 10 s at a nominal 1 GPU-s/s.
    let [cool, hot, cooled] = admitted;
    assert!((cool[0] - 10.0).abs() < 0.3 && (cool[1] - 10.0).abs() < 0.3, "cool phase: {cool:?}");
    assert!(hot[0] < 0.5, "free must be shut off when the GPUs are saturated: {hot:?}");
    assert!((hot[1] - 5.0).abs() < 0.6, "premium runs at its minFactor 0.5 when saturated: {hot:?}");
    assert!(
        (cooled[0] - 10.0).abs() < 0.6 && (cooled[1] - 10.0).abs() < 0.6,
        "limits relax when the GPUs cool: {cooled:?}"
    );
    assert_eq!(factors_seen[1], [0.0, 0.5]);
    assert_eq!(factors_seen[2], [1.0, 1.0]);
}

#[test]
fn gateway_hands_every_snapshot_s_tiers_to_the_policy() {
    let limits = Arc::new(DynamicLimits::new(Vec::new(), LimitsConfig::default()).unwrap());
    let gpu = Arc::new(Gpu::with_limits(Arc::clone(&limits), Mode::Cpu { reason: "test".into() }));
    let limiter = Arc::new(Limiter::with_refill(Arc::new(InMemoryStore::default()), gpu.refill()));
    let gateway = Gateway::new(Settings::default(), limiter, Backends::new(HashMap::new()));
    gateway.attach_gpu(gpu);
    gateway.apply(two_tiers());
    let mut names: Vec<_> = limits.factors().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(names, vec![("free".to_string(), 1.0), ("premium".to_string(), 1.0)]);
    assert!(gateway.metrics.render().contains("infergate_gpu_refill_factor"));
    let status = gateway.gpu().unwrap().status_json();
    assert_eq!(status["mode"], "cpu");
    assert_eq!(status["refillFactors"]["premium"], 1.0);
}

/// Answers with its own name so the test sees which endpoint served.
struct Named(&'static str);

impl Backend for Named {
    fn kind(&self) -> &'static str {
        self.0
    }
    fn call(&self, _request: BackendRequest) -> BoxFuture<'static, Result<BackendResponse, BackendError>> {
        let body = Bytes::from_static(self.0.as_bytes());
        Box::pin(async move {
            Ok(BackendResponse {
                words: Vec::new(),
                content_type: "text/plain".into(),
                body,
                text: None,
                measured_gpu_seconds: None,
                billed_audio_seconds: None,
            })
        })
    }
}

fn wav_seconds(seconds: f64) -> Bytes {
    let data = (seconds * 32_000.0) as u32;
    let mut v = infergate_gate::audio::wav_header(data).to_vec();
    v.resize(44 + data as usize, 0);
    Bytes::from(v)
}

/// The primary pays twice (burst 1, 0.5 GPU-s each), then saturated requests go to the fallback (its own
/// bucket) and say so; when the fallback is saturated too, and on an endpoint without one, the usual 429.
#[tokio::test]
async fn saturated_endpoint_degrades_to_its_fallback_then_refuses() {
    let mut backends: HashMap<BuiltinModel, Arc<dyn Backend>> = HashMap::new();
    backends.insert(BuiltinModel::SpeakerEncoder, Arc::new(Named("primary")));
    backends.insert(BuiltinModel::Vad, Arc::new(Named("spare")));
    let shards = vec![
        mk_endpoint("speaker", "spk")
            .features(&[Feature::Embed])
            .builtin(BuiltinModel::SpeakerEncoder)
            .fallback("spare")
            .shard(),
        mk_endpoint("spare", "spk-spare").features(&[Feature::Embed]).builtin(BuiltinModel::Vad).shard(),
        mk_endpoint("solo", "spk-solo").features(&[Feature::Embed]).builtin(BuiltinModel::SpeakerEncoder).shard(),
        mk_policy("app")
            .key(&key(1))
            .scope("speaker", "spk", &[Feature::Embed])
            .scope("solo", "spk-solo", &[Feature::Embed])
            .shard(),
    ];
    let gateway = Gateway::serving(&shards, backends);
    let call = |model: &'static str| {
        let gateway = Arc::clone(&gateway);
        async move {
            let identity = gateway.authenticate(&gateway.snapshot(), &Credential::Key(key(1).expose())).unwrap();
            let req = OneShot {
                model,
                feature: Feature::Embed,
                origin: None,
                audio: wav_seconds(5.0),
                filename: "a.wav".into(),
                content_type: "audio/wav".into(),
                fields: vec![],
                without_audio: false,
            };
            let mut outcome = gateway.begin(Door::Http, "/v1/audio/embeddings", None);
            oneshot::run(&gateway, identity, req, &mut outcome)
                .await
                .map(|o| (String::from_utf8(o.body.to_vec()).unwrap(), o.fallback))
        }
    };
    let served =
        |body: &str, fallback: Option<&str>| Ok::<_, RefusalCode>((body.to_string(), fallback.map(str::to_string)));
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(call("spk").await.map_err(|r| r.code));
    }
    assert_eq!(
        outcomes,
        vec![
            served("primary", None),
            served("primary", None),
            served("spare", Some("default/spare")),
            served("spare", Some("default/spare")),
            Err(RefusalCode::RateLimited),
        ]
    );
    let refused = call("spk").await.unwrap_err();
    assert!(refused.retry_after_seconds.is_some_and(|s| s > 0.0));
    let mut solo = Vec::new();
    for _ in 0..3 {
        solo.push(call("spk-solo").await.map_err(|r| r.code));
    }
    assert_eq!(solo, vec![served("primary", None), served("primary", None), Err(RefusalCode::RateLimited)]);
}
