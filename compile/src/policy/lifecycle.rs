//! The key lifecycle of one policy: what the key book should hold after this compile.
//!
//! ```text
//!  KeyBook (read from the Secret) ─▶ end_overlap      retiring key leaves: revoked, or its overlap is over
//!                                 ─▶ advance_current  no key: issue · revoked: replace at once · due: rotate
//!                                 ─▶ KeyBook with a current key (+ events and audit lines for each change)
//! ```
use super::super::events::Log;
use super::super::keybook::{CurrentKey, KeyBook, RetiringKey, format_time};
use crate::{KeySource, reasons};
use chrono::{DateTime, Duration, Utc};
use infergate_crds::key::KeyId;
use infergate_crds::{ApiKeyPolicy, ApiKeyPolicySpec, annotations};
use std::collections::BTreeSet;

/// The overlap used for a forced rotation when the policy has no `rotation` block (the CRD's default overlap).
const DEFAULT_OVERLAP_SECS: i64 = 3600;

/// The policy's rotation overlap (the CRD's default without a `rotation` block).
pub(crate) fn overlap(spec: &ApiKeyPolicySpec) -> Duration {
    spec.rotation.as_ref().map_or(Duration::seconds(DEFAULT_OVERLAP_SECS), |r| r.overlap.to_chrono())
}

/// What the lifecycle decisions depend on besides the book itself.
pub(super) struct Request<'a> {
    pub spec: &'a ApiKeyPolicySpec,
    pub now: DateTime<Utc>,
    /// `spec.expiresAt` has passed: an expired policy is not rotated on schedule.
    pub expired: bool,
    /// Key ids listed in `spec.revocations`.
    pub revoked_ids: &'a BTreeSet<&'a str>,
    /// The `rotate-requested-at` annotation, if set to something.
    pub rotate_request: Option<String>,
    /// A key Secret existed (so a missing key means it held no valid one, not that this is the first).
    pub had_secret: bool,
}

impl Request<'_> {
    fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked_ids.contains(id.as_str())
    }
}

/// The non-blank `rotate-requested-at` annotation of the policy.
pub(super) fn rotate_request(policy: &ApiKeyPolicy) -> Option<String> {
    policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::ROTATE_REQUESTED_AT))
        .filter(|v| !v.trim().is_empty())
        .cloned()
}

/// The retiring key leaves when revoked or when its overlap is over (`valid_until` is exclusive).
pub(super) fn end_overlap(book: &mut KeyBook, request: &Request<'_>, log: &mut Log) {
    let Some(prev) = book.previous.clone() else {
        return;
    };
    if request.is_revoked(&prev.digest.key_id()) {
        book.add_revoked(prev.digest);
        book.previous = None;
    } else if request.now >= prev.retires_at {
        book.previous = None;
        log.event(
            false,
            reasons::KEY_RETIRED,
            format!("key {} retired: its rotation overlap ended", prev.digest.key_id()),
        );
        log.audit("key_retired", Some(prev.digest.key_id()), Some("rotation overlap ended".into()), None);
    }
}

/// The current key: issue, replace after revocation, or rotate. Returns the current key afterwards.
pub(super) fn advance_current(
    book: &mut KeyBook,
    request: &Request<'_>,
    keys: &mut dyn KeySource,
    log: &mut Log,
) -> CurrentKey {
    match book.current.clone() {
        None => issue_first(book, request, keys, log),
        Some(current) if request.is_revoked(&current.key.id()) => replace_revoked(book, &current, request, keys, log),
        Some(current) => {
            if let Some(due) = rotation_due(book, &current, request) {
                rotate(book, &current, &due, request, keys, log);
            }
        }
    }
    book.current.clone().expect("a current key exists after the lifecycle step")
}

fn issue_first(book: &mut KeyBook, request: &Request<'_>, keys: &mut dyn KeySource, log: &mut Log) {
    let key = keys.new_key(request.spec.environment);
    let why = if request.had_secret { "the key Secret held no valid key" } else { "first key for this policy" };
    log.event(
        false,
        reasons::KEY_ISSUED,
        format!("issued key {} ({why}) into Secret {}", key.id(), request.spec.secret_name),
    );
    log.audit("key_issued", Some(key.id()), Some(why.into()), None);
    book.current = Some(CurrentKey { key, issued_at: request.now });
    // A request already present at first issue is satisfied by that issue.
    book.rotation_handled = request.rotate_request.clone();
}

/// A revoked key may be leaked: no overlap for it, and its successor is issued at once.
fn replace_revoked(
    book: &mut KeyBook,
    current: &CurrentKey,
    request: &Request<'_>,
    keys: &mut dyn KeySource,
    log: &mut Log,
) {
    let key = keys.new_key(request.spec.environment);
    book.add_revoked(current.key.digest());
    log.event(
        false,
        reasons::KEY_ROTATED,
        format!("issued key {} to replace revoked key {} (no overlap)", key.id(), current.key.id()),
    );
    log.audit("key_issued", Some(key.id()), Some(format!("replaces revoked key {}", current.key.id())), None);
    book.current = Some(CurrentKey { key, issued_at: request.now });
    book.rotation_handled = request.rotate_request.clone().or(book.rotation_handled.take());
}

/// Why the current key rotates now, if it does.
struct RotationDue {
    why: String,
    /// Asked for by the annotation (which is then recorded as handled).
    forced: bool,
}

/// A new annotation value forces a rotation; so does a changed environment (the key prefix names it); otherwise
/// the schedule decides, never early when the Secret's clock is ahead and never for an expired policy.
fn rotation_due(book: &KeyBook, current: &CurrentKey, request: &Request<'_>) -> Option<RotationDue> {
    let (spec, now) = (request.spec, request.now);
    let skewed = current.issued_at > now;
    let scheduled = spec
        .rotation
        .as_ref()
        .is_some_and(|r| !skewed && !request.expired && now >= current.issued_at + r.every.to_chrono());
    let forced = request.rotate_request.is_some() && request.rotate_request != book.rotation_handled;
    let env_changed = current.key.environment() != spec.environment;
    let why = if forced {
        format!(
            "rotation requested ({}={})",
            annotations::ROTATE_REQUESTED_AT,
            request.rotate_request.as_deref().unwrap_or_default()
        )
    } else if env_changed {
        format!("spec.environment changed to {}", spec.environment.as_str())
    } else if scheduled {
        "scheduled rotation".to_string()
    } else {
        return None;
    };
    Some(RotationDue { why, forced })
}

/// The current key becomes the retiring one for the overlap; a key still retiring from an earlier rotation
/// leaves early (only one previous key is kept).
fn rotate(
    book: &mut KeyBook,
    current: &CurrentKey,
    due: &RotationDue,
    request: &Request<'_>,
    keys: &mut dyn KeySource,
    log: &mut Log,
) {
    let (spec, now, why) = (request.spec, request.now, &due.why);
    let overlap = overlap(spec);
    if let Some(dropped) = book.previous.take() {
        log.event(
            false,
            reasons::KEY_RETIRED,
            format!("key {} retired early: a newer rotation replaced it", dropped.digest.key_id()),
        );
        log.audit("key_retired", Some(dropped.digest.key_id()), Some("replaced by a newer rotation".into()), None);
    }
    let key = keys.new_key(spec.environment);
    let retires_at = now + overlap;
    log.event(
        false,
        reasons::KEY_ROTATED,
        format!(
            "key {} is now current ({why}); previous key {} keeps working until {}",
            key.id(),
            current.key.id(),
            format_time(retires_at)
        ),
    );
    log.audit("key_rotated", Some(key.id()), Some(format!("{why}; previous key {}", current.key.id())), None);
    book.previous =
        Some(RetiringKey { digest: current.key.digest(), issued_at: current.issued_at.min(now), retires_at });
    book.current = Some(CurrentKey { key, issued_at: now });
    if due.forced {
        book.rotation_handled = request.rotate_request.clone();
    }
}
