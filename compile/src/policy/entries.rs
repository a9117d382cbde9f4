//! Keys as the gateway and the status see them: the current and retiring key entries (digests only), their
//! status records, and the revoked digests the gateway must refuse.
use super::super::keybook::{CurrentKey, KeyBook};
use chrono::{DateTime, Utc};
use infergate_crds::gateway::{KeyEntry, RevokedKey};
use infergate_crds::policy::{KeyState, KeyStatus, RevocationStatus};

/// The current key first, then the retiring one if its overlap is running. `valid_from` of the current key is
/// its issued-at clamped to `now` (a Secret from a clock ahead of ours is treated as issued now).
pub(super) fn key_entries(current: &CurrentKey, effective_issued_at: DateTime<Utc>, book: &KeyBook) -> Vec<KeyEntry> {
    let mut entries = vec![KeyEntry {
        key_id: current.key.id(),
        digest: current.key.digest(),
        state: KeyState::Current,
        valid_from: effective_issued_at,
        valid_until: None,
    }];
    if let Some(prev) = &book.previous {
        entries.push(KeyEntry {
            key_id: prev.digest.key_id(),
            digest: prev.digest,
            state: KeyState::Retiring,
            valid_from: prev.issued_at,
            valid_until: Some(prev.retires_at),
        });
    }
    entries
}

/// `status.keys`: the status shows the current key's recorded issued-at, unclamped, so a skew is visible.
pub(super) fn key_statuses(entries: &[KeyEntry], current: &CurrentKey) -> Vec<KeyStatus> {
    entries
        .iter()
        .map(|k| KeyStatus {
            key_id: k.key_id.to_string(),
            state: k.state,
            issued_at: if k.state == KeyState::Current { current.issued_at } else { k.valid_from },
            valid_until: k.valid_until,
        })
        .collect()
}

/// The revoked digests still listed, each with the time its revocation was first seen.
pub(super) fn revoked_entries(book: &KeyBook, revocations: &[RevocationStatus], now: DateTime<Utc>) -> Vec<RevokedKey> {
    book.revoked
        .iter()
        .map(|d| RevokedKey {
            key_id: d.key_id(),
            digest: *d,
            revoked_at: revocations.iter().find(|r| r.key_id == d.key_id().as_str()).map_or(now, |r| r.revoked_at),
        })
        .collect()
}
