//! The pure core, exhaustively: small builders, a seeded key source, whole-output assertions.
//!
//! This module holds the shared builders; the tests are split by concern into its child modules, which see
//! everything here through `use super::*`.
mod issue;
mod ownership;
mod references;
mod revocation;
mod rotation;
mod suspension;
mod tenant;
mod world;

use super::*;
use chrono::TimeZone;
use infergate_crds::conditions::condition;
use infergate_crds::endpoint::{BackendSpec, Feature, InferenceEndpointSpec, UpstreamSpec};
use infergate_crds::gateway::{KeyEntry, RevokedKey, ScopeEntry, TierLimits};
use infergate_crds::policy::{KeyState, KeyStatus, Revocation, RevocationStatus, Rotation, Scope};
use infergate_crds::tier::RateTierSpec;
use infergate_crds::{ApiKeyPolicySpec, GoDuration, annotations};
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}
fn hours(h: i64) -> chrono::Duration {
    chrono::Duration::hours(h)
}
fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

/// The n-th key the seeded source hands out (the source starts at 1 in every test).
fn key(n: u64, env: Environment) -> ApiKey {
    InsecureSequentialKeys::starting_at(n).new_key(env)
}
fn kid(n: u64) -> String {
    key(n, Environment::Live).id().to_string()
}

/// A key source that must not be asked: proves that nothing was (re)generated.
struct NoKeys;
impl KeySource for NoKeys {
    fn new_key(&mut self, _: Environment) -> ApiKey {
        panic!("a key was generated where none may be")
    }
}

// ---- builders -------------------------------------------------------------------------------------------

struct PolicyBuilder(ApiKeyPolicy);

fn mk_policy(name: &str) -> PolicyBuilder {
    let spec = ApiKeyPolicySpec {
        tier: "free".into(),
        environment: Environment::Live,
        secret_name: format!("{name}-key"),
        scopes: vec![Scope { endpoint: "whisper".into(), namespace: Some("speech".into()), features: vec![] }],
        rotation: None,
        revocations: vec![],
        suspended: false,
        expires_at: None,
        allowed_origins: vec![],
        allow_client_embeddings: false,
        require_client_certificate: None,
        redaction: None,
        trusted_issuers: vec![],
    };
    let mut p = ApiKeyPolicy::new(name, spec);
    p.metadata.namespace = Some("acme".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.generation = Some(1);
    PolicyBuilder(p)
}

impl PolicyBuilder {
    fn tier(mut self, t: &str) -> Self {
        self.0.spec.tier = t.into();
        self
    }
    fn revoked(mut self, key_id: &str) -> Self {
        self.0.spec.revocations.push(Revocation {
            key_id: key_id.into(),
            reason: "leaked in a ticket".into(),
            requested_by: "alice@example.com".into(),
        });
        self
    }
    fn rotation(mut self, every_h: u64, overlap_h: u64) -> Self {
        self.0.spec.rotation = Some(Rotation {
            every: GoDuration::from_secs(every_h * 3600),
            overlap: GoDuration::from_secs(overlap_h * 3600),
        });
        self
    }
    fn suspended(mut self) -> Self {
        self.0.spec.suspended = true;
        self
    }
    fn expires(mut self, at: DateTime<Utc>) -> Self {
        self.0.spec.expires_at = Some(at);
        self
    }
    fn rotate_requested(mut self, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(annotations::ROTATE_REQUESTED_AT.into(), value.into());
        self
    }
    fn scope(mut self, ns: &str, endpoint: &str, features: &[Feature]) -> Self {
        self.0.spec.scopes =
            vec![Scope { endpoint: endpoint.into(), namespace: Some(ns.into()), features: features.to_vec() }];
        self
    }
    fn build(self) -> ApiKeyPolicy {
        self.0
    }
}

fn mk_tier(name: &str) -> RateTier {
    let mut t = RateTier::new(
        name,
        RateTierSpec {
            gpu_seconds_per_minute: 6.0,
            burst_gpu_seconds: 12.0,
            max_concurrent_streams: 1,
            queue: Default::default(),
            priority: 10,
            endpoint_overrides: vec![infergate_crds::tier::EndpointOverride {
                endpoint: "speech/whisper".into(),
                gpu_seconds_per_minute: Some(3.0),
                burst_gpu_seconds: None,
                max_concurrent_streams: None,
            }],
            gpu_utilization: Default::default(),
            allowed_namespaces: None,
            on_store_failure: Default::default(),
            token_lifetime: None,
            end_user: None,
            one_stream_per_token: false,
        },
    );
    t.metadata.generation = Some(1);
    t
}

struct EndpointBuilder(InferenceEndpoint);

fn mk_endpoint(ns: &str, name: &str) -> EndpointBuilder {
    let mut e = InferenceEndpoint::new(
        name,
        InferenceEndpointSpec {
            model: format!("{name}-model"),
            features: vec![Feature::Transcribe],
            backend: BackendSpec {
                builtin: None,
                size: None,
                upstream: Some(UpstreamSpec {
                    url: "http://whisper:8000/v1".into(),
                    model: None,
                    timeout: GoDuration::from_secs(120),
                    allow_private_network: false,
                    auth: None,
                }),
            },
            cost: Default::default(),
            limits: Default::default(),
            fallback: None,
            node_selector: None,
            retention: Default::default(),
            environment: Default::default(),
            allowed_namespaces: vec!["*".into()],
            verify_threshold: None,
            redaction: None,
        },
    );
    e.metadata.namespace = Some(ns.into());
    e.metadata.generation = Some(2);
    EndpointBuilder(e)
}

impl EndpointBuilder {
    fn allow(mut self, namespaces: &[&str]) -> Self {
        self.0.spec.allowed_namespaces = namespaces.iter().map(|s| s.to_string()).collect();
        self
    }
    fn model(mut self, model: &str) -> Self {
        self.0.spec.model = model.into();
        self
    }
    fn fallback(mut self, name: &str) -> Self {
        self.0.spec.fallback = Some(name.into());
        self
    }
    fn created(mut self, at: DateTime<Utc>) -> Self {
        self.0.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(infergate_crds::conditions::to_jiff(at)));
        self
    }
    fn build(self) -> InferenceEndpoint {
        self.0
    }
}

/// The operator's namespace in these tests.
const OPERATOR_NS: &str = "infergate-system";

/// A tiny cluster: the objects a policy references plus the durable state (key Secret, published shard, policy
/// status) that the reconciler would have written back after each compile.
struct Cluster {
    tier: Option<RateTier>,
    endpoints: BTreeMap<NamespacedName, InferenceEndpoint>,
    secret: Option<Secret>,
    shard: Option<PolicyShard>,
    agents: Vec<AgentReport>,
    keys: InsecureSequentialKeys,
}

impl Cluster {
    fn new() -> Self {
        let whisper = mk_endpoint("speech", "whisper").build();
        Cluster {
            tier: Some(mk_tier("free")),
            endpoints: [(NamespacedName::new("speech", "whisper"), whisper)].into_iter().collect(),
            secret: None,
            shard: None,
            agents: vec![],
            keys: InsecureSequentialKeys::starting_at(1),
        }
    }

    fn compile_with(&mut self, policy: &ApiKeyPolicy, now: DateTime<Utc>, keys: &mut dyn KeySource) -> PolicyOutcome {
        let inputs = PolicyInputs {
            policy,
            tier: self.tier.as_ref(),
            endpoints: &self.endpoints,
            existing_secret: self.secret.as_ref(),
            published_shard: self.shard.as_ref(),
            operator_namespace: Some(OPERATOR_NS),
            agents: &self.agents,
            now,
        };
        compile_policy(&inputs, keys)
    }

    /// Compiles and writes the outcome back (Secret applied, shard applied or deleted, status applied), as the
    /// reconciler does.
    fn reconcile(&mut self, policy: &mut ApiKeyPolicy, now: DateTime<Utc>) -> PolicyOutcome {
        let mut keys = std::mem::replace(&mut self.keys, InsecureSequentialKeys::starting_at(0));
        let out = self.compile_with(policy, now, &mut keys);
        self.keys = keys;
        if let Some(s) = &out.key_secret {
            self.secret = Some(s.clone());
        }
        self.shard = out.shard.clone();
        policy.status = Some(out.status.clone());
        out
    }
}

fn policy_ref(name: &str) -> ObjectRef {
    ObjectRef {
        kind: "ApiKeyPolicy",
        namespace: Some("acme".into()),
        name: name.into(),
        uid: Some(format!("uid-{name}")),
    }
}
fn event(warning: bool, reason: &'static str, note: &str) -> EventSpec {
    EventSpec { regarding: policy_ref("app"), warning, reason, note: note.into() }
}
fn audit(
    at: DateTime<Utc>,
    action: &'static str,
    key_id: Option<String>,
    reason: Option<&str>,
    by: Option<&str>,
) -> AuditRecord {
    AuditRecord {
        at,
        action,
        policy: NamespacedName::new("acme", "app"),
        key_id: key_id.map(KeyId),
        reason: reason.map(Into::into),
        requested_by: by.map(Into::into),
    }
}
fn current_entry(n: u64, from: DateTime<Utc>) -> KeyEntry {
    let k = key(n, Environment::Live);
    KeyEntry { key_id: k.id(), digest: k.digest(), state: KeyState::Current, valid_from: from, valid_until: None }
}
fn retiring_entry(n: u64, from: DateTime<Utc>, until: DateTime<Utc>) -> KeyEntry {
    let k = key(n, Environment::Live);
    KeyEntry {
        key_id: k.id(),
        digest: k.digest(),
        state: KeyState::Retiring,
        valid_from: from,
        valid_until: Some(until),
    }
}
fn annotations_of(s: &Secret) -> BTreeMap<String, String> {
    s.metadata.annotations.clone().unwrap_or_default()
}
fn ready_of(status: &ApiKeyPolicyStatus) -> (String, String, String) {
    let c = status.conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}
