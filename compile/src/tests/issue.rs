//! First issue, idempotence and restart: a key is generated once and only its digest is published.
use super::*;

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
            on_store_failure: Default::default(),
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
            token_lifetime_seconds: None,
            end_user: None,
            one_stream_per_token: false,
        },
        keys: vec![current_entry(1, t0())],
        revoked: vec![],
        suspended: false,
        expires_at: None,
        scopes,
        allowed_origins: vec![],
        allow_client_embeddings: false,
        require_client_certificate: None,
        redaction: None,
        trusted_issuers: vec![],
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

#[test]
fn debug_of_an_outcome_shows_the_key_id_never_the_key() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    let out = c.reconcile(&mut p, t0());
    let k1 = key(1, Environment::Live);
    let printed = format!("{out:?}");
    assert!(printed.contains(&format!("Secret app-key (key {})", k1.id())), "{printed}");
    assert!(!printed.contains(k1.expose()), "the plaintext key is in Debug output");
}
