//! The HTTP door: OpenAI-compatible `POST /v1/audio/transcriptions`, `GET /v1/models`, `POST /v1/tickets`, and
//! the WebSocket upgrade at `/v1/stream` (see [`crate::ws`]). Every response carries `x-request-id`; every
//! refusal is `{"error":{"code","message","retry_after_seconds"?}}` with the status from [`crate::refusal`]
//! and, for limits, a `Retry-After` header.
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

pub fn router(gateway: Arc<Gateway>) -> Router {
    let upload_limit = gateway.settings.max_upload_bytes + 64 * 1024;
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
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
fn authenticate_headers(gateway: &Gateway, headers: &HeaderMap, door: Door, request_id: &str) -> Result<Identity, Refusal> {
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
const PASSTHROUGH_FIELDS: &[&str] =
    &["language", "prompt", "response_format", "temperature", "timestamp_granularities[]", "include[]", "chunking_strategy"];

async fn read_upload(mut multipart: Multipart, max_bytes: usize) -> Result<Upload, Refusal> {
    let mut upload = Upload { model: None, file: None, fields: Vec::new() };
    let multipart_err = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(RefusalCode::AudioTooLong, format!("upload exceeds the agent's maximum of {max_bytes} bytes; split the audio"))
        } else {
            Refusal::bad_request(format!("malformed multipart body ({}); send multipart/form-data with `file` and `model`", e.body_text()))
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
                        format!("upload of {} bytes exceeds the agent's maximum of {max_bytes} bytes; split the audio", bytes.len()),
                    ));
                }
                upload.file = Some((bytes, filename, content_type));
            }
            "model" => upload.model = Some(field.text().await.map_err(multipart_err)?),
            "stream" => {
                let v = field.text().await.map_err(multipart_err)?;
                if v == "true" {
                    return Err(Refusal::bad_request("stream=true is not supported on this endpoint; use the WebSocket or gRPC stream"));
                }
            }
            other if PASSTHROUGH_FIELDS.contains(&other) => {
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
    match transcribe(&gateway, &headers, multipart, &request_id).await {
        Ok(mut response) => {
            set_request_id(&mut response, &request_id);
            response
        }
        Err(refusal) => refusal_response(&refusal, &request_id),
    }
}

/// The one-shot path shared by the HTTP door; the gRPC unary call mirrors it.
async fn transcribe(gateway: &Arc<Gateway>, headers: &HeaderMap, multipart: Multipart, request_id: &str) -> Result<Response, Refusal> {
    // Authenticate before reading the body: a refused caller costs no upload.
    let identity = authenticate_headers(gateway, headers, Door::Http, request_id)?;
    let ctx = || RefusalContext::new(Door::Http, request_id).identity(&identity);
    let upload = match tokio::time::timeout(gateway.settings.body_timeout, read_upload(multipart, gateway.settings.max_upload_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(Refusal::new(
            RefusalCode::RequestTimeout,
            format!("the request body did not arrive within {} s; check the connection and retry", gateway.settings.body_timeout.as_secs()),
        )),
    }
    .inspect_err(|r| gateway.refused(r, &ctx()))?;
    let model = upload.model.ok_or_else(|| Refusal::bad_request("missing form field `model`")).inspect_err(|r| gateway.refused(r, &ctx()))?;
    let (bytes, filename, content_type) = upload
        .file
        .ok_or_else(|| Refusal::bad_request("missing form field `file` (the audio)"))
        .inspect_err(|r| gateway.refused(r, &ctx()))?;
    let outcome = run_one_shot(
        gateway,
        identity.clone(),
        OneShot { model: &model, origin: origin(headers), audio: bytes, filename, content_type, fields: upload.fields },
        Door::Http,
        request_id,
    )
    .await?;
    let mut response = (StatusCode::OK, outcome.body).into_response();
    if let Ok(ct) = HeaderValue::from_str(&outcome.content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    response.headers_mut().insert("x-infergate-gpu-seconds", HeaderValue::from_str(&format!("{:.6}", outcome.gpu_seconds)).expect("ascii"));
    Ok(response)
}

/// A one-shot request after the body has been read.
pub struct OneShot<'a> {
    pub model: &'a str,
    pub origin: Option<&'a str>,
    pub audio: Bytes,
    pub filename: String,
    pub content_type: String,
    pub fields: Vec<(String, String)>,
}

pub struct OneShotOutcome {
    pub body: Bytes,
    pub content_type: String,
    pub text: Option<String>,
    pub audio_seconds: f64,
    pub gpu_seconds: f64,
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
    let request = Request { model: req.model, feature: Feature::Transcribe, origin: req.origin };
    let grant = gateway
        .authorize(&snapshot, identity.clone(), &request)
        .inspect_err(|r| gateway.refused(r, &RefusalContext::new(door, request_id).identity(&identity)))?;
    let refused = |r: Refusal| {
        gateway.refused(&r, &RefusalContext::new(door, request_id).grant(&grant));
        r
    };
    let info = audio::inspect(&req.audio, &req.filename).map_err(refused)?;
    let limits = &grant.endpoint.shard.limits;
    audio::check_codec(&info, &limits.codecs).map_err(refused)?;
    if info.seconds > limits.max_audio_seconds {
        return Err(refused(Refusal::new(
            RefusalCode::AudioTooLong,
            format!("audio of {:.1} s exceeds the endpoint's maximum of {} s; split it", info.seconds, limits.max_audio_seconds),
        )));
    }
    let backend = gateway.backends.for_endpoint(&grant.endpoint.shard).map_err(refused)?;
    let estimate = Limiter::estimate(&grant, info.seconds);
    let queued_at = std::time::Instant::now();
    let charge = gateway.limiter.charge(&grant, estimate).await.map_err(refused)?;
    gateway.metrics.queue_wait.observe(queued_at.elapsed().as_secs_f64());
    gateway.admitted(&grant);
    let call = BackendRequest {
        feature: Feature::Transcribe,
        model: Backends::backend_model(&grant.endpoint.shard),
        audio: req.audio,
        filename: req.filename,
        content_type: req.content_type,
        fields: req.fields,
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

/// The models (and features) the presented key may use.
pub fn models_for(gateway: &Gateway, identity: &Identity) -> Vec<(String, Vec<&'static str>, String)> {
    let snapshot = gateway.snapshot();
    identity
        .policy
        .scopes
        .iter()
        .filter_map(|(index, features)| {
            let endpoint = snapshot.endpoints().get(*index as usize)?;
            let allowed: Vec<_> = endpoint
                .features
                .iter()
                .filter(|f| features.contains(*f))
                .map(Feature::as_str)
                .collect();
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
            format!("browser Origin is not allowed for this key; add it to policy {} spec.allowedOrigins", identity.policy.name),
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
