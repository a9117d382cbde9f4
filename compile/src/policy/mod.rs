//! `compile_policy`: one ApiKeyPolicy, its references, its key Secret and the clock -> what should exist.
//!
//! Order matters and is fixed: ownership of the Secret first (never touch what is not ours), then the key
//! lifecycle (retire, revoke, rotate, issue), then revocation records, then references, then status/events.
use super::keybook::{CurrentKey, KeyBook, RetiringKey, format_time, owned_by};
use super::{
    AGENT_STALE_AFTER_SECS, AuditRecord, EventSpec, KeySource, ObjectRef, PolicyInputs, PolicyOutcome, reasons,
};
use chrono::{DateTime, Duration, Utc};
use infergate_crds::conditions::{self, READY};
use infergate_crds::gateway::{
    EndpointLimits, KeyEntry, PolicyShard, RevokedKey, SHARD_SCHEMA_VERSION, ScopeEntry, Shard, TierLimits,
};
use infergate_crds::key::{KeyDigest, KeyId};
use infergate_crds::policy::{KeyState, KeyStatus, RevocationStatus};
use infergate_crds::{ApiKeyPolicy, ApiKeyPolicyStatus, NamespacedName, RateTier, annotations};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::collections::BTreeMap;

/// Condition type: every reference (tier, endpoints, features) resolves.
pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";

/// The overlap used for a forced rotation when the policy has no `rotation` block (the CRD's default overlap).
const DEFAULT_OVERLAP_SECS: i64 = 3600;

pub fn compile_policy(inputs: &PolicyInputs<'_>, keys: &mut dyn KeySource) -> PolicyOutcome {
    let policy = inputs.policy;
    let now = inputs.now;
    let spec = &policy.spec;
    let owner = NamespacedName::new(
        policy.metadata.namespace.clone().unwrap_or_default(),
        policy.metadata.name.clone().unwrap_or_default(),
    );
    let generation = policy.metadata.generation;
    let previous_status = policy.status.clone().unwrap_or_default();
    let mut log = Log { owner: owner.clone(), regarding: regarding(policy), now, events: vec![], audit: vec![] };

    let references = resolve_references(policy, inputs);
    let resolved_condition = match &references {
        Ok(resolved) => conditions::condition(
            REFERENCES_RESOLVED,
            true,
            "Resolved",
            format!("RateTier {:?} and {} endpoint(s) resolve", spec.tier, resolved.scopes.len()),
            generation,
            now,
        ),
        Err(problem) => {
            conditions::condition(REFERENCES_RESOLVED, false, problem.reason, problem.message.clone(), generation, now)
        }
    };

    // The Secret name is taken by something we do not own: write nothing, publish nothing, say why.
    if let Some(secret) = inputs.existing_secret.filter(|s| !owned_by(s, policy)) {
        let _ = secret;
        let message = format!(
            "Secret {}/{} exists and is not owned by this ApiKeyPolicy; the operator will not overwrite it. \
             Choose another spec.secretName or delete that Secret",
            owner.namespace, spec.secret_name
        );
        let ready = conditions::condition(READY, false, reasons::SECRET_CONFLICT, message, generation, now);
        log.ready_transition(&previous_status.conditions, &ready);
        let status = ApiKeyPolicyStatus {
            observed_generation: generation,
            conditions: conditions::merge(&previous_status.conditions, vec![ready, resolved_condition]),
            current_key_id: None,
            keys: vec![],
            next_rotation_at: None,
            revocations: previous_status.revocations.clone(),
            config_revision: None,
        };
        return PolicyOutcome {
            key_secret: None,
            shard: None,
            status,
            events: log.events,
            audit: log.audit,
            next_wake: None,
        };
    }

    let expired = spec.expires_at.is_some_and(|t| t <= now);
    let revoked_ids: BTreeMap<&str, &infergate_crds::policy::Revocation> =
        spec.revocations.iter().map(|r| (r.key_id.as_str(), r)).collect();
    let is_revoked = |id: &KeyId| revoked_ids.contains_key(id.as_str());
    let mut book = inputs.existing_secret.map(|s| KeyBook::read(s, now)).unwrap_or_default();
    let rotate_request = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::ROTATE_REQUESTED_AT))
        .filter(|v| !v.trim().is_empty())
        .cloned();

    // 1. The retiring key leaves when revoked or when its overlap is over (`valid_until` is exclusive).
    if let Some(prev) = book.previous.clone() {
        if is_revoked(&prev.digest.key_id()) {
            book.add_revoked(prev.digest);
            book.previous = None;
        } else if now >= prev.retires_at {
            book.previous = None;
            log.event(
                false,
                reasons::KEY_RETIRED,
                format!("key {} retired: its rotation overlap ended", prev.digest.key_id()),
            );
            log.audit("key_retired", Some(prev.digest.key_id()), Some("rotation overlap ended".into()), None);
        }
    }

    // 2. The current key: issue, replace after revocation, or rotate.
    let overlap = spec.rotation.as_ref().map_or(Duration::seconds(DEFAULT_OVERLAP_SECS), |r| r.overlap.to_chrono());
    match book.current.clone() {
        None => {
            let key = keys.new_key(spec.environment);
            let why = if inputs.existing_secret.is_some() {
                "the key Secret held no valid key"
            } else {
                "first key for this policy"
            };
            log.event(
                false,
                reasons::KEY_ISSUED,
                format!("issued key {} ({why}) into Secret {}", key.id(), spec.secret_name),
            );
            log.audit("key_issued", Some(key.id()), Some(why.into()), None);
            book.current = Some(CurrentKey { key, issued_at: now });
            book.rotation_handled = rotate_request.clone();
        }
        Some(current) if is_revoked(&current.key.id()) => {
            // A revoked key may be leaked: no overlap for it, and its successor is issued at once.
            let key = keys.new_key(spec.environment);
            book.add_revoked(current.key.digest());
            log.event(
                false,
                reasons::KEY_ROTATED,
                format!("issued key {} to replace revoked key {} (no overlap)", key.id(), current.key.id()),
            );
            log.audit("key_issued", Some(key.id()), Some(format!("replaces revoked key {}", current.key.id())), None);
            book.current = Some(CurrentKey { key, issued_at: now });
            book.rotation_handled = rotate_request.clone().or(book.rotation_handled.take());
        }
        Some(current) => {
            let skewed = current.issued_at > now;
            let scheduled = spec
                .rotation
                .as_ref()
                .is_some_and(|r| !skewed && !expired && now >= current.issued_at + r.every.to_chrono());
            let forced = rotate_request.is_some() && rotate_request != book.rotation_handled;
            let env_changed = current.key.environment() != spec.environment;
            let why = if forced {
                Some(format!(
                    "rotation requested ({}={})",
                    annotations::ROTATE_REQUESTED_AT,
                    rotate_request.as_deref().unwrap_or_default()
                ))
            } else if env_changed {
                Some(format!("spec.environment changed to {}", spec.environment.as_str()))
            } else if scheduled {
                Some("scheduled rotation".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                if let Some(dropped) = book.previous.take() {
                    log.event(
                        false,
                        reasons::KEY_RETIRED,
                        format!("key {} retired early: a newer rotation replaced it", dropped.digest.key_id()),
                    );
                    log.audit(
                        "key_retired",
                        Some(dropped.digest.key_id()),
                        Some("replaced by a newer rotation".into()),
                        None,
                    );
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
                log.audit(
                    "key_rotated",
                    Some(key.id()),
                    Some(format!("{why}; previous key {}", current.key.id())),
                    None,
                );
                book.previous = Some(RetiringKey {
                    digest: current.key.digest(),
                    issued_at: current.issued_at.min(now),
                    retires_at,
                });
                book.current = Some(CurrentKey { key, issued_at: now });
                if forced {
                    book.rotation_handled = rotate_request.clone();
                }
            }
        }
    }
    let current = book.current.clone().expect("a current key exists after the lifecycle step");
    // A Secret issued "in the future" means the clocks disagree. Schedule from now and never rotate early.
    let skewed = current.issued_at > now;
    let effective_issued_at = current.issued_at.min(now);

    // 3. Revocation records: who/when/why, first-seen time kept stable from the previous status.
    let live_agents: Vec<_> = inputs
        .agents
        .iter()
        .filter(|a| a.renewed_at.is_some_and(|t| now - t <= Duration::seconds(AGENT_STALE_AFTER_SECS)))
        .collect();
    let mut revocations = Vec::with_capacity(spec.revocations.len());
    for r in &spec.revocations {
        let id = KeyId(r.key_id.clone());
        let before = previous_status.revocations.iter().find(|p| p.key_id == r.key_id);
        let matched = book.is_revoked(&id) || before.is_some_and(|b| b.matched);
        let (agents_enforcing, agents_total) = if matched {
            let enforcing = live_agents.iter().filter(|a| a.enforced_revocations.contains(&id)).count() as u32;
            (Some(enforcing), Some(live_agents.len() as u32))
        } else {
            (None, None)
        };
        if before.is_none() {
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
                log.audit(
                    "revocation_unmatched",
                    Some(id.clone()),
                    Some(r.reason.clone()),
                    Some(r.requested_by.clone()),
                );
            }
        }
        revocations.push(RevocationStatus {
            key_id: r.key_id.clone(),
            reason: r.reason.clone(),
            requested_by: r.requested_by.clone(),
            revoked_at: before.map_or(now, |b| b.revoked_at),
            matched,
            agents_enforcing,
            agents_total,
        });
    }
    // Digests are kept only while their revocation is listed; removing the entry forgets the key entirely.
    book.revoked.retain(|d| revoked_ids.contains_key(d.key_id().as_str()));

    // 4. Keys as the gateway and the status see them.
    let mut key_entries = vec![KeyEntry {
        key_id: current.key.id(),
        digest: current.key.digest(),
        state: KeyState::Current,
        valid_from: effective_issued_at,
        valid_until: None,
    }];
    if let Some(prev) = &book.previous {
        key_entries.push(KeyEntry {
            key_id: prev.digest.key_id(),
            digest: prev.digest,
            state: KeyState::Retiring,
            valid_from: prev.issued_at,
            valid_until: Some(prev.retires_at),
        });
    }
    let key_statuses: Vec<KeyStatus> = key_entries
        .iter()
        .map(|k| KeyStatus {
            key_id: k.key_id.to_string(),
            state: k.state,
            issued_at: if k.state == KeyState::Current { current.issued_at } else { k.valid_from },
            valid_until: k.valid_until,
        })
        .collect();
    let revoked_entries: Vec<RevokedKey> = book
        .revoked
        .iter()
        .map(|d: &KeyDigest| RevokedKey {
            key_id: d.key_id(),
            digest: *d,
            revoked_at: revocations.iter().find(|r| r.key_id == d.key_id().as_str()).map_or(now, |r| r.revoked_at),
        })
        .collect();

    // 5. Readiness and the shard (only when every reference resolves: fail closed).
    let next_rotation_at =
        spec.rotation.as_ref().filter(|_| !expired).map(|r| effective_issued_at + r.every.to_chrono());
    let shard = references.as_ref().ok().map(|resolved| PolicyShard {
        schema_version: SHARD_SCHEMA_VERSION,
        policy: owner.clone(),
        generation: generation.unwrap_or(0),
        environment: spec.environment,
        tier: resolved.tier.clone(),
        keys: key_entries.clone(),
        revoked: revoked_entries,
        suspended: spec.suspended,
        expires_at: spec.expires_at,
        scopes: resolved.scopes.clone(),
        allowed_origins: spec.allowed_origins.clone(),
        allow_client_embeddings: spec.allow_client_embeddings,
    });
    let skew_note = if skewed {
        format!(
            "; note: the key Secret says key {} was issued at {}, after the operator's clock ({}): \
             treating it as issued now and not rotating early; check the clocks",
            current.key.id(),
            format_time(current.issued_at),
            format_time(now)
        )
    } else {
        String::new()
    };
    let ready = match (&references, expired, spec.suspended) {
        (Err(problem), _, _) => {
            conditions::condition(READY, false, problem.reason, problem.message.clone(), generation, now)
        }
        (Ok(_), true, _) => conditions::condition(
            READY,
            false,
            reasons::EXPIRED,
            format!(
                "spec.expiresAt ({}) has passed: the gateway refuses this policy's keys as expired; \
                 move spec.expiresAt forward to restore them",
                format_time(spec.expires_at.unwrap_or(now))
            ),
            generation,
            now,
        ),
        (Ok(_), false, true) => conditions::condition(
            READY,
            false,
            reasons::SUSPENDED,
            "spec.suspended is true: the gateway refuses this policy's keys as suspended; set it to false to restore them",
            generation,
            now,
        ),
        (Ok(resolved), false, false) => conditions::condition(
            READY,
            true,
            reasons::KEYS_ACTIVE,
            format!("key {} is active on {} endpoint(s){skew_note}", current.key.id(), resolved.scopes.len()),
            generation,
            now,
        ),
    };
    log.ready_transition(&previous_status.conditions, &ready);

    let mut next_wake = next_rotation_at;
    for t in [book.previous.as_ref().map(|p| p.retires_at), spec.expires_at.filter(|t| *t > now)].into_iter().flatten()
    {
        next_wake = Some(next_wake.map_or(t, |w| w.min(t)));
    }

    let status = ApiKeyPolicyStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous_status.conditions, vec![ready, resolved_condition]),
        current_key_id: Some(current.key.id().to_string()),
        keys: key_statuses,
        next_rotation_at,
        revocations,
        config_revision: shard.as_ref().map(|s| Shard::Policy(s.clone()).revision()),
    };
    PolicyOutcome {
        key_secret: Some(book.to_secret(policy)),
        shard,
        status,
        events: log.events,
        audit: log.audit,
        next_wake,
    }
}

struct Resolved {
    tier: TierLimits,
    scopes: Vec<ScopeEntry>,
}

struct Problem {
    reason: &'static str,
    message: String,
}

/// Resolves tier, endpoints and features. Reports the first kind of problem found, naming every missing object
/// of that kind so one edit can fix them all.
fn resolve_references(policy: &ApiKeyPolicy, inputs: &PolicyInputs<'_>) -> Result<Resolved, Problem> {
    let spec = &policy.spec;
    let own_namespace = policy.metadata.namespace.clone().unwrap_or_default();
    let Some(tier) = inputs.tier.filter(|t| t.metadata.name.as_deref() == Some(spec.tier.as_str())) else {
        return Err(Problem {
            reason: reasons::TIER_NOT_FOUND,
            message: format!("RateTier {:?} not found: create it or change spec.tier", spec.tier),
        });
    };
    let mut missing = vec![];
    let mut not_allowed = vec![];
    let mut not_offered = vec![];
    let mut scopes = Vec::with_capacity(spec.scopes.len());
    for scope in &spec.scopes {
        let at = NamespacedName::new(
            scope.namespace.clone().unwrap_or_else(|| own_namespace.clone()),
            scope.endpoint.clone(),
        );
        let Some(endpoint) = inputs.endpoints.get(&at) else {
            missing.push(at.to_string());
            continue;
        };
        let allowed = at.namespace == own_namespace
            || endpoint.spec.allowed_namespaces.iter().any(|n| n == "*" || *n == own_namespace);
        if !allowed {
            not_allowed.push(at.to_string());
            continue;
        }
        let features = if scope.features.is_empty() {
            endpoint.spec.features.clone()
        } else {
            for f in scope.features.iter().filter(|f| !endpoint.spec.features.contains(f)) {
                not_offered.push(format!("{} on {at}", f.as_str()));
            }
            scope.features.iter().copied().filter(|f| endpoint.spec.features.contains(f)).collect()
        };
        scopes.push(ScopeEntry { endpoint: at, model: endpoint.spec.model.clone(), features });
    }
    if !missing.is_empty() {
        return Err(Problem {
            reason: reasons::ENDPOINT_NOT_FOUND,
            message: format!("InferenceEndpoint {} not found: create it or fix spec.scopes", missing.join(", ")),
        });
    }
    if !not_allowed.is_empty() {
        return Err(Problem {
            reason: reasons::NAMESPACE_NOT_ALLOWED,
            message: format!(
                "InferenceEndpoint {} does not allow namespace {own_namespace:?}: add it to the endpoint's \
                 spec.allowedNamespaces or remove the scope",
                not_allowed.join(", ")
            ),
        });
    }
    if !not_offered.is_empty() {
        return Err(Problem {
            reason: reasons::FEATURE_NOT_OFFERED,
            message: format!(
                "feature not offered: {}; remove it from the scope's features or add it to the endpoint",
                not_offered.join(", ")
            ),
        });
    }
    Ok(Resolved { tier: tier_limits(tier, &scopes), scopes })
}

/// The tier's limits with per-endpoint overrides merged over the defaults, for the endpoints this policy reaches.
pub(crate) fn tier_limits(tier: &RateTier, scopes: &[ScopeEntry]) -> TierLimits {
    let t = &tier.spec;
    let endpoint_overrides = t
        .endpoint_overrides
        .iter()
        .filter(|o| scopes.iter().any(|s| s.endpoint.to_string() == o.endpoint))
        .map(|o| {
            (
                o.endpoint.clone(),
                EndpointLimits {
                    gpu_seconds_per_minute: o.gpu_seconds_per_minute.unwrap_or(t.gpu_seconds_per_minute),
                    burst_gpu_seconds: o.burst_gpu_seconds.unwrap_or(t.burst_gpu_seconds),
                    max_concurrent_streams: o.max_concurrent_streams.unwrap_or(t.max_concurrent_streams),
                },
            )
        })
        .collect();
    TierLimits {
        name: tier.metadata.name.clone().unwrap_or_default(),
        priority: t.priority,
        gpu_seconds_per_minute: t.gpu_seconds_per_minute,
        burst_gpu_seconds: t.burst_gpu_seconds,
        max_concurrent_streams: t.max_concurrent_streams,
        queue_max_depth: t.queue.max_depth,
        queue_timeout_ms: t.queue.timeout.0.as_millis() as u64,
        target_utilization_percent: t.gpu_utilization.target_percent,
        min_factor: t.gpu_utilization.min_factor,
        max_factor: t.gpu_utilization.max_factor,
        endpoint_overrides,
    }
}

fn regarding(policy: &ApiKeyPolicy) -> ObjectRef {
    ObjectRef {
        kind: "ApiKeyPolicy",
        namespace: policy.metadata.namespace.clone(),
        name: policy.metadata.name.clone().unwrap_or_default(),
        uid: policy.metadata.uid.clone(),
    }
}

/// Collects the events and audit lines of one compile.
pub(crate) struct Log {
    pub owner: NamespacedName,
    pub regarding: ObjectRef,
    pub now: DateTime<Utc>,
    pub events: Vec<EventSpec>,
    pub audit: Vec<AuditRecord>,
}

impl Log {
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
