//! `ApiKeyPolicy`: who may call what. The operator issues the key, writes it into `secretName`, rotates and
//! revokes it; the spec is only ever written by people (or GitOps), never by the operator.
use crate::GoDuration;
use crate::endpoint::Feature;
use crate::key::Environment;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An API-key policy: one key (and, during a rotation overlap, its predecessor) with a tier, scopes and a
/// lifecycle. The key is written to the Secret `secretName` in this namespace under `api-key`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "infergate.dev",
    version = "v1alpha1",
    kind = "ApiKeyPolicy",
    plural = "apikeypolicies",
    shortname = "igkey",
    category = "infergate",
    namespaced,
    status = "ApiKeyPolicyStatus",
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
    printcolumn = r#"{"name":"Env","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".status.currentKeyId"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Next rotation","type":"date","jsonPath":".status.nextRotationAt","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPolicySpec {
    /// The RateTier (cluster-scoped) whose limits apply to this key.
    #[schemars(length(min = 1, max = 253))]
    pub tier: String,
    /// `live` issues `sk_live_` keys, `test` issues `sk_test_` keys.
    #[serde(default)]
    pub environment: Environment,
    /// The Secret in this namespace that receives the key (data keys `api-key` and `key-id`). The operator
    /// creates and owns it; it must not be an existing Secret managed by something else.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret_name: String,
    /// What the key may call. At least one scope.
    #[schemars(length(min = 1, max = 64))]
    pub scopes: Vec<Scope>,
    /// Scheduled rotation. Without it, the key lives until revoked or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// Keys to revoke, by key id (see `status.keys`). A revoked key stops working at the next reconcile and
    /// its open streams are closed; a revoked current key is replaced by a new one immediately.
    // A list-map keyed by `keyId`: server-side apply merges items by key, so GitOps and `kubectl infergate keys
    // revoke` (its own field manager) each own their revocations. The API server refuses duplicate keys of a
    // list-map by itself; the CEL rule stays because infergate's own validator (standalone mode, `validate`, the
    // test API stand-in) checks schema and CEL, not list-map keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(
        validation = Rule::new("self.all(r, self.exists_one(s, s.keyId == r.keyId))").message("revocations: each keyId may be listed once").reason(Reason::FieldValueDuplicate),
        merge_strategy = ListMerge::Map(vec!["keyId".into()])
    )]
    #[schemars(length(max = 256))]
    pub revocations: Vec<Revocation>,
    /// Takes every key of this policy out of service without revoking it; set back to false to restore.
    #[serde(default)]
    pub suspended: bool,
    /// After this time the policy's keys stop working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Browser Origins allowed to open WebSocket streams with this key, e.g. `https://app.example.com`.
    /// Empty: browser requests (those that send an Origin header) are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(o, o == '*' || o.matches('^https?://[^/]+$'))").message("allowedOrigins: use scheme://host[:port] with no path, e.g. https://app.example.com"))]
    #[schemars(length(max = 64))]
    pub allowed_origins: Vec<String>,
    /// Let clients send a precomputed 256-d speaker embedding instead of audio to `verify`, so raw audio can stay
    /// on the user's device.
    #[serde(default)]
    pub allow_client_embeddings: bool,
    /// Require mutual TLS for this policy's keys: a request must also come over a connection with a client
    /// certificate the agent verified (`--tls-client-ca`), and, when `subjects` or `sans` are listed, one whose
    /// subject common name is in `subjects` or which carries one of `sans` (DNS name or URI). The key alone is then
    /// not enough: refused with `client_certificate_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_certificate: Option<ClientCertificateRequirement>,
    /// Redaction this key's requests get on top of each endpoint's `spec.redaction`: more entity types, a
    /// stronger style, audio redaction. It can only tighten what an endpoint enforces, never loosen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<crate::redaction::Redaction>,
    /// External OpenID Connect issuers whose access tokens the agents accept for this policy, as they accept the
    /// policy's own session tokens: verified locally against the issuer's JWKS (fetched and refreshed by each
    /// agent), charged to this policy's budget through its current key, narrowed by the token's scope claim, and
    /// limited per end user by its user claim. Use it when an app's users sign in at its identity provider and
    /// should call the gateway with that provider's token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub trusted_issuers: Vec<TrustedIssuer>,
}

/// One external token issuer a policy trusts (`spec.trustedIssuers`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.jwksUri.startsWith('https://') || (has(self.allowInsecureHttp) && self.allowInsecureHttp && self.jwksUri.startsWith('http://'))").message("trustedIssuers: jwksUri must be an https:// URL (http:// only with allowInsecureHttp: true)"))]
pub struct TrustedIssuer {
    /// The tokens' `iss`, exactly (e.g. `https://login.example.com/`).
    #[schemars(length(min = 1, max = 512))]
    pub issuer: String,
    /// The `aud` a token must carry (one of its audiences) to be accepted for this policy.
    #[schemars(length(min = 1, max = 512))]
    pub audience: String,
    /// Where the issuer publishes its signing keys (the `jwks_uri` of its discovery document). `https://`, or
    /// `http://` only with `allowInsecureHttp` (a loopback test issuer).
    #[schemars(length(min = 1, max = 1024))]
    pub jwks_uri: String,
    /// Fetch the JWKS over plain HTTP. For test issuers on loopback only: anyone on the path could swap the keys.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    /// The claim holding the token's scope, a space-separated string or a list; its `model:<name>` and
    /// `feature:<name>` entries narrow the policy's scope (other entries, like `openid`, are ignored). Default
    /// `scope`. A token without it gets the policy's whole scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub scope_claim: Option<String>,
    /// The claim naming the end user, for the tier's per-user limits and usage. Default `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub end_user_claim: Option<String>,
}

impl TrustedIssuer {
    pub fn scope_claim(&self) -> &str {
        self.scope_claim.as_deref().unwrap_or("scope")
    }
    pub fn end_user_claim(&self) -> &str {
        self.end_user_claim.as_deref().unwrap_or("sub")
    }
}

/// Which client certificates a policy accepts (`spec.requireClientCertificate`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateRequirement {
    /// Subject common names accepted, e.g. `checkout-service`. Empty with empty `sans`: any verified certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub subjects: Vec<String>,
    /// Subject alternative names accepted (DNS names or URIs, e.g. `spiffe://cluster.local/ns/shop/sa/checkout`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub sans: Vec<String>,
}

/// One endpoint the key may call and the features it may use there.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// The InferenceEndpoint's name.
    #[schemars(length(min = 1, max = 253))]
    pub endpoint: String,
    /// The InferenceEndpoint's namespace; defaults to this policy's namespace. The endpoint must list this
    /// namespace in `allowedNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Features allowed on that endpoint; empty means every feature it offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<Feature>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.overlap) < duration(self.every)").message("rotation.overlap must be shorter than rotation.every, or two generations of keys would be valid at once"))]
#[x_kube(validation = Rule::new("duration(self.every) >= duration('1h')").message("rotation.every must be at least 1h"))]
pub struct Rotation {
    /// How often a new key is issued, e.g. `720h` (30 days); between `1h` and `8760h` (a year).
    #[x_kube(validation = Rule::new("duration(self) <= duration('8760h')").message("rotation.every must be at most 8760h (a year)"))]
    pub every: GoDuration,
    /// How long the previous key keeps working after a rotation, e.g. `24h`. Must be shorter than `every`, and
    /// at most `720h` (30 days).
    #[serde(default = "default_overlap")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('720h')").message("rotation.overlap must be at most 720h (30 days)"))]
    pub overlap: GoDuration,
}

fn default_overlap() -> GoDuration {
    GoDuration::from_secs(3600)
}

/// A request to revoke one key. The operator records when it took effect in `status.revocations`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// The key id to revoke (`kid_` + 16 hex characters), as shown in `status.keys` and audit lines.
    #[schemars(regex(pattern = r"^kid_[0-9a-f]{16}$"))]
    pub key_id: String,
    /// Why, for the audit trail.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Who asked, for the audit trail.
    #[schemars(length(min = 1, max = 256))]
    pub requested_by: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    // Keyed by `type`, as metav1 conditions are in Kubernetes' own APIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The key id now written in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_key_id: Option<String>,
    /// Keys currently accepted by the gateway (never the key itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<DateTime<Utc>>,
    /// Revocations the operator has enforced: who, why, when, and how far it reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<RevocationStatus>,
    /// The gateway-config revision that carries this policy's current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub key_id: String,
    /// `current` or `retiring` (still valid during a rotation overlap).
    pub state: KeyState,
    pub issued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Current,
    Retiring,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    pub key_id: String,
    pub reason: String,
    pub requested_by: String,
    /// When the operator first removed the key from the gateway config.
    pub revoked_at: DateTime<Utc>,
    /// `false` when the key id matched no key this policy issued (a typo, or a key already retired).
    pub matched: bool,
    /// How many agents run a config revision without this key, out of how many agents report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_enforcing: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_total: Option<u32>,
}
