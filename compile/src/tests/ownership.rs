//! Ownership of the key Secret, clock skew, hand edits and the environment: what the operator trusts.
use super::*;

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
