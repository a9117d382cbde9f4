//! The HTTP door: OpenAI-compatible `POST /v1/audio/transcriptions`, `GET /v1/models`, `POST /v1/tickets`, the
//! WebSocket upgrade at `/v1/stream` (see [`crate::ws`]), and the built-in models' JSON endpoints. Every
//! response carries `x-request-id`; every refusal is `{"error":{"code","message","retry_after_seconds"?}}` with
//! the status from [`crate::refusal`] and, for limits, a `Retry-After` header.
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
use crate::admission::{Identity, Request};
use crate::audio;
use crate::backend::{BackendRequest, Backends};
use crate::gateway::{Credential, Door, Gateway, RefusalContext};
use crate::limiter::Limiter;
use crate::refusal::{Refusal, RefusalCode};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use infergate_crds::endpoint::Feature;
use std::sync::Arc;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Set when a request was served by the endpoint's fallback because the endpoint was saturated.
pub const FALLBACK_HEADER: &str = "x-infergate-fallback";

pub fn router(gateway: Arc<Gateway>) -> Router {
    let upload_limit = gateway.settings.max_upload_bytes + 64 * 1024;
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/embeddings", post(embeddings))
        .route("/v1/audio/verify", post(verify))
        .route("/v1/audio/vad", post(vad))
        .route("/v1/models", get(models))
        .route("/v1/tickets", post(tickets))
        .route("/v1/stream", get(crate::ws::upgrade))
        .layer(DefaultBodyLimit::max(upload_limit))
        .with_state(gateway)
}

/// The key from `Authorization: Bearer <key>` or `x-api-key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim());
        }
        return Some(value);
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

pub fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// A refusal as an HTTP response.
pub fn refusal_response(refusal: &Refusal, request_id: &str) -> Response {
    let status = StatusCode::from_u16(refusal.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(refusal.to_json())).into_response();
    let headers = response.headers_mut();
    if let Some(secs) = refusal.retry_after_header() {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if refusal.code.http_status() == 401 {
        headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"infergate\""));
    }
    set_request_id(&mut response, request_id);
    response
}

fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
}

/// Authenticates from headers, recording a refusal.
fn authenticate_headers(
    gateway: &Gateway,
    headers: &HeaderMap,
    door: Door,
    request_id: &str,
) -> Result<Identity, Refusal> {
    match presented_key(headers) {
        None => {
            let refusal = Refusal::missing_key();
            gateway.refused(&refusal, &RefusalContext::new(door, request_id));
            Err(refusal)
        }
        Some(key) => gateway.authenticate_recorded(&Credential::Key(key), door, request_id),
    }
}

struct Upload {
    model: Option<String>,
    file: Option<(Bytes, String, String)>,
    fields: Vec<(String, String)>,
}

/// Fields the agent passes through to the backend as they are. `model` is replaced; `stream` is not supported.
const PASSTHROUGH_FIELDS: &[&str] = &[
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "include[]",
    "chunking_strategy",
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
            "stream" => {
                let v = field.text().await.map_err(multipart_err)?;
                if v == "true" {
                    return Err(Refusal::bad_request(
                        "stream=true is not supported on this endpoint; use the WebSocket or gRPC stream",
                    ));
                }
            }
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

async fn transcriptions(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, multipart: Multipart) -> Response {
    let request_id = crate::gateway::request_id();
    finish(transcribe(&gateway, &headers, multipart, &request_id).await, &request_id)
}

/// Every one-shot response, success or refusal, carries the correlation id the client can quote.
fn finish(result: Result<Response, Refusal>, request_id: &str) -> Response {
    match result {
        Ok(mut response) => {
            set_request_id(&mut response, &request_id);
            response
        }
        Err(refusal) => refusal_response(&refusal, &request_id),
    }
}

/// The one-shot path shared by the HTTP door; the gRPC unary call mirrors it.
async fn transcribe(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    multipart: Multipart,
    request_id: &str,
) -> Result<Response, Refusal> {
    // Authenticate before reading the body: a refused caller costs no upload.
    let identity = authenticate_headers(gateway, headers, Door::Http, request_id)?;
    let ctx = || RefusalContext::new(Door::Http, request_id).identity(&identity);
    let upload = match tokio::time::timeout(
        gateway.settings.body_timeout,
        read_upload(multipart, gateway.settings.max_upload_bytes, PASSTHROUGH_FIELDS),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(Refusal::new(
            RefusalCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s; check the connection and retry",
                gateway.settings.body_timeout.as_secs()
            ),
        )),
    }
    .inspect_err(|r| gateway.refused(r, &ctx()))?;
    let model = upload
        .model
        .ok_or_else(|| Refusal::bad_request("missing form field `model`"))
        .inspect_err(|r| gateway.refused(r, &ctx()))?;
    let (bytes, filename, content_type) = upload
        .file
        .ok_or_else(|| Refusal::bad_request("missing form field `file` (the audio)"))
        .inspect_err(|r| gateway.refused(r, &ctx()))?;
    let outcome = run_one_shot(
        gateway,
        identity.clone(),
        OneShot {
            model: &model,
            feature: Feature::Transcribe,
            origin: origin(headers),
            audio: bytes,
            filename,
            content_type,
            fields: upload.fields,
            without_audio: false,
        },
        Door::Http,
        request_id,
    )
    .await?;
    let mut response = (StatusCode::OK, outcome.body.clone()).into_response();
    if let Ok(ct) = HeaderValue::from_str(&outcome.content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    outcome_headers(&mut response, &outcome);
    Ok(response)
}

fn outcome_headers(response: &mut Response, outcome: &OneShotOutcome) {
    response.headers_mut().insert(
        "x-infergate-gpu-seconds",
        HeaderValue::from_str(&format!("{:.6}", outcome.gpu_seconds)).expect("ascii"),
    );
    if let Some(v) = outcome.fallback.as_deref().and_then(|f| HeaderValue::from_str(f).ok()) {
        response.headers_mut().insert(FALLBACK_HEADER, v);
    }
}

/// A one-shot request after the body has been read.
pub struct OneShot<'a> {
    pub model: &'a str,
    pub feature: Feature,
    pub origin: Option<&'a str>,
    pub audio: Bytes,
    pub filename: String,
    pub content_type: String,
    pub fields: Vec<(String, String)>,
    /// A `verify` with a client-computed embedding: no audio to size or check, charged the endpoint's minimum.
    pub without_audio: bool,
}

pub struct OneShotOutcome {
    pub body: Bytes,
    pub content_type: String,
    pub text: Option<String>,
    pub audio_seconds: f64,
    pub gpu_seconds: f64,
    /// `namespace/name` of the fallback endpoint that served the request, when the endpoint was saturated.
    pub fallback: Option<String>,
}

/// Scope, audio checks, pre-charge (queued), backend call, settlement. Records every refusal once.
pub async fn run_one_shot(
    gateway: &Arc<Gateway>,
    identity: Identity,
    req: OneShot<'_>,
    door: Door,
    request_id: &str,
) -> Result<OneShotOutcome, Refusal> {
    let snapshot = gateway.snapshot();
    let request = Request { model: req.model, feature: req.feature, origin: req.origin };
    let grant = gateway
        .authorize(&snapshot, identity.clone(), &request)
        .inspect_err(|r| gateway.refused(r, &RefusalContext::new(door, request_id).identity(&identity)))?;
    let refused = |r: Refusal| {
        gateway.refused(&r, &RefusalContext::new(door, request_id).grant(&grant));
        r
    };
    let limits = &grant.endpoint.shard.limits;
    let info = if req.without_audio {
        audio::AudioInfo { codec: infergate_crds::endpoint::Codec::Pcm16, seconds: 0.0, exact: true }
    } else {
        let info = audio::inspect(&req.audio, &req.filename).map_err(refused)?;
        audio::check_codec(&info, &limits.codecs).map_err(refused)?;
        info
    };
    if info.seconds > limits.max_audio_seconds {
        return Err(refused(Refusal::new(
            RefusalCode::AudioTooLong,
            format!(
                "audio of {:.1} s exceeds the endpoint's maximum of {} s; split it",
                info.seconds, limits.max_audio_seconds
            ),
        )));
    }
    let estimate = Limiter::estimate(&grant, info.seconds);
    let queued_at = std::time::Instant::now();
    let (grant, charge, fallback) = match gateway.limiter.try_charge(&grant, estimate) {
        Ok(charge) => (grant, charge, None),
        Err(saturated) if saturated.code == RefusalCode::RateLimited => {
            match fallback_charge(gateway, &snapshot, &grant, info.seconds) {
                Some((served, charge)) => {
                    let label = served.endpoint.shard.endpoint.to_string();
                    (served, charge, Some(label))
                }
                // No fallback, or it cannot pay either: wait in the primary's queue, or get the 429.
                None => {
                    let charge = gateway.limiter.charge(&grant, estimate).await.map_err(refused)?;
                    (grant, charge, None)
                }
            }
        }
        Err(other) => return Err(refused(other)),
    };
    let backend = match gateway.backends.for_endpoint(&grant.endpoint.shard) {
        Ok(backend) => backend,
        Err(refusal) => {
            gateway.limiter.refund(charge);
            gateway.refused(&refusal, &RefusalContext::new(door, request_id).grant(&grant));
            return Err(refusal);
        }
    };
    gateway.metrics.queue_wait.observe(queued_at.elapsed().as_secs_f64());
    gateway.admitted(&grant);
    let mut fields = req.fields;
    if req.feature == Feature::Verify {
        let threshold = grant.endpoint.shard.verify_threshold.unwrap_or(crate::builtin::DEFAULT_VERIFY_THRESHOLD);
        fields.retain(|(n, _)| n != crate::builtin::FIELD_THRESHOLD);
        fields.push((crate::builtin::FIELD_THRESHOLD.to_string(), threshold.to_string()));
    }
    let call = BackendRequest {
        feature: req.feature,
        model: Backends::backend_model(&grant.endpoint.shard),
        audio: req.audio,
        filename: req.filename,
        content_type: req.content_type,
        fields,
        request_id: request_id.to_string(),
    };
    let timer = std::time::Instant::now();
    let result = backend.call(call).await;
    gateway.metrics.backend_seconds.observe(timer.elapsed().as_secs_f64());
    match result {
        Ok(response) => {
            let charged = gateway.limiter.settle(charge, response.measured_gpu_seconds);
            if charged < charge.gpu_seconds {
                gateway.metrics.refunded_gpu_seconds.inc_by(charge.gpu_seconds - charged);
            }
            gateway.charged(&grant, charged);
            Ok(OneShotOutcome {
                body: response.body,
                content_type: response.content_type,
                text: response.text,
                audio_seconds: info.seconds,
                gpu_seconds: charged,
                fallback,
            })
        }
        Err(err) => {
            // No result, no charge: the backend failed before producing anything the client can use.
            gateway.limiter.refund(charge);
            let refusal = err.to_refusal();
            gateway.metrics.refused(refusal.code.as_str(), grant.tier(), &grant.endpoint.label);
            Err(refusal)
        }
    }
}

/// Degradation: the primary endpoint cannot pay for this tier right now. When it names a fallback that offers
/// the feature and whose bucket (same key, same tier) can pay, the request moves there and is charged there.
/// The caller's scope is not re-checked on the fallback: the endpoint's owner chose it as this endpoint's
/// overflow, and the key still pays from its own bucket on it.
fn fallback_charge(
    gateway: &Gateway,
    snapshot: &crate::snapshot::Snapshot,
    grant: &crate::admission::Grant,
    audio_seconds: f64,
) -> Option<(crate::admission::Grant, crate::limiter::Charge)> {
    let found = grant
        .endpoint
        .shard
        .fallback
        .as_ref()
        .and_then(|name| snapshot.endpoints().iter().find(|e| e.shard.endpoint == *name));
    let mut taken = None;
    let route = infergate_gpu::route(true, found, |endpoint| {
        if !endpoint.features.contains(grant.feature) {
            return true;
        }
        let candidate = crate::admission::Grant {
            identity: grant.identity.clone(),
            endpoint: Arc::clone(endpoint),
            feature: grant.feature,
            limits: snapshot.limits(&grant.identity.policy, endpoint),
        };
        match gateway.limiter.try_charge(&candidate, Limiter::estimate(&candidate, audio_seconds)) {
            Ok(charge) => {
                taken = Some((candidate, charge));
                false
            }
            Err(_) => true,
        }
    });
    match route {
        infergate_gpu::Route::Fallback(_) => taken,
        infergate_gpu::Route::Primary | infergate_gpu::Route::Refuse(_) => None,
    }
}

/// The models (and features) the presented key may use.
pub fn models_for(gateway: &Gateway, identity: &Identity) -> Vec<(String, Vec<&'static str>, String)> {
    let snapshot = gateway.snapshot();
    identity
        .policy
        .scopes
        .iter()
        .filter_map(|(index, features)| {
            let endpoint = snapshot.endpoints().get(*index as usize)?;
            let allowed: Vec<_> =
                endpoint.features.iter().filter(|f| features.contains(*f)).map(Feature::as_str).collect();
            Some((endpoint.shard.model.clone(), allowed, endpoint.label.clone()))
        })
        .collect()
}

async fn models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let request_id = crate::gateway::request_id();
    let identity = match authenticate_headers(&gateway, &headers, Door::Http, &request_id) {
        Ok(i) => i,
        Err(refusal) => return refusal_response(&refusal, &request_id),
    };
    let data: Vec<_> = models_for(&gateway, &identity)
        .into_iter()
        .map(|(id, features, endpoint)| {
            serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "infergate", "features": features, "endpoint": endpoint})
        })
        .collect();
    let mut response = Json(serde_json::json!({"object": "list", "data": data})).into_response();
    set_request_id(&mut response, &request_id);
    response
}

async fn tickets(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let request_id = crate::gateway::request_id();
    let identity = match authenticate_headers(&gateway, &headers, Door::Http, &request_id) {
        Ok(i) => i,
        Err(refusal) => return refusal_response(&refusal, &request_id),
    };
    // A browser page that may not use this key must not be able to mint tickets for it either.
    if let Some(o) = origin(&headers)
        && !identity.policy.origin_allowed(o)
    {
        let refusal = Refusal::new(
            RefusalCode::OriginNotAllowed,
            format!(
                "browser Origin is not allowed for this key; add it to policy {} spec.allowedOrigins",
                identity.policy.name
            ),
        );
        gateway.refused(&refusal, &RefusalContext::new(Door::Http, &request_id).identity(&identity));
        return refusal_response(&refusal, &request_id);
    }
    match gateway.tickets.issue(&identity) {
        Ok(ticket) => {
            let mut response = (
                StatusCode::CREATED,
                Json(serde_json::json!({"ticket": ticket, "expires_in_seconds": gateway.tickets.ttl().as_secs(), "key_id": identity.key.to_string()})),
            )
                .into_response();
            response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            set_request_id(&mut response, &request_id);
            response
        }
        Err(refusal) => refusal_response(&refusal, &request_id),
    }
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
    let request_id = crate::gateway::request_id();
    finish(run_builtin(&gateway, request, feature, &request_id).await, &request_id)
}

/// Reads a built-in request (multipart with audio, or JSON without), checks the client-embedding switch and
/// the embeddings' shape, then runs the shared one-shot path.
async fn run_builtin(
    gateway: &Arc<Gateway>,
    request: axum::extract::Request,
    feature: Feature,
    request_id: &str,
) -> Result<Response, Refusal> {
    let headers = request.headers().clone();
    let identity = authenticate_headers(gateway, &headers, Door::Http, request_id)?;
    let ctx = || RefusalContext::new(Door::Http, request_id).identity(&identity);
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
    let read = async {
        if is_json {
            read_builtin_json(request, gateway.settings.max_upload_bytes).await
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
    let upload = match tokio::time::timeout(gateway.settings.body_timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(Refusal::new(
            RefusalCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s; check the connection and retry",
                gateway.settings.body_timeout.as_secs()
            ),
        )),
    }
    .inspect_err(|r| gateway.refused(r, &ctx()))?;
    let checked = check_builtin_fields(
        &upload,
        feature,
        identity.policy.allow_client_embeddings,
        &identity.policy.name.to_string(),
    );
    checked.clone().inspect_err(|r| gateway.refused(r, &ctx()))?;
    let model = upload
        .model
        .ok_or_else(|| Refusal::bad_request("missing field `model`"))
        .inspect_err(|r| gateway.refused(r, &ctx()))?;
    let client_embedding = upload.fields.iter().any(|(n, _)| n == crate::builtin::FIELD_EMBEDDING);
    let (audio, filename, content_type) = match upload.file {
        Some(file) => file,
        None if client_embedding => (Bytes::new(), String::new(), String::new()),
        None => {
            let refusal = Refusal::bad_request("missing field `file` (the audio: 16 kHz 16-bit PCM WAV)");
            gateway.refused(&refusal, &ctx());
            return Err(refusal);
        }
    };
    let without_audio = audio.is_empty() && client_embedding;
    let outcome = run_one_shot(
        gateway,
        identity.clone(),
        OneShot {
            model: &model,
            feature,
            origin: origin(&headers),
            audio,
            filename,
            content_type,
            fields: upload.fields,
            without_audio,
        },
        Door::Http,
        request_id,
    )
    .await?;
    let mut response = (StatusCode::OK, outcome.body.clone()).into_response();
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    outcome_headers(&mut response, &outcome);
    Ok(response)
}

/// Shape checks that need no model: which fields a feature takes, embedding lengths, the policy switch.
fn check_builtin_fields(
    upload: &Upload,
    feature: Feature,
    allow_client_embeddings: bool,
    policy: &str,
) -> Result<(), Refusal> {
    let field = |name: &str| upload.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let embedding = field(crate::builtin::FIELD_EMBEDDING);
    if embedding.is_some() {
        if feature != Feature::Verify {
            return Err(Refusal::bad_request(
                "`embedding` is accepted only by /v1/audio/verify, in place of the audio",
            ));
        }
        if !allow_client_embeddings {
            return Err(Refusal::new(
                RefusalCode::ClientEmbeddingNotAllowed,
                format!(
                    "policy {policy} does not accept client-computed embeddings; send the audio as `file`, or set allowClientEmbeddings: true on the policy"
                ),
            ));
        }
        if upload.file.is_some() {
            return Err(Refusal::bad_request("send either `file` or `embedding`, not both"));
        }
    }
    for name in [crate::builtin::FIELD_EMBEDDING, crate::builtin::FIELD_REFERENCE] {
        crate::builtin::parse_embedding(field(name), name).map_err(|e| e.to_refusal())?;
    }
    if feature == Feature::Verify && field(crate::builtin::FIELD_REFERENCE).is_none() {
        return Err(Refusal::bad_request("missing `reference_embedding`: the 256-float embedding to verify against"));
    }
    Ok(())
}

/// A JSON built-in request: `{"model", "embedding"?, "reference_embedding"?}`. Audio goes in multipart.
async fn read_builtin_json(request: axum::extract::Request, max_bytes: usize) -> Result<Upload, Refusal> {
    let body = axum::body::to_bytes(request.into_body(), max_bytes).await.map_err(|_| {
        Refusal::new(
            RefusalCode::AudioTooLong,
            format!("request body exceeds the agent's maximum of {max_bytes} bytes"),
        )
    })?;
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
