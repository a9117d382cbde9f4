//! The events and audit lines one compile produces, collected as it goes.
//!
//! ```text
//!  compile step ─▶ Log::event / Log::audit / Log::ready_transition ─▶ Outcome.events (Kubernetes Events)
//!                                                                   └▶ Outcome.audit  (audit log lines)
//! ```
//! Only state changes are logged (a new key, a Ready flip), so compiling the same inputs twice says nothing twice.
use super::{AuditRecord, EventSpec, ObjectRef, reasons};
use chrono::{DateTime, Utc};
use infergate_crds::NamespacedName;
use infergate_crds::conditions::READY;
use infergate_crds::key::KeyId;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Collects the events and audit lines of one compile.
pub(crate) struct Log {
    pub owner: NamespacedName,
    pub regarding: ObjectRef,
    pub now: DateTime<Utc>,
    pub events: Vec<EventSpec>,
    pub audit: Vec<AuditRecord>,
}

impl Log {
    pub fn new(owner: NamespacedName, regarding: ObjectRef, now: DateTime<Utc>) -> Self {
        Self { owner, regarding, now, events: vec![], audit: vec![] }
    }

    pub fn event(&mut self, warning: bool, reason: &'static str, note: String) {
        self.events.push(EventSpec { regarding: self.regarding.clone(), warning, reason, note });
    }

    pub fn audit(
        &mut self,
        action: &'static str,
        key_id: Option<KeyId>,
        reason: Option<String>,
        requested_by: Option<String>,
    ) {
        self.audit.push(AuditRecord { at: self.now, action, policy: self.owner.clone(), key_id, reason, requested_by });
    }

    /// Events (and, for suspension/expiry, audit lines) when Ready changes status or reason.
    pub fn ready_transition(&mut self, previous: &[Condition], ready: &Condition) {
        let before = previous.iter().find(|c| c.type_ == READY);
        if before.is_some_and(|b| b.status == ready.status && b.reason == ready.reason) {
            return;
        }
        if ready.status == "True" {
            // First-ever Ready is covered by KeyIssued; only a recovery is news.
            if let Some(b) = before {
                self.event(false, reasons::READY, format!("ready again ({} resolved): {}", b.reason, ready.message));
                if b.reason == reasons::SUSPENDED {
                    self.audit("policy_resumed", None, None, None);
                } else if b.reason == reasons::EXPIRED {
                    self.audit("policy_unexpired", None, None, None);
                }
            }
            return;
        }
        let reason = reasons::from_str(&ready.reason);
        let warning = reason != reasons::SUSPENDED;
        self.event(warning, reason, ready.message.clone());
        if reason == reasons::SUSPENDED {
            self.audit("policy_suspended", None, None, None);
        } else if reason == reasons::EXPIRED {
            self.audit("policy_expired", None, None, None);
        }
    }
}
