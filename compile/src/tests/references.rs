//! References: a missing tier or endpoint, a namespace an endpoint does not allow, a feature it does not offer.
use super::*;

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

#[test]
fn a_tier_that_does_not_allow_the_namespace_fails_closed() {
    let mut c = Cluster::new();
    let mut gold = mk_tier("free");
    gold.spec.allowed_namespaces = Some(vec!["gold-team".into()]);
    c.tier = Some(gold);
    let mut p = mk_policy("app").build();
    let out = c.reconcile(&mut p, t0());
    assert_eq!(out.shard, None, "no key of the policy is accepted");
    let (status, reason, message) = ready_of(&out.status);
    assert_eq!(
        (status.as_str(), reason.as_str(), message.as_str()),
        (
            "False",
            "TierNotAllowed",
            "RateTier \"free\" does not allow namespace \"acme\": add it to the tier's spec.allowedNamespaces or pick another tier"
        )
    );
}

#[test]
fn end_user_limits_reach_the_shard_capped_at_the_keys() {
    let mut c = Cluster::new();
    let mut gold = mk_tier("gold");
    gold.spec.end_user = Some(infergate_crds::tier::EndUserLimitsSpec {
        gpu_seconds_per_minute: Some(60.0),
        burst_gpu_seconds: Some(2.0),
        max_concurrent_streams: None,
    });
    gold.spec.one_stream_per_token = true;
    c.tier = Some(gold);
    let mut p = mk_policy("app").tier("gold").build();
    let tier = c.reconcile(&mut p, t0()).shard.unwrap().tier;
    let users = tier.end_user.expect("carried");
    // The key's rate is 6 GPU-s/min: a user cannot be given more than the whole key.
    assert_eq!((users.gpu_seconds_per_minute, users.burst_gpu_seconds), (Some(6.0), Some(2.0)));
    assert_eq!(users.max_concurrent_streams, None);
    assert!(tier.one_stream_per_token);
}
