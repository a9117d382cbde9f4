//! `RateTier`: how much GPU time a key may spend, how many streams it may hold, and how it is shed.
use crate::GoDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A rate tier. Keys are metered in GPU-seconds: the time the GPU really spends on a key's requests.
/// Each key gets its own token bucket per endpoint, refilled at `gpuSecondsPerMinute` and holding at most
/// `burstGpuSeconds`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "infergate.dev",
    version = "v1alpha1",
    kind = "RateTier",
    plural = "ratetiers",
    shortname = "igtier",
    category = "infergate",
    status = "RateTierStatus",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"GPU-s/min","type":"number","jsonPath":".spec.gpuSecondsPerMinute"}"#,
    printcolumn = r#"{"name":"Burst","type":"number","jsonPath":".spec.burstGpuSeconds"}"#,
    printcolumn = r#"{"name":"Streams","type":"integer","jsonPath":".spec.maxConcurrentStreams"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("!has(self.spec.endpointOverrides) || self.spec.endpointOverrides.all(o, self.spec.endpointOverrides.exists_one(p, p.endpoint == o.endpoint))").message("spec.endpointOverrides: each endpoint may be listed once").reason(Reason::FieldValueDuplicate)
)]
#[serde(rename_all = "camelCase")]
pub struct RateTierSpec {
    /// Sustained GPU-seconds each key may spend per minute on one endpoint (the bucket's refill rate).
    #[schemars(range(min = 0.0))]
    pub gpu_seconds_per_minute: f64,
    /// GPU-seconds a key may spend at once after being idle (the bucket's size). Must not be negative;
    /// 0 means no bursting beyond the refill rate.
    #[x_kube(validation = Rule::new("self >= 0.0").message("burstGpuSeconds must not be negative (0 disables bursting)"))]
    pub burst_gpu_seconds: f64,
    /// Open streams (WebSocket or gRPC) one key may hold at once. 0 disables streaming for the tier.
    #[serde(default = "default_streams")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_concurrent_streams: u32,
    /// Requests that wait for capacity instead of being refused at once.
    #[serde(default)]
    pub queue: QueueSpec,
    /// Load-shedding order: when the GPUs are hot, tiers with the lowest priority are tightened first.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
    /// Limits that differ for particular endpoints (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub endpoint_overrides: Vec<EndpointOverride>,
    /// How GPU utilisation on the node scales this tier's refill rate.
    #[serde(default)]
    pub gpu_utilization: GpuUtilizationSpec,
    /// Namespaces whose ApiKeyPolicies may use this tier. Absent: every namespace. A policy in any other
    /// namespace that names this tier is not served (`Ready=False`), so a tenant cannot pick a tier meant for
    /// someone else. An empty list is refused; to retire a tier, delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub allowed_namespaces: Option<Vec<String>>,
    /// What agents sharing a counter store (Redis) do with this tier's keys while the store is unreachable:
    /// `local` (default) enforces this tier's limits divided by the number of agents from each agent's own
    /// memory; `failOpen` admits without counting; `failClosed` refuses with 503 until the store is back.
    /// Agents with the in-memory store never consult it.
    #[serde(default, skip_serializing_if = "OnStoreFailure::is_default")]
    pub on_store_failure: OnStoreFailure,
    /// How long the session tokens minted from this tier's keys (`POST /v1/oauth/token`) live, between `1m` and
    /// `1h`; default `10m`. A token never outlives its key's validity or its policy's `expiresAt`, and revoking
    /// the key refuses its tokens at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('1h')").message("tokenLifetime must be between 1m and 1h"))]
    pub token_lifetime: Option<GoDuration>,
    /// Limits for each end user of an app, inside the key's own. A session token minted with `end_user` (the
    /// app's id for its user) spends from the key's budget and from that user's, so one user of a voice app
    /// cannot spend the whole app's GPU-seconds or hold all its streams. Unset fields leave that limit to the
    /// key alone; a limit above the key's has no effect beyond the key's. Requests made with the key itself, or
    /// with tokens minted without `end_user`, are not limited per user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<EndUserLimitsSpec>,
    /// When true, a session token may hold one open stream at a time: its `jti` is bound to the stream it opened
    /// (across every agent sharing the counter store), and a second stream with the same token is refused with
    /// `stream_cap` until the first ends. A stream refreshed to a new token binds the new token's `jti`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_stream_per_token: bool,
}

/// Per end user limits (`RateTier.spec.endUser`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndUserLimitsSpec {
    /// Sustained GPU-seconds one end user may spend per minute on one endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub gpu_seconds_per_minute: Option<f64>,
    /// GPU-seconds one end user may spend at once after being idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub burst_gpu_seconds: Option<f64>,
    /// Open streams one end user may hold at once on one endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_concurrent_streams: Option<u32>,
}

/// Token lifetime when a tier sets none.
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 600;

/// A tier's behaviour while the shared counter store is unreachable.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnStoreFailure {
    /// Each agent enforces `limit / agents` (rate, burst and streams, streams rounded up) from its own memory.
    #[default]
    Local,
    /// Admit without counting: availability over the budget.
    FailOpen,
    /// Refuse with 503 `backend_unavailable` and a Retry-After: the budget over availability.
    FailClosed,
}

impl OnStoreFailure {
    pub fn is_default(&self) -> bool {
        *self == OnStoreFailure::Local
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            OnStoreFailure::Local => "local",
            OnStoreFailure::FailOpen => "failOpen",
            OnStoreFailure::FailClosed => "failClosed",
        }
    }
}

impl RateTierSpec {
    /// Whether an ApiKeyPolicy in `namespace` may use this tier.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.allowed_namespaces.as_ref().is_none_or(|allowed| allowed.iter().any(|n| n == namespace))
    }
}

fn default_streams() -> u32 {
    4
}
fn default_priority() -> u32 {
    100
}

/// A short queue that absorbs bursts instead of refusing them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Requests per key that may wait for capacity; 0 refuses at once when the bucket or the stream cap is full.
    #[schemars(range(min = 0, max = 10000))]
    pub max_depth: u32,
    /// How long a queued request waits before it is refused with 429 and a Retry-After; at most `10m` (clients
    /// and proxies give up on a silent request long before that).
    #[x_kube(validation = Rule::new("duration(self) <= duration('10m')").message("queue.timeout must be at most 10m"))]
    pub timeout: GoDuration,
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self { max_depth: 0, timeout: GoDuration::from_secs(2) }
    }
}

/// Per-endpoint limits for this tier; unset fields inherit the tier's.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOverride {
    /// The InferenceEndpoint, as `namespace/name`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub gpu_seconds_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub burst_gpu_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_concurrent_streams: Option<u32>,
}

/// GPU-utilisation-driven limits: above the target, the refill rate is multiplied by a factor between
/// `minFactor` and `maxFactor`; below it, the factor relaxes back towards `maxFactor`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minFactor <= self.maxFactor").message("gpuUtilization.minFactor must not exceed maxFactor"))]
pub struct GpuUtilizationSpec {
    /// Node GPU utilisation (percent) above which this tier starts to be tightened.
    #[schemars(range(min = 1, max = 100))]
    pub target_percent: u32,
    /// The lowest factor the refill rate may be scaled to (0 stops refilling while the GPUs are saturated).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_factor: f64,
    /// The highest factor (1.0 = the tier's nominal rate; above 1 lets the tier use idle GPUs).
    #[schemars(range(min = 0.0, max = 10.0))]
    pub max_factor: f64,
}

impl Default for GpuUtilizationSpec {
    fn default() -> Self {
        Self { target_percent: 85, min_factor: 0.25, max_factor: 1.0 }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateTierStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    // Keyed by `type`, as metav1 conditions are in Kubernetes' own APIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many ApiKeyPolicies use this tier.
    #[serde(default)]
    pub policies: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(allowed: Option<&[&str]>) -> RateTierSpec {
        let mut spec: RateTierSpec =
            serde_json::from_value(serde_json::json!({"gpuSecondsPerMinute": 60.0, "burstGpuSeconds": 10.0})).unwrap();
        spec.allowed_namespaces = allowed.map(|a| a.iter().map(|n| n.to_string()).collect());
        spec
    }

    #[test]
    fn a_tier_without_allowed_namespaces_serves_every_namespace() {
        let open = tier(None);
        assert!(open.allows_namespace("checkout") && open.allows_namespace("anything"));
        assert!(!serde_json::to_string(&open).unwrap().contains("allowedNamespaces"));
    }

    #[test]
    fn a_tier_with_allowed_namespaces_serves_exactly_those() {
        let closed = tier(Some(&["checkout", "support"]));
        assert!(closed.allows_namespace("checkout") && closed.allows_namespace("support"));
        for other in ["team-b", "checkou", "checkout-staging", "", "*"] {
            assert!(!closed.allows_namespace(other), "{other:?}");
        }
    }
}
