//! Workers behind one trait. `upstream` forwards to an OpenAI-compatible server; built-in CPU/GPU models plug in
//! through [`BlockingModel`] (run on the blocking pool, timed for settlement). No backend invents results: a
//! backend that cannot answer returns an error, which the doors turn into a refusal.
//!
//! ```text
//!  gateway ─▶ Backends::for_endpoint(shard) ─┬─ upstream  ─▶ POST {url}/audio/transcriptions (multipart)
//!                                             └─ builtin   ─▶ registered Arc<dyn Backend> (speaker, vad)
//!  BackendResponse { body, content_type, text, measured_gpu_seconds } ─▶ limiter.settle(pre-charge, measured)
//! ```
use bytes::Bytes;
use futures::future::BoxFuture;
use infergate_crds::endpoint::{BuiltinModel, Feature, WhisperSize};
use infergate_crds::gateway::EndpointShard;
use infergate_gate::refusal::{Refusal, RefusalCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upstream servers that know their own GPU time may report it in this response header (seconds, decimal);
/// the agent then settles the pre-charge against it.
pub const MEASURED_GPU_SECONDS_HEADER: &str = "x-infergate-gpu-seconds";

#[derive(Clone, Debug)]
pub struct BackendRequest {
    pub feature: Feature,
    /// The model name the backend expects (the endpoint's `upstream.model`, else its `model`).
    pub model: String,
    pub audio: Bytes,
    pub filename: String,
    pub content_type: String,
    /// Other form fields (language, prompt, response_format, temperature, ...), passed through as given.
    pub fields: Vec<(String, String)>,
    /// Correlation id, forwarded upstream as `x-request-id`.
    pub request_id: String,
    /// W3C `traceparent` for the upstream: the request's trace, with the `backend` span as parent.
    pub traceparent: String,
    /// A stream segment: return word times if the backend has them (the stream's final result carries them).
    pub want_words: bool,
}

/// One word with its times in seconds from the start of the audio the backend received.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// Where a stream cuts the audio it has buffered before sending it to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Send everything buffered (backends without a voice-activity detector).
    All,
    /// Send the first this-many bytes (a pause in the speech); keep the rest for the next segment.
    At(usize),
    /// No pause yet: keep buffering (the stream still cuts at twice its segment length).
    Wait,
}

#[derive(Clone, Debug)]
pub struct BackendResponse {
    pub content_type: String,
    pub body: Bytes,
    /// The transcript or result text, when the body is JSON with a `text` field (used by streams).
    pub text: Option<String>,
    /// GPU time the work really took, if the backend knows it. `None` keeps the pre-charge.
    pub measured_gpu_seconds: Option<f64>,
    /// Audio seconds the backend says it billed (OpenAI's `usage: {"type":"duration","seconds":N}`): without a
    /// measured GPU time, the charge settles on these seconds at the endpoint's cost model.
    pub billed_audio_seconds: Option<f64>,
    /// Word times, when the request wanted them and the backend knows them.
    pub words: Vec<TimedWord>,
}

impl BackendResponse {
    /// What settles the charge: the measured GPU time, else the billed audio seconds at the endpoint's cost
    /// model, else nothing (the pre-charge stands).
    pub fn settlement(&self, grant: &infergate_gate::admission::Grant) -> Option<f64> {
        self.measured_gpu_seconds
            .or_else(|| self.billed_audio_seconds.map(|s| infergate_gate::limiter::Limiter::estimate(grant, s)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the model backend rejected the input: {0}")]
    BadInput(String),
    /// The upload is in a format the built-in decoder does not read (415); the message lists what it reads.
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("the model backend failed: {0}")]
    Failed(String),
    #[error("the model backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no backend serves this endpoint on this agent: {0}")]
    Unavailable(String),
    /// The request never reached the backend (connection refused, DNS): nothing ran, nothing is charged.
    #[error("the model backend is unreachable: {0}")]
    Unreachable(String),
    /// The upstream refused the agent's own credential (401/403): a configuration problem of the endpoint, not
    /// the client's; nothing ran, nothing is charged.
    #[error("the upstream refused the agent's credential: {0}")]
    Rejected(String),
    /// The upstream is rate limiting the agent (429): nothing ran; its Retry-After, if any, is passed on.
    #[error("the upstream is over capacity (it answered 429)")]
    Throttled(Option<f64>),
}

impl BackendError {
    pub fn category(&self) -> &'static str {
        match self {
            BackendError::BadInput(_) => "bad_input",
            BackendError::UnsupportedMedia(_) => "unsupported_media",
            BackendError::Failed(_) => "failed",
            BackendError::Timeout(_) => "timeout",
            BackendError::Unavailable(_) => "unavailable",
            BackendError::Unreachable(_) => "unreachable",
            BackendError::Rejected(_) => "rejected",
            BackendError::Throttled(_) => "throttled",
        }
    }

    /// Whether the backend may have spent time on the request: then the request is charged what it used
    /// (the billing rule: refunds only for work not done). A rejected input is refunded: the backend answered at
    /// once without running the model.
    pub fn reached_backend(&self) -> bool {
        matches!(self, BackendError::Failed(_) | BackendError::Timeout(_))
    }

    pub fn to_refusal(&self) -> Refusal {
        match self {
            BackendError::BadInput(_) => Refusal::new(RefusalCode::BadRequest, self.to_string()),
            BackendError::UnsupportedMedia(_) => Refusal::new(RefusalCode::UnsupportedCodec, self.to_string()),
            BackendError::Failed(_) | BackendError::Timeout(_) | BackendError::Unreachable(_) => {
                Refusal::new(RefusalCode::BackendError, format!("{self}; retry later")).with_retry_after(1.0)
            }
            BackendError::Unavailable(_) => Refusal::new(RefusalCode::BackendUnavailable, self.to_string()),
            BackendError::Rejected(_) => Refusal::new(
                RefusalCode::BackendError,
                format!("{self}; the endpoint's backend.upstream.auth needs fixing by its owner"),
            ),
            BackendError::Throttled(retry_after) => {
                Refusal::new(RefusalCode::BackendUnavailable, format!("{self}; retry after the given seconds"))
                    .with_retry_after(retry_after.unwrap_or(1.0))
            }
        }
    }
}

/// One worker. `call` owns its input so implementations can move it to another task or thread.
pub trait Backend: Send + Sync + 'static {
    /// `upstream`, `speaker-encoder`, `vad`: for logs and metrics.
    fn kind(&self) -> &'static str;
    fn call(&self, request: BackendRequest) -> BoxFuture<'static, Result<BackendResponse, BackendError>>;
    /// Where a stream should cut `pcm16le` (16 kHz mono) into a segment. Cheap and synchronous (a VAD pass).
    fn cut(&self, _pcm16le: &[u8]) -> Cut {
        Cut::All
    }
}

/// A synchronous model (CPU reference, CUDA via a blocking driver call). Wrapped by [`Blocking`].
pub trait BlockingModel: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    /// Runs the model. Leave `measured_gpu_seconds` as `None` to have the wall time of `run` measured.
    fn run(&self, request: &BackendRequest) -> Result<BackendResponse, BackendError>;
    /// See [`Backend::cut`].
    fn cut(&self, _pcm16le: &[u8]) -> Cut {
        Cut::All
    }
}

/// Runs a [`BlockingModel`] on tokio's blocking pool and reports its compute time for settlement.
pub struct Blocking<M> {
    model: Arc<M>,
    /// Bounds the jobs running on blocking threads: a job keeps its permit until the model returns, even when its
    /// client has gone, so abandoned work cannot pile up behind the requests still waiting.
    jobs: Arc<tokio::sync::Semaphore>,
}

impl<M> Blocking<M> {
    /// `jobs` is shared by every built-in model of the agent (they compete for the same cores).
    pub fn new(model: Arc<M>, jobs: Arc<tokio::sync::Semaphore>) -> Self {
        Blocking { model, jobs }
    }
}

/// Built-in jobs that may run at once: one per core (they are CPU- or GPU-bound), at least two.
pub fn builtin_job_permits() -> Arc<tokio::sync::Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(tokio::sync::Semaphore::new(cores.max(2)))
}

impl<M: BlockingModel> Backend for Blocking<M> {
    fn kind(&self) -> &'static str {
        self.model.kind()
    }
    fn cut(&self, pcm16le: &[u8]) -> Cut {
        self.model.cut(pcm16le)
    }
    fn call(&self, request: BackendRequest) -> BoxFuture<'static, Result<BackendResponse, BackendError>> {
        let model = Arc::clone(&self.model);
        let jobs = Arc::clone(&self.jobs);
        Box::pin(async move {
            // Waiting here is cancel-safe: a client that leaves before its turn costs no model time.
            let permit = jobs
                .acquire_owned()
                .await
                .map_err(|_| BackendError::Unavailable("the agent is shutting down".into()))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let started = Instant::now();
                let mut response = model.run(&request)?;
                response.measured_gpu_seconds.get_or_insert(started.elapsed().as_secs_f64());
                Ok(response)
            })
            .await
            .map_err(|e| {
                BackendError::Failed(format!(
                    "model task ended abnormally ({})",
                    if e.is_panic() { "panic" } else { "cancelled" }
                ))
            })?
        })
    }
}

/// Forwards to an OpenAI-compatible `/audio/transcriptions`.
pub struct Upstream {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    /// The upstream's own credential (`backend.upstream.auth`): header name and value. Never logged.
    credential: Option<(http::HeaderName, http::HeaderValue)>,
    /// The URL names a private address by IP and the endpoint did not opt in: refused without connecting.
    private_literal: bool,
}

impl Upstream {
    /// `allow_private`: the endpoint's `allowPrivateNetwork`. Without it an IP-literal URL must be public here,
    /// and `client` must be one whose resolver answers public addresses only ([`crate::egress::PublicOnly`]).
    pub fn new(client: reqwest::Client, base_url: &str, timeout: Duration, allow_private: bool) -> Self {
        let url = format!("{}/audio/transcriptions", base_url.trim_end_matches('/'));
        let private_literal = !allow_private
            && reqwest::Url::parse(&url)
                .ok()
                .and_then(|u| u.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()))
                .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| !crate::egress::is_public(ip));
        Upstream { client, url, timeout, credential: None, private_literal }
    }

    /// Sends `credential` (the endpoint's resolved `backend.upstream.auth`) on every request.
    pub fn with_credential(mut self, credential: Option<&infergate_crds::gateway::UpstreamCredential>) -> Self {
        self.credential = credential.and_then(|c| {
            let name = http::HeaderName::from_bytes(c.header.as_bytes()).ok()?;
            let mut value = http::HeaderValue::from_str(&c.value).ok()?;
            value.set_sensitive(true);
            Some((name, value))
        });
        self
    }
}

impl Backend for Upstream {
    fn kind(&self) -> &'static str {
        "upstream"
    }

    fn call(&self, request: BackendRequest) -> BoxFuture<'static, Result<BackendResponse, BackendError>> {
        let client = self.client.clone();
        let url = self.url.clone();
        let timeout = self.timeout;
        let private_literal = self.private_literal;
        let credential = self.credential.clone();
        Box::pin(async move {
            if private_literal {
                return Err(BackendError::Unreachable(crate::egress::private_target_message("url")));
            }
            let field = |name: &str| request.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            if field("stream") == Some("true") {
                return Err(BackendError::BadInput(
                    "stream=true is served by built-in whisper endpoints; this endpoint forwards to an upstream: \
                     omit `stream`, or use the WebSocket or gRPC stream"
                        .into(),
                ));
            }
            // `/v1/audio/translations` arrives with the door's task field: forward it to the same API path.
            let url = match field(crate::transcriber::FIELD_TASK) {
                Some("translate") => format!("{}/translations", url.trim_end_matches("/transcriptions")),
                _ => url,
            };
            let part = reqwest::multipart::Part::stream(reqwest::Body::from(request.audio))
                .file_name(request.filename)
                .mime_str(&request.content_type)
                .map_err(|_| BackendError::BadInput("invalid audio content type".into()))?;
            let mut form = reqwest::multipart::Form::new().part("file", part).text("model", request.model);
            for (name, value) in request.fields {
                if name != crate::transcriber::FIELD_TASK {
                    form = form.text(name, value);
                }
            }
            let mut post = client
                .post(&url)
                .header("x-request-id", &request.request_id)
                .header(infergate_runtime::trace::TRACEPARENT, &request.traceparent);
            if let Some((name, value)) = credential {
                post = post.header(name, value);
            }
            let send = post.multipart(form).send();
            // One deadline for the whole exchange: an upstream that answers its headers in time and then stalls
            // the body must not get a second full timeout.
            let deadline = tokio::time::Instant::now() + timeout;
            let response = tokio::time::timeout_at(deadline, send)
                .await
                .map_err(|_| BackendError::Timeout(timeout))?
                .map_err(|e| {
                if let Some(private) = private_target_in(&e) {
                    BackendError::Unreachable(private)
                } else if e.is_connect() {
                    BackendError::Unreachable(format!("upstream unreachable ({})", reqwest_reason(&e)))
                } else {
                    BackendError::Failed(format!("upstream request failed ({})", reqwest_reason(&e)))
                }
            })?;
            let status = response.status();
            // Seconds (the form OpenAI-compatible servers send); an HTTP date is read as "soon".
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(1.0))
                .map(|s| s.min(3600.0));
            let measured = response
                .headers()
                .get(MEASURED_GPU_SECONDS_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok());
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            if status.is_redirection() {
                return Err(BackendError::Failed(format!(
                    "upstream answered HTTP {} (a redirect), which the agent does not follow; point the endpoint's \
                     upstream.url at the final address",
                    status.as_u16()
                )));
            }
            let body = tokio::time::timeout_at(deadline, read_capped(response, MAX_UPSTREAM_RESPONSE_BYTES))
                .await
                .map_err(|_| BackendError::Timeout(timeout))??;
            if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                return Err(BackendError::Rejected(format!(
                    "it answered HTTP {}: {}",
                    status.as_u16(),
                    upstream_message(&body, status)
                )));
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Err(BackendError::Throttled(retry_after));
            }
            if status.is_client_error() {
                // The upstream's own error message says what is wrong with the audio; pass it on, bounded.
                return Err(BackendError::BadInput(upstream_message(&body, status)));
            }
            if !status.is_success() {
                return Err(BackendError::Failed(format!("upstream answered HTTP {}", status.as_u16())));
            }
            let json = content_type
                .starts_with("application/json")
                .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .flatten();
            if content_type.starts_with("application/json") && json.is_none() {
                // A broken upstream, not an answer: relaying it would hand the client garbage under a 200.
                return Err(BackendError::Failed(
                    "upstream answered HTTP 200 with a body that is not the JSON its content type says".into(),
                ));
            }
            let text = if let Some(v) = &json {
                v.get("text").and_then(|t| t.as_str()).map(str::to_string)
            } else if content_type.starts_with("text/plain") {
                Some(String::from_utf8_lossy(&body).into_owned())
            } else {
                None
            };
            let billed_audio_seconds = json
                .as_ref()
                .and_then(|v| v.pointer("/usage/seconds"))
                .and_then(|s| s.as_f64())
                .filter(|s| s.is_finite() && *s >= 0.0);
            Ok(BackendResponse {
                content_type,
                body,
                text,
                measured_gpu_seconds: measured,
                billed_audio_seconds,
                words: Vec::new(),
            })
        })
    }
}

/// Largest upstream response body the agent reads: a transcript with word timings is kilobytes to a few MiB; more
/// is a broken or hostile upstream, and reading it would cost this agent's memory.
pub const MAX_UPSTREAM_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Reads a response body, refusing (without buffering the rest) once it passes `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BackendError> {
    let too_big = || {
        BackendError::Failed(format!(
            "upstream response is larger than {} MiB; the agent does not relay it",
            limit >> 20
        ))
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BackendError::Failed(format!("upstream body unreadable ({})", reqwest_reason(&e))))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The [`crate::egress::PublicOnly`] refusal inside a connect error, if that is what it is.
fn private_target_in(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if text.contains("allowPrivateNetwork") {
            return Some(text);
        }
        source = cause.source();
    }
    None
}

fn reqwest_reason(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() || e.is_decode() {
        "bad body"
    } else {
        "request error"
    }
}

fn upstream_message(body: &[u8], status: reqwest::StatusCode) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let mut message: String = message.chars().take(300).collect();
    if message.is_empty() {
        message = format!("HTTP {}", status.as_u16());
    }
    message
}

/// Chooses the backend for an endpoint: upstream from its shard, built-ins from what the agent registered.
#[derive(Clone)]
pub struct Backends {
    /// For endpoints that did not opt in to private addresses: its resolver answers public addresses only.
    public_client: reqwest::Client,
    /// For endpoints with `allowPrivateNetwork`.
    client: reqwest::Client,
    builtin: Arc<HashMap<BuiltinModel, Arc<dyn Backend>>>,
    /// `builtin: whisper` by size.
    whisper: Arc<HashMap<WhisperSize, Arc<dyn Backend>>>,
}

impl Backends {
    pub fn new(builtin: HashMap<BuiltinModel, Arc<dyn Backend>>) -> Self {
        let builder = || {
            reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(30))
                // An upstream's redirect could aim the agent at any address (the node's metadata service, another
                // in-cluster API): the agent connects only where an InferenceEndpoint says. 3xx is a backend error.
                .redirect(reqwest::redirect::Policy::none())
        };
        let built = "the TLS provider is installed before the HTTP client is built";
        let client = builder().build().expect(built);
        let public_client = builder().dns_resolver(Arc::new(crate::egress::PublicOnly)).build().expect(built);
        Backends { public_client, client, builtin: Arc::new(builtin), whisper: Arc::default() }
    }

    /// Registers the built-in Whisper sizes this agent runs.
    pub fn with_whisper(mut self, whisper: HashMap<WhisperSize, Arc<dyn Backend>>) -> Self {
        self.whisper = Arc::new(whisper);
        self
    }

    pub fn for_endpoint(&self, shard: &EndpointShard) -> Result<Arc<dyn Backend>, Refusal> {
        if let Some(up) = &shard.backend.upstream {
            let client = if up.allow_private_network { &self.client } else { &self.public_client };
            let upstream = Upstream::new(client.clone(), &up.url, up.timeout.0, up.allow_private_network)
                .with_credential(shard.upstream_credential.as_ref());
            return Ok(Arc::new(upstream));
        }
        if shard.backend.builtin == Some(BuiltinModel::Whisper) {
            let size = shard.backend.size.unwrap_or_default();
            return self.whisper.get(&size).cloned().ok_or_else(|| {
                BackendError::Unavailable(format!("built-in whisper {} is not loaded on this agent", size.as_str()))
                    .to_refusal()
            });
        }
        if let Some(model) = shard.backend.builtin {
            return self.builtin.get(&model).cloned().ok_or_else(|| {
                BackendError::Unavailable(format!(
                    "built-in model {model:?} is not loaded on this agent (models dir missing or no weights)"
                ))
                .to_refusal()
            });
        }
        Err(BackendError::Unavailable("the endpoint names no backend".into()).to_refusal())
    }

    /// The model name sent to the backend.
    pub fn backend_model(shard: &EndpointShard) -> String {
        shard.backend.upstream.as_ref().and_then(|u| u.model.clone()).unwrap_or_else(|| shard.model.clone())
    }
}
