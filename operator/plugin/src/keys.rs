//! The key commands' decisions, as plain functions over an `ApiKeyPolicy`: what state each key is in, whether a
//! revocation may be made, and the server-side-apply body that makes it. No I/O; `cluster` reads and writes.
//!
//! ```text
//!  ApiKeyPolicy (spec.revocations, status.keys, status.revocations) + now ─▶ key_rows ─▶ keys list
//!  ApiKeyPolicy + managedFields of `kubectl-infergate` + key id ─▶ plan_revocation ─▶ revocation_apply ─▶ SSA
//! ```
//! A revocation is applied with the plugin's own field manager and with `spec.revocations` a list-map keyed by
//! `keyId`, so the apply adds its items without touching those of GitOps or anyone else. An apply states the
//! manager's whole intent, though: items the manager applied before and leaves out are removed. So every apply
//! carries the revocations this manager already owns (read from `managedFields`) plus the new one; applying the new
//! item alone would silently un-revoke the key revoked the time before.
use crate::error::Error;
use chrono::{DateTime, Utc};
use infergate_crds::key::KeyId;
use infergate_crds::policy::{KeyState as StatusKeyState, Revocation};
use infergate_crds::{ApiKeyPolicy, NamespacedName};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde::Serialize;
use std::collections::BTreeSet;

/// The field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-infergate";

/// A key's state as `keys list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// The key in the Secret; accepted.
    Active,
    /// The previous key during a rotation overlap; accepted until `retiringUntil`.
    Retiring,
    /// Listed in `spec.revocations`, not yet confirmed in status by the operator.
    Revoking,
    /// Revoked: refused, open streams closed.
    Revoked,
    /// Past the policy's `expiresAt`, or a retiring key past its overlap: refused.
    Expired,
    /// The policy is suspended: refused until `suspended` is set back to false.
    Suspended,
    /// The policy has no key (yet): see its Ready condition.
    None,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Revoking => "revoking",
            KeyState::Revoked => "revoked",
            KeyState::Expired => "expired",
            KeyState::Suspended => "suspended",
            KeyState::None => "none",
        }
    }
}

/// One line of `keys list`. Key ids and times only: the plugin never reads key material.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRow {
    pub namespace: String,
    pub policy: String,
    /// `None` for a policy without any key.
    pub key_id: Option<String>,
    pub state: KeyState,
    pub issued_at: Option<DateTime<Utc>>,
    /// End of the overlap of a retiring key.
    pub retiring_until: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The policy's keys as of `now`: those in `status.keys`, then the revoked ones from `status.revocations`. A policy
/// with no key gets one row with state `none`, so it is not silently missing from the list.
pub fn key_rows(policy: &ApiKeyPolicy, now: DateTime<Utc>) -> Vec<KeyRow> {
    let status = policy.status.clone().unwrap_or_default();
    let spec = &policy.spec;
    let row = |key_id: Option<String>, state| KeyRow {
        namespace: policy.namespace().unwrap_or_default(),
        policy: policy.name_any(),
        key_id,
        state,
        issued_at: None,
        retiring_until: None,
        revoked_at: None,
    };
    let listed: BTreeSet<&str> = spec.revocations.iter().map(|r| r.key_id.as_str()).collect();
    let confirmed: BTreeSet<&str> =
        status.revocations.iter().filter(|r| r.matched).map(|r| r.key_id.as_str()).collect();
    let policy_expired = spec.expires_at.is_some_and(|t| t <= now);
    let mut rows = Vec::new();
    for key in &status.keys {
        let past_overlap = key.valid_until.is_some_and(|t| t <= now);
        let state = if confirmed.contains(key.key_id.as_str()) {
            KeyState::Revoked
        } else if listed.contains(key.key_id.as_str()) {
            KeyState::Revoking
        } else if policy_expired || past_overlap {
            KeyState::Expired
        } else if spec.suspended {
            KeyState::Suspended
        } else {
            match key.state {
                StatusKeyState::Current => KeyState::Active,
                StatusKeyState::Retiring => KeyState::Retiring,
            }
        };
        rows.push(KeyRow {
            issued_at: Some(key.issued_at),
            retiring_until: (key.state == StatusKeyState::Retiring).then_some(key.valid_until).flatten(),
            ..row(Some(key.key_id.clone()), state)
        });
    }
    for revoked in status.revocations.iter().filter(|r| r.matched) {
        if status.keys.iter().any(|k| k.key_id == revoked.key_id) {
            continue;
        }
        rows.push(KeyRow {
            revoked_at: Some(revoked.revoked_at),
            ..row(Some(revoked.key_id.clone()), KeyState::Revoked)
        });
    }
    if rows.is_empty() {
        rows.push(row(None, KeyState::None));
    }
    rows
}

/// What `keys revoke` will do.
#[derive(Clone, Debug, PartialEq)]
pub enum RevokePlan {
    /// Apply these revocations (the ones this manager owns already, then the new one) as manager
    /// [`FIELD_MANAGER`].
    Apply(Vec<Revocation>),
    /// The key is listed in `spec.revocations` already (by whoever): nothing to write.
    AlreadyListed(Revocation),
}

/// Decides a revocation of `key_id` on `policy`: the id must be well formed and name a key the policy accepts now
/// (`status.keys`), unless it is listed already.
pub fn plan_revocation(
    policy: &ApiKeyPolicy,
    key_id: &str,
    reason: &str,
    requested_by: &str,
) -> Result<RevokePlan, Error> {
    if !KeyId::is_well_formed(key_id) {
        return Err(Error::bad_key_id(key_id));
    }
    if let Some(listed) = policy.spec.revocations.iter().find(|r| r.key_id == key_id) {
        return Ok(RevokePlan::AlreadyListed(listed.clone()));
    }
    let status = policy.status.clone().unwrap_or_default();
    if !status.keys.iter().any(|k| k.key_id == key_id) {
        let known: Vec<String> = status.keys.iter().map(|k| k.key_id.clone()).collect();
        return Err(Error::KeyNotInPolicy { policy: policy_name(policy), key_id: key_id.to_string(), known });
    }
    if reason.trim().is_empty() {
        return Err(Error::Usage("--reason must say why the key is revoked (it goes into the audit trail)".into()));
    }
    let owned = owned_revocations(&policy.metadata, FIELD_MANAGER);
    let mut items: Vec<Revocation> =
        policy.spec.revocations.iter().filter(|r| owned.contains(&r.key_id)).cloned().collect();
    items.push(Revocation {
        key_id: key_id.to_string(),
        reason: reason.to_string(),
        requested_by: requested_by.to_string(),
    });
    Ok(RevokePlan::Apply(items))
}

/// The key ids of the `spec.revocations` items `manager` owns by server-side apply, from `managedFields`
/// (`f:spec` / `f:revocations` / `k:{"keyId":"..."}`). Empty when the server keeps no managedFields.
pub fn owned_revocations(meta: &ObjectMeta, manager: &str) -> BTreeSet<String> {
    let entries = meta.managed_fields.iter().flatten().filter(|e| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some("Apply")
            && e.subresource.as_deref().unwrap_or_default().is_empty()
    });
    let mut owned = BTreeSet::new();
    for entry in entries {
        let items = entry.fields_v1.as_ref().and_then(|f| f.0.get("f:spec")).and_then(|s| s.get("f:revocations"));
        let Some(items) = items.and_then(|i| i.as_object()) else { continue };
        for item in items.keys() {
            let key = item.strip_prefix("k:").and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok());
            if let Some(id) = key.as_ref().and_then(|k| k.get("keyId")).and_then(|id| id.as_str()) {
                owned.insert(id.to_string());
            }
        }
    }
    owned
}

/// The server-side-apply body for `items` on `policy`: identity and `spec.revocations`, nothing else, so the
/// plugin's manager owns only those items.
pub fn revocation_apply(policy: &NamespacedName, items: &[Revocation]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": format!("{}/{}", infergate_crds::GROUP, infergate_crds::VERSION),
        "kind": "ApiKeyPolicy",
        "metadata": {"name": policy.name, "namespace": policy.namespace},
        "spec": {"revocations": items},
    })
}

/// The merge patch that asks the operator for a rotation: a fresh value of the annotation it watches.
pub fn rotation_patch(now: DateTime<Utc>) -> (String, serde_json::Value) {
    let value = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let patch = serde_json::json!({
        "metadata": {"annotations": {infergate_crds::annotations::ROTATE_REQUESTED_AT: value}}
    });
    (value, patch)
}

pub fn policy_name(policy: &ApiKeyPolicy) -> NamespacedName {
    NamespacedName::new(policy.namespace().unwrap_or_default(), policy.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use infergate_crds::policy::{KeyStatus, RevocationStatus};
    use infergate_crds::{ApiKeyPolicySpec, ApiKeyPolicyStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    const A: &str = "kid_00000000000000aa";
    const B: &str = "kid_00000000000000bb";
    const C: &str = "kid_00000000000000cc";

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    /// `mk_policy().current(A, 0).retiring(B, -100, 50)` style builder over a minimal valid policy.
    struct Mk(ApiKeyPolicy);

    fn mk_policy() -> Mk {
        let spec: ApiKeyPolicySpec = serde_json::from_value(serde_json::json!({
            "tier": "pro", "secretName": "app-key", "scopes": [{"endpoint": "stt"}]
        }))
        .unwrap();
        let mut policy = ApiKeyPolicy::new("app", spec);
        policy.metadata.namespace = Some("team-a".into());
        policy.status = Some(ApiKeyPolicyStatus::default());
        Mk(policy)
    }

    impl Mk {
        fn status(&mut self) -> &mut ApiKeyPolicyStatus {
            self.0.status.as_mut().unwrap()
        }
        fn key(mut self, id: &str, state: StatusKeyState, issued: i64, until: Option<i64>) -> Self {
            self.status().keys.push(KeyStatus {
                key_id: id.into(),
                state,
                issued_at: t(issued),
                valid_until: until.map(t),
            });
            self
        }
        fn current(self, id: &str, issued: i64) -> Self {
            self.key(id, StatusKeyState::Current, issued, None)
        }
        fn retiring(self, id: &str, issued: i64, until: i64) -> Self {
            self.key(id, StatusKeyState::Retiring, issued, Some(until))
        }
        fn listed(mut self, id: &str, by: &str) -> Self {
            self.0.spec.revocations.push(Revocation {
                key_id: id.into(),
                reason: "leak".into(),
                requested_by: by.into(),
            });
            self
        }
        fn revoked(mut self, id: &str, at: i64) -> Self {
            self = self.listed(id, "gitops");
            self.status().revocations.push(RevocationStatus {
                key_id: id.into(),
                reason: "leak".into(),
                requested_by: "gitops".into(),
                revoked_at: t(at),
                matched: true,
                agents_enforcing: None,
                agents_total: None,
            });
            self
        }
        fn owned_by(mut self, manager: &str, ids: &[&str]) -> Self {
            let items: serde_json::Map<String, serde_json::Value> = ids
                .iter()
                .map(|id| (format!("k:{{\"keyId\":\"{id}\"}}"), serde_json::json!({".": {}, "f:keyId": {}})))
                .collect();
            self.0.metadata.managed_fields.get_or_insert_with(Vec::new).push(ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some("Apply".into()),
                fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:revocations": items}}))),
                ..Default::default()
            });
            self
        }
    }

    fn states(rows: &[KeyRow]) -> Vec<(Option<&str>, &str)> {
        rows.iter().map(|r| (r.key_id.as_deref(), r.state.as_str())).collect()
    }

    #[test]
    fn current_and_retiring_keys_are_active_and_retiring_with_their_times() {
        let policy = mk_policy().current(A, 0).retiring(B, -100, 50).0;
        let rows = key_rows(&policy, t(10));
        assert_eq!(
            rows,
            vec![
                KeyRow {
                    namespace: "team-a".into(),
                    policy: "app".into(),
                    key_id: Some(A.into()),
                    state: KeyState::Active,
                    issued_at: Some(t(0)),
                    retiring_until: None,
                    revoked_at: None,
                },
                KeyRow {
                    namespace: "team-a".into(),
                    policy: "app".into(),
                    key_id: Some(B.into()),
                    state: KeyState::Retiring,
                    issued_at: Some(t(-100)),
                    retiring_until: Some(t(50)),
                    revoked_at: None,
                },
            ]
        );
    }

    #[test]
    fn a_retiring_key_past_its_overlap_is_expired() {
        let policy = mk_policy().current(A, 0).retiring(B, -100, 50).0;
        assert_eq!(states(&key_rows(&policy, t(50))), [(Some(A), "active"), (Some(B), "expired")]);
    }

    #[test]
    fn every_key_of_an_expired_policy_is_expired() {
        let mut policy = mk_policy().current(A, 0).0;
        policy.spec.expires_at = Some(t(5));
        assert_eq!(states(&key_rows(&policy, t(4))), [(Some(A), "active")]);
        assert_eq!(states(&key_rows(&policy, t(5))), [(Some(A), "expired")]);
    }

    #[test]
    fn keys_of_a_suspended_policy_are_suspended() {
        let mut policy = mk_policy().current(A, 0).0;
        policy.spec.suspended = true;
        assert_eq!(states(&key_rows(&policy, t(1))), [(Some(A), "suspended")]);
    }

    #[test]
    fn a_listed_revocation_is_revoking_until_status_confirms_it() {
        let policy = mk_policy().current(A, 0).listed(A, "alice").0;
        assert_eq!(states(&key_rows(&policy, t(1))), [(Some(A), "revoking")]);
    }

    #[test]
    fn confirmed_revocations_are_revoked_rows_with_their_time_and_unmatched_ones_are_not_keys() {
        let mut policy = mk_policy().current(B, 10).revoked(A, 9).0;
        policy.status.as_mut().unwrap().revocations.push(RevocationStatus {
            key_id: C.into(),
            reason: "typo".into(),
            requested_by: "bob".into(),
            revoked_at: t(9),
            matched: false,
            agents_enforcing: None,
            agents_total: None,
        });
        let rows = key_rows(&policy, t(11));
        assert_eq!(states(&rows), [(Some(B), "active"), (Some(A), "revoked")]);
        assert_eq!((rows[1].revoked_at, rows[1].issued_at), (Some(t(9)), None));
    }

    #[test]
    fn a_policy_without_keys_still_gets_a_row() {
        let policy = mk_policy().0;
        assert_eq!(states(&key_rows(&policy, t(0))), [(None, "none")]);
    }

    #[test]
    fn json_rows_carry_ids_states_and_times_only() {
        let policy = mk_policy().retiring(B, 0, 60).0;
        let json = serde_json::to_value(&key_rows(&policy, t(1))[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "namespace": "team-a", "policy": "app", "keyId": B, "state": "retiring",
                "issuedAt": "2027-01-15T08:00:00Z", "retiringUntil": "2027-01-15T08:01:00Z", "revokedAt": null
            })
        );
    }

    #[test]
    fn a_revocation_applies_what_this_manager_owns_plus_the_new_item() {
        let policy =
            mk_policy().current(A, 0).retiring(B, -5, 50).listed(C, "gitops").revoked("kid_00000000000000dd", 1);
        let policy = policy.owned_by(FIELD_MANAGER, &["kid_00000000000000dd"]).owned_by("gitops", &[C]).0;
        let plan = plan_revocation(&policy, B, "leaked in CI", "carol").unwrap();
        let RevokePlan::Apply(items) = plan else { panic!("expected an apply, got {plan:?}") };
        let ids: Vec<&str> = items.iter().map(|r| r.key_id.as_str()).collect();
        assert_eq!(ids, ["kid_00000000000000dd", B], "gitops's item is not claimed, the plugin's own is kept");
        assert_eq!(
            items[1],
            Revocation { key_id: B.into(), reason: "leaked in CI".into(), requested_by: "carol".into() }
        );
    }

    #[test]
    fn the_apply_body_names_the_policy_and_carries_only_revocations() {
        let items = [Revocation { key_id: A.into(), reason: "leak".into(), requested_by: "carol".into() }];
        assert_eq!(
            revocation_apply(&NamespacedName::new("team-a", "app"), &items),
            serde_json::json!({
                "apiVersion": "infergate.dev/v1alpha1",
                "kind": "ApiKeyPolicy",
                "metadata": {"name": "app", "namespace": "team-a"},
                "spec": {"revocations": [{"keyId": A, "reason": "leak", "requestedBy": "carol"}]},
            })
        );
    }

    #[test]
    fn ownership_is_read_from_apply_entries_of_the_main_resource_only() {
        let mut policy = mk_policy().owned_by(FIELD_MANAGER, &[A]).0;
        let entries = policy.metadata.managed_fields.as_mut().unwrap();
        let mut update = entries[0].clone();
        update.operation = Some("Update".into());
        update.fields_v1 = Some(FieldsV1(
            serde_json::json!({"f:spec": {"f:revocations": {"k:{\"keyId\":\"kid_00000000000000bb\"}": {}}}}),
        ));
        let mut status = entries[0].clone();
        status.subresource = Some("status".into());
        status.fields_v1 = Some(FieldsV1(
            serde_json::json!({"f:spec": {"f:revocations": {"k:{\"keyId\":\"kid_00000000000000cc\"}": {}}}}),
        ));
        entries.extend([update, status]);
        assert_eq!(owned_revocations(&policy.metadata, FIELD_MANAGER), BTreeSet::from([A.to_string()]));
        assert!(owned_revocations(&policy.metadata, "gitops").is_empty());
    }

    #[test]
    fn a_revocation_already_listed_writes_nothing() {
        let policy = mk_policy().current(A, 0).listed(A, "alice").0;
        assert_eq!(
            plan_revocation(&policy, A, "again", "bob").unwrap(),
            RevokePlan::AlreadyListed(Revocation {
                key_id: A.into(),
                reason: "leak".into(),
                requested_by: "alice".into()
            })
        );
    }

    #[test]
    fn a_key_id_that_is_not_one_of_the_policy_is_refused_naming_its_keys() {
        let policy = mk_policy().current(A, 0).0;
        let err = plan_revocation(&policy, B, "leak", "bob").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "key {B} is not a key of ApiKeyPolicy team-a/app (its keys: {A}); \
             see `kubectl infergate keys list -n team-a`"
            )
        );
        let err = plan_revocation(&policy, "sk_live_oops", "leak", "bob").unwrap_err();
        assert!(matches!(err, Error::BadKeyId { .. }), "{err}");
        assert!(!err.to_string().contains("sk_live_oops"), "a pasted key is never echoed: {err}");
        assert!(matches!(plan_revocation(&policy, A, " ", "bob").unwrap_err(), Error::Usage(_)));
    }

    #[test]
    fn rotation_values_are_fresh_per_call() {
        let (first, patch) = rotation_patch(t(0));
        let (second, _) = rotation_patch(t(0) + Duration::microseconds(1));
        assert_ne!(first, second);
        assert_eq!(
            patch,
            serde_json::json!({"metadata": {"annotations": {"infergate.dev/rotate-requested-at": first}}})
        );
    }
}
