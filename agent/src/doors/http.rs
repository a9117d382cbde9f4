//! The HTTP door: OpenAI-compatible `POST /v1/audio/transcriptions`, `GET /v1/models`, `POST /v1/tickets`, and
//! the built-in models' endpoints. It reads the body (multipart or JSON) within the size and time limits and
//! hands the request to [`crate::oneshot`]. Every response carries `x-request-id`; every refusal is
//! `{"error":{"code","message","retry_after_seconds"?}}` with the status from `infergate_gate::refusal` and,
//! for limits, a `Retry-After` header ([`edge::http_refusal`]).
//!
//! ```text
//!  headers ─▶ edge::authenticate (before the body: a refused caller costs no upload)
//!  body    ─▶ read_upload / read_builtin_json (within body timeout, max upload) ─▶ oneshot::run ─▶ response
//! ```
//!
//! Built-in endpoints (scope features `embed`, `verify`, `vad`; same admission, pre-charge and settlement with
//! the measured compute time as transcription). Audio is multipart `file` (16 kHz 16-bit PCM WAV, or raw
//! 16 kHz mono PCM16 with a `.pcm` name) plus `model`; other fields are form fields holding JSON text, or the
//! whole request may be a JSON object when no audio is sent:
//!
//! | endpoint                     | input                                              | answer                                                     |
//! |------------------------------|----------------------------------------------------|------------------------------------------------------------|
//! | `POST /v1/audio/embeddings`  | `file`, `model`                                    | `{"model","embedding":[256],"audio_seconds","speech_seconds"?}` |
//! | `POST /v1/audio/verify`      | `file` or `embedding` (256), `reference_embedding` (256), `model` | `{"model","similarity","threshold","match"}`  |
//! | `POST /v1/audio/vad`         | `file`, `model`                                    | `{"model","segments":[{"start","end"}],"speech_seconds","audio_seconds"}` |
//!
//! `threshold` is the endpoint's `verifyThreshold` (default 0.75). A client-computed `embedding` replaces the
//! audio only when the key's policy has `allowClientEmbeddings` (else 403 `client_embedding_not_allowed`);
//! an embedding of the wrong length is 400. A wrong sample rate is 400 with the `sox` command that fixes it.
//! `speech_seconds` on embeddings: the speech VAD kept (silence is trimmed before embedding when VAD weights
//! are loaded). Nothing biometric is stored or logged.
//!
//! Degradation: when the endpoint's bucket cannot pay for the caller's tier and the endpoint names a
//! `fallback`, the request is served (and charged) there and the response carries
//! `x-infergate-fallback: <namespace/name>`; without one (or with both saturated) the usual 429 + `Retry-After`.
use super::edge;
use crate::gateway::Gateway;
use crate::oneshot::{self, OneShot, Served};
use crate::outcome::{Door, RequestOutcome};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use infergate_crds::endpoint::Feature;
use infergate_gate::admission::Identity;
use infergate_gate::refusal::{Refusal, RefusalCode};
use std::sync::Arc;

/// The HTTP door's routes. The WebSocket upgrade at `/v1/stream` shares the listener; its handler is the
/// WebSocket door's.
pub fn router(gateway: Arc<Gateway>, stream: axum::routing::MethodRouter<Arc<Gateway>>) -> Router {
    let upload_limit = gateway.settings.max_upload_bytes + 64 * 1024;
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .route("/v1/audio/embeddings", post(embeddings))
        .route("/v1/audio/verify", post(verify))
        .route("/v1/audio/vad", post(vad))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/tickets", post(tickets))
        .route("/v1/stream", stream)
        .route("/healthz", get(|| async { healthz() }))
        // Anything else gets the same JSON error (with x-request-id) as every refusal, not the framework's text.
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(upload_limit))
        .with_state(gateway)
}

/// The requests answered on the spot from their head (see `listener::Immediate`): `GET /healthz` and
/// `GET /v1/models`, the routes load balancers and clients poll. The router above serves the same routes through
/// the same functions for what this leaves to it (`HEAD`).
pub fn immediate(gateway: Arc<Gateway>) -> super::listener::Immediate {
    Arc::new(move |head| {
        if head.method != axum::http::Method::GET {
            return None;
        }
        match head.uri.path() {
            "/healthz" => Some(healthz()),
            "/v1/models" => Some(model_list(&gateway, head.headers, head.client_cert.cloned())),
            _ => None,
        }
    })
}

/// Liveness on the traffic port, for load balancers that can only probe it: no key, no record, no body beyond
/// `ok` (readiness and everything else stay on the admin listener).
fn healthz() -> Response {
    "ok\n".into_response()
}

async fn unknown_route(State(gateway): State<Arc<Gateway>>, uri: axum::http::Uri) -> Response {
    let mut outcome = gateway.begin(Door::Http, "unmatched", None);
    let refusal = Refusal::new(
        RefusalCode::NotFound,
        format!(
            "no route {}; the API is POST /v1/audio/transcriptions, GET /v1/models, POST /v1/tickets and the /v1/stream WebSocket",
            truncated_path(uri.path())
        ),
    );
    outcome.refused(&refusal);
    edge::http_refusal(&refusal, &outcome.request_id)
}

async fn wrong_method(
    State(gateway): State<Arc<Gateway>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let mut outcome = gateway.begin(Door::Http, "unmatched", None);
    let refusal = Refusal::new(
        RefusalCode::MethodNotAllowed,
        format!(
            "{} is not served on {}; see the route's documentation for its method",
            method,
            truncated_path(uri.path())
        ),
    );
    outcome.refused(&refusal);
    edge::http_refusal(&refusal, &outcome.request_id)
}

/// A client's path in a message, bounded (it is echoed back, never logged).
fn truncated_path(path: &str) -> String {
    let mut p: String = path.chars().filter(|c| !c.is_control()).take(120).collect();
    if path.len() > p.len() {
        p.push('…');
    }
    p
}

struct Upload {
    model: Option<String>,
    file: Option<(Bytes, String, String)>,
    fields: Vec<(String, String)>,
}

/// Fields the agent passes through to the backend as they are. `model` is replaced.
const PASSTHROUGH_FIELDS: &[&str] = &[
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "include[]",
    "chunking_strategy",
    // Server-sent events from built-in whisper endpoints; an upstream endpoint refuses it with the alternative.
    "stream",
    // infergate's own: more redaction than the endpoint and key give (never forwarded upstream).
    crate::redaction::FIELD_REDACT,
    crate::redaction::FIELD_STYLE,
    crate::redaction::FIELD_AUDIO,
];

async fn read_upload(mut multipart: Multipart, max_bytes: usize, accepted: &[&str]) -> Result<Upload, Refusal> {
    let mut upload = Upload { model: None, file: None, fields: Vec::new() };
    let multipart_err = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                RefusalCode::AudioTooLong,
                format!("upload exceeds the agent's maximum of {max_bytes} bytes; split the audio"),
            )
        } else {
            Refusal::bad_request(format!(
                "malformed multipart body ({}); send multipart/form-data with `file` and `model`",
                e.body_text()
            ))
        }
    };
    while let Some(field) = multipart.next_field().await.map_err(multipart_err)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                let filename = field.file_name().unwrap_or("audio").to_string();
                let content_type = field.content_type().unwrap_or("application/octet-stream").to_string();
                let bytes = field.bytes().await.map_err(multipart_err)?;
                if bytes.len() > max_bytes {
                    return Err(Refusal::new(
                        RefusalCode::AudioTooLong,
                        format!(
                            "upload of {} bytes exceeds the agent's maximum of {max_bytes} bytes; split the audio",
                            bytes.len()
                        ),
                    ));
                }
                upload.file = Some((bytes, filename, content_type));
            }
            "model" => upload.model = Some(field.text().await.map_err(multipart_err)?),
            other if accepted.contains(&other) => {
                let v = field.text().await.map_err(multipart_err)?;
                upload.fields.push((name, v));
            }
            _ => {
                // Unknown fields are ignored, as the OpenAI API does for forward compatibility.
                let _ = field.bytes().await.map_err(multipart_err)?;
            }
        }
    }
    Ok(upload)
}

async fn transcriptions(
    State(gateway): State<Arc<Gateway>>,
    client_cert: edge::ClientCertExt,
    request: axum::extract::Request,
) -> Response {
    let headers = request.headers().clone();
    let mut outcome = gateway.begin(Door::Http, "/v1/audio/transcriptions", edge::traceparent(&headers));
    edge::attach_client_cert(&mut outcome, client_cert);
    let result = transcribe(&gateway, &headers, request, &mut outcome, false).await;
    edge::http_finish(result, &outcome.request_id)
}

/// OpenAI's `/v1/audio/translations`: speech in any language to English text (multilingual models).
async fn translations(
    State(gateway): State<Arc<Gateway>>,
    client_cert: edge::ClientCertExt,
    request: axum::extract::Request,
) -> Response {
    let headers = request.headers().clone();
    let mut outcome = gateway.begin(Door::Http, "/v1/audio/translations", edge::traceparent(&headers));
    edge::attach_client_cert(&mut outcome, client_cert);
    let result = transcribe(&gateway, &headers, request, &mut outcome, true).await;
    edge::http_finish(result, &outcome.request_id)
}

/// The multipart body of an upload, or a refusal that says what to send (the framework's own rejection is
/// plain text and would come before authentication).
async fn multipart_of(request: axum::extract::Request) -> Result<Multipart, Refusal> {
    use axum::extract::FromRequest;
    Multipart::from_request(request, &()).await.map_err(|_| {
        Refusal::bad_request(
            "the body must be multipart/form-data with a `file` part (the audio) and a `model` field, as the OpenAI API takes it",
        )
    })
}

async fn transcribe(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    request: axum::extract::Request,
    outcome: &mut RequestOutcome,
    translate: bool,
) -> Result<Response, Refusal> {
    // Authenticate before reading the body: a refused caller costs no upload.
    let identity = edge::authenticate(gateway, edge::header_key(headers).as_deref(), outcome)?;
    let multipart = multipart_of(request).await.inspect_err(|r| gateway.refused(r, outcome))?;
    let read = read_upload(multipart, gateway.settings.max_upload_bytes, PASSTHROUGH_FIELDS);
    let upload = edge::within_body_timeout(gateway.settings.body_timeout, read)
        .await
        .inspect_err(|r| gateway.refused(r, outcome))?;
    let model = upload
        .model
        .ok_or_else(|| Refusal::bad_request("missing form field `model`"))
        .inspect_err(|r| gateway.refused(r, outcome))?;
    let (bytes, filename, content_type) = upload
        .file
        .ok_or_else(|| Refusal::bad_request("missing form field `file` (the audio)"))
        .inspect_err(|r| gateway.refused(r, outcome))?;
    let mut fields = upload.fields;
    // The task comes from the route, never from a form field a client could set.
    fields.retain(|(name, _)| name != crate::transcriber::FIELD_TASK);
    if translate {
        fields.push((crate::transcriber::FIELD_TASK.to_string(), "translate".to_string()));
    }
    let request = OneShot {
        model: &model,
        feature: Feature::Transcribe,
        origin: edge::origin(headers),
        audio: bytes,
        filename,
        content_type,
        fields,
        without_audio: false,
    };
    let served = oneshot::run(gateway, identity, request, outcome).await?;
    let content_type = HeaderValue::from_str(&served.content_type).ok();
    let mut response = served_response(&served);
    if let Some(ct) = content_type {
        response.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    Ok(response)
}

/// 200 with the backend's body, the GPU-seconds charged, and the fallback that served it, if any.
fn served_response(served: &Served) -> Response {
    let mut response = (StatusCode::OK, served.body.clone()).into_response();
    response
        .headers_mut()
        .insert(edge::GPU_SECONDS_HEADER, HeaderValue::from_str(&format!("{:.6}", served.gpu_seconds)).expect("ascii"));
    if let Some(v) = served.fallback.as_deref().and_then(|f| HeaderValue::from_str(f).ok()) {
        response.headers_mut().insert(edge::FALLBACK_HEADER, v);
    }
    if let Some(v) =
        served.redactions.as_ref().and_then(|c| HeaderValue::from_str(&crate::redaction::header_value(c)).ok())
    {
        response.headers_mut().insert(REDACTIONS_HEADER, v);
    }
    response
}

/// Which entity types were redacted from the answer and how often: `CREDIT_CARD=1, PERSON=2`, or `none`.
pub const REDACTIONS_HEADER: &str = "x-infergate-redactions";

/// Takes the request whole: the `HeaderMap` extractor clones every header (allocations per request), and this
/// route needs only to read three of them.
async fn models(State(gateway): State<Arc<Gateway>>, request: axum::extract::Request) -> Response {
    let client_cert = edge::client_cert_of(request.extensions()).map(|axum::Extension(cert)| cert);
    model_list(&gateway, request.headers(), client_cert)
}

/// `GET /v1/models`: the models the key may use, in OpenAI's list shape.
fn model_list(
    gateway: &Gateway,
    headers: &HeaderMap,
    client_cert: Option<Arc<infergate_gate::admission::ClientCert>>,
) -> Response {
    let mut outcome = gateway.begin(Door::Http, "/v1/models", edge::traceparent(headers));
    outcome.client_cert = client_cert;
    let result = edge::authenticate(&gateway, edge::header_key(headers).as_deref(), &mut outcome).map(|identity| {
        let json = HeaderValue::from_static("application/json");
        ([(axum::http::header::CONTENT_TYPE, json)], model_list_body(gateway, &identity)).into_response()
    });
    edge::http_finish(result, &outcome.request_id)
}

/// The `GET /v1/models` body: per policy and snapshot from the gateway's memo; a session token's narrower scope
/// is rendered per request.
fn model_list_body(gateway: &Gateway, identity: &Identity) -> Bytes {
    let render = || {
        let models = oneshot::models(gateway, identity);
        let list = ModelList { object: "list", data: models.iter().map(ModelObject::from).collect() };
        Bytes::from(serde_json::to_vec(&list).expect("a model list serializes"))
    };
    if identity.token.is_some() {
        return render();
    }
    gateway.model_lists.get_or_compute(&gateway.snapshot(), &identity.policy, render)
}

/// OpenAI's model object plus infergate's `features` and `endpoint`, serialized straight from the entry: the
/// `json!` tree it replaced (a map per model, built, walked and freed per request) was about a tenth of the
/// route's CPU under load.
#[derive(serde::Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    features: &'a [&'static str],
    endpoint: &'a str,
}

impl<'a> From<&'a oneshot::ModelEntry> for ModelObject<'a> {
    fn from(m: &'a oneshot::ModelEntry) -> Self {
        ModelObject {
            id: &m.id,
            object: "model",
            created: 0,
            owned_by: "infergate",
            features: &m.features,
            endpoint: &m.endpoint,
        }
    }
}

#[derive(serde::Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

/// `GET /v1/models/{id}`: one model the key may use, in OpenAI's shape; 404 `unknown_model` otherwise (a model
/// the key may not use looks the same as one that does not exist).
async fn model(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    client_cert: edge::ClientCertExt,
    headers: HeaderMap,
) -> Response {
    let mut outcome = gateway.begin(Door::Http, "/v1/models/{id}", edge::traceparent(&headers));
    edge::attach_client_cert(&mut outcome, client_cert);
    let result = edge::authenticate(&gateway, edge::header_key(&headers).as_deref(), &mut outcome).and_then(|identity| {
        let found = oneshot::models(&gateway, &identity).into_iter().find(|m| m.id == id);
        match found {
            Some(m) => Ok(Json(ModelObject::from(&m)).into_response()),
            None => {
                let refusal = Refusal::new(
                    RefusalCode::UnknownModel,
                    format!("the model `{}` does not exist or this key may not use it; GET /v1/models lists the ones it may", truncated_path(&id)),
                );
                gateway.refused(&refusal, &mut outcome);
                Err(refusal)
            }
        }
    });
    edge::http_finish(result, &outcome.request_id)
}

async fn tickets(
    State(gateway): State<Arc<Gateway>>,
    client_cert: edge::ClientCertExt,
    headers: HeaderMap,
) -> Response {
    let mut outcome = gateway.begin(Door::Http, "/v1/tickets", edge::traceparent(&headers));
    edge::attach_client_cert(&mut outcome, client_cert);
    let result = edge::authenticate(&gateway, edge::header_key(&headers).as_deref(), &mut outcome).and_then(|identity| {
        let ticket = oneshot::issue_ticket(&gateway, &identity, edge::origin(&headers), &mut outcome)?;
        let body = serde_json::json!({"ticket": ticket, "expires_in_seconds": gateway.tickets.ttl().as_secs(), "key_id": identity.key.to_string()});
        let mut response = (StatusCode::CREATED, Json(body)).into_response();
        response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    });
    edge::http_finish(result, &outcome.request_id)
}

/// Form fields the built-in endpoints read besides `file` and `model`.
const BUILTIN_FIELDS: &[&str] = &[crate::builtin::FIELD_REFERENCE, crate::builtin::FIELD_EMBEDDING];

async fn embeddings(State(gateway): State<Arc<Gateway>>, request: axum::extract::Request) -> Response {
    builtin_feature(gateway, request, Feature::Embed).await
}

async fn verify(State(gateway): State<Arc<Gateway>>, request: axum::extract::Request) -> Response {
    builtin_feature(gateway, request, Feature::Verify).await
}

async fn vad(State(gateway): State<Arc<Gateway>>, request: axum::extract::Request) -> Response {
    builtin_feature(gateway, request, Feature::Vad).await
}

async fn builtin_feature(gateway: Arc<Gateway>, request: axum::extract::Request, feature: Feature) -> Response {
    let route = match feature {
        Feature::Embed => "/v1/audio/embeddings",
        Feature::Verify => "/v1/audio/verify",
        _ => "/v1/audio/vad",
    };
    let mut outcome = gateway.begin(Door::Http, route, edge::traceparent(request.headers()));
    outcome.client_cert = request.extensions().get::<Arc<infergate_gate::admission::ClientCert>>().cloned();
    let result = run_builtin(&gateway, request, feature, &mut outcome).await;
    edge::http_finish(result, &outcome.request_id)
}

/// Reads a built-in request (multipart with audio, or JSON without), checks its fields, then runs the
/// one-shot service.
async fn run_builtin(
    gateway: &Arc<Gateway>,
    request: axum::extract::Request,
    feature: Feature,
    outcome: &mut RequestOutcome,
) -> Result<Response, Refusal> {
    let headers = request.headers().clone();
    let identity = edge::authenticate(gateway, edge::header_key(&headers).as_deref(), outcome)?;
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
    let read = async {
        if is_json {
            read_builtin_json(request).await
        } else {
            let multipart = <Multipart as axum::extract::FromRequest<()>>::from_request(request, &()).await.map_err(|e| {
                Refusal::bad_request(format!(
                    "send multipart/form-data with `file` (16 kHz PCM16 WAV) and `model`, or a JSON object without audio ({})",
                    e.body_text()
                ))
            })?;
            read_upload(multipart, gateway.settings.max_upload_bytes, BUILTIN_FIELDS).await
        }
    };
    let upload = edge::within_body_timeout(gateway.settings.body_timeout, read)
        .await
        .inspect_err(|r| gateway.refused(r, outcome))?;
    oneshot::check_builtin_fields(&upload.fields, upload.file.is_some(), feature, &identity.policy)
        .inspect_err(|r| gateway.refused(r, outcome))?;
    let model = upload
        .model
        .ok_or_else(|| Refusal::bad_request("missing field `model`"))
        .inspect_err(|r| gateway.refused(r, outcome))?;
    let client_embedding = upload.fields.iter().any(|(n, _)| n == crate::builtin::FIELD_EMBEDDING);
    let (audio, filename, content_type) = match upload.file {
        Some(file) => file,
        None if client_embedding => (Bytes::new(), String::new(), String::new()),
        None => {
            let refusal = Refusal::bad_request("missing field `file` (the audio: 16 kHz 16-bit PCM WAV)");
            gateway.refused(&refusal, outcome);
            return Err(refusal);
        }
    };
    let without_audio = audio.is_empty() && client_embedding;
    let request = OneShot {
        model: &model,
        feature,
        origin: edge::origin(&headers),
        audio,
        filename,
        content_type,
        fields: upload.fields,
        without_audio,
    };
    let served = oneshot::run(gateway, identity, request, outcome).await?;
    let mut response = served_response(&served);
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Largest JSON body on the built-in routes: a 256-float embedding and a reference are a few KiB of JSON; the
/// upload limit is for audio, which JSON bodies do not carry.
const MAX_BUILTIN_JSON_BYTES: usize = 64 * 1024;

/// A JSON built-in request: `{"model", "embedding"?, "reference_embedding"?}`. Audio goes in multipart.
async fn read_builtin_json(request: axum::extract::Request) -> Result<Upload, Refusal> {
    let max_bytes = MAX_BUILTIN_JSON_BYTES;
    let too_large = || {
        Refusal::new(
            RefusalCode::BodyTooLarge,
            format!(
                "a JSON request body on this route may be at most {max_bytes} bytes; send audio as multipart/form-data"
            ),
        )
    };
    // Refused from the declared length, before a byte of the body is read or buffered.
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(request.into_body(), max_bytes).await.map_err(|_| too_large())?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Refusal::bad_request(format!("request body is not valid JSON ({e})")))?;
    let object = value.as_object().ok_or_else(|| Refusal::bad_request("request body must be a JSON object"))?;
    if object.contains_key("file") || object.contains_key("audio") {
        return Err(Refusal::bad_request(
            "audio cannot be sent in JSON; send multipart/form-data with the audio as `file`",
        ));
    }
    let mut upload = Upload { model: None, file: None, fields: Vec::new() };
    upload.model = match object.get("model") {
        None => None,
        Some(serde_json::Value::String(m)) => Some(m.clone()),
        Some(_) => return Err(Refusal::bad_request("`model` must be a string")),
    };
    for name in BUILTIN_FIELDS {
        if let Some(v) = object.get(*name) {
            upload.fields.push((name.to_string(), v.to_string()));
        }
    }
    Ok(upload)
}
