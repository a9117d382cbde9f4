//! `InferenceEndpoint`: one model that clients can call, where it runs, what it costs and what it accepts.
use crate::GoDuration;
use crate::key::Environment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An inference endpoint served by the infergate agents. Clients name it by `model`; keys reach it through an
/// ApiKeyPolicy scope.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "infergate.dev",
    version = "v1alpha1",
    kind = "InferenceEndpoint",
    plural = "inferenceendpoints",
    shortname = "igep",
    category = "infergate",
    namespaced,
    status = "InferenceEndpointStatus",
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model"}"#,
    printcolumn = r#"{"name":"Features","type":"string","jsonPath":".spec.features"}"#,
    printcolumn = r#"{"name":"Fallback","type":"string","jsonPath":".spec.fallback","priority":1}"#,
    printcolumn = r#"{"name":"Redaction","type":"string","jsonPath":".spec.redaction.entities","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("!has(self.spec.fallback) || self.spec.fallback != self.metadata.name").message("spec.fallback must name a different InferenceEndpoint, not this one")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.backend.builtin) || !self.features.exists(f, f == 'embed' || f == 'verify' || f == 'vad')").message("features embed, verify and vad are served by the built-in backends only: set backend.builtin"))]
#[x_kube(validation = Rule::new("!has(self.backend.builtin) || self.backend.builtin != 'vad' || self.features.all(f, f == 'vad')").message("the built-in vad backend serves only the vad feature"))]
#[x_kube(validation = Rule::new("!has(self.backend.builtin) || self.backend.builtin != 'speaker-encoder' || self.features.all(f, f == 'embed' || f == 'verify' || f == 'vad')").message("the built-in speaker-encoder backend serves embed, verify (and vad as a pre-step), not transcribe"))]
#[x_kube(validation = Rule::new("!has(self.backend.builtin) || self.backend.builtin != 'whisper' || self.features.all(f, f == 'transcribe')").message("the built-in whisper backend serves only the transcribe feature"))]
pub struct InferenceEndpointSpec {
    /// The model name clients ask for (the `model` field of OpenAI-compatible requests, `model` in gRPC and
    /// WebSocket start messages). Unique among the endpoints an agent serves.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"))]
    pub model: String,
    /// What the endpoint offers: `transcribe` (speech to text), `embed` (speaker embedding), `verify`
    /// (speaker verification against a reference embedding), `vad` (voice activity detection).
    #[x_kube(validation = Rule::new("self.all(f, self.exists_one(g, g == f))").message("features must not repeat"))]
    #[schemars(length(min = 1, max = 4))]
    pub features: Vec<Feature>,
    /// Where requests are computed: exactly one of `builtin` or `upstream`.
    pub backend: BackendSpec,
    /// How GPU time is estimated before a request runs; the agent settles against the measured time afterwards.
    #[serde(default)]
    pub cost: CostModel,
    /// What a single request or stream may contain.
    #[serde(default)]
    pub limits: RequestLimits,
    /// Another InferenceEndpoint (same namespace) that takes new requests when this one is saturated for the
    /// caller's tier. Responses served by the fallback say so (`x-infergate-fallback` header / metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Which agents serve this endpoint (matched against node labels). Empty: every agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// What the agent may keep after a request. Defaults to nothing.
    #[serde(default)]
    pub retention: Retention,
    /// Which API keys may call this endpoint, by the environment in their prefix: `live` admits only `sk_live_`
    /// keys, `test` only `sk_test_` keys, `both` either. Mark production endpoints `live` so that a test key
    /// (handed to CI, staging or a laptop) can never spend production GPUs. Defaults to `both`, so endpoints
    /// created before this field keep accepting the keys they accepted.
    #[serde(default, skip_serializing_if = "EndpointEnvironment::is_both")]
    pub environment: EndpointEnvironment,
    /// Namespaces whose ApiKeyPolicies may grant access to this endpoint, besides its own. `*` allows all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_namespaces: Vec<String>,
    /// Speaker verification: cosine similarity at or above which `verify` answers "same speaker".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1.0, max = 1.0))]
    pub verify_threshold: Option<f64>,
    /// Personal data the agent redacts from this endpoint's transcripts (and audio) before anything leaves the
    /// agent. Every caller gets at least this; an ApiKeyPolicy or a request can add to it, never take away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<crate::redaction::Redaction>,
}

/// Which key environments an endpoint admits. Kept apart from [`Environment`] (what a key *is*) because an
/// endpoint may admit both, a key is always exactly one.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointEnvironment {
    // `//`, not `///`: doc comments on variants would turn the schema's `enum` into a `oneOf`.
    // Only `sk_live_` keys.
    Live,
    // Only `sk_test_` keys.
    Test,
    // Either; the default for compatibility with endpoints written before `environment` existed.
    #[default]
    Both,
}

impl EndpointEnvironment {
    /// Whether a key of `key` environment may call an endpoint of this environment. On the admission hot path.
    pub fn admits(self, key: Environment) -> bool {
        match self {
            EndpointEnvironment::Both => true,
            EndpointEnvironment::Live => key == Environment::Live,
            EndpointEnvironment::Test => key == Environment::Test,
        }
    }

    pub fn is_both(&self) -> bool {
        *self == EndpointEnvironment::Both
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointEnvironment::Live => "live",
            EndpointEnvironment::Test => "test",
            EndpointEnvironment::Both => "both",
        }
    }
}

/// A feature an endpoint offers and a key may be scoped to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Feature {
    Transcribe,
    Embed,
    Verify,
    Vad,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Transcribe => "transcribe",
            Feature::Embed => "embed",
            Feature::Verify => "verify",
            Feature::Vad => "vad",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.builtin) != has(self.upstream)").message("backend: set exactly one of builtin or upstream"))]
#[x_kube(validation = Rule::new("!has(self.size) || (has(self.builtin) && self.builtin == 'whisper')").message("backend.size applies to builtin: whisper only"))]
pub struct BackendSpec {
    /// A model the agent runs itself: `whisper` (transcribe), `speaker-encoder` (embed, verify) or `vad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinModel>,
    /// Which Whisper for `builtin: whisper`: `tiny.en` (English, the default) or `base` (99 languages, and
    /// translation to English).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<WhisperSize>,
    /// An OpenAI-compatible server the agent forwards to (for `transcribe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSpec>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinModel {
    SpeakerEncoder,
    Vad,
    Whisper,
}

/// The built-in Whisper sizes (weights fetched and digest-checked by `infergate-agent models fetch`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum WhisperSize {
    #[default]
    #[serde(rename = "tiny.en")]
    TinyEn,
    #[serde(rename = "base")]
    Base,
}

impl WhisperSize {
    pub fn as_str(self) -> &'static str {
        match self {
            WhisperSize::TinyEn => "tiny.en",
            WhisperSize::Base => "base",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Base URL of the OpenAI-compatible API, e.g. `http://whisper.speech.svc:8000/v1`: scheme, host, optional
    /// port and path only. The agent appends the API paths (`/audio/transcriptions`, ...) itself, so a query or
    /// a fragment is refused.
    #[x_kube(validation = Rule::new("isURL(self) && (url(self).getScheme() == 'http' || url(self).getScheme() == 'https')").message("upstream.url must be an absolute http(s) URL"))]
    #[x_kube(validation = Rule::new("!self.contains('?')").message("upstream.url must not carry a query (?...): give only scheme://host[:port]/path, e.g. http://whisper.speech.svc:8000/v1, and configure parameters on the upstream server"))]
    #[x_kube(validation = Rule::new("!self.contains('#')").message("upstream.url must not carry a fragment (#...): remove everything from the '#' on"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Let the agent connect to an upstream whose address is loopback (127.0.0.0/8, ::1), link-local
    /// (169.254.0.0/16, where clouds serve instance credentials, and fe80::/10) or private (10.0.0.0/8,
    /// 172.16.0.0/12, 192.168.0.0/16, fc00::/7). Off by default: the agent refuses such targets, checked on the
    /// address each connection resolves to, so an endpoint cannot be aimed at the node's metadata service or the
    /// cluster's internal APIs. In-cluster Service addresses are private: set this for an upstream such as
    /// `http://whisper.speech.svc:8000/v1`, and restrict where the agents may connect with NetworkPolicy egress.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_network: bool,
    /// The model name to send upstream, when it differs from `spec.model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How long one upstream request may take; at most `1h`.
    #[serde(default = "default_upstream_timeout")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('1h')").message("upstream.timeout must be at most 1h"))]
    pub timeout: GoDuration,
    /// The upstream's own credential, sent on every request the agent forwards (the client's key never is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<UpstreamAuth>,
}

/// Where the upstream's credential is kept: a key of a Secret in the endpoint's namespace. The Secret must carry
/// the label `infergate.dev/upstream-credential: "true"` (the operator watches only Secrets so labelled, never a
/// namespace's other Secrets). The value is copied into the endpoint's gateway-config Secret for the agents and
/// never logged; a rotated value reaches the agents like any config change.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamAuth {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The data key holding the credential.
    #[serde(default = "default_auth_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// The header to send it in. `Authorization` (default) sends `Bearer <value>`; any other header (e.g.
    /// `x-api-key`) sends the value as it is.
    #[serde(default = "default_auth_header")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9-]{1,64}$"))]
    pub header: String,
}

fn default_auth_key() -> String {
    "token".into()
}
fn default_auth_header() -> String {
    "Authorization".into()
}

fn default_upstream_timeout() -> GoDuration {
    GoDuration::from_secs(120)
}

/// Estimated GPU cost, used to pre-charge a request before it runs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostModel {
    /// Estimated GPU-seconds per second of audio.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub gpu_seconds_per_audio_second: f64,
    /// The least a request is charged, whatever its length (default 0.01): a flood of near-empty requests still
    /// costs GPU-seconds, and a request never bills as free.
    #[serde(default = "default_minimum_gpu_seconds")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub minimum_gpu_seconds: f64,
}

// Ten milliseconds of GPU time: about what the smallest real request costs to schedule.
fn default_minimum_gpu_seconds() -> f64 {
    0.01
}

impl Default for CostModel {
    fn default() -> Self {
        Self { gpu_seconds_per_audio_second: 0.05, minimum_gpu_seconds: default_minimum_gpu_seconds() }
    }
}

/// Ingress limits. Each violation closes only the offending request or stream, with its own error code.
// Plain JsonSchema with `extend` for the CEL rules: KubeSchema's derive cannot take the container-level
// `#[serde(default)]` this struct needs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestLimits {
    /// Longest audio accepted in one request, and in total over one stream, in seconds.
    #[schemars(range(min = 0.1, max = 86400.0))]
    pub max_audio_seconds: f64,
    /// Largest audio chunk (one WebSocket binary frame or gRPC message), in bytes.
    #[schemars(range(min = 64, max = 16777216))]
    pub max_chunk_bytes: u32,
    /// Most messages a stream may send per second.
    #[schemars(range(min = 1, max = 10000))]
    pub max_messages_per_second: u32,
    /// A stream that sends nothing for this long is closed; at most `1h`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) <= duration('1h')", "message": "limits.idleTimeout must be at most 1h"}]))]
    pub idle_timeout: GoDuration,
    /// A stream is closed after this long, whatever it is doing; at most `24h` (clients reconnect for longer).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) <= duration('24h')", "message": "limits.maxSessionDuration must be at most 24h; clients reconnect for longer sessions"}]))]
    pub max_session_duration: GoDuration,
    /// Accepted audio encodings.
    #[schemars(length(min = 1))]
    pub codecs: Vec<Codec>,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_audio_seconds: 600.0,
            max_chunk_bytes: 64 * 1024,
            max_messages_per_second: 100,
            idle_timeout: GoDuration::from_secs(30),
            max_session_duration: GoDuration::from_secs(3600),
            codecs: vec![Codec::Pcm16, Codec::Wav],
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Raw little-endian signed 16-bit mono PCM at 16 kHz.
    Pcm16,
    /// RIFF WAVE (PCM16 or float32, mono, 16 kHz).
    Wav,
    Flac,
    Mp3,
    Ogg,
    Webm,
    /// MP4/M4A (AAC), what iOS and many recorders write.
    Mp4,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Whether request audio may be kept after the response. Only `none` is supported: audio is dropped as soon
    /// as it has been processed.
    #[serde(default)]
    pub audio: AudioRetention,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AudioRetention {
    #[default]
    None,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceEndpointStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    // Keyed by `type`, as metav1 conditions are in Kubernetes' own APIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many ApiKeyPolicies grant access to this endpoint.
    #[serde(default)]
    pub policies: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_admit_only_their_keys() {
        use Environment::{Live, Test};
        for (endpoint, key, admitted) in [
            (EndpointEnvironment::Live, Live, true),
            (EndpointEnvironment::Live, Test, false),
            (EndpointEnvironment::Test, Test, true),
            (EndpointEnvironment::Test, Live, false),
            (EndpointEnvironment::Both, Live, true),
            (EndpointEnvironment::Both, Test, true),
        ] {
            assert_eq!(endpoint.admits(key), admitted, "{} endpoint, {} key", endpoint.as_str(), key.as_str());
        }
    }

    #[test]
    fn environment_defaults_to_both_and_parses_lowercase() {
        assert_eq!(EndpointEnvironment::default(), EndpointEnvironment::Both);
        for env in [EndpointEnvironment::Live, EndpointEnvironment::Test, EndpointEnvironment::Both] {
            assert_eq!(serde_json::to_value(env).unwrap(), env.as_str());
            assert_eq!(serde_json::from_value::<EndpointEnvironment>(env.as_str().into()).unwrap(), env);
        }
        assert!(serde_json::from_str::<EndpointEnvironment>(r#""prod""#).is_err());
    }

    #[test]
    fn upstreams_refuse_private_networks_unless_opted_in() {
        let upstream: UpstreamSpec = serde_json::from_str(r#"{"url":"http://whisper.speech.svc:8000/v1"}"#).unwrap();
        assert!(!upstream.allow_private_network);
        // The default is not serialized, so shards of endpoints that never set it keep their revision.
        assert!(!serde_json::to_string(&upstream).unwrap().contains("allowPrivateNetwork"));
        let opted: UpstreamSpec =
            serde_json::from_str(r#"{"url":"http://127.0.0.1:8000/v1","allowPrivateNetwork":true}"#).unwrap();
        assert!(opted.allow_private_network);
    }
}
