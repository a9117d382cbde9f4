//! The pure core, exhaustively: small builders, a seeded key source, whole-output assertions.
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
                upstream: Some(UpstreamSpec {
                    url: "http://whisper:8000/v1".into(),
                    model: None,
                    timeout: GoDuration::from_secs(120),
                    allow_private_network: false,
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

/// A tiny cluster: the objects a policy references plus the durable state (key Secret, policy status) that
/// the reconciler would have written back after each compile.
struct Cluster {
    tier: Option<RateTier>,
    endpoints: BTreeMap<NamespacedName, InferenceEndpoint>,
    secret: Option<Secret>,
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
            agents: &self.agents,
            now,
        };
        compile_policy(&inputs, keys)
    }

    /// Compiles and writes the outcome back (Secret applied, status applied), as the reconciler does.
    fn reconcile(&mut self, policy: &mut ApiKeyPolicy, now: DateTime<Utc>) -> PolicyOutcome {
        let mut keys = std::mem::replace(&mut self.keys, InsecureSequentialKeys::starting_at(0));
        let out = self.compile_with(policy, now, &mut keys);
        self.keys = keys;
        if let Some(s) = &out.key_secret {
            self.secret = Some(s.clone());
        }
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

// ---- first issue, idempotence, restart ------------------------------------------------------------------

#[test]
fn first_issue_writes_the_key_once_and_publishes_only_its_digest() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    let out = c.reconcile(&mut p, t0());
    let k1 = key(1, Environment::Live);

    let expected_secret = Secret {
        metadata: ObjectMeta {
            name: Some("app-key".into()),
            namespace: Some("acme".into()),
            labels: Some(
                [
                    ("app.kubernetes.io/managed-by", "infergate-operator"),
                    ("infergate.dev/component", "api-key"),
                    ("infergate.dev/owner-name", "app"),
                    ("infergate.dev/owner-namespace", "acme"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            annotations: Some(
                [
                    ("infergate.dev/current-issued-at", "2026-01-01T00:00:00Z".to_string()),
                    ("infergate.dev/current-key-id", k1.id().to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: "infergate.dev/v1alpha1".into(),
                kind: "ApiKeyPolicy".into(),
                name: "app".into(),
                uid: "uid-app".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        data: Some(
            [
                ("api-key".to_string(), ByteString(k1.expose().as_bytes().to_vec())),
                ("key-id".to_string(), ByteString(k1.id().to_string().into_bytes())),
            ]
            .into_iter()
            .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let scopes = vec![ScopeEntry {
        endpoint: NamespacedName::new("speech", "whisper"),
        model: "whisper-model".into(),
        features: vec![Feature::Transcribe],
    }];
    let expected_shard = PolicyShard {
        schema_version: 1,
        policy: NamespacedName::new("acme", "app"),
        generation: 1,
        environment: Environment::Live,
        tier: TierLimits {
            name: "free".into(),
            priority: 10,
            gpu_seconds_per_minute: 6.0,
            burst_gpu_seconds: 12.0,
            max_concurrent_streams: 1,
            queue_max_depth: 0,
            queue_timeout_ms: 2000,
            target_utilization_percent: 85,
            min_factor: 0.25,
            max_factor: 1.0,
            endpoint_overrides: [(
                "speech/whisper".to_string(),
                infergate_crds::gateway::EndpointLimits {
                    gpu_seconds_per_minute: 3.0,
                    burst_gpu_seconds: 12.0,
                    max_concurrent_streams: 1,
                },
            )]
            .into_iter()
            .collect(),
        },
        keys: vec![current_entry(1, t0())],
        revoked: vec![],
        suspended: false,
        expires_at: None,
        scopes,
        allowed_origins: vec![],
        allow_client_embeddings: false,
    };
    let expected_status = ApiKeyPolicyStatus {
        observed_generation: Some(1),
        conditions: vec![
            condition(
                "Ready",
                true,
                "KeysActive",
                format!("key {} is active on 1 endpoint(s)", k1.id()),
                Some(1),
                t0(),
            ),
            condition(
                "ReferencesResolved",
                true,
                "Resolved",
                "RateTier \"free\" and 1 endpoint(s) resolve",
                Some(1),
                t0(),
            ),
        ],
        current_key_id: Some(k1.id().to_string()),
        keys: vec![KeyStatus {
            key_id: k1.id().to_string(),
            state: KeyState::Current,
            issued_at: t0(),
            valid_until: None,
        }],
        next_rotation_at: None,
        revocations: vec![],
        config_revision: Some(Shard::Policy(expected_shard.clone()).revision()),
    };
    assert_eq!(
        out,
        PolicyOutcome {
            key_secret: Some(expected_secret),
            shard: Some(expected_shard),
            status: expected_status,
            events: vec![event(
                false,
                "KeyIssued",
                &format!("issued key {} (first key for this policy) into Secret app-key", k1.id())
            )],
            audit: vec![audit(t0(), "key_issued", Some(kid(1)), Some("first key for this policy"), None)],
            next_wake: None,
        }
    );
}

#[test]
fn re_reconcile_is_idempotent_and_silent() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 1).build();
    let first = c.reconcile(&mut p, t0());
    for later in [t0(), t0() + secs(10), t0() + hours(23)] {
        let again = c.compile_with(&p, later, &mut NoKeys);
        assert_eq!(again.key_secret, first.key_secret);
        assert_eq!(again.shard, first.shard);
        assert_eq!(again.status, first.status, "status must not churn at {later}");
        assert_eq!((again.events.len(), again.audit.len()), (0, 0));
        assert_eq!(again.next_wake, Some(t0() + hours(24)));
    }
}

#[test]
fn restart_with_only_the_secret_regenerates_nothing() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    let first = c.reconcile(&mut p, t0());
    // A fresh operator: same Secret, but no status was ever read (e.g. status was lost).
    let fresh = mk_policy("app").build();
    let after = c.compile_with(&fresh, t0() + hours(5), &mut NoKeys);
    assert_eq!(after.key_secret, first.key_secret);
    assert_eq!(after.shard, first.shard);
    assert_eq!(after.status.current_key_id, Some(kid(1)));
    assert_eq!((after.events, after.audit), (vec![], vec![]));
}

// ---- rotation -------------------------------------------------------------------------------------------

#[test]
fn rotation_happens_exactly_at_every() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 1).build();
    c.reconcile(&mut p, t0());

    let before = c.compile_with(&p, t0() + hours(24) - secs(1), &mut NoKeys);
    assert_eq!(before.shard.unwrap().keys, vec![current_entry(1, t0())]);
    assert_eq!(before.events, vec![]);

    let at = t0() + hours(24);
    let out = c.reconcile(&mut p, at);
    assert_eq!(out.shard.as_ref().unwrap().keys, vec![current_entry(2, at), retiring_entry(1, t0(), at + hours(1))]);
    assert_eq!(
        out.events,
        vec![event(
            false,
            "KeyRotated",
            &format!(
                "key {} is now current (scheduled rotation); previous key {} keeps working until 2026-01-02T01:00:00Z",
                kid(2),
                kid(1)
            )
        )]
    );
    assert_eq!(
        out.audit,
        vec![audit(
            at,
            "key_rotated",
            Some(kid(2)),
            Some(&format!("scheduled rotation; previous key {}", kid(1))),
            None
        )]
    );
    assert_eq!(
        out.status.keys,
        vec![
            KeyStatus { key_id: kid(2), state: KeyState::Current, issued_at: at, valid_until: None },
            KeyStatus { key_id: kid(1), state: KeyState::Retiring, issued_at: t0(), valid_until: Some(at + hours(1)) },
        ]
    );
    assert_eq!(out.status.next_rotation_at, Some(at + hours(24)));
    assert_eq!(out.next_wake, Some(at + hours(1)), "the end of the overlap comes before the next rotation");
    let ann = annotations_of(out.key_secret.as_ref().unwrap());
    assert_eq!(ann[annotations::PREVIOUS_KEY_ID], kid(1));
    assert_eq!(ann[annotations::PREVIOUS_KEY_DIGEST], key(1, Environment::Live).digest().to_hex());
    assert_eq!(ann[annotations::PREVIOUS_RETIRES_AT], "2026-01-02T01:00:00Z");
    assert_eq!(ann[annotations::CURRENT_KEY_ID], kid(2));
}

#[test]
fn overlap_ends_exactly_at_its_boundary() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 2).build();
    c.reconcile(&mut p, t0());
    let rotated_at = t0() + hours(24);
    c.reconcile(&mut p, rotated_at);

    let just_before = c.compile_with(&p, rotated_at + hours(2) - secs(1), &mut NoKeys);
    assert_eq!(just_before.shard.unwrap().keys.len(), 2);

    let end = rotated_at + hours(2);
    let out = c.reconcile(&mut p, end);
    assert_eq!(out.shard.as_ref().unwrap().keys, vec![current_entry(2, rotated_at)]);
    assert_eq!(
        out.events,
        vec![event(false, "KeyRetired", &format!("key {} retired: its rotation overlap ended", kid(1)))]
    );
    assert_eq!(out.audit, vec![audit(end, "key_retired", Some(kid(1)), Some("rotation overlap ended"), None)]);
    let ann = annotations_of(out.key_secret.as_ref().unwrap());
    assert!(!ann.contains_key(annotations::PREVIOUS_KEY_ID) && !ann.contains_key(annotations::PREVIOUS_KEY_DIGEST));
    assert_eq!(out.next_wake, Some(rotated_at + hours(24)));
    // And it stays gone.
    let again = c.compile_with(&p, end + secs(1), &mut NoKeys);
    assert_eq!((again.events, again.shard.unwrap().keys.len()), (vec![], 1));
}

#[test]
fn a_rotation_request_rotates_once_per_value() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());

    p = PolicyBuilder(p).rotate_requested("2026-01-01T10:00:00Z").build();
    let t1 = t0() + hours(10);
    let out = c.reconcile(&mut p, t1);
    assert_eq!(out.shard.as_ref().unwrap().keys, vec![current_entry(2, t1), retiring_entry(1, t0(), t1 + hours(1))]);
    assert_eq!(out.events[0].reason, "KeyRotated");
    assert!(out.events[0].note.contains("rotation requested (infergate.dev/rotate-requested-at=2026-01-01T10:00:00Z)"));
    assert_eq!(annotations_of(out.key_secret.as_ref().unwrap())[annotations::ROTATION_HANDLED], "2026-01-01T10:00:00Z");

    // The same value again (re-reconcile, restart): nothing.
    let again = c.compile_with(&p, t1 + secs(30), &mut NoKeys);
    assert_eq!((again.events, again.key_secret), (vec![], out.key_secret.clone()));

    // A new value: one more rotation; the key still in overlap is retired early.
    p = PolicyBuilder(p).rotate_requested("second").build();
    let t2 = t1 + secs(60);
    let out2 = c.reconcile(&mut p, t2);
    assert_eq!(out2.shard.as_ref().unwrap().keys, vec![current_entry(3, t2), retiring_entry(2, t1, t2 + hours(1))]);
    assert_eq!(out2.events.iter().map(|e| e.reason).collect::<Vec<_>>(), vec!["KeyRetired", "KeyRotated"]);
}

#[test]
fn a_rotation_request_present_at_first_issue_is_already_satisfied() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotate_requested("x").build();
    c.reconcile(&mut p, t0());
    let again = c.compile_with(&p, t0() + secs(1), &mut NoKeys);
    assert_eq!(again.events, vec![]);
}

// ---- revocation -----------------------------------------------------------------------------------------

#[test]
fn revoking_the_current_key_replaces_it_at_once() {
    let mut c = Cluster::new();
    c.agents = vec![
        AgentReport {
            node: "n1".into(),
            config_revision: None,
            enforced_revocations: vec![KeyId(kid(1))],
            renewed_at: Some(t0() + hours(1)),
        },
        AgentReport {
            node: "n2".into(),
            config_revision: None,
            enforced_revocations: vec![],
            renewed_at: Some(t0() + hours(1)),
        },
        AgentReport {
            node: "stale".into(),
            config_revision: None,
            enforced_revocations: vec![KeyId(kid(1))],
            renewed_at: Some(t0()),
        },
    ];
    let mut p = mk_policy("app").rotation(24, 1).build();
    c.reconcile(&mut p, t0());

    p = PolicyBuilder(p).revoked(&kid(1)).build();
    let t1 = t0() + hours(1);
    let out = c.reconcile(&mut p, t1);
    let shard = out.shard.clone().unwrap();
    assert_eq!(shard.keys, vec![current_entry(2, t1)], "no overlap for a revoked key");
    let k1 = key(1, Environment::Live);
    assert_eq!(shard.revoked, vec![RevokedKey { key_id: k1.id(), digest: k1.digest(), revoked_at: t1 }]);
    assert_eq!(
        out.status.revocations,
        vec![RevocationStatus {
            key_id: kid(1),
            reason: "leaked in a ticket".into(),
            requested_by: "alice@example.com".into(),
            revoked_at: t1,
            matched: true,
            agents_enforcing: Some(1),
            agents_total: Some(2),
        }]
    );
    assert_eq!(
        out.events,
        vec![
            event(
                false,
                "KeyRotated",
                &format!("issued key {} to replace revoked key {} (no overlap)", kid(2), kid(1))
            ),
            event(
                false,
                "KeyRevoked",
                &format!("key {} revoked at the request of alice@example.com: leaked in a ticket", kid(1))
            ),
        ]
    );
    assert_eq!(
        out.audit,
        vec![
            audit(t1, "key_issued", Some(kid(2)), Some(&format!("replaces revoked key {}", kid(1))), None),
            audit(t1, "key_revoked", Some(kid(1)), Some("leaked in a ticket"), Some("alice@example.com")),
        ]
    );
    assert_eq!(out.status.next_rotation_at, Some(t1 + hours(24)));

    // Later reconciles: revoked_at stays the first time seen, the key stays refused as revoked, no new events.
    let later = c.compile_with(&p, t1 + hours(2), &mut NoKeys);
    assert_eq!(later.status.revocations[0].revoked_at, t1);
    assert_eq!(later.shard.unwrap().revoked, shard.revoked);
    assert_eq!(later.events, vec![]);

    // Removing the revocation entry forgets the old key entirely (it was never re-accepted).
    p.spec.revocations.clear();
    let forgotten = c.reconcile(&mut p, t1 + hours(3));
    assert_eq!(forgotten.shard.unwrap().revoked, vec![]);
    assert!(!annotations_of(forgotten.key_secret.as_ref().unwrap()).contains_key(annotations::REVOKED_KEY_DIGESTS));
}

#[test]
fn revoking_the_retiring_key_just_drops_it() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 6).build();
    c.reconcile(&mut p, t0());
    let rotated = t0() + hours(24);
    c.reconcile(&mut p, rotated);

    p = PolicyBuilder(p).revoked(&kid(1)).build();
    let t = rotated + hours(1);
    let out = c.reconcile(&mut p, t);
    let shard = out.shard.clone().unwrap();
    assert_eq!(shard.keys, vec![current_entry(2, rotated)], "current key untouched");
    assert_eq!(shard.revoked.iter().map(|r| r.key_id.to_string()).collect::<Vec<_>>(), vec![kid(1)]);
    assert_eq!(
        out.events,
        vec![event(
            false,
            "KeyRevoked",
            &format!("key {} revoked at the request of alice@example.com: leaked in a ticket", kid(1))
        )]
    );
    let ann = annotations_of(out.key_secret.as_ref().unwrap());
    assert!(!ann.contains_key(annotations::PREVIOUS_KEY_ID));
    assert_eq!(ann[annotations::CURRENT_KEY_ID], kid(2));
    assert_eq!(out.next_wake, Some(rotated + hours(24)), "no overlap end to wait for any more");
}

#[test]
fn an_unknown_key_id_is_recorded_unmatched_with_a_warning() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    let first = c.reconcile(&mut p, t0());
    p = PolicyBuilder(p).revoked("kid_0123456789abcdef").build();
    let out = c.reconcile(&mut p, t0() + hours(1));
    assert_eq!(out.shard.as_ref().unwrap().keys, first.shard.as_ref().unwrap().keys);
    assert_eq!(out.shard.as_ref().unwrap().revoked, vec![]);
    assert_eq!(
        out.status.revocations,
        vec![RevocationStatus {
            key_id: "kid_0123456789abcdef".into(),
            reason: "leaked in a ticket".into(),
            requested_by: "alice@example.com".into(),
            revoked_at: t0() + hours(1),
            matched: false,
            agents_enforcing: None,
            agents_total: None,
        }]
    );
    assert_eq!(
        out.events,
        vec![event(
            true,
            "RevocationUnmatched",
            "spec.revocations lists key kid_0123456789abcdef (requested by alice@example.com), which is not a key of \
             this policy: check the id against status.keys (a key that already retired needs no revocation)"
        )]
    );
    assert_eq!(out.audit[0].action, "revocation_unmatched");
    assert_eq!(c.compile_with(&p, t0() + hours(2), &mut NoKeys).events, vec![]);
}

// ---- suspension, expiry ---------------------------------------------------------------------------------

#[test]
fn suspended_keeps_keys_but_marks_the_shard() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());
    p = PolicyBuilder(p).suspended().build();
    let out = c.reconcile(&mut p, t0() + hours(1));
    let shard = out.shard.unwrap();
    assert!(shard.suspended);
    assert_eq!(shard.keys, vec![current_entry(1, t0())]);
    assert_eq!(ready_of(&out.status).1, "Suspended");
    assert_eq!(
        out.events,
        vec![event(
            false,
            "Suspended",
            "spec.suspended is true: the gateway refuses this policy's keys as suspended; set it to false to restore them"
        )]
    );
    assert_eq!(out.audit, vec![audit(t0() + hours(1), "policy_suspended", None, None, None)]);

    p.spec.suspended = false;
    let back = c.reconcile(&mut p, t0() + hours(2));
    assert_eq!(back.events.iter().map(|e| e.reason).collect::<Vec<_>>(), vec!["Ready"]);
    assert_eq!(back.audit[0].action, "policy_resumed");
}

#[test]
fn expiry_marks_the_shard_and_the_policy_not_ready() {
    let mut c = Cluster::new();
    let expires = t0() + hours(48);
    let mut p = mk_policy("app").rotation(24, 1).expires(expires).build();
    let first = c.reconcile(&mut p, t0());
    assert_eq!(first.shard.as_ref().unwrap().expires_at, Some(expires));
    assert_eq!(first.next_wake, Some(t0() + hours(24)));
    c.reconcile(&mut p, t0() + hours(24));

    let out = c.reconcile(&mut p, expires);
    let (status, reason, message) = ready_of(&out.status);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Expired"));
    assert!(message.contains("spec.expiresAt (2026-01-03T00:00:00Z) has passed"), "{message}");
    assert_eq!(out.shard.as_ref().unwrap().expires_at, Some(expires));
    assert_eq!(out.shard.as_ref().unwrap().keys.len(), 1, "keys stay; the gateway refuses them as expired");
    assert_eq!(out.status.next_rotation_at, None, "an expired policy is not rotated");
    assert_eq!(out.next_wake, None);
    assert_eq!(
        out.audit,
        vec![
            audit(expires, "key_retired", Some(kid(1)), Some("rotation overlap ended"), None),
            audit(expires, "policy_expired", None, None, None),
        ]
    );
    assert_eq!(
        out.events.iter().map(|e| (e.reason, e.warning)).collect::<Vec<_>>(),
        vec![("KeyRetired", false), ("Expired", true)]
    );
}

// ---- references -----------------------------------------------------------------------------------------

#[test]
fn a_missing_tier_fails_closed_until_it_appears() {
    let mut c = Cluster::new();
    c.tier = None;
    let mut p = mk_policy("app").tier("gold").build();
    let out = c.reconcile(&mut p, t0());
    assert_eq!(out.shard, None);
    assert!(out.key_secret.is_some(), "the key is issued (and kept) while the reference is missing");
    let (status, reason, message) = ready_of(&out.status);
    assert_eq!(
        (status.as_str(), reason.as_str(), message.as_str()),
        ("False", "TierNotFound", "RateTier \"gold\" not found: create it or change spec.tier")
    );
    assert_eq!(out.status.config_revision, None);
    assert_eq!(
        out.events.iter().map(|e| (e.reason, e.warning)).collect::<Vec<_>>(),
        vec![("KeyIssued", false), ("TierNotFound", true)]
    );
    assert_eq!(c.compile_with(&p, t0() + secs(5), &mut NoKeys).events, vec![], "no repeated warning");

    let mut gold = mk_tier("gold");
    gold.spec.priority = 700;
    c.tier = Some(gold);
    let ready = c.reconcile(&mut p, t0() + secs(10));
    let shard = ready.shard.unwrap();
    assert_eq!((shard.tier.name.as_str(), shard.tier.priority), ("gold", 700));
    assert_eq!(shard.keys, vec![current_entry(1, t0())], "same key as before");
    assert_eq!(ready_of(&ready.status).0, "True");
    assert_eq!(ready.events.iter().map(|e| e.reason).collect::<Vec<_>>(), vec!["Ready"]);
    let resolved = ready.status.conditions.iter().find(|c| c.type_ == REFERENCES_RESOLVED).unwrap();
    assert_eq!(resolved.status, "True");
}

#[test]
fn a_missing_endpoint_is_named() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").scope("speech", "nope", &[]).build();
    let out = c.reconcile(&mut p, t0());
    assert_eq!(out.shard, None);
    assert_eq!(
        ready_of(&out.status),
        (
            "False".into(),
            "EndpointNotFound".into(),
            "InferenceEndpoint speech/nope not found: create it or fix spec.scopes".into()
        )
    );
}

#[test]
fn an_endpoint_that_does_not_allow_the_namespace_is_refused() {
    let mut c = Cluster::new();
    c.endpoints
        .insert(NamespacedName::new("speech", "private"), mk_endpoint("speech", "private").allow(&["billing"]).build());
    let mut p = mk_policy("app").scope("speech", "private", &[]).build();
    let out = c.reconcile(&mut p, t0());
    assert_eq!(out.shard, None);
    let (_, reason, message) = ready_of(&out.status);
    assert_eq!(reason, "NamespaceNotAllowed");
    assert!(message.starts_with("InferenceEndpoint speech/private does not allow namespace \"acme\""), "{message}");
    // Same namespace needs no allow-list entry.
    let mut c = Cluster::new();
    c.endpoints.insert(NamespacedName::new("acme", "own"), mk_endpoint("acme", "own").allow(&[]).build());
    let mut own = mk_policy("own").scope("acme", "own", &[]).build();
    assert!(c.reconcile(&mut own, t0()).shard.is_some());
}

#[test]
fn a_feature_the_endpoint_does_not_offer_is_refused() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").scope("speech", "whisper", &[Feature::Transcribe, Feature::Embed]).build();
    let out = c.reconcile(&mut p, t0());
    assert_eq!(out.shard, None);
    let (_, reason, message) = ready_of(&out.status);
    assert_eq!(reason, "FeatureNotOffered");
    assert!(message.contains("embed on speech/whisper"), "{message}");
}

// ---- ownership and clocks -------------------------------------------------------------------------------

#[test]
fn a_secret_owned_by_someone_else_is_never_touched() {
    let mut c = Cluster::new();
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("app-key".into());
    foreign.metadata.namespace = Some("acme".into());
    foreign.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "infergate.dev/v1alpha1".into(),
        kind: "ApiKeyPolicy".into(),
        name: "app".into(),
        uid: "uid-of-an-older-app".into(),
        ..Default::default()
    }]);
    c.secret = Some(foreign);
    let p = mk_policy("app").build();
    let out = c.compile_with(&p, t0(), &mut NoKeys);
    assert_eq!((out.key_secret.as_ref(), out.shard.as_ref()), (None, None));
    let (status, reason, message) = ready_of(&out.status);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SecretConflict"));
    assert!(message.contains("Secret acme/app-key exists and is not owned by this ApiKeyPolicy"), "{message}");
    assert_eq!(out.status.current_key_id, None);
    assert_eq!(out.events.iter().map(|e| (e.reason, e.warning)).collect::<Vec<_>>(), vec![("SecretConflict", true)]);
}

#[test]
fn an_issued_at_in_the_future_neither_rotates_nor_panics() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 1).build();
    // The Secret was written by an operator whose clock ran 3 hours ahead.
    c.reconcile(&mut p, t0() + hours(3));
    p.status = None;
    let out = c.compile_with(&p, t0(), &mut NoKeys);
    assert_eq!(out.shard.as_ref().unwrap().keys, vec![current_entry(1, t0())], "valid from now, not from the future");
    assert_eq!(out.status.keys[0].issued_at, t0() + hours(3), "status shows what the Secret records");
    assert_eq!(out.status.next_rotation_at, Some(t0() + hours(24)));
    assert_eq!(out.next_wake, Some(t0() + hours(24)));
    let (_, _, message) = ready_of(&out.status);
    assert!(message.contains("treating it as issued now and not rotating early; check the clocks"), "{message}");
    assert_eq!(out.events, vec![]);
    // Rotation still happens once the (skewed) period is over.
    let due = c.compile_with(&p, t0() + hours(27), &mut InsecureSequentialKeys::starting_at(2));
    assert_eq!(due.events[0].reason, "KeyRotated");
}

#[test]
fn a_hand_edited_secret_without_a_valid_key_gets_a_new_one() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());
    c.secret.as_mut().unwrap().data.as_mut().unwrap().insert("api-key".into(), ByteString(b"oops".to_vec()));
    let out = c.reconcile(&mut p, t0() + hours(1));
    assert_eq!(out.status.current_key_id, Some(kid(2)));
    assert!(out.events[0].note.contains("the key Secret held no valid key"));
}

#[test]
fn changing_the_environment_rotates_to_a_key_with_the_new_prefix() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());
    p.spec.environment = Environment::Test;
    let out = c.reconcile(&mut p, t0() + hours(1));
    let data = out.key_secret.as_ref().unwrap().data.as_ref().unwrap();
    assert!(data["api-key"].0.starts_with(b"sk_test_"));
    assert_eq!(out.shard.unwrap().keys[1].key_id.to_string(), kid(1), "the live key retires with an overlap");
}

#[test]
fn no_plaintext_key_ever_leaves_the_key_secret() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 2).build();
    let mut outs = vec![c.reconcile(&mut p, t0()), c.reconcile(&mut p, t0() + hours(24))];
    p = PolicyBuilder(p).revoked(&kid(2)).revoked(&kid(1)).revoked("kid_ffffffffffffffff").build();
    outs.push(c.reconcile(&mut p, t0() + hours(25)));
    p = PolicyBuilder(p).suspended().rotate_requested("now").build();
    outs.push(c.reconcile(&mut p, t0() + hours(26)));
    let mut everything = String::new();
    for o in &outs {
        everything += &serde_json::to_string(&o.shard.clone().map(Shard::Policy)).unwrap();
        everything += &serde_json::to_string(&o.status).unwrap();
        everything += &serde_json::to_string(&o.audit).unwrap();
        everything += &format!("{:?}", o.events);
        let ann = o.key_secret.as_ref().map(annotations_of).unwrap_or_default();
        everything += &serde_json::to_string(&ann).unwrap();
    }
    assert!(everything.len() > 2000);
    assert!(!everything.contains("sk_"), "plaintext leaked: {everything}");
    for n in 1..=4 {
        let k = key(n, Environment::Live);
        assert!(!everything.contains(&k.expose()[8..30]));
    }
}

// ---- endpoints, tiers, whole world ----------------------------------------------------------------------

#[test]
fn endpoints_report_missing_fallbacks_and_model_conflicts() {
    let older = mk_endpoint("speech", "a").model("whisper-1").created(t0()).build();
    let newer = mk_endpoint("other", "b").model("whisper-1").created(t0() + hours(1)).build();
    let with_fallback = mk_endpoint("speech", "c").fallback("missing").build();
    let all: BTreeMap<NamespacedName, InferenceEndpoint> = [&older, &newer, &with_fallback]
        .into_iter()
        .map(|e| {
            (NamespacedName::new(e.metadata.namespace.clone().unwrap(), e.metadata.name.clone().unwrap()), e.clone())
        })
        .collect();

    let a = compile_endpoint(&older, &all, 3, t0());
    assert_eq!(a.shard.as_ref().unwrap().model, "whisper-1");
    assert_eq!(a.status.policies, 3);
    assert_eq!(a.events, vec![]);

    let b = compile_endpoint(&newer, &all, 0, t0());
    assert_eq!(b.shard, None);
    let ready = b.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "ModelConflict");
    assert!(ready.message.contains("already served by InferenceEndpoint speech/a"), "{}", ready.message);
    assert_eq!(b.events.iter().map(|e| e.reason).collect::<Vec<_>>(), vec!["ModelConflict"]);

    // Endpoints pinned to disjoint node pools never meet on one agent, so they may share a model name.
    let mut pinned_a = older.clone();
    pinned_a.spec.node_selector = Some([("pool".to_string(), "a".to_string())].into_iter().collect());
    let mut pinned_b = newer.clone();
    pinned_b.spec.node_selector = Some([("pool".to_string(), "b".to_string())].into_iter().collect());
    let pinned: BTreeMap<NamespacedName, InferenceEndpoint> =
        [(NamespacedName::new("speech", "a"), pinned_a), (NamespacedName::new("other", "b"), pinned_b.clone())]
            .into_iter()
            .collect();
    assert!(compile_endpoint(&pinned_b, &pinned, 0, t0()).shard.is_some());

    let c = compile_endpoint(&with_fallback, &all, 0, t0());
    assert_eq!(c.shard.as_ref().unwrap().fallback, None, "served, without the missing fallback");
    let fb = c.status.conditions.iter().find(|c| c.type_ == FALLBACK_RESOLVED).unwrap();
    assert_eq!((fb.status.as_str(), fb.reason.as_str()), ("False", "FallbackNotFound"));
    assert!(fb.message.contains("speech/missing not found (it must be in the same namespace)"));
    assert_eq!(c.events.iter().map(|e| (e.reason, e.warning)).collect::<Vec<_>>(), vec![("FallbackNotFound", true)]);
    let mut reconciled = with_fallback.clone();
    reconciled.status = Some(c.status.clone());
    assert_eq!(compile_endpoint(&reconciled, &all, 0, t0() + secs(9)).status, c.status, "no churn");
}

#[test]
fn tiers_count_their_policies() {
    let status = compile_tier(&mk_tier("free"), 2, t0());
    assert_eq!(
        status,
        RateTierStatus {
            observed_generation: Some(1),
            conditions: vec![condition("Ready", true, "Accepted", "used by 2 ApiKeyPolicy(ies)", Some(1), t0())],
            policies: 2,
        }
    );
}

#[test]
fn the_whole_world_compiles_to_shards_statuses_and_one_wake_up() {
    let tiers = vec![mk_tier("free")];
    let endpoints = vec![mk_endpoint("speech", "whisper").build(), mk_endpoint("speech", "unused").build()];
    let policies = vec![mk_policy("a").rotation(24, 1).build(), mk_policy("b").tier("missing").build()];
    let world =
        World { tiers: &tiers, endpoints: &endpoints, policies: &policies, key_secrets: &[], agents: &[], now: t0() };
    let desired = compile(&world, &mut InsecureSequentialKeys::starting_at(1));
    assert_eq!(desired.tiers["free"].policies, 1);
    assert_eq!(desired.endpoints[&NamespacedName::new("speech", "whisper")].status.policies, 2);
    assert_eq!(desired.endpoints[&NamespacedName::new("speech", "unused")].status.policies, 0);
    let owners: Vec<String> = desired.shards.iter().map(|s| format!("{:?} {}", s.kind(), s.owner())).collect();
    assert_eq!(owners, vec!["Endpoint speech/unused", "Endpoint speech/whisper", "Policy acme/a"]);
    assert_eq!(desired.next_wake, Some(t0() + hours(24)));
    assert!(desired.policies[&NamespacedName::new("acme", "b")].key_secret.is_some());

    // Fed its own Secrets back, the world compiles to the same keys without generating any.
    let secrets: Vec<Secret> = desired.policies.values().filter_map(|o| o.key_secret.clone()).collect();
    let world2 = World { key_secrets: &secrets, ..world };
    let again = compile(&world2, &mut NoKeys);
    assert_eq!(again.shards, desired.shards);
}

#[test]
fn hand_edited_bookkeeping_is_ignored_not_trusted() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 6).build();
    c.reconcile(&mut p, t0());
    c.reconcile(&mut p, t0() + hours(24));
    // Someone points previous-key-id at another key: the pair no longer matches, so no retiring key is accepted.
    let ann = c.secret.as_mut().unwrap().metadata.annotations.as_mut().unwrap();
    ann.insert(annotations::PREVIOUS_KEY_ID.into(), "kid_ffffffffffffffff".into());
    let out = c.compile_with(&p, t0() + hours(25), &mut NoKeys);
    assert_eq!(out.shard.unwrap().keys, vec![current_entry(2, t0() + hours(24))]);
}

#[test]
fn local_manifests_without_uids_own_their_secrets_by_name() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    p.metadata.uid = None;
    c.reconcile(&mut p, t0());
    let again = c.compile_with(&p, t0() + secs(1), &mut NoKeys);
    assert_eq!(ready_of(&again.status).1, "KeysActive");
    assert_eq!(again.events, vec![]);
}
