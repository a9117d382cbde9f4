//! What one request did, in one place: filled as the door, the core and the backend learn it.
//!
//! ```text
//!  door: RequestOutcome::new(door, route) ─ request id ─▶ authenticate: .identity(&identity) / key ref
//!      ─▶ oneshot::run | Session (owns it while the stream lives): .grant(&grant), .charged(gpu_seconds)
//!      ─▶ every refusal: Gateway::refused(&refusal, &mut outcome) ─ metric + sampled audit line + .code
//!  drop (the response is written, or the stream has ended) ─▶ span closed with outcome, GPU-seconds, duration
//!                                                           ─▶ infergate_requests_total, request_duration_seconds
//! ```
//! The span tree of one request: `request` (door, route, request_id, trace_id, key_id, tier, endpoint, outcome,
//! gpu_seconds, duration_ms) ─▶ one `backend` span per backend call (kind, endpoint, gpu_seconds). It joins the
//! client's `traceparent`, and the upstream gets a `traceparent` whose parent is the `backend` span.
//! Fields are key ids, labels and numbers only: never a key, ticket, audio byte or transcript.
use crate::metrics::RequestMetrics;
use infergate_gate::admission::{Grant, Identity};
use infergate_gate::refusal::{Refusal, RefusalCode};
use infergate_gate::snapshot::KeyRef;
use infergate_runtime::trace::TraceContext;
use std::time::{Duration, Instant};

/// Which front door, for metrics, audit and the request record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Http,
    WebSocket,
    Grpc,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Http => "http",
            Door::WebSocket => "websocket",
            Door::Grpc => "grpc",
        }
    }
}

/// One request or stream, from the door's first look to its last byte.
///
/// It owns the request's span (`request`, fields declared up front and filled as they become known) and its
/// request metrics, both finished exactly once when it drops.
#[derive(Debug)]
pub struct RequestOutcome {
    pub door: Door,
    /// The HTTP path or gRPC method (`/v1/audio/transcriptions`, `Inference/StreamTranscribe`): bounded by code.
    pub route: &'static str,
    /// `req_` + 16 hex, echoed to the client as `x-request-id`.
    pub request_id: String,
    started: Instant,
    /// Known once the key is genuine (also for refusals such as `key_revoked`).
    pub key: Option<KeyRef>,
    /// The `jti` of the session token the caller presented (never the token itself).
    pub token_jti: Option<String>,
    /// The caller's policy once known: its tier names the request's tier (kept by reference, not copied per
    /// request).
    policy: Option<std::sync::Arc<infergate_gate::snapshot::PolicyConfig>>,
    /// The endpoint (`namespace/name`) that served or refused the request, once the model is resolved.
    pub endpoint: Option<String>,
    /// The refusal that ended the request; `None` while it goes well.
    pub code: Option<RefusalCode>,
    /// GPU-seconds finally charged (after settlement; a stream's running total).
    pub gpu_seconds: f64,
    /// Seconds of audio the request carried (a stream's running total).
    pub audio_seconds: f64,
    /// Share of successful requests written to the access log (0 = none, 1 = all).
    access_log_sample: f64,
    /// The verified client certificate of the connection (mutual TLS), for policies that require one.
    pub client_cert: Option<std::sync::Arc<infergate_gate::admission::ClientCert>>,
    /// The client's W3C trace context (or a new root): this request's spans join it, upstreams continue it.
    trace: TraceContext,
    span: tracing::Span,
    metrics: std::sync::Arc<RequestMetrics>,
}

impl RequestOutcome {
    /// Starts the record and its span. `traceparent` is the client's header (HTTP) or metadata (gRPC), if any.
    pub fn new(
        door: Door,
        route: &'static str,
        traceparent: Option<&str>,
        metrics: std::sync::Arc<RequestMetrics>,
        access_log_sample: f64,
    ) -> Self {
        let request_id = request_id();
        let trace = traceparent.and_then(TraceContext::parse).unwrap_or_else(TraceContext::new_root);
        let span = tracing::info_span!(
            "request",
            door = door.as_str(),
            route,
            request_id = %request_id,
            trace_id = %trace.trace_id_hex(),
            key_id = tracing::field::Empty,
            token_jti = tracing::field::Empty,
            tier = tracing::field::Empty,
            endpoint = tracing::field::Empty,
            outcome = tracing::field::Empty,
            gpu_seconds = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        trace.parent(&span);
        RequestOutcome {
            door,
            route,
            request_id,
            started: Instant::now(),
            key: None,
            token_jti: None,
            policy: None,
            endpoint: None,
            code: None,
            gpu_seconds: 0.0,
            audio_seconds: 0.0,
            access_log_sample,
            client_cert: None,
            trace,
            span,
            metrics,
        }
    }

    /// The request's span: the parent of its `backend` spans; doors instrument their work with it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A `backend` span under this request, and the `traceparent` value an upstream gets from inside it.
    pub fn backend_span(&self, kind: &'static str) -> (tracing::Span, String) {
        let span = tracing::info_span!(
            parent: &self.span,
            "backend",
            kind,
            endpoint = self.endpoint.as_deref(),
            gpu_seconds = tracing::field::Empty,
        );
        let traceparent = self.trace.outgoing(&span).header_value();
        (span, traceparent)
    }

    /// The caller is known: key id and tier.
    pub fn identity(&mut self, identity: &Identity) {
        self.set_key(identity.key, &identity.policy);
        if let Some(token) = &identity.token {
            self.token(&token.jti);
        }
    }

    /// The caller presented a session token with this `jti`.
    pub fn token(&mut self, jti: &str) {
        if self.token_jti.as_deref() != Some(jti) {
            self.span.record("token_jti", jti);
            self.token_jti = Some(jti.to_owned());
        }
    }

    /// The request is admitted (or refused after admission) on this endpoint.
    pub fn grant(&mut self, grant: &Grant) {
        self.set_key(grant.key(), &grant.identity.policy);
        self.span.record("endpoint", grant.endpoint.label.as_str());
        self.endpoint = Some(grant.endpoint.label.clone());
    }

    fn set_key(&mut self, key: KeyRef, policy: &std::sync::Arc<infergate_gate::snapshot::PolicyConfig>) {
        if self.key != Some(key) {
            self.span.record("key_id", tracing::field::display(key));
            self.key = Some(key);
        }
        if !self.policy.as_ref().is_some_and(|known| std::sync::Arc::ptr_eq(known, policy)) {
            if self.tier() != Some(policy.tier.name.as_str()) {
                self.span.record("tier", policy.tier.name.as_str());
            }
            self.policy = Some(std::sync::Arc::clone(policy));
        }
    }

    /// The caller's tier, once the caller is known.
    pub fn tier(&self) -> Option<&str> {
        self.policy.as_ref().map(|policy| policy.tier.name.as_str())
    }

    pub fn refused(&mut self, refusal: &Refusal) {
        self.code = Some(refusal.code);
    }

    /// The stable outcome label: the refusal code, or `ok`.
    pub fn label(&self) -> &'static str {
        self.code.map_or("ok", RefusalCode::as_str)
    }

    pub fn duration(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for RequestOutcome {
    /// Exactly once per request: closes the span with its results and counts the request.
    fn drop(&mut self) {
        let duration = self.duration();
        let outcome = self.label();
        self.span.record("outcome", outcome);
        self.span.record("gpu_seconds", self.gpu_seconds);
        self.span.record("duration_ms", duration.as_secs_f64() * 1e3);
        self.metrics.finished(self.door.as_str(), self.route, outcome, duration);
        // Whether the line would be written at all first: formatting its key id for a filtered-out event was a
        // visible share of a cheap route.
        let wanted = self.code.is_none() && tracing::enabled!(target: "infergate::access", tracing::Level::INFO);
        let sampled = || {
            self.access_log_sample >= 1.0
                || (self.access_log_sample > 0.0 && rand::random::<f64>() < self.access_log_sample)
        };
        if wanted && sampled() {
            self.access_log(duration);
        }
    }
}

impl RequestOutcome {
    /// One JSON line per successful request (target `infergate::access`): who, where, how much, how long. Key id,
    /// labels and numbers only: never a key, ticket, audio byte or transcript. Refusals have their audit line.
    fn access_log(&self, duration: Duration) {
        let key_id = self.key.map(|k| k.to_string());
        tracing::info!(
            target: "infergate::access",
            request_id = %self.request_id,
            key_id = %key_id.as_deref().unwrap_or(""),
            token_jti = %self.token_jti.as_deref().unwrap_or(""),
            endpoint = %self.endpoint.as_deref().unwrap_or(""),
            door = %self.door.as_str(),
            route = %self.route,
            audio_seconds = self.audio_seconds,
            gpu_seconds = self.gpu_seconds,
            outcome = %"ok",
            duration_ms = duration.as_secs_f64() * 1e3,
            "access"
        );
    }
}

/// A fresh correlation id (`req_` + 16 hex), generated by the server and echoed as `x-request-id`.
pub fn request_id() -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Unique, not secret (see `id_bits`); written by hand because `format!` was a visible share of a cheap route.
    let bits = infergate_runtime::trace::id_bits();
    let mut id = String::with_capacity(20);
    id.push_str("req_");
    (0..16).rev().for_each(|nibble| id.push(char::from(DIGITS[(bits >> (nibble * 4)) as usize & 0xf])));
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_req_and_sixteen_lower_hex_digits_and_differ() {
        let a = super::request_id();
        assert_eq!(a.len(), 20);
        assert!(
            a.starts_with("req_") && a[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{a}"
        );
        assert_ne!(a, super::request_id());
    }
}
