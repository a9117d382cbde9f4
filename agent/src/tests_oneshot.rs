//! The one-shot path's settlement when the client goes away: the request's future is dropped mid-flight.
use crate::backend::{Backend, BackendError, BackendRequest, BackendResponse};
use crate::gateway::{Credential, Gateway};
use crate::oneshot::{self, OneShot};
use crate::outcome::Door;
use futures::future::BoxFuture;
use infergate_crds::endpoint::{BuiltinModel, Feature};
use infergate_gate::snapshot::KeyRef;
use infergate_gate::testing::{key, mk_endpoint, mk_policy};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A backend that never answers.
struct Hangs;

impl Backend for Hangs {
    fn kind(&self) -> &'static str {
        "hangs"
    }
    fn call(&self, _request: BackendRequest) -> BoxFuture<'static, Result<BackendResponse, BackendError>> {
        Box::pin(std::future::pending())
    }
}

fn gateway() -> Arc<Gateway> {
    let mut backends: HashMap<BuiltinModel, Arc<dyn Backend>> = HashMap::new();
    backends.insert(BuiltinModel::SpeakerEncoder, Arc::new(Hangs));
    let shards = vec![
        mk_endpoint("speaker", "spk").features(&[Feature::Embed]).builtin(BuiltinModel::SpeakerEncoder).shard(),
        mk_policy("app").key(&key(1)).scope("speaker", "spk", &[Feature::Embed]).shard(),
    ];
    Gateway::serving(&shards, backends)
}

fn one_second_of_audio() -> bytes::Bytes {
    let mut wav = infergate_gate::audio::wav_header(32_000).to_vec();
    wav.resize(44 + 32_000, 0);
    bytes::Bytes::from(wav)
}

#[tokio::test]
async fn a_request_dropped_after_dispatch_is_charged_the_time_it_held_the_backend() {
    let gateway = gateway();
    let identity = gateway.authenticate(&gateway.snapshot(), &Credential::Key(key(1).expose())).unwrap();
    let request = OneShot {
        model: "spk",
        feature: Feature::Embed,
        origin: None,
        audio: one_second_of_audio(),
        filename: "a.wav".into(),
        content_type: "audio/wav".into(),
        fields: vec![],
        without_audio: false,
    };
    let mut outcome = gateway.begin(Door::Http, "/v1/audio/embeddings", None);
    // The client goes away after 300 ms: the request's future is dropped with the backend call in flight.
    let dropped =
        tokio::time::timeout(Duration::from_millis(300), oneshot::run(&gateway, identity, request, &mut outcome));
    assert!(dropped.await.is_err(), "the backend never answers");
    let usage: HashMap<KeyRef, f64> = gateway.usage().into_iter().collect();
    let charged = usage[&KeyRef::of(&key(1).digest())];
    // Settled at the elapsed time (about 0.3 s of backend time), not left at the pre-charge and not refunded.
    assert!((0.25..1.0).contains(&charged), "charged {charged} GPU-s");
}
