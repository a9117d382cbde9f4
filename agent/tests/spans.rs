//! One request through each door produces one span tree with the declared fields, joined to the client's W3C
//! `traceparent`, and the upstream receives a `traceparent` that continues it.
//!
//! ```text
//!  client (traceparent 00-<T>-<C>-01) ─▶ door ─▶ span `request` (trace T, parent C)
//!                                                   └─ span `backend` ─▶ upstream sees traceparent 00-<T>-<backend>-01
//! ```
//! The spans are read from OpenTelemetry's in-memory exporter behind the same `tracing-opentelemetry` layer that
//! OTLP export uses. One test function: the subscriber is process-global.
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use futures::{SinkExt as _, StreamExt as _};
use infergate_agent::backend::Backends;
use infergate_agent::gateway::{Gateway, Settings};
use infergate_crds::endpoint::Feature;
use infergate_gate::limiter::{InMemoryStore, Limiter};
use infergate_gate::snapshot::{Snapshot, SnapshotOptions};
use infergate_gate::testing::{key, mk_endpoint, mk_policy};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};
use tracing_subscriber::layer::SubscriberExt as _;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent(client_span: &str) -> String {
    format!("00-{CLIENT_TRACE}-{client_span}-01")
}

/// An OpenAI-compatible upstream that records the `traceparent` of every call.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(
                |State(seen): State<Arc<Mutex<Vec<String>>>>, headers: HeaderMap, _body: axum::body::Bytes| async move {
                    let value = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    seen.lock().unwrap().push(value);
                    axum::Json(serde_json::json!({"text": "fixture"}))
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    (serve(app).await, seen)
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn gateway(upstream: SocketAddr) -> Arc<Gateway> {
    let shards = vec![
        mk_endpoint("stt", "whisper-1").upstream(&format!("http://{upstream}/v1")).shard(),
        mk_policy("app").key(&key(1)).scope("stt", "whisper-1", &[Feature::Transcribe]).shard(),
    ];
    let (snapshot, warnings) = Snapshot::build(&shards, SnapshotOptions::default());
    assert_eq!(warnings, vec![]);
    let limiter = Arc::new(Limiter::new(Arc::new(InMemoryStore::default())));
    let gateway = Gateway::new(Settings::default(), limiter, Backends::new(HashMap::new()));
    gateway.apply(snapshot);
    gateway
}

fn wav(seconds: f64) -> Vec<u8> {
    let pcm = vec![0u8; (seconds * 32_000.0) as usize];
    let mut wav = infergate_gate::audio::wav_header(pcm.len() as u32).to_vec();
    wav.extend_from_slice(&pcm);
    wav
}

fn attribute(span: &SpanData, name: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == name).map(|kv| kv.value.as_str().into_owned())
}

/// The finished spans of the request whose `route` is `route`: the `request` span and its `backend` children.
fn tree(spans: &[SpanData], route: &str) -> (SpanData, Vec<SpanData>) {
    let root = spans
        .iter()
        .find(|s| s.name == "request" && attribute(s, "route").as_deref() == Some(route))
        .unwrap_or_else(|| {
            panic!("no request span for {route}: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>())
        })
        .clone();
    let children = spans
        .iter()
        .filter(|s| {
            s.parent_span_id == root.span_context.span_id() && s.span_context.trace_id() == root.span_context.trace_id()
        })
        .cloned()
        .collect();
    (root, children)
}

fn check_tree(spans: &[SpanData], route: &str, door: &str, client_span: &str, upstream_saw: &str) {
    let (root, children) = tree(spans, route);
    assert_eq!(
        root.span_context.trace_id(),
        TraceId::from_hex(CLIENT_TRACE).unwrap(),
        "{route}: joins the client trace"
    );
    assert_eq!(root.parent_span_id, SpanId::from_hex(client_span).unwrap(), "{route}: parent is the client span");
    assert_eq!(attribute(&root, "door").as_deref(), Some(door));
    assert_eq!(attribute(&root, "trace_id").as_deref(), Some(CLIENT_TRACE));
    assert!(attribute(&root, "request_id").is_some_and(|id| id.starts_with("req_")), "{route}: request_id");
    assert_eq!(attribute(&root, "key_id"), Some(key(1).id().to_string()), "{route}: key_id");
    assert_eq!(attribute(&root, "tier").as_deref(), Some("free"), "{route}: tier");
    assert_eq!(attribute(&root, "endpoint").as_deref(), Some("default/stt"), "{route}: endpoint");
    assert_eq!(attribute(&root, "outcome").as_deref(), Some("ok"), "{route}: outcome");
    let gpu_seconds: f64 = attribute(&root, "gpu_seconds").expect("gpu_seconds recorded").parse().unwrap();
    assert!(gpu_seconds > 0.0, "{route}: charged {gpu_seconds}");
    assert!(attribute(&root, "duration_ms").is_some(), "{route}: duration_ms");
    for span in std::iter::once(&root).chain(&children) {
        for kv in &span.attributes {
            let value = kv.value.as_str();
            assert!(!value.contains(key(1).expose()), "{route}: the key is in span field {}", kv.key);
        }
    }
    assert_eq!(children.len(), 1, "{route}: one backend span: {children:?}");
    let backend = &children[0];
    assert_eq!(backend.name, "backend");
    assert_eq!(attribute(backend, "kind").as_deref(), Some("upstream"));
    // The upstream continues the trace with the backend span as its parent.
    let expected = format!("00-{CLIENT_TRACE}-{}-01", backend.span_context.span_id());
    assert_eq!(upstream_saw, expected, "{route}: traceparent at the upstream");
}

#[test]
fn every_door_makes_one_span_tree_and_continues_the_trace_upstream() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber in this test binary");
    infergate_runtime::crypto::install_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (upstream, seen) = upstream().await;
        let gateway = gateway(upstream);
        let stream = axum::routing::get(infergate_agent::doors::ws::upgrade);
        let http = serve(infergate_agent::doors::http::router(Arc::clone(&gateway), stream)).await;
        let grpc = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let service = infergate_agent::doors::grpc::service(Arc::clone(&gateway));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            addr
        };
        let bearer = format!("Bearer {}", key(1).expose());

        // HTTP: the OpenAI-compatible upload.
        let form = reqwest::multipart::Form::new()
            .text("model", "whisper-1")
            .part("file", reqwest::multipart::Part::bytes(wav(1.0)).file_name("a.wav").mime_str("audio/wav").unwrap());
        let response = reqwest::Client::new()
            .post(format!("http://{http}/v1/audio/transcriptions"))
            .header("authorization", &bearer)
            .header("traceparent", traceparent("00f067aa0ba902b1"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

        // gRPC: the unary transcription.
        let mut client =
            infergate_agent::doors::grpc::pb::inference_client::InferenceClient::connect(format!("http://{grpc}"))
                .await
                .unwrap();
        let mut request = tonic::Request::new(infergate_agent::doors::grpc::pb::TranscribeRequest {
            model: "whisper-1".into(),
            audio: wav(1.0),
            filename: "a.wav".into(),
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", bearer.parse().unwrap());
        request.metadata_mut().insert("traceparent", traceparent("00f067aa0ba902b2").parse().unwrap());
        client.transcribe(request).await.expect("grpc transcribe");

        // WebSocket: a stream with one segment.
        let mut upgrade = format!("ws://{http}/v1/stream").into_client_request().unwrap();
        upgrade.headers_mut().insert("authorization", bearer.parse().unwrap());
        upgrade.headers_mut().insert("traceparent", traceparent("00f067aa0ba902b3").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(upgrade).await.unwrap();
        ws.send(Message::text(r#"{"type":"start","model":"whisper-1"}"#)).await.unwrap();
        let ready = ws.next().await.unwrap().unwrap();
        assert!(ready.to_text().unwrap().contains("\"ready\""), "{ready:?}");
        ws.send(Message::binary(vec![0u8; 32_000])).await.unwrap();
        ws.send(Message::text(r#"{"type":"end"}"#)).await.unwrap();
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) if text.contains("\"final\"") => break,
                Some(Ok(_)) => continue,
                other => panic!("stream ended before its final result: {other:?}"),
            }
        }
        let _ = ws.close(None).await;
        // The stream's record closes when its task ends, just after the final result.
        for _ in 0..100 {
            let done = exporter
                .get_finished_spans()
                .unwrap()
                .iter()
                .any(|s| s.name == "request" && attribute(s, "route").as_deref() == Some("/v1/stream"));
            if done {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        let spans = exporter.get_finished_spans().unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "one upstream call per door: {seen:?}");
        check_tree(&spans, "/v1/audio/transcriptions", "http", "00f067aa0ba902b1", &seen[0]);
        check_tree(&spans, "Inference/Transcribe", "grpc", "00f067aa0ba902b2", &seen[1]);
        check_tree(&spans, "/v1/stream", "websocket", "00f067aa0ba902b3", &seen[2]);
    });
}
