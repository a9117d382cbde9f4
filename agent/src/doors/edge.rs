//! What every door does the same way: read the credential, the Origin and the request id, bound the body's
//! size and arrival time, and say a refusal in its protocol.
//!
//! ```text
//!  HTTP headers / gRPC metadata ─▶ presented_key (Bearer | x-api-key, parsed once) ─▶ authenticate
//!                                                     └─ none ─▶ missing_key (one wording on every door)
//!  Refusal ─┬─ http_refusal:  status + {"error":{..}} + Retry-After + WWW-Authenticate + x-request-id
//!           ├─ grpc_status:   code + "code: message" + x-infergate-code + retry-after + x-request-id
//!           └─ ws_close:      {"type":"error","error":{..}} then close 4xxx "<code>: ..."
//! ```
//! The codes and their forms per protocol are the table in `infergate_gate::refusal`.
use crate::gateway::{Credential, Gateway};
use crate::outcome::RequestOutcome;
use axum::Json;
use axum::extract::ws::{CloseFrame, Utf8Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use infergate_gate::admission::Identity;
use infergate_gate::refusal::{GrpcCode, Refusal, RefusalCode};
use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

/// The correlation id on every response (HTTP header, gRPC metadata); also forwarded upstream.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Set when a request was served by the endpoint's fallback because the endpoint was saturated.
pub const FALLBACK_HEADER: &str = "x-infergate-fallback";
/// GPU-seconds charged for a one-shot request, on its HTTP response.
pub const GPU_SECONDS_HEADER: &str = "x-infergate-gpu-seconds";
/// The refusal code on a gRPC status, so clients need not parse the message.
pub const CODE_METADATA: &str = "x-infergate-code";
/// Largest stream message (WebSocket frame, gRPC message): a 16 MiB audio chunk plus framing.
pub const MAX_STREAM_MESSAGE_BYTES: usize = 16 * 1024 * 1024 + 1024;

// Pre-parsed names for the hot HTTP path: `headers.get("x-api-key")` parses and lower-cases the name on every
// call (~50 ns of header-name parsing per authenticated request); a `HeaderName` is looked up as it is.
const X_API_KEY_NAME: HeaderName = HeaderName::from_static("x-api-key");
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(infergate_runtime::trace::TRACEPARENT);
const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The key from `Authorization: Bearer <key>` (a bare `Authorization: <key>` too) or `x-api-key: <key>`, given
/// the two values as the protocol carries them (HTTP headers, gRPC metadata).
pub fn presented_key<'a>(authorization: Option<&'a str>, api_key: Option<&'a str>) -> Option<&'a str> {
    if let Some(value) = authorization {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim());
        }
        return Some(value);
    }
    api_key.map(str::trim)
}

/// A credential header's value as text. A value with bytes outside visible ASCII (a homoglyph such as a Cyrillic
/// `ѕ` pasted into `sk_live_`, a stray non-breaking space) is still a credential the client meant to send: it is
/// read lossily and then refused as `malformed_key`, never mistaken for a missing one.
fn credential_text(bytes: &[u8]) -> Cow<'_, str> {
    // The strict check first: it is vectorised, where the lossy reader walks the bytes chunk by chunk even when
    // they are all valid (every genuine key is ASCII).
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The presented key from HTTP headers.
pub fn header_key(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let value = |name: &HeaderName| headers.get(name).map(|v| credential_text(v.as_bytes()));
    presented(value(&http::header::AUTHORIZATION), value(&X_API_KEY_NAME))
}

/// The presented key from gRPC metadata.
pub fn metadata_key(md: &tonic::metadata::MetadataMap) -> Option<Cow<'_, str>> {
    let value = |name: &str| md.get(name).map(|v| credential_text(v.as_bytes()));
    presented(value("authorization"), value("x-api-key"))
}

/// [`presented_key`] over borrowed (visible ASCII) or lossily read header text.
fn presented<'a>(authorization: Option<Cow<'a, str>>, api_key: Option<Cow<'a, str>>) -> Option<Cow<'a, str>> {
    match (authorization, api_key) {
        (Some(Cow::Borrowed(a)), _) => presented_key(Some(a), None).map(Cow::Borrowed),
        (Some(Cow::Owned(a)), _) => presented_key(Some(&a), None).map(|k| Cow::Owned(k.to_string())),
        (None, Some(Cow::Borrowed(k))) => presented_key(None, Some(k)).map(Cow::Borrowed),
        (None, Some(Cow::Owned(k))) => presented_key(None, Some(&k)).map(|v| Cow::Owned(v.to_string())),
        (None, None) => None,
    }
}

/// The client's W3C `traceparent` header, if any (parsed, and ignored when malformed, by the request record).
pub fn traceparent(headers: &HeaderMap) -> Option<&str> {
    header(headers, &TRACEPARENT_NAME)
}

/// The client's `traceparent` from gRPC metadata.
pub fn metadata_traceparent(md: &tonic::metadata::MetadataMap) -> Option<&str> {
    md.get(infergate_runtime::trace::TRACEPARENT).and_then(|v| v.to_str().ok())
}

/// The verified client certificate (mutual TLS) the listener attached to the request, if any.
pub type ClientCertExt = Option<axum::Extension<std::sync::Arc<infergate_gate::admission::ClientCert>>>;

/// The client certificate from a request's extensions, for handlers that take the request whole.
pub fn client_cert_of(extensions: &http::Extensions) -> ClientCertExt {
    extensions.get::<std::sync::Arc<infergate_gate::admission::ClientCert>>().cloned().map(axum::Extension)
}

/// Copies the connection's client certificate onto the request record, where authentication checks it.
pub fn attach_client_cert(outcome: &mut RequestOutcome, cert: ClientCertExt) {
    outcome.client_cert = cert.map(|axum::Extension(cert)| cert);
}

/// The browser `Origin` header, if any.
pub fn origin(headers: &HeaderMap) -> Option<&str> {
    header(headers, &http::header::ORIGIN)
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Authenticates a presented key (or refuses a missing one), recording any refusal on the outcome.
pub fn authenticate(
    gateway: &Gateway,
    presented: Option<&str>,
    outcome: &mut RequestOutcome,
) -> Result<Identity, Refusal> {
    match presented {
        None => {
            let refusal = Refusal::missing_key();
            gateway.refused(&refusal, outcome);
            Err(refusal)
        }
        Some(key) => gateway.authenticate_recorded(&Credential::Key(key), outcome),
    }
}

/// Runs a body read under the agent's body timeout: a slow sender is cut off with `request_timeout`.
pub async fn within_body_timeout<T>(
    timeout: Duration,
    read: impl Future<Output = Result<T, Refusal>>,
) -> Result<T, Refusal> {
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(Refusal::new(
            RefusalCode::RequestTimeout,
            format!("the request body did not arrive within {} s; check the connection and retry", timeout.as_secs()),
        )),
    }
}

// --- HTTP ---

/// A refusal as an HTTP response.
pub fn http_refusal(refusal: &Refusal, request_id: &str) -> Response {
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

pub fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_NAME, v);
    }
}

/// Every HTTP response, success or refusal, carries the correlation id the client can quote.
pub fn http_finish(result: Result<Response, Refusal>, request_id: &str) -> Response {
    match result {
        Ok(mut response) => {
            set_request_id(&mut response, request_id);
            response
        }
        Err(refusal) => http_refusal(&refusal, request_id),
    }
}

// --- gRPC ---

/// A refusal as a gRPC status: the code, `"<code>: <message>"`, and metadata `x-infergate-code`,
/// `retry-after` (limits) and `x-request-id`.
pub fn grpc_status(refusal: &Refusal, request_id: &str) -> tonic::Status {
    use tonic::metadata::MetadataValue;
    let message = format!("{}: {}", refusal.code.as_str(), refusal.message);
    let mut status = tonic::Status::new(tonic_code(refusal.code.grpc_code()), message);
    let md = status.metadata_mut();
    md.insert(CODE_METADATA, MetadataValue::from_static(refusal.code.as_str()));
    if let Some(secs) = refusal.retry_after_header() {
        md.insert("retry-after", MetadataValue::from(secs));
    }
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert(REQUEST_ID_HEADER, v);
    }
    status
}

/// The gate's plain gRPC codes as tonic's; one to one, by the same names.
fn tonic_code(code: GrpcCode) -> tonic::Code {
    match code {
        GrpcCode::InvalidArgument => tonic::Code::InvalidArgument,
        GrpcCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        GrpcCode::NotFound => tonic::Code::NotFound,
        GrpcCode::PermissionDenied => tonic::Code::PermissionDenied,
        GrpcCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        GrpcCode::Unavailable => tonic::Code::Unavailable,
        GrpcCode::Unauthenticated => tonic::Code::Unauthenticated,
    }
}

// --- WebSocket ---

/// The error message a WebSocket sends before it closes: the HTTP JSON body with `"type":"error"`.
pub fn ws_error(refusal: &Refusal) -> serde_json::Value {
    let mut body = refusal.to_json();
    body["type"] = "error".into();
    body
}

/// The close frame for a refusal: its 4xxx code and a reason that fits a close frame.
pub fn ws_close(refusal: &Refusal) -> CloseFrame {
    CloseFrame { code: refusal.code.ws_close_code(), reason: Utf8Bytes::from(refusal.ws_reason()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_api_key_parse_the_same_on_every_door() {
        assert_eq!(presented_key(Some("Bearer sk_1"), None), Some("sk_1"));
        assert_eq!(presented_key(Some("bearer   sk_1 "), Some("other")), Some("sk_1"));
        assert_eq!(presented_key(Some(" sk_1 "), None), Some("sk_1"));
        assert_eq!(presented_key(None, Some(" sk_2 ")), Some("sk_2"));
        assert_eq!(presented_key(None, None), None);
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", "Bearer sk_3".parse().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer sk_3".parse().unwrap());
        assert_eq!(metadata_key(&md), header_key(&headers));
    }

    #[test]
    fn grpc_status_carries_code_retry_after_and_request_id() {
        let r = Refusal::new(RefusalCode::RateLimited, "x").with_retry_after(2.01);
        let status = grpc_status(&r, "req_1");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "rate_limited: x");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
        assert_eq!(status.metadata().get(CODE_METADATA).unwrap(), "rate_limited");
        assert_eq!(status.metadata().get(REQUEST_ID_HEADER).unwrap(), "req_1");
    }

    #[test]
    fn every_grpc_code_keeps_its_wire_number() {
        for code in RefusalCode::ALL {
            let grpc = code.grpc_code();
            assert_eq!(tonic_code(grpc) as i32, grpc as i32, "{code:?}");
        }
    }
}
