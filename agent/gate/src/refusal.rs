//! Why a request or stream was refused, with one stable code per reason, and how each door says it.
//!
//! | code                  | HTTP | gRPC                | WebSocket close | when                                            |
//! |-----------------------|------|---------------------|-----------------|-------------------------------------------------|
//! | `missing_key`         | 401  | UNAUTHENTICATED     | 4001            | no key in the request                           |
//! | `malformed_key`       | 401  | UNAUTHENTICATED     | 4002            | wrong prefix, length or characters              |
//! | `bad_checksum`        | 401  | UNAUTHENTICATED     | 4003            | checksum mismatch: a mistyped key               |
//! | `unknown_key`         | 401  | UNAUTHENTICATED     | 4004            | well-formed key this gateway does not know      |
//! | `key_revoked`         | 401  | UNAUTHENTICATED     | 4005            | the key was revoked                             |
//! | `key_expired`         | 401  | UNAUTHENTICATED     | 4006            | past the policy's expiry or a retiring key's end|
//! | `key_suspended`       | 403  | PERMISSION_DENIED   | 4007            | the policy is suspended                         |
//! | `key_not_yet_valid`   | 401  | UNAUTHENTICATED     | 4008            | key issued in the future (clock skew)           |
//! | `bad_ticket`          | 401  | UNAUTHENTICATED     | 4009            | stream ticket unknown, used or expired          |
//! | `token_expired`       | 401  | UNAUTHENTICATED     | 4010            | session token past its `exp` (+ leeway)         |
//! | `bad_token`           | 401  | UNAUTHENTICATED     | 4011            | session token malformed, altered, of an unknown signing key, a refused algorithm, or another issuer/audience |
//! | `out_of_scope`        | 403  | PERMISSION_DENIED   | 4030            | key (or its token's scope) may not use this endpoint or feature |
//! | `wrong_environment`   | 403  | PERMISSION_DENIED   | 4031            | a test key on a live-only gateway, or vice versa|
//! | `origin_not_allowed`  | 403  | PERMISSION_DENIED   | 4032            | browser Origin not in the policy's allowlist    |
//! | `query_key_refused`   | 400  | INVALID_ARGUMENT    | 4033            | key in the query string, not enabled            |
//! | `client_embedding_not_allowed` | 403 | PERMISSION_DENIED | 4034  | client-computed embedding, policy forbids it    |
//! | `rate_limited`        | 429  | RESOURCE_EXHAUSTED  | 4290            | GPU-second bucket cannot pay; see retry-after   |
//! | `stream_cap`          | 429  | RESOURCE_EXHAUSTED  | 4291            | key holds its tier's maximum of open streams    |
//! | `queue_full`          | 429  | RESOURCE_EXHAUSTED  | 4292            | the key's wait queue is full                    |
//! | `queue_timeout`       | 429  | RESOURCE_EXHAUSTED  | 4293            | waited the tier's queue timeout for capacity    |
//! | `connection_cap`      | 429  | RESOURCE_EXHAUSTED  | 4294            | key holds the agent's per-key connection maximum|
//! | `server_busy`         | 503  | UNAVAILABLE         | 4295            | the agent's global connection cap is reached    |
//! | `oversized_chunk`     | 413  | INVALID_ARGUMENT    | 4130            | an audio chunk exceeds the endpoint's maximum   |
//! | `audio_too_long`      | 413  | INVALID_ARGUMENT    | 4131            | audio beyond the endpoint's max audio seconds   |
//! | `body_too_large`      | 413  | INVALID_ARGUMENT    | 4132            | a request body declares more than its route takes |
//! | `client_certificate_required` | 403 | PERMISSION_DENIED | 4035 | the policy requires mutual TLS: no verified client certificate, or another identity |
//! | `served_elsewhere`    | 421  | UNAVAILABLE         | 4421            | the model is served by agents on other nodes: use its Service |
//! | `too_many_messages`   | 429  | RESOURCE_EXHAUSTED  | 4296            | stream sent more messages/s than allowed        |
//! | `idle_timeout`        | 408  | DEADLINE_EXCEEDED   | 4080            | stream sent nothing for the idle timeout        |
//! | `session_too_long`    | 408  | DEADLINE_EXCEEDED   | 4081            | stream reached the maximum session duration     |
//! | `auth_timeout`        | 408  | DEADLINE_EXCEEDED   | 4082            | no auth message within the deadline             |
//! | `request_timeout`     | 408  | DEADLINE_EXCEEDED   | 4083            | request body arrived too slowly                 |
//! | `unknown_model`       | 404  | NOT_FOUND           | 4040            | no endpoint serves the requested model          |
//! | `unsupported_feature` | 400  | INVALID_ARGUMENT    | 4041            | the endpoint does not offer the feature         |
//! | `bad_request`         | 400  | INVALID_ARGUMENT    | 4000            | malformed request: the message says what to fix |
//! | `unsupported_codec`   | 415  | INVALID_ARGUMENT    | 4150            | audio format the endpoint does not accept       |
//! | `backend_error`       | 502  | UNAVAILABLE         | 4502            | the model backend failed; retry later           |
//! | `backend_unavailable` | 503  | UNAVAILABLE         | 4503            | no backend can serve this endpoint on this agent|
//!
//! Every message says what was wrong and what to do; none contains a key, a ticket, audio or a transcript.
//! The doors turn a refusal into their protocol's form (`agent/src/doors/edge.rs`): HTTP status + JSON body +
//! `Retry-After`, gRPC status + metadata, WebSocket error message + close code.
use std::borrow::Cow;

/// A refusal: a stable [`RefusalCode`], a human message, and for limits the seconds after which a retry can pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: Cow<'static, str>,
    /// Seconds until the same request can be admitted (limits only).
    pub retry_after_seconds: Option<f64>,
}

macro_rules! codes {
    ($($variant:ident => ($code:literal, $http:literal, $grpc:ident, $ws:literal)),* $(,)?) => {
        /// Stable refusal codes. The string form is the `code` of every JSON error body, metric label and audit line.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum RefusalCode { $($variant),* }

        impl RefusalCode {
            pub const ALL: &'static [RefusalCode] = &[$(RefusalCode::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(RefusalCode::$variant => $code),* }
            }
            pub fn http_status(self) -> u16 {
                match self { $(RefusalCode::$variant => $http),* }
            }
            pub fn grpc_code(self) -> GrpcCode {
                match self { $(RefusalCode::$variant => GrpcCode::$grpc),* }
            }
            pub fn ws_close_code(self) -> u16 {
                match self { $(RefusalCode::$variant => $ws),* }
            }
        }
    };
}

codes! {
    MissingKey => ("missing_key", 401, Unauthenticated, 4001),
    MalformedKey => ("malformed_key", 401, Unauthenticated, 4002),
    BadChecksum => ("bad_checksum", 401, Unauthenticated, 4003),
    UnknownKey => ("unknown_key", 401, Unauthenticated, 4004),
    KeyRevoked => ("key_revoked", 401, Unauthenticated, 4005),
    KeyExpired => ("key_expired", 401, Unauthenticated, 4006),
    KeySuspended => ("key_suspended", 403, PermissionDenied, 4007),
    KeyNotYetValid => ("key_not_yet_valid", 401, Unauthenticated, 4008),
    BadTicket => ("bad_ticket", 401, Unauthenticated, 4009),
    TokenExpired => ("token_expired", 401, Unauthenticated, 4010),
    BadToken => ("bad_token", 401, Unauthenticated, 4011),
    OutOfScope => ("out_of_scope", 403, PermissionDenied, 4030),
    WrongEnvironment => ("wrong_environment", 403, PermissionDenied, 4031),
    OriginNotAllowed => ("origin_not_allowed", 403, PermissionDenied, 4032),
    QueryKeyRefused => ("query_key_refused", 400, InvalidArgument, 4033),
    ClientEmbeddingNotAllowed => ("client_embedding_not_allowed", 403, PermissionDenied, 4034),
    RateLimited => ("rate_limited", 429, ResourceExhausted, 4290),
    StreamCap => ("stream_cap", 429, ResourceExhausted, 4291),
    QueueFull => ("queue_full", 429, ResourceExhausted, 4292),
    QueueTimeout => ("queue_timeout", 429, ResourceExhausted, 4293),
    ConnectionCap => ("connection_cap", 429, ResourceExhausted, 4294),
    ServerBusy => ("server_busy", 503, Unavailable, 4295),
    OversizedChunk => ("oversized_chunk", 413, InvalidArgument, 4130),
    AudioTooLong => ("audio_too_long", 413, InvalidArgument, 4131),
    BodyTooLarge => ("body_too_large", 413, InvalidArgument, 4132),
    ServedElsewhere => ("served_elsewhere", 421, Unavailable, 4421),
    ClientCertificateRequired => ("client_certificate_required", 403, PermissionDenied, 4035),
    TooManyMessages => ("too_many_messages", 429, ResourceExhausted, 4296),
    IdleTimeout => ("idle_timeout", 408, DeadlineExceeded, 4080),
    SessionTooLong => ("session_too_long", 408, DeadlineExceeded, 4081),
    AuthTimeout => ("auth_timeout", 408, DeadlineExceeded, 4082),
    RequestTimeout => ("request_timeout", 408, DeadlineExceeded, 4083),
    UnknownModel => ("unknown_model", 404, NotFound, 4040),
    UnsupportedFeature => ("unsupported_feature", 400, InvalidArgument, 4041),
    BadRequest => ("bad_request", 400, InvalidArgument, 4000),
    UnsupportedCodec => ("unsupported_codec", 415, InvalidArgument, 4150),
    BackendError => ("backend_error", 502, Unavailable, 4502),
    BackendUnavailable => ("backend_unavailable", 503, Unavailable, 4503),
    // The response could not be redacted as the endpoint or key requires (an upstream answer in no shape the
    // agent can redact, a redaction model missing, a redaction rule this agent does not know): nothing of it
    // is sent (fail closed).
    RedactionFailed => ("redaction_failed", 502, Unavailable, 4504),
    // The agent is draining (SIGTERM): streams get their pending result, then this going-away close (WebSocket's
    // own 1001); clients reconnect, and the Service sends them to another agent.
    ShuttingDown => ("shutting_down", 503, Unavailable, 1001),
    NotFound => ("not_found", 404, NotFound, 4044),
    MethodNotAllowed => ("method_not_allowed", 405, InvalidArgument, 4050),
}

impl RefusalCode {
    /// OpenAI's error `type` for this code (by its HTTP class, as OpenAI assigns them).
    pub fn openai_type(self) -> &'static str {
        match self.http_status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The request parameter the refusal is about, when there is one (OpenAI's `param`).
    pub fn param(self) -> Option<&'static str> {
        use RefusalCode::*;
        match self {
            UnknownModel | UnsupportedFeature | ServedElsewhere => Some("model"),
            AudioTooLong | BodyTooLarge | UnsupportedCodec => Some("file"),
            _ => None,
        }
    }
}

/// The gRPC status codes refusals use, by their wire numbers. The gRPC door turns them into `tonic::Code`;
/// this crate stays free of the server framework.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Refusal {
    pub fn new(code: RefusalCode, message: impl Into<Cow<'static, str>>) -> Self {
        Refusal { code, message: message.into(), retry_after_seconds: None }
    }

    pub fn with_retry_after(mut self, seconds: f64) -> Self {
        self.retry_after_seconds = Some(seconds.max(0.0));
        self
    }

    /// Whole seconds to put in `Retry-After`: rounded up, so a client that waits exactly that long succeeds.
    pub fn retry_after_header(&self) -> Option<u64> {
        self.retry_after_seconds.map(|s| s.ceil().max(1.0) as u64)
    }

    /// The JSON error body every HTTP response and WebSocket error message uses.
    /// `{"error":{"message","type","param","code","retry_after_seconds"?}}`: OpenAI's error shape (its SDKs read
    /// `message`, `type`, `param` and `code`), with infergate's stable code in `code`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "message": self.message,
            "type": self.code.openai_type(),
            "param": self.code.param(),
            "code": self.code.as_str(),
        });
        if let Some(secs) = self.retry_after_header() {
            error["retry_after_seconds"] = secs.into();
        }
        serde_json::json!({ "error": error })
    }

    /// A WebSocket close reason must fit in 123 bytes; cut at a char boundary.
    pub fn ws_reason(&self) -> String {
        let mut reason = format!("{}: {}", self.code.as_str(), self.message);
        if let Some(secs) = self.retry_after_header() {
            reason = format!("{}: retry after {secs}s", self.code.as_str());
        }
        truncate_utf8(&mut reason, 123);
        reason
    }

    // Constructors for the common cases, so messages stay consistent across doors.
    pub fn missing_key() -> Self {
        Self::new(RefusalCode::MissingKey, "no API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`")
    }
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RefusalCode::BadRequest, message)
    }
}

pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_on_every_door() {
        let names: HashSet<_> = RefusalCode::ALL.iter().map(|c| c.as_str()).collect();
        let ws: HashSet<_> = RefusalCode::ALL.iter().map(|c| c.ws_close_code()).collect();
        assert_eq!(names.len(), RefusalCode::ALL.len());
        assert_eq!(ws.len(), RefusalCode::ALL.len());
        // Application close codes are 4xxx; only the agent's own shutdown uses the standard 1001 (Going Away),
        // which WebSocket clients already treat as "reconnect elsewhere".
        assert!(
            RefusalCode::ALL
                .iter()
                .all(|c| (4000..5000).contains(&c.ws_close_code()) || *c == RefusalCode::ShuttingDown)
        );
        assert_eq!(RefusalCode::ShuttingDown.ws_close_code(), 1001);
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = Refusal::new(RefusalCode::RateLimited, "x").with_retry_after(2.01);
        assert_eq!(r.retry_after_header(), Some(3));
        assert_eq!(
            r.to_json(),
            serde_json::json!({"error": {"code": "rate_limited", "message": "x", "type": "rate_limit_error", "param": null, "retry_after_seconds": 3}})
        );
        let model = Refusal::new(RefusalCode::UnknownModel, "no such model").to_json();
        assert_eq!(model["error"]["type"], "not_found_error");
        assert_eq!(model["error"]["param"], "model");
        assert_eq!(Refusal::missing_key().to_json()["error"]["type"], "authentication_error");
        assert_eq!(r.code.grpc_code(), GrpcCode::ResourceExhausted);
    }

    #[test]
    fn ws_reason_fits_a_close_frame() {
        let r = Refusal::bad_request("é".repeat(200));
        assert!(r.ws_reason().len() <= 123);
    }
}
