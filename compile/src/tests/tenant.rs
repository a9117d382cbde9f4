//! Tenant isolation (security issue 9, items 1 and 2): a tenant writes ApiKeyPolicies and any Secret in its own
//! namespace. It cannot make the operator write a Secret it does not own, write into the operator's namespace,
//! or, by editing its key Secret, change anything the gateway accepts or refuses besides its own current key.
use super::*;

/// A Secret the tenant created by hand: no infergate labels, no owner.
fn unlabelled_secret(name: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("acme".into());
    s.data = Some([("api-key".to_string(), ByteString(b"hunter2-not-an-infergate-key".to_vec()))].into());
    s
}

/// Sets annotations on the key Secret as `kubectl annotate --overwrite` would.
fn hand_edit(c: &mut Cluster, edits: &[(&str, &str)]) {
    let ann = c.secret.as_mut().expect("a key Secret").metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in edits {
        ann.insert(k.to_string(), v.to_string());
    }
}

const CONFLICT_MESSAGE: &str = "Secret acme/app-key exists and is not owned by this ApiKeyPolicy; the operator will \
                                not overwrite it. Choose another spec.secretName or delete that Secret";

// ---- item 1: the operator never writes a Secret it does not own ------------------------------------------

#[test]
fn an_existing_unlabelled_secret_is_a_conflict_and_nothing_is_written() {
    let mut c = Cluster::new();
    c.secret = Some(unlabelled_secret("app-key"));
    let out = c.compile_with(&mk_policy("app").build(), t0(), &mut NoKeys);
    assert_eq!((out.key_secret.as_ref(), out.shard.as_ref()), (None, None));
    assert_eq!(ready_of(&out.status), ("False".into(), "SecretConflict".into(), CONFLICT_MESSAGE.into()));
    assert_eq!((out.status.current_key_id.as_ref(), out.status.keys.len()), (None, 0));
    assert_eq!(out.events, vec![event(true, "SecretConflict", CONFLICT_MESSAGE)]);
    assert_eq!(out.audit, vec![]);
}

#[test]
fn a_secret_with_infergate_labels_but_no_owner_reference_is_a_conflict() {
    let mut c = Cluster::new();
    let mut copied = unlabelled_secret("app-key");
    copied.metadata.labels = Some([("infergate.dev/component".to_string(), "api-key".to_string())].into());
    c.secret = Some(copied);
    let out = c.compile_with(&mk_policy("app").build(), t0(), &mut NoKeys);
    assert_eq!((out.key_secret.as_ref(), out.shard.as_ref()), (None, None));
    assert_eq!(ready_of(&out.status).1, "SecretConflict");
}

#[test]
fn a_policy_in_the_operator_namespace_gets_no_secret_and_no_key() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    p.metadata.namespace = Some(OPERATOR_NS.into());
    let out = c.compile_with(&p, t0(), &mut NoKeys);
    assert_eq!((out.key_secret.as_ref(), out.shard.as_ref(), out.next_wake), (None, None, None));
    let message = "namespace infergate-system is the infergate operator's own namespace, which holds the gateway \
                   config: the operator writes no key Secret there. Create the ApiKeyPolicy in an application \
                   namespace";
    assert_eq!(ready_of(&out.status), ("False".into(), "OperatorNamespace".into(), message.into()));
    assert_eq!(
        out.events,
        vec![EventSpec {
            regarding: ObjectRef { namespace: Some(OPERATOR_NS.into()), ..policy_ref("app") },
            warning: true,
            reason: "OperatorNamespace",
            note: message.into(),
        }]
    );
    assert_eq!(out.audit, vec![]);
}

#[test]
fn a_conflict_is_looked_at_again_and_resolves_once_the_name_is_given_back() {
    let mut c = Cluster::new();
    c.secret = Some(unlabelled_secret("app-key"));
    let mut p = mk_policy("app").build();
    let out = c.reconcile(&mut p, t0());
    assert_eq!(out.next_wake, Some(t0() + secs(60)), "the operator does not watch unlabelled Secrets");
    c.secret = None;
    let out = c.reconcile(&mut p, t0() + secs(60));
    assert_eq!(out.status.current_key_id, Some(kid(1)));
    assert_eq!(ready_of(&out.status).1, "KeysActive");
}

// ---- item 2: nothing a tenant can edit decides what the gateway accepts --------------------------------

#[test]
fn a_hand_written_previous_key_digest_is_not_published() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());
    let invented = key(7, Environment::Live);
    hand_edit(
        &mut c,
        &[
            (annotations::PREVIOUS_KEY_ID, invented.id().as_str()),
            (annotations::PREVIOUS_KEY_DIGEST, &invented.digest().to_hex()),
            (annotations::PREVIOUS_ISSUED_AT, "2025-12-31T00:00:00Z"),
            (annotations::PREVIOUS_RETIRES_AT, "2099-01-01T00:00:00Z"),
        ],
    );
    let out = c.compile_with(&p, t0() + hours(1), &mut NoKeys);
    assert_eq!(out.shard.as_ref().unwrap().keys, vec![current_entry(1, t0())]);
    assert_eq!(out.status.keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), vec![kid(1)]);
    assert_eq!(out.next_wake, None);
    assert!(!annotations_of(out.key_secret.as_ref().unwrap()).contains_key(annotations::PREVIOUS_KEY_DIGEST));
}

#[test]
fn a_hand_written_revoked_digest_is_not_published() {
    // The attacker knows only another tenant's key id: it lists it under its own revocations, then writes a
    // digest sharing that id's bits into its own Secret.
    let victim = key(9, Environment::Live);
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());
    p = PolicyBuilder(p).revoked(victim.id().as_str()).build();
    c.reconcile(&mut p, t0() + hours(1));
    let forged = format!("{}{}", &victim.digest().to_hex()[..16], "0".repeat(48));
    hand_edit(&mut c, &[(annotations::REVOKED_KEY_DIGESTS, &forged)]);
    let out = c.compile_with(&p, t0() + hours(2), &mut NoKeys);
    assert_eq!(out.shard.as_ref().unwrap().revoked, vec![]);
    assert_eq!(out.shard.as_ref().unwrap().keys, vec![current_entry(1, t0())]);
    assert!(!out.status.revocations[0].matched);
    assert_eq!(out.events, vec![]);
}

#[test]
fn a_hand_edited_retires_at_cannot_extend_the_overlap() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").rotation(24, 6).build();
    c.reconcile(&mut p, t0());
    let rotated = t0() + hours(24);
    c.reconcile(&mut p, rotated);
    hand_edit(&mut c, &[(annotations::PREVIOUS_RETIRES_AT, "2099-01-01T00:00:00Z")]);
    let out = c.compile_with(&p, rotated + hours(1), &mut NoKeys);
    assert_eq!(
        out.shard.as_ref().unwrap().keys,
        vec![current_entry(2, rotated), retiring_entry(1, t0(), rotated + hours(6))]
    );
    assert_eq!(out.next_wake, Some(rotated + hours(6)));
}

#[test]
fn a_hand_removed_revoked_digest_stays_revoked() {
    let mut c = Cluster::new();
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());
    p = PolicyBuilder(p).revoked(&kid(1)).build();
    let t1 = t0() + hours(1);
    c.reconcile(&mut p, t1);
    c.secret.as_mut().unwrap().metadata.annotations.as_mut().unwrap().remove(annotations::REVOKED_KEY_DIGESTS);
    let out = c.compile_with(&p, t1 + hours(1), &mut NoKeys);
    let k1 = key(1, Environment::Live);
    assert_eq!(out.shard.unwrap().revoked, vec![RevokedKey { key_id: k1.id(), digest: k1.digest(), revoked_at: t1 }]);
}

#[test]
fn another_policys_shard_is_not_read() {
    // A shard that names another owner (however it got here) says nothing about this policy's keys.
    let mut other = Cluster::new();
    let mut q = mk_policy("other").build();
    other.reconcile(&mut q, t0());
    q = PolicyBuilder(q).revoked(&kid(1)).build();
    other.reconcile(&mut q, t0() + hours(1));
    assert_eq!(other.shard.as_ref().unwrap().revoked.len(), 1);

    let mut c = Cluster::new();
    c.keys = InsecureSequentialKeys::starting_at(5);
    let mut p = mk_policy("app").build();
    c.reconcile(&mut p, t0());
    p = PolicyBuilder(p).revoked(&kid(1)).build();
    c.shard = other.shard.clone();
    let out = c.compile_with(&p, t0() + hours(2), &mut NoKeys);
    assert_eq!(out.shard.as_ref().unwrap().revoked, vec![]);
    assert_eq!(out.shard.as_ref().unwrap().keys, vec![current_entry(5, t0())]);
    assert!(!out.status.revocations[0].matched);
}
