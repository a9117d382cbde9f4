//! What the operator knows about the keys it issued, read back from the two objects it writes, each trusted for
//! what only the operator could have put there.
//!
//! ```text
//!  Secret <policy.spec.secretName>  (policy namespace: the tenant can edit it)
//!    data:        api-key = <current plaintext>   key-id = kid_…
//!    annotations: current-key-id, current-issued-at, rotation-handled          ─▶ read back
//!                 previous-key-id, previous-key-digest, previous-issued-at,
//!                 previous-retires-at, revoked-key-digests                     ─▶ written for people, never trusted
//!  policy shard  (operator namespace: only the operator writes it)
//!    keys[state=retiring] (digest, validFrom, validUntil), revoked[] (digest)  ─▶ read back
//! ```
//! A hand edit of the Secret can therefore change at most the policy's own current key (and when it rotates).
//! Whatever the gateway accepts besides it (the retiring key) or refuses (revoked digests) comes from the shard.
//! The one thing the Secret's copy still does is narrow: a retiring key is kept only while the Secret names it
//! too, so an edit can withdraw the policy's own retiring key early, never add or extend one. Anything
//! unreadable is treated as absent (ids and digests only, never a plaintext, outside `api-key`).
use chrono::{DateTime, SecondsFormat, Utc};
use infergate_crds::gateway::PolicyShard;
use infergate_crds::key::{ApiKey, KeyDigest, KeyId};
use infergate_crds::policy::KeyState;
use infergate_crds::{ApiKeyPolicy, annotations, labels, secret_keys};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CurrentKey {
    pub key: ApiKey,
    pub issued_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RetiringKey {
    pub digest: KeyDigest,
    pub issued_at: DateTime<Utc>,
    pub retires_at: DateTime<Utc>,
}

/// What the key Secret and the published shard, together, say about this policy's keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct KeyBook {
    pub current: Option<CurrentKey>,
    /// From the shard, and only while the Secret names the same digest.
    pub previous: Option<RetiringKey>,
    /// The `rotate-requested-at` value already honoured.
    pub rotation_handled: Option<String>,
    /// Digests of revoked keys still listed in `spec.revocations`, sorted by key id; from the shard only.
    pub revoked: Vec<KeyDigest>,
    /// When the published shard says each of those revocations was first seen. Where no status carries that
    /// time (standalone mode keeps no status; a status can be lost), this keeps it from becoming "now" at every
    /// compile, which changed the shard on every compile and made agents sharing a state file reload each other
    /// forever.
    pub revoked_since: Vec<(KeyId, DateTime<Utc>)>,
}

impl KeyBook {
    /// `now` stands in for an issued-at that was lost (the annotation is written back on the next apply).
    /// `shard` must be this policy's own (the caller checks the owner).
    ///
    /// `overlap` is the policy's rotation overlap. It bounds the one case where the retiring key is taken from the
    /// shard's *current* entry: an operator that wrote the rotated key Secret and was stopped before it wrote the
    /// shard left the old key current there and named as previous in the Secret. That key keeps its overlap, to
    /// the Secret's `previous-retires-at` but never past `now + overlap` (the Secret is the tenant's to edit; the
    /// shard proves the key was issued, the bound keeps an edit from extending it beyond a rotation's overlap).
    pub fn read(
        secret: Option<&Secret>,
        shard: Option<&PolicyShard>,
        overlap: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Self {
        let ann = secret.and_then(|s| s.metadata.annotations.clone()).unwrap_or_default();
        let time = |k: &str| ann.get(k).and_then(|v| parse_time(v));
        let created = secret
            .and_then(|s| s.metadata.creation_timestamp.as_ref())
            .map(|t| infergate_crds::conditions::from_jiff(t.0));
        let current = secret
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(secret_keys::API_KEY))
            .and_then(|b| std::str::from_utf8(&b.0).ok())
            .and_then(|s| ApiKey::parse(s.trim()).ok())
            .map(|key| {
                // The issued-at annotation only counts if it describes this very key (a hand-edited key has none).
                let recorded_for_this_key =
                    ann.get(annotations::CURRENT_KEY_ID).map(String::as_str) == Some(key.id().as_str());
                let issued_at =
                    time(annotations::CURRENT_ISSUED_AT).filter(|_| recorded_for_this_key).or(created).unwrap_or(now);
                CurrentKey { key, issued_at }
            });
        // The Secret's copy of the retiring key: a digest and an id that agree, or nothing.
        let named_by_secret = ann
            .get(annotations::PREVIOUS_KEY_DIGEST)
            .and_then(|d| KeyDigest::from_hex(d))
            .filter(|d| ann.get(annotations::PREVIOUS_KEY_ID).map(String::as_str) == Some(d.key_id().as_str()));
        let retiring = shard
            .and_then(|s| s.keys.iter().find(|k| k.state == KeyState::Retiring))
            .and_then(|k| Some(RetiringKey { digest: k.digest, issued_at: k.valid_from, retires_at: k.valid_until? }))
            .filter(|p| named_by_secret == Some(p.digest));
        // A rotation cut short between the key Secret and the shard (see above).
        let interrupted = || {
            let published = shard?.keys.iter().find(|k| k.state == KeyState::Current)?;
            let still_current = current.as_ref().is_some_and(|c| c.key.digest() == published.digest);
            if still_current || named_by_secret != Some(published.digest) {
                return None;
            }
            let retires_at = time(annotations::PREVIOUS_RETIRES_AT).unwrap_or(now).min(now + overlap);
            (retires_at > now).then_some(RetiringKey {
                digest: published.digest,
                issued_at: published.valid_from,
                retires_at,
            })
        };
        let previous = retiring.or_else(interrupted);
        let mut revoked: Vec<KeyDigest> =
            shard.map(|s| s.revoked.iter().map(|r| r.digest).collect()).unwrap_or_default();
        sort_dedup(&mut revoked);
        let revoked_since =
            shard.map(|s| s.revoked.iter().map(|r| (r.digest.key_id(), r.revoked_at)).collect()).unwrap_or_default();
        KeyBook {
            current,
            previous,
            rotation_handled: ann.get(annotations::ROTATION_HANDLED).cloned(),
            revoked,
            revoked_since,
        }
    }

    /// When the published shard first recorded this key as revoked, if it did.
    pub fn revoked_since(&self, id: &KeyId) -> Option<DateTime<Utc>> {
        self.revoked_since.iter().find(|(k, _)| k == id).map(|(_, at)| *at)
    }

    pub fn add_revoked(&mut self, digest: KeyDigest) {
        self.revoked.push(digest);
        sort_dedup(&mut self.revoked);
    }

    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.iter().any(|d| &d.key_id() == id)
    }

    /// The key Secret that records this book (the retiring and revoked state as a copy for people). Only called
    /// with a current key.
    pub fn to_secret(&self, policy: &ApiKeyPolicy) -> Secret {
        let current = self.current.as_ref().expect("a key Secret is only written with a current key");
        let mut ann = BTreeMap::new();
        ann.insert(annotations::CURRENT_KEY_ID.to_string(), current.key.id().to_string());
        ann.insert(annotations::CURRENT_ISSUED_AT.to_string(), format_time(current.issued_at));
        if let Some(prev) = &self.previous {
            ann.insert(annotations::PREVIOUS_KEY_ID.to_string(), prev.digest.key_id().to_string());
            ann.insert(annotations::PREVIOUS_KEY_DIGEST.to_string(), prev.digest.to_hex());
            ann.insert(annotations::PREVIOUS_ISSUED_AT.to_string(), format_time(prev.issued_at));
            ann.insert(annotations::PREVIOUS_RETIRES_AT.to_string(), format_time(prev.retires_at));
        }
        if let Some(handled) = &self.rotation_handled {
            ann.insert(annotations::ROTATION_HANDLED.to_string(), handled.clone());
        }
        if !self.revoked.is_empty() {
            let list: Vec<String> = self.revoked.iter().map(KeyDigest::to_hex).collect();
            ann.insert(annotations::REVOKED_KEY_DIGESTS.to_string(), list.join(","));
        }
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        let name = policy.metadata.name.clone().unwrap_or_default();
        let mut lbl = BTreeMap::new();
        lbl.insert(labels::COMPONENT.to_string(), labels::API_KEY.to_string());
        lbl.insert(labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string());
        lbl.insert(labels::OWNER_NAMESPACE.to_string(), crate::publish::label_value(&namespace));
        lbl.insert(labels::OWNER_NAME.to_string(), crate::publish::label_value(&name));
        let mut data = BTreeMap::new();
        data.insert(secret_keys::API_KEY.to_string(), ByteString(current.key.expose().as_bytes().to_vec()));
        data.insert(secret_keys::KEY_ID.to_string(), ByteString(current.key.id().to_string().into_bytes()));
        Secret {
            metadata: ObjectMeta {
                name: Some(policy.spec.secret_name.clone()),
                namespace: Some(namespace),
                labels: Some(lbl),
                annotations: Some(ann),
                owner_references: Some(vec![owner_reference(policy)]),
                ..ObjectMeta::default()
            },
            data: Some(data),
            type_: Some("Opaque".to_string()),
            ..Secret::default()
        }
    }
}

/// The controller reference from the key Secret to its policy (same namespace, so garbage collection works).
pub(crate) fn owner_reference(policy: &ApiKeyPolicy) -> OwnerReference {
    OwnerReference {
        api_version: ApiKeyPolicy::api_version(&()).into_owned(),
        kind: ApiKeyPolicy::kind(&()).into_owned(),
        name: policy.metadata.name.clone().unwrap_or_default(),
        uid: policy.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        // Not set: blockOwnerDeletion needs `update` on the owner's finalizers, which buys nothing here.
        block_owner_deletion: None,
    }
}

/// Whether this Secret is ours to manage: it carries a controller-or-not ownerReference to this policy, matched
/// by uid (by name only for local manifests, which have no uid).
pub(crate) fn owned_by(secret: &Secret, policy: &ApiKeyPolicy) -> bool {
    let kind = ApiKeyPolicy::kind(&());
    secret.metadata.owner_references.iter().flatten().any(|r| {
        r.kind == kind
            && r.api_version.starts_with(infergate_crds::GROUP)
            && match policy.metadata.uid.as_deref() {
                Some(uid) => r.uid == uid,
                None => Some(&r.name) == policy.metadata.name.as_ref(),
            }
    })
}

fn sort_dedup(digests: &mut Vec<KeyDigest>) {
    digests.sort_by_key(|d| d.key_id());
    digests.dedup();
}

pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim()).ok().map(|t| t.with_timezone(&Utc))
}
