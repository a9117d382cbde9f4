//! Revocation records: who asked, when, why, whether the id matched a key of this policy, and how many live
//! agents already enforce it.
//!
//! ```text
//!  spec.revocations + previous status.revocations + KeyBook.revoked + agent reports
//!        ─▶ status.revocations (first-seen time kept stable) + KeyRevoked / RevocationUnmatched events
//! ```
use super::super::events::Log;
use super::super::keybook::KeyBook;
use crate::{AGENT_STALE_AFTER_SECS, AgentReport, reasons};
use chrono::{DateTime, Duration, Utc};
use infergate_crds::key::KeyId;
use infergate_crds::policy::{Revocation, RevocationStatus};
use std::collections::BTreeSet;

/// One status record per listed revocation, in `spec.revocations` order. Events and audit lines only for a
/// revocation seen for the first time.
pub(super) fn revocation_statuses(
    listed: &[Revocation],
    previous: &[RevocationStatus],
    book: &KeyBook,
    agents: &[AgentReport],
    now: DateTime<Utc>,
    log: &mut Log,
) -> Vec<RevocationStatus> {
    let live_agents: Vec<&AgentReport> = agents
        .iter()
        .filter(|a| a.renewed_at.is_some_and(|t| now - t <= Duration::seconds(AGENT_STALE_AFTER_SECS)))
        .collect();
    listed
        .iter()
        .map(|r| {
            let id = KeyId(r.key_id.clone());
            let before = previous.iter().find(|p| p.key_id == r.key_id);
            let matched = book.is_revoked(&id) || before.is_some_and(|b| b.matched);
            let (agents_enforcing, agents_total) = if matched {
                let enforcing = live_agents.iter().filter(|a| a.enforced_revocations.contains(&id)).count() as u32;
                (Some(enforcing), Some(live_agents.len() as u32))
            } else {
                (None, None)
            };
            // The shard's record stands in for a status that is missing (standalone mode keeps none).
            let recorded = book.revoked_since(&id);
            if before.is_none() && recorded.is_none() {
                log_first_sight(r, &id, matched, log);
            }
            RevocationStatus {
                key_id: r.key_id.clone(),
                reason: r.reason.clone(),
                requested_by: r.requested_by.clone(),
                revoked_at: before.map(|b| b.revoked_at).or(recorded).unwrap_or(now),
                matched,
                agents_enforcing,
                agents_total,
            }
        })
        .collect()
}

fn log_first_sight(r: &Revocation, id: &KeyId, matched: bool, log: &mut Log) {
    if matched {
        log.event(
            false,
            reasons::KEY_REVOKED,
            format!("key {} revoked at the request of {}: {}", id, r.requested_by, r.reason),
        );
        log.audit("key_revoked", Some(id.clone()), Some(r.reason.clone()), Some(r.requested_by.clone()));
    } else {
        log.event(
            true,
            reasons::REVOCATION_UNMATCHED,
            format!(
                "spec.revocations lists key {} (requested by {}), which is not a key of this policy: \
                 check the id against status.keys (a key that already retired needs no revocation)",
                id, r.requested_by
            ),
        );
        log.audit("revocation_unmatched", Some(id.clone()), Some(r.reason.clone()), Some(r.requested_by.clone()));
    }
}

/// Digests are kept only while their revocation is listed; removing the entry forgets the key entirely.
pub(super) fn forget_unlisted(book: &mut KeyBook, revoked_ids: &BTreeSet<&str>) {
    book.revoked.retain(|d| revoked_ids.contains(d.key_id().as_str()));
}
