//! Suspension and expiry: keys are kept, the shard says why the gateway refuses them, Ready says what to do.
use super::*;

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
