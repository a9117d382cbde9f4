//! Scheduled and requested rotation, and the overlap during which the previous key keeps working.
use super::*;

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

/// Issue 15, item 8: the operator wrote the rotated key Secret and was stopped before the shard. The next
/// operator finds the new key in the Secret and the old one still current in the shard: it keeps the key it
/// finds (no new one), and the old key keeps its overlap.
#[test]
fn a_rotation_cut_between_the_secret_and_the_shard_keeps_the_key_and_the_overlap() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 1).build();
    c.reconcile(&mut p, t0());
    let old_shard = c.shard.clone();
    let at = t0() + hours(24);
    let rotated = c.reconcile(&mut p, at);
    assert_eq!(rotated.shard.unwrap().keys, vec![current_entry(2, at), retiring_entry(1, t0(), at + hours(1))]);
    // The shard write never happened; a new operator reconciles a minute later.
    c.shard = old_shard;
    let later = at + secs(60);
    let recovered = c.compile_with(&p, later, &mut NoKeys);
    assert_eq!(
        recovered.shard.unwrap().keys,
        vec![current_entry(2, at), retiring_entry(1, t0(), at + hours(1))],
        "the key from the Secret, and the old key retiring at the end of the overlap"
    );
    if let Some(secret) = &recovered.key_secret {
        assert_eq!(annotations_of(secret)[annotations::CURRENT_KEY_ID], kid(2), "no new key");
    }
}

#[test]
fn an_edited_secret_cannot_stretch_a_recovered_overlap() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 1).build();
    c.reconcile(&mut p, t0());
    let old_shard = c.shard.clone();
    let at = t0() + hours(24);
    c.reconcile(&mut p, at);
    c.shard = old_shard;
    let secret = c.secret.as_mut().unwrap();
    secret
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(annotations::PREVIOUS_RETIRES_AT.into(), "2100-01-01T00:00:00Z".into());
    let later = at + secs(60);
    let recovered = c.compile_with(&p, later, &mut NoKeys);
    assert_eq!(recovered.shard.unwrap().keys, vec![current_entry(2, at), retiring_entry(1, t0(), later + hours(1))]);
}
