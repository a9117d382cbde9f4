//! The bodies of infergate's fuzz targets: one plain function per target over the raw input bytes.
//!
//! ```text
//!  fuzz/fuzz_targets/<target>.rs (libFuzzer) ─┐
//!                                             ├─▶ <target>(bytes): the parser under test, then the invariants
//!  tests/tests/fuzz_replay.rs (cargo test)  ──┘     it must keep; a panic is the finding
//!        └─ every file of fuzz/corpus/<target>/ and fuzz/artifacts/<target>/
//! ```
//! The same file is compiled twice: as this crate's library (which the libFuzzer binaries link) and, through a
//! `#[path]` module, inside the replay test of the main workspace, so the default test run replays every corpus
//! without libFuzzer and a fixed crash cannot come back. It only names crates both places depend on.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("key_format", key_format),
    ("audio_inspect", audio_inspect),
    ("audio_decode", audio_decode),
    ("ct2_weights", ct2_weights),
    ("ws_session", ws_session),
    ("manifest_compile", manifest_compile),
    ("redact", redact),
    ("jwt", jwt),
    ("grpc_stream", grpc_stream),
];

/// The API key format check (prefix, length, alphabet, CRC32 in base62) and the digest/id parsers.
///
/// Any input is also tried as a presented key; an input of exactly 33 bytes is additionally read as
/// `[environment, 32 bytes of entropy]`, and the key made from it must pass the check.
pub fn key_format(data: &[u8]) {
    use infergate_crds::key::{ApiKey, Environment, KeyDigest, KeyId};
    if let Ok(text) = std::str::from_utf8(data) {
        let checked = ApiKey::check_format(text);
        match ApiKey::parse(text) {
            Ok(key) => {
                assert_eq!(checked, Ok(key.environment()), "parse and check_format disagree");
                assert_eq!(key.expose(), text);
                assert!(KeyId::is_well_formed(key.id().as_str()));
            }
            Err(error) => assert_eq!(checked, Err(error), "parse and check_format disagree"),
        }
        if let Some(digest) = KeyDigest::from_hex(text) {
            assert_eq!(digest.to_hex(), text.to_ascii_lowercase());
        }
        let _ = KeyId::is_well_formed(text);
    }
    if let Ok(entropy) = <&[u8; 32]>::try_from(data.get(1..).unwrap_or_default()) {
        let env = if data[0] & 1 == 0 { Environment::Test } else { Environment::Live };
        let key = ApiKey::from_entropy(env, entropy);
        assert_eq!(ApiKey::check_format(key.expose()), Ok(env), "a generated key fails its own format check");
    }
}

/// The gate's upload sizing (`infergate_gate::audio::inspect`): WAV headers, FLAC STREAMINFO and symphonia's
/// container probes. Whatever it accepts must have a finite, non-negative length, since that length is billed.
pub fn audio_inspect(data: &[u8]) {
    use infergate_gate::audio::inspect;
    use infergate_gate::refusal::RefusalCode;
    // The file name matters only for bytes without a recognised container: it can make them raw PCM.
    let info = match inspect(data, "upload.bin") {
        Err(refusal) if refusal.code == RefusalCode::UnsupportedCodec => inspect(data, "upload.pcm"),
        other => other,
    };
    if let Ok(info) = info {
        assert!(info.seconds.is_finite() && info.seconds >= 0.0, "billed length {} for {info:?}", info.seconds);
    }
}

/// Upload decoding for the built-in models (`infergate_audio::decode`) with a 2 s cap: every container and
/// codec symphonia and opus-pure read, the channel mix-down, the length cap and the resampler.
pub fn audio_decode(data: &[u8]) {
    use infergate_audio::{Hint, Limits, TARGET_RATE, decode};
    const MAX_SECONDS: f64 = 2.0;
    let hint = Hint { filename: None, content_type: None };
    if let Ok(decoded) = decode(data, hint, Limits { max_seconds: MAX_SECONDS }) {
        assert!(decoded.samples.iter().all(|s| (-1.0..=1.0).contains(s)), "a sample outside [-1, 1]");
        assert!(decoded.duration_seconds <= MAX_SECONDS, "{} s decoded past the cap", decoded.duration_seconds);
        // The resampler may round up by a few samples; the cap bounds memory, not the exact count.
        let most = (MAX_SECONDS * f64::from(TARGET_RATE)) as usize + 64;
        assert!(decoded.samples.len() <= most, "{} samples held past the cap", decoded.samples.len());
    }
}

/// For targets whose code under test may catch panics on purpose (`infergate_audio::decode` guards symphonia
/// with `catch_unwind`; the gate's sizing calls the same demuxers): replaces libFuzzer's abort-on-any-panic hook
/// with one that reports each panic site once, with its stack. A panic that escapes the product's guard still aborts (libfuzzer-sys aborts on an unwind out
/// of the target), so the target finds exactly what would crash a request.
pub fn tolerate_caught_panics() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(place) {
            let trace = std::backtrace::Backtrace::force_capture();
            eprintln!("panic (caught unless the run aborts next): {info}\n{trace}");
        }
    }));
}

/// The CTranslate2 weight reader (`infergate_whisper::ct2::parse`) and the Whisper layout check on top of it
/// (`WhisperWeights::from_ct2`).
pub fn ct2_weights(data: &[u8]) {
    if let Ok(file) = infergate_whisper::ct2::parse(data) {
        let _ = infergate_whisper::model::WhisperWeights::from_ct2(&file);
    }
}

/// CR compile: arbitrary YAML/JSON through the standalone loader (`manifests::load_str`: split, type, validate
/// as the API server would), `compile`, and the agent's snapshot build. The compiled world, fed its own key
/// Secrets and shards back, must compile to the same shards without generating a key (what standalone mode and
/// the operator rely on to never rotate by accident).
pub fn manifest_compile(data: &[u8]) {
    use chrono::TimeZone;
    use infergate_compile::{InsecureSequentialKeys, KeySource, World, compile, manifests};
    use infergate_crds::key::{ApiKey, Environment};

    struct NoKeys;
    impl KeySource for NoKeys {
        fn new_key(&mut self, _env: Environment) -> ApiKey {
            panic!("a recompile of its own output generated a key")
        }
    }

    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(set) = manifests::load_str(text, "fuzz input") else { return };
    let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let world = World {
        tiers: &set.tiers,
        endpoints: &set.endpoints,
        policies: &set.policies,
        key_secrets: &[],
        upstream_secrets: &set.secrets,
        shards: &[],
        operator_namespace: None,
        agents: &[],
        now,
    };
    let desired = compile(&world, &mut InsecureSequentialKeys::starting_at(1));
    let _ = infergate_gate::snapshot::Snapshot::build(&desired.shards, Default::default());
    let secrets: Vec<_> = desired.policies.values().filter_map(|o| o.key_secret.as_ref()).collect();
    let again = compile(&World { key_secrets: &secrets, shards: &desired.shards, ..world }, &mut NoKeys);
    assert_eq!(again.shards, desired.shards, "a recompile of its own output changed the shards");
}

/// Transcript redaction (`infergate_redact`): the input is `[entity bits][style][keep_last]` then UTF-8 text.
/// The spans must be what `Redacted` promises (in order, non-overlapping, non-empty, on character boundaries
/// of the input, counted once each), and word-timed redaction must flag exactly one mute per word.
pub fn redact(data: &[u8]) {
    use infergate_redact::{Entity, EntitySet, HashKey, Policy, Redactor, Style};
    let [entity_bits, style, keep_last, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    // One byte picks among the first eight types (the pattern layer's; the NER types need a model, which the
    // fuzz target does not load).
    let entities: EntitySet =
        Entity::ALL.iter().take(8).enumerate().filter(|(i, _)| entity_bits >> i & 1 == 1).map(|(_, e)| *e).collect();
    let policy = Policy::new(entities).style(Style::ALL[usize::from(*style) % Style::ALL.len()]).keep_last(*keep_last);
    let redactor = Redactor::new(policy).with_hash_key(HashKey::new(b"fuzz".to_vec()));
    let redacted = redactor.redact(text);
    let mut previous_end = 0;
    for span in &redacted.spans {
        assert!(
            previous_end <= span.start && span.start < span.end && span.end <= text.len(),
            "span {}..{} after {previous_end} in {} bytes",
            span.start,
            span.end,
            text.len()
        );
        assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end), "span inside a character");
        previous_end = span.end;
    }
    assert_eq!(redacted.counts.values().map(|&n| n as usize).sum::<usize>(), redacted.spans.len());
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(redactor.redact_words(&words).muted.len(), words.len());
}

/// A WebSocket stream from the first client message on: the JSON control messages (through the door's own
/// `Control` type) and binary audio, in any order, driven through `Session::open` and `Session::drive` against
/// a gateway with one stream endpoint and an instant backend. See [`session::frames`] for the input format.
pub fn ws_session(data: &[u8]) {
    session::run(data);
}

pub mod session {
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use infergate_agent::backend::{Backend, BackendError, BackendRequest, BackendResponse, Backends, Cut, TimedWord};
    use infergate_agent::doors::ws::Control;
    use infergate_agent::gateway::{Credential, Gateway, Settings};
    use infergate_agent::outcome::Door;
    use infergate_agent::session::{Event, Gone, Inbound, Ready, Session, Transport};
    use infergate_crds::endpoint::{BuiltinModel, Feature};
    use infergate_crds::gateway::Shard;
    use infergate_gate::admission::{Identity, Request};
    use infergate_gate::limiter::{InMemoryStore, Limiter};
    use infergate_gate::refusal::Refusal;
    use infergate_gate::snapshot::{Snapshot, SnapshotOptions};
    use infergate_gate::testing::{key, mk_endpoint, mk_policy, tier};
    use std::collections::{HashMap, VecDeque};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};

    /// One client frame as the WebSocket door receives it.
    #[derive(Clone, Debug, PartialEq)]
    pub enum Frame {
        Text(String),
        Binary(Vec<u8>),
        Ping,
    }

    /// The input format: frames of `[kind][length: u16 LE][payload]`, where kind % 3 is 0 for a text frame
    /// (payload as lossy UTF-8), 1 for a binary frame and 2 for a ping (payload ignored). A short last frame
    /// takes what is left.
    pub fn frames(mut data: &[u8]) -> Vec<Frame> {
        let mut out = vec![];
        while let [kind, rest @ ..] = data {
            let len = match rest {
                [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
                _ => 0,
            };
            let body = rest.get(2..).unwrap_or_default();
            let (payload, tail) = body.split_at(len.min(body.len()));
            out.push(match kind % 3 {
                0 => Frame::Text(String::from_utf8_lossy(payload).into_owned()),
                1 => Frame::Binary(payload.to_vec()),
                _ => Frame::Ping,
            });
            data = tail;
        }
        out
    }

    /// The inverse of [`frames`], for seeds.
    pub fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut out = vec![];
        for frame in frames {
            let (kind, payload): (u8, &[u8]) = match frame {
                Frame::Text(text) => (0, text.as_bytes()),
                Frame::Binary(bytes) => (1, bytes),
                Frame::Ping => (2, &[]),
            };
            out.push(kind);
            out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    /// Answers every segment at once with one word spanning it, and counts the audio it was sent. Where to cut
    /// the buffered audio is read from the audio itself, so the fuzzer reaches every way a stream cuts.
    struct InstantBackend {
        received_pcm_bytes: Arc<AtomicUsize>,
    }

    impl Backend for InstantBackend {
        fn kind(&self) -> &'static str {
            "fuzz"
        }
        fn call(&self, request: BackendRequest) -> BoxFuture<'static, Result<BackendResponse, BackendError>> {
            let pcm_bytes = request.audio.len().saturating_sub(44);
            self.received_pcm_bytes.fetch_add(pcm_bytes, Ordering::Relaxed);
            let seconds = pcm_bytes as f64 / 32_000.0;
            Box::pin(async move {
                Ok(BackendResponse {
                    content_type: "application/json".into(),
                    body: Bytes::new(),
                    text: Some(format!("{pcm_bytes} bytes")),
                    measured_gpu_seconds: Some(0.01),
                    billed_audio_seconds: None,
                    words: vec![TimedWord { word: " segment".into(), start: 0.0, end: seconds }],
                })
            })
        }
        fn cut(&self, pcm16le: &[u8]) -> Cut {
            match pcm16le {
                [] => Cut::All,
                [choice, rest @ ..] => match choice % 3 {
                    0 => Cut::All,
                    1 => Cut::Wait,
                    _ => Cut::At(usize::from(rest.first().copied().unwrap_or(0)) * 256),
                },
            }
        }
    }

    pub const MODEL: &str = "whisper-1";

    pub(crate) struct Harness {
        pub(crate) runtime: tokio::runtime::Runtime,
        pub(crate) gateway: Arc<Gateway>,
        pub(crate) received_pcm_bytes: Arc<AtomicUsize>,
    }

    /// One gateway for the process (its HTTP clients are slow to build). Its tier is unlimited so that the
    /// charges of earlier inputs never change what a later one sees; everything else a stream holds is
    /// released when the stream ends, which [`run`] checks.
    pub(crate) fn harness() -> &'static Harness {
        static HARNESS: OnceLock<Harness> = OnceLock::new();
        HARNESS.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            // Served by the instant backend in the speaker encoder's slot of the backend map (built-in whisper is
            // looked up by size, from loaded weights).
            let builtin = mk_endpoint("speech", MODEL).builtin(BuiltinModel::SpeakerEncoder).shard();
            let Shard::Endpoint(mut endpoint) = builtin else { unreachable!("mk_endpoint builds an endpoint shard") };
            endpoint.limits.max_audio_seconds = 4.0;
            endpoint.limits.max_chunk_bytes = 16_000;
            endpoint.limits.max_messages_per_second = 50;
            let mut unlimited = tier("fuzz");
            unlimited.gpu_seconds_per_minute = 1e12;
            unlimited.burst_gpu_seconds = 1e12;
            let shards = vec![
                Shard::Endpoint(endpoint),
                mk_policy("app").key(&key(1)).tier(unlimited).scope("speech", MODEL, &[Feature::Transcribe]).shard(),
            ];
            let (snapshot, warnings) = Snapshot::build(&shards, SnapshotOptions::default());
            assert_eq!(warnings, vec![], "the fuzz gateway's config");
            let mut backends: HashMap<BuiltinModel, Arc<dyn Backend>> = HashMap::new();
            let received_pcm_bytes = Arc::new(AtomicUsize::new(0));
            let backend = InstantBackend { received_pcm_bytes: Arc::clone(&received_pcm_bytes) };
            backends.insert(BuiltinModel::SpeakerEncoder, Arc::new(backend));
            let settings = Settings { segment_seconds: 0.25, ..Settings::default() };
            let gateway = runtime.block_on(async {
                let limiter = Arc::new(Limiter::new(Arc::new(InMemoryStore::default())));
                let gateway = Gateway::new(settings, limiter, Backends::new(backends));
                gateway.apply(snapshot);
                gateway
            });
            Harness { runtime, gateway, received_pcm_bytes }
        })
    }

    /// Where a fuzzed stream's client messages come from, as the door maps them to [`Inbound`].
    pub(crate) trait Source {
        fn next(&mut self) -> Inbound;
    }

    /// A stream transport over a [`Source`] that records what the session said back, in order.
    #[derive(Debug, Default)]
    pub(crate) struct Recorded<S> {
        pub(crate) source: S,
        pub(crate) ready: u32,
        pub(crate) events: Vec<Event>,
        pub(crate) endings: u32,
    }

    impl<S: Source + Send> Transport for Recorded<S> {
        async fn recv(&mut self) -> Inbound {
            self.source.next()
        }
        async fn ready(&mut self, _ready: Ready<'_>) -> Result<(), Gone> {
            self.ready += 1;
            Ok(())
        }
        async fn event(&mut self, event: &Event) -> Result<(), Gone> {
            self.events.push(event.clone());
            Ok(())
        }
        async fn refuse(&mut self, _refusal: &Refusal) {
            self.endings += 1;
        }
        async fn done(&mut self) {
            self.endings += 1;
        }
        async fn refreshed(
            &mut self,
            _result: &Result<infergate_agent::tokens::stream::Terms, Refusal>,
        ) -> Result<(), Gone> {
            Ok(())
        }
    }

    /// The WebSocket client's frames.
    #[derive(Debug, Default)]
    struct Frames(VecDeque<Frame>);

    impl Source for Frames {
        // The door's own reading of a frame (`doors::ws::inbound`) for a running stream.
        fn next(&mut self) -> Inbound {
            use infergate_agent::doors::ws::{Message, inbound};
            match self.0.pop_front() {
                None => Inbound::Closed,
                Some(Frame::Binary(bytes)) => inbound(Message::Binary(Bytes::from(bytes))),
                Some(Frame::Ping) => inbound(Message::Ping(Bytes::new())),
                Some(Frame::Text(text)) => inbound(Message::Text(text.into())),
            }
        }
    }

    pub fn run(data: &[u8]) {
        let harness = harness();
        let gateway = &harness.gateway;
        let mut script = Recorded { source: Frames(frames(data).into()), ..Recorded::default() };
        harness.received_pcm_bytes.store(0, Ordering::Relaxed);
        harness.runtime.block_on(async {
            let snapshot = gateway.snapshot();
            // As if the upgrade carried `Authorization: Bearer <key 1>`; an `auth` message replaces it.
            let mut identity: Option<Identity> =
                gateway.authenticate(&snapshot, &Credential::Key(key(1).expose())).ok();
            // The door's handshake (`handshake` in ws.rs): control messages until `start`.
            while let Some(frame) = script.source.0.pop_front() {
                let text = match frame {
                    Frame::Text(text) => text,
                    Frame::Ping => continue,
                    Frame::Binary(_) => return, // audio before start: refused
                };
                let control = match serde_json::from_str::<Control>(&text) {
                    Ok(control) => control,
                    Err(_) => return,
                };
                match control {
                    Control::Auth { key } => match gateway.authenticate(&snapshot, &Credential::Key(&key)) {
                        Ok(id) => identity = Some(id),
                        Err(_) => return,
                    },
                    Control::End | Control::Refresh { .. } => return,
                    Control::Start { model, feature, language, redact } => {
                        let Some(id) = identity.take() else { return };
                        let request =
                            Request { model: &model, feature: feature.unwrap_or(Feature::Transcribe), origin: None };
                        let outcome = gateway.begin(Door::WebSocket, "/v1/stream", None);
                        let mut fields = language.map(|l| vec![("language".to_string(), l)]).unwrap_or_default();
                        // The redaction ask takes the same path as the WebSocket door's (arbitrary names are refused).
                        fields.extend(redact.map(|r| r.into_fields()).unwrap_or_default());
                        if let Ok(session) = Session::open(gateway, id, &request, outcome, fields).await {
                            session.drive(&mut script).await;
                            let client_left = script.source.0.is_empty();
                            check_stream(script.ready, script.endings, client_left, &script.events);
                        }
                        return;
                    }
                }
            }
        });
        check_released(gateway);
    }

    /// What every stream keeps, whichever door drove it: one `ready`, one ending (unless the client left), and
    /// after a final result the backend got each accepted byte of audio exactly once, whatever the cuts were.
    pub(crate) fn check_stream(ready: u32, endings: u32, client_left: bool, events: &[Event]) {
        assert_eq!(ready, 1, "a stream announces itself once");
        assert!(
            endings == 1 || (client_left && endings == 0),
            "a stream ends once, with a result or a refusal ({endings} endings)"
        );
        if let Some(Event::Final { audio_seconds, .. }) = events.last() {
            let sent = harness().received_pcm_bytes.load(Ordering::Relaxed) as f64 / 32_000.0;
            assert!((sent - audio_seconds).abs() < 1e-9, "the backend got {sent} s of the stream's {audio_seconds} s");
        }
    }

    /// Nothing a stream holds survives it.
    pub(crate) fn check_released(gateway: &Gateway) {
        assert_eq!(gateway.streams.len(), 0, "a stream outlived its session");
        assert_eq!(gateway.metrics.open_streams.get(), 0, "the open-streams gauge leaked");
    }
}

/// The gRPC door's stream (`Inference/StreamTranscribe`): gRPC's wire frames, prost's decoding of each message,
/// the door's own readings of `start` and of later messages ([`infergate_agent::doors::grpc::start_terms`],
/// [`infergate_agent::doors::grpc::inbound`]), then the session, with the same checks as `ws_session`.
pub fn grpc_stream(data: &[u8]) {
    grpc::run(data);
}

#[path = "grpc_stream.rs"]
pub mod grpc;

/// Whole well-formed API keys as seeds. Never committed (a key-shaped string in the repository reads as a leaked
/// secret to every scanner): the replay test feeds them from memory and tests/fuzz/run.sh writes them into the
/// scratch corpus before fuzzing.
pub fn runtime_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use infergate_crds::key::{ApiKey, Environment};
    let test_key = ApiKey::from_entropy(Environment::Test, &[7; 32]).expose().to_string();
    let live_key = ApiKey::from_entropy(Environment::Live, &[9; 32]).expose().to_string();
    let mut bad_checksum = test_key.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'A' { b'B' } else { b'A' };
    vec![
        ("key_format", "test_key", test_key.into_bytes()),
        ("key_format", "live_key", live_key.into_bytes()),
        ("key_format", "bad_checksum", bad_checksum),
    ]
}

/// Seeds built in code (the rest of the corpus is copied from fixtures and examples): `(target, file, bytes)`.
/// The replay test checks that the committed corpus holds each of them unchanged.
pub fn generated_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use session::Frame;
    let mut entropy = vec![1u8];
    entropy.extend(0u8..32);

    let start = Frame::Text(format!(r#"{{"type":"start","model":"{}","language":"en"}}"#, session::MODEL));
    let end = Frame::Text(r#"{"type":"end"}"#.into());
    let second = Frame::Binary(vec![0x10; 32_000 / 5]);
    let auth = Frame::Text(format!(r#"{{"type":"auth","key":"{}"}}"#, infergate_gate::testing::key(1).expose()));

    let tiny = ct2::tiny_whisper();
    vec![
        ("key_format", "entropy", entropy),
        ("key_format", "digest_hex", "ab".repeat(32).into_bytes()),
        ("audio_decode", "pcm16_mono_16k.wav", wav(16_000, 1, 1_600)),
        ("audio_decode", "pcm16_stereo_8k.wav", wav(8_000, 2, 800)),
        ("audio_inspect", "pcm16_mono_16k.wav", wav(16_000, 1, 160)),
        ("ct2_weights", "tiny_whisper.bin", tiny.clone()),
        ("ct2_weights", "tiny_whisper_truncated.bin", tiny[..tiny.len() / 2].to_vec()),
        ("redact", "card_spoken_and_digits", redact_seed(0xFF, 0, 4, "card four one one one 1111 1111 1111 1111, ok")),
        (
            "redact",
            "ssn_email_phone",
            redact_seed(0xFF, 1, 4, "my ssn is 123-45-6789, mail a.b@example.com or call +1 415 555 0100"),
        ),
        (
            "redact",
            "iban_ip_dob_masked",
            redact_seed(0xFF, 2, 2, "GB82 WEST 1234 5698 7654 32 from 10.0.0.1, born 1990-04-01"),
        ),
        ("redact", "hashed_numbers", redact_seed(0x80, 3, 4, "double three five, twenty one, 12345")),
        ("jwt", "alg_none", b"eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJkZWZhdWx0L2FwcCJ9.".to_vec()),
        (
            "jwt",
            "hs256_unknown_kid",
            b"eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6InNpZ18xIn0.e30.c2lnbmF0dXJl".to_vec(),
        ),
        ("jwt", "edit_signature", vec![0xff, 0x01, b'A']),
        ("jwt", "edit_header", vec![0x05, 0x00, b'x']),
        ("grpc_stream", "start_audio_end", grpc::seed_start_audio_end()),
        ("grpc_stream", "audio_before_start", grpc::seed_audio_before_start()),
        ("grpc_stream", "compressed_and_garbage", grpc::seed_compressed_and_garbage()),
        ("grpc_stream", "unknown_feature_then_refresh", grpc::seed_unknown_feature()),
        ("ws_session", "start_audio_end", session::encode(&[start.clone(), second.clone(), end.clone()])),
        ("ws_session", "auth_start_ping_audio", session::encode(&[auth, start.clone(), Frame::Ping, second.clone()])),
        (
            "ws_session",
            "cut_at_pause",
            session::encode(&[
                start.clone(),
                Frame::Binary(vec![2; 6_400]),
                Frame::Binary(vec![2; 6_400]),
                end.clone(),
            ]),
        ),
        ("ws_session", "odd_chunk", session::encode(&[start.clone(), Frame::Binary(vec![1; 3]), end.clone()])),
        ("ws_session", "audio_before_start", session::encode(&[second.clone(), start.clone(), end.clone()])),
        (
            "ws_session",
            "start_twice",
            session::encode(&[start.clone(), second.clone(), start, Frame::Text("{".into()), end]),
        ),
    ]
}

fn redact_seed(entity_bits: u8, style: u8, keep_last: u8, text: &str) -> Vec<u8> {
    let mut out = vec![entity_bits, style, keep_last];
    out.extend_from_slice(text.as_bytes());
    out
}

/// A 16-bit PCM WAV of `frames` frames of a ramp.
fn wav(rate: u32, channels: u16, frames: u32) -> Vec<u8> {
    let data_len = frames * u32::from(channels) * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..frames * u32::from(channels) {
        out.extend_from_slice(&((i % 512) as i16 * 64 - 16_384).to_le_bytes());
    }
    out
}

/// A complete `WhisperSpec` model.bin at toy size (d_model 4, 2 heads, one layer each side), so the fuzzer starts
/// from a file that `from_ct2` accepts without the 75 MB real one.
mod ct2 {
    const D: u32 = 4;
    const MELS: u32 = 2;
    const VOCAB: u32 = 3;
    const AUDIO_CTX: u32 = 2;
    const TEXT_CTX: u32 = 2;

    struct Writer {
        out: Vec<u8>,
        count: u32,
    }

    impl Writer {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        fn tensor(&mut self, name: &str, shape: &[u32]) {
            Self::string(&mut self.out, name);
            self.out.push(shape.len() as u8);
            for d in shape {
                self.out.extend_from_slice(&d.to_le_bytes());
            }
            self.out.push(0); // f32
            let n: u32 = shape.iter().product();
            self.out.extend_from_slice(&(n * 4).to_le_bytes());
            for i in 0..n {
                self.out.extend_from_slice(&(i as f32 * 0.01).to_le_bytes());
            }
            self.count += 1;
        }
        fn scalar(&mut self, name: &str, value: i32) {
            Self::string(&mut self.out, name);
            self.out.push(0);
            self.out.push(3); // i32
            self.out.extend_from_slice(&4u32.to_le_bytes());
            self.out.extend_from_slice(&value.to_le_bytes());
            self.count += 1;
        }
        fn layer_norm(&mut self, prefix: &str) {
            self.tensor(&format!("{prefix}/gamma"), &[D]);
            self.tensor(&format!("{prefix}/beta"), &[D]);
        }
        fn linear(&mut self, prefix: &str, out: u32, inp: u32) {
            self.tensor(&format!("{prefix}/weight"), &[out, inp]);
            self.tensor(&format!("{prefix}/bias"), &[out]);
        }
    }

    pub(super) fn tiny_whisper() -> Vec<u8> {
        let mut w = Writer { out: vec![], count: 0 };
        w.tensor("encoder/conv1/weight", &[D, MELS, 3]);
        w.tensor("encoder/conv1/bias", &[D]);
        w.tensor("encoder/conv2/weight", &[D, D, 3]);
        w.tensor("encoder/conv2/bias", &[D]);
        w.tensor("encoder/position_encodings/encodings", &[AUDIO_CTX, D]);
        w.scalar("encoder/num_heads", 2);
        w.scalar("decoder/num_heads", 2);
        w.scalar("decoder/activation", 3);
        w.scalar("decoder/pre_norm", 1);
        let p = "encoder/layer_0";
        w.layer_norm(&format!("{p}/self_attention/layer_norm"));
        w.linear(&format!("{p}/self_attention/linear_0"), 3 * D, D);
        w.linear(&format!("{p}/self_attention/linear_1"), D, D);
        w.layer_norm(&format!("{p}/ffn/layer_norm"));
        w.linear(&format!("{p}/ffn/linear_0"), 4 * D, D);
        w.linear(&format!("{p}/ffn/linear_1"), D, 4 * D);
        w.layer_norm("encoder/layer_norm");
        w.tensor("decoder/embeddings/weight", &[VOCAB, D]);
        w.tensor("decoder/position_encodings/encodings", &[TEXT_CTX, D]);
        let p = "decoder/layer_0";
        w.layer_norm(&format!("{p}/self_attention/layer_norm"));
        w.linear(&format!("{p}/self_attention/linear_0"), 3 * D, D);
        w.linear(&format!("{p}/self_attention/linear_1"), D, D);
        w.layer_norm(&format!("{p}/attention/layer_norm"));
        w.linear(&format!("{p}/attention/linear_0"), D, D);
        w.linear(&format!("{p}/attention/linear_1"), 2 * D, D);
        w.linear(&format!("{p}/attention/linear_2"), D, D);
        w.layer_norm(&format!("{p}/ffn/layer_norm"));
        w.linear(&format!("{p}/ffn/linear_0"), 4 * D, D);
        w.linear(&format!("{p}/ffn/linear_1"), D, 4 * D);
        w.layer_norm("decoder/layer_norm");

        let mut file = vec![];
        file.extend_from_slice(&6u32.to_le_bytes());
        Writer::string(&mut file, "WhisperSpec");
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(&w.count.to_le_bytes());
        file.extend_from_slice(&w.out);
        // One alias, as real files carry (the output projection shares the embedding).
        file.extend_from_slice(&1u32.to_le_bytes());
        Writer::string(&mut file, "decoder/projection/weight");
        Writer::string(&mut file, "decoder/embeddings/weight");
        file
    }
}

/// The session-token verifiers: infergate's own (`Verifier::verify`, directly and through the cache the doors
/// use) and the one for trusted external issuers (`verify_external`, with `unverified_issuer`): compact
/// serialisation split, base64url, header JSON (`alg`, `typ`, `kid`), signature, claims. The input is tried as a
/// presented token, and as an edit of a genuine token (`[offset lo, offset hi, new byte]` applied to it): nothing
/// panics, and nothing but the genuine token, unchanged, verifies.
pub fn jwt(data: &[u8]) {
    use infergate_token::{Grant, Granted, KeyRing, Verifier, VerifyCache, mint};
    use std::sync::OnceLock;
    type World = (Verifier, infergate_token::IssuerKeys, String, chrono::DateTime<chrono::Utc>);
    static WORLD: OnceLock<World> = OnceLock::new();
    let (verifier, issuer_keys, genuine, now) = WORLD.get_or_init(|| {
        let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("a valid instant");
        let ring = KeyRing::bootstrap(now - chrono::Duration::minutes(1));
        let verifier =
            Verifier::new("https://gw.fuzz", "infergate", std::time::Duration::from_secs(30), ring.public_keys())
                .expect("one key");
        let grant = Grant {
            issuer: "https://gw.fuzz".into(),
            audience: "infergate".into(),
            policy: "default/app".into(),
            key_id: "kid_00000000000000ff".into(),
            tier: "free".into(),
            scope: Granted::everything(),
            max_audio_seconds: Some(60),
            codecs: None,
            end_user: Some("user-1".into()),
            not_before: None,
        };
        let token = mint(ring.signing_key(now), &grant, now, std::time::Duration::from_secs(600)).expect("mints").token;
        let jwks = serde_json::to_vec(&ring.jwks()).expect("a JWKS serialises");
        let (issuer_keys, _) = infergate_token::IssuerKeys::from_jwks_json(&jwks).expect("our JWKS loads");
        (verifier, issuer_keys, token, now)
    });
    // The same key set as an external issuer's: the path for tokens of identity providers a policy trusts.
    let rules = infergate_token::IssuerRules {
        issuer: "https://gw.fuzz",
        audience: "infergate",
        scope_claim: "scope",
        end_user_claim: "sub",
        leeway: std::time::Duration::from_secs(30),
    };
    let cache = VerifyCache::new(8);
    if let Ok(text) = std::str::from_utf8(data) {
        let direct = verifier.verify(text, *now);
        assert!(direct.is_err() || text == genuine, "a token that is not the genuine one verified");
        let cached = cache.verify(verifier, text, *now);
        assert_eq!(direct.is_ok(), cached.is_ok(), "the cache and the verifier disagree");
        let _ = infergate_gate::token::looks_like_token(text);
        let _ = infergate_token::unverified_issuer(text);
        let external = infergate_token::verify_external(text, issuer_keys, rules, *now);
        assert!(external.is_err() || text == genuine, "a token that is not the genuine one verified as external");
    }
    if let [lo, hi, byte, ..] = *data {
        let mut edited = genuine.clone().into_bytes();
        let at = usize::from(u16::from_le_bytes([lo, hi])) % edited.len();
        edited[at] = byte;
        if let Ok(edited) = String::from_utf8(edited) {
            let verified = cache.verify(verifier, &edited, *now);
            assert!(verified.is_err() || &edited == genuine, "an edited token verified");
        }
    }
}
