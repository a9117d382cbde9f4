//! Snapshot builders for tests: `mk_policy("app").key(&key(1)).scope("transcribe", "whisper-1", &[..])`.
//! Compiled for this crate's tests and, through the `testing` feature, for the agent's tests only.
use chrono::{DateTime, Duration, TimeZone, Utc};
use infergate_crds::endpoint::{BackendSpec, CostModel, Feature, RequestLimits, UpstreamSpec};
use infergate_crds::gateway::{
    EndpointShard, KeyEntry, PolicyShard, RevokedKey, SHARD_SCHEMA_VERSION, ScopeEntry, Shard, TierLimits,
};
use infergate_crds::key::{ApiKey, Environment};
use infergate_crds::policy::KeyState;
use infergate_crds::{GoDuration, NamespacedName};
use std::collections::BTreeMap;

/// The fixed "now" every builder dates its keys from.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

pub fn key(n: u8) -> ApiKey {
    ApiKey::from_entropy(Environment::Test, &[n; 32])
}

pub fn tier(name: &str) -> TierLimits {
    TierLimits {
        name: name.into(),
        priority: 100,
        gpu_seconds_per_minute: 6.0,
        burst_gpu_seconds: 1.0,
        max_concurrent_streams: 2,
        queue_max_depth: 0,
        queue_timeout_ms: 1000,
        target_utilization_percent: 85,
        min_factor: 0.25,
        max_factor: 1.0,
        on_store_failure: Default::default(),
        endpoint_overrides: BTreeMap::new(),
        token_lifetime_seconds: None,
        end_user: None,
        one_stream_per_token: false,
    }
}

pub struct EndpointBuilder(EndpointShard);

pub fn mk_endpoint(name: &str, model: &str) -> EndpointBuilder {
    EndpointBuilder(EndpointShard {
        schema_version: SHARD_SCHEMA_VERSION,
        endpoint: NamespacedName::new("default", name),
        generation: 1,
        model: model.into(),
        features: vec![Feature::Transcribe],
        environment: Default::default(),
        backend: BackendSpec {
            builtin: None,
            size: None,
            upstream: Some(UpstreamSpec {
                url: "http://127.0.0.1:1/v1".into(),
                model: None,
                timeout: GoDuration::from_secs(5),
                // Loopback fixture upstream.
                allow_private_network: true,
                auth: None,
            }),
        },
        cost: CostModel { gpu_seconds_per_audio_second: 0.1, minimum_gpu_seconds: 0.0 },
        limits: RequestLimits::default(),
        fallback: None,
        node_selector: None,
        serving_nodes: None,
        verify_threshold: None,
        upstream_credential: None,
        redaction: None,
    })
}

impl EndpointBuilder {
    pub fn builtin(mut self, model: infergate_crds::endpoint::BuiltinModel) -> Self {
        self.0.backend = BackendSpec { builtin: Some(model), size: None, upstream: None };
        self
    }
    /// Forwards to this OpenAI-compatible base URL (a loopback fixture server).
    pub fn upstream(mut self, base_url: &str) -> Self {
        if let Some(upstream) = self.0.backend.upstream.as_mut() {
            upstream.url = base_url.into();
        }
        self
    }
    pub fn fallback(mut self, name: &str) -> Self {
        self.0.fallback = Some(NamespacedName::new("default", name));
        self
    }
    /// Serve only on nodes with these labels, which the operator found on `nodes`.
    pub fn node_selector(mut self, labels: &[(&str, &str)], nodes: &[&str]) -> Self {
        self.0.node_selector = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        self.0.serving_nodes = Some(nodes.iter().map(|n| n.to_string()).collect());
        self
    }
    /// Which key environments the endpoint admits.
    pub fn environment(mut self, environment: infergate_crds::endpoint::EndpointEnvironment) -> Self {
        self.0.environment = environment;
        self
    }
    pub fn features(mut self, f: &[Feature]) -> Self {
        self.0.features = f.to_vec();
        self
    }
    pub fn shard(self) -> Shard {
        Shard::Endpoint(self.0)
    }
}

pub struct PolicyBuilder(PolicyShard);

pub fn mk_policy(name: &str) -> PolicyBuilder {
    PolicyBuilder(PolicyShard {
        schema_version: SHARD_SCHEMA_VERSION,
        policy: NamespacedName::new("default", name),
        generation: 1,
        environment: Environment::Test,
        tier: tier("free"),
        keys: vec![],
        revoked: vec![],
        suspended: false,
        expires_at: None,
        scopes: vec![],
        allowed_origins: vec![],
        allow_client_embeddings: false,
        require_client_certificate: None,
        redaction: None,
        trusted_issuers: vec![],
    })
}

impl PolicyBuilder {
    /// Mutual TLS: accept only client certificates with one of these subject CNs or SANs.
    pub fn client_certificate(mut self, subjects: &[&str], sans: &[&str]) -> Self {
        self.0.require_client_certificate = Some(infergate_crds::policy::ClientCertificateRequirement {
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
        });
        self
    }
    pub fn key(mut self, k: &ApiKey) -> Self {
        self.0.keys.push(KeyEntry {
            key_id: k.id(),
            digest: k.digest(),
            state: KeyState::Current,
            valid_from: t0() - Duration::days(1),
            valid_until: None,
        });
        self
    }
    pub fn retiring(mut self, k: &ApiKey, until: DateTime<Utc>) -> Self {
        self.0.keys.push(KeyEntry {
            key_id: k.id(),
            digest: k.digest(),
            state: KeyState::Retiring,
            valid_from: t0() - Duration::days(2),
            valid_until: Some(until),
        });
        self
    }
    pub fn revoked(mut self, k: &ApiKey) -> Self {
        self.0.revoked.push(RevokedKey { key_id: k.id(), digest: k.digest(), revoked_at: t0() });
        self
    }
    pub fn scope(mut self, endpoint: &str, model: &str, features: &[Feature]) -> Self {
        self.0.scopes.push(ScopeEntry {
            endpoint: NamespacedName::new("default", endpoint),
            model: model.into(),
            features: features.to_vec(),
        });
        self
    }
    pub fn tier(mut self, t: TierLimits) -> Self {
        self.0.tier = t;
        self
    }
    pub fn suspended(mut self) -> Self {
        self.0.suspended = true;
        self
    }
    pub fn expires(mut self, at: DateTime<Utc>) -> Self {
        self.0.expires_at = Some(at);
        self
    }
    pub fn origins(mut self, o: &[&str]) -> Self {
        self.0.allowed_origins = o.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn live(mut self) -> Self {
        self.0.environment = Environment::Live;
        self
    }
    /// Trusts an external issuer for `audience`, its JWKS at `<issuer>/jwks.json`.
    pub fn trusts(mut self, issuer: &str, audience: &str) -> Self {
        self.0.trusted_issuers.push(infergate_crds::policy::TrustedIssuer {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_uri: format!("{issuer}/jwks.json"),
            allow_insecure_http: false,
            scope_claim: None,
            end_user_claim: None,
        });
        self
    }
    pub fn shard(self) -> Shard {
        Shard::Policy(self.0)
    }
}
