//! Incremental whole-world compiles for a process that compiles the same world again and again (standalone mode
//! reloads at every file change): a policy whose inputs are what they were is not compiled again.
//!
//! `compile_policy` is a pure function of its inputs and the time. A policy's outcome is reused when
//! - the policy, its tier, every endpoint and the agents' reports are equal to those of the compile that made it;
//! - the key Secret and the shard passed in are the ones that outcome wrote (the world is at its fixed point:
//!   only outcomes whose own inputs already equalled their outputs are remembered, so a compile that issued a key
//!   is always followed by a real one);
//! - the time has not reached the outcome's `next_wake`, which is where the outcome says it changes by itself.
//!
//! A reused outcome carries no events or audit records (they were reported when it was made), and its status
//! timestamps are those of the compile that made it. The operator does not use this: it compiles one object per
//! reconcile, and its status writes carry those timestamps.
use crate::{AgentReport, PolicyInputs, PolicyOutcome};
use infergate_crds::{ApiKeyPolicy, InferenceEndpoint, NamespacedName, RateTier};
use std::collections::{BTreeMap, HashMap};

/// What the previous compile can lend the next.
#[derive(Default)]
pub struct CompileMemo {
    // Boxed: a record is ~2 KB, and the map is rebuilt per compile.
    policies: HashMap<NamespacedName, Box<Remembered>>,
    /// The world-wide inputs every policy reads, as of the remembered outcomes.
    endpoints: BTreeMap<NamespacedName, InferenceEndpoint>,
    agents: Vec<AgentReport>,
    operator_namespace: Option<String>,
    /// Policies the last compile compiled (the others were reused): for tests and logs.
    pub last_compiled: usize,
}

struct Remembered {
    policy: ApiKeyPolicy,
    tier: Option<RateTier>,
    outcome: PolicyOutcome,
}

/// The memo for one whole-world compile: `start`, then `recall` or `remember` per policy, then `finish`.
pub(crate) struct Session<'m> {
    memo: &'m mut CompileMemo,
    /// False when a world-wide input changed: nothing is reused, everything is remembered afresh.
    usable: bool,
    next: HashMap<NamespacedName, Box<Remembered>>,
    compiled: usize,
}

impl<'m> Session<'m> {
    pub(crate) fn start(
        memo: &'m mut CompileMemo,
        endpoints: &BTreeMap<NamespacedName, InferenceEndpoint>,
        agents: &[AgentReport],
        operator_namespace: Option<&str>,
        policies: usize,
    ) -> Self {
        let usable = memo.endpoints.len() == endpoints.len()
            && memo.endpoints.iter().zip(endpoints).all(|((a, x), (b, y))| a == b && same_endpoint(x, y))
            && memo.agents == agents
            && memo.operator_namespace.as_deref() == operator_namespace;
        if !usable {
            memo.endpoints = endpoints.clone();
            memo.agents = agents.to_vec();
            memo.operator_namespace = operator_namespace.map(str::to_string);
        }
        Session { memo, usable, next: HashMap::with_capacity(policies), compiled: 0 }
    }

    /// The remembered outcome for these inputs, if it still holds.
    pub(crate) fn recall(&mut self, owner: &NamespacedName, inputs: &PolicyInputs<'_>) -> Option<PolicyOutcome> {
        if !self.usable {
            return None;
        }
        let r = self.memo.policies.remove(owner)?;
        let holds = same_policy(&r.policy, inputs.policy)
            && match (&r.tier, inputs.tier) {
                (None, None) => true,
                (Some(a), Some(b)) => same_tier(a, b),
                _ => false,
            }
            && r.outcome.key_secret.as_ref() == inputs.existing_secret
            && r.outcome.shard.as_ref() == inputs.published_shard
            && r.outcome.next_wake.is_none_or(|wake| inputs.now < wake);
        if !holds {
            return None;
        }
        let outcome = r.outcome.clone();
        self.next.insert(owner.clone(), r);
        Some(outcome)
    }

    /// Notes a freshly compiled outcome; it is remembered when its inputs were already its outputs.
    pub(crate) fn remember(&mut self, owner: &NamespacedName, inputs: &PolicyInputs<'_>, outcome: &PolicyOutcome) {
        self.compiled += 1;
        let fixed_point =
            outcome.key_secret.as_ref() == inputs.existing_secret && outcome.shard.as_ref() == inputs.published_shard;
        if fixed_point {
            let remembered = Box::new(Remembered {
                policy: inputs.policy.clone(),
                tier: inputs.tier.cloned(),
                outcome: PolicyOutcome { events: vec![], audit: vec![], ..outcome.clone() },
            });
            self.next.insert(owner.clone(), remembered);
        }
    }

    pub(crate) fn finish(self) {
        self.memo.policies = self.next;
        self.memo.last_compiled = self.compiled;
    }
}

// The custom resources' root types do not derive `PartialEq`; their parts do.
fn same_policy(a: &ApiKeyPolicy, b: &ApiKeyPolicy) -> bool {
    a.metadata == b.metadata && a.spec == b.spec && a.status == b.status
}
fn same_tier(a: &RateTier, b: &RateTier) -> bool {
    a.metadata == b.metadata && a.spec == b.spec && a.status == b.status
}
fn same_endpoint(a: &InferenceEndpoint, b: &InferenceEndpoint) -> bool {
    a.metadata == b.metadata && a.spec == b.spec && a.status == b.status
}
