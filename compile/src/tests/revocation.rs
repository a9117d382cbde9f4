//! Revocation: a revoked current key is replaced at once, a revoked retiring key just leaves, an unknown id is reported.
use super::*;

#[test]
fn revoking_the_current_key_replaces_it_at_once() {
    let mut c = Cluster::new();
    c.agents = vec![
        AgentReport {
            node: "n1".into(),
            config_revision: None,
            enforced_revocations: vec![KeyId(kid(1))],
            renewed_at: Some(t0() + hours(1)),
            ..AgentReport::default()
        },
        AgentReport {
            node: "n2".into(),
            config_revision: None,
            enforced_revocations: vec![],
            renewed_at: Some(t0() + hours(1)),
            ..AgentReport::default()
        },
        AgentReport {
            node: "stale".into(),
            config_revision: None,
            enforced_revocations: vec![KeyId(kid(1))],
            renewed_at: Some(t0()),
            ..AgentReport::default()
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
