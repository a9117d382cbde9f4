//! References of one ApiKeyPolicy: its RateTier, the InferenceEndpoints its scopes name, and the features it asks
//! of them. A policy whose references do not all resolve publishes no shard (fail closed).
use crate::{PolicyInputs, reasons};
use infergate_crds::gateway::{EndpointLimits, ScopeEntry, TierLimits};
use infergate_crds::tier::EndUserLimitsSpec;
use infergate_crds::{ApiKeyPolicy, NamespacedName, RateTier};

pub(super) struct Resolved {
    pub tier: TierLimits,
    pub scopes: Vec<ScopeEntry>,
}

pub(super) struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// Resolves tier, endpoints and features. Reports the first kind of problem found, naming every missing object
/// of that kind so one edit can fix them all.
pub(super) fn resolve_references(policy: &ApiKeyPolicy, inputs: &PolicyInputs<'_>) -> Result<Resolved, Problem> {
    let spec = &policy.spec;
    let own_namespace = policy.metadata.namespace.clone().unwrap_or_default();
    let Some(tier) = inputs.tier.filter(|t| t.metadata.name.as_deref() == Some(spec.tier.as_str())) else {
        return Err(Problem {
            reason: reasons::TIER_NOT_FOUND,
            message: format!("RateTier {:?} not found: create it or change spec.tier", spec.tier),
        });
    };
    if !tier.spec.allows_namespace(&own_namespace) {
        return Err(Problem {
            reason: reasons::TIER_NOT_ALLOWED,
            message: format!(
                "RateTier {:?} does not allow namespace {own_namespace:?}: add it to the tier's \
                 spec.allowedNamespaces or pick another tier",
                spec.tier
            ),
        });
    }
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
fn tier_limits(tier: &RateTier, scopes: &[ScopeEntry]) -> TierLimits {
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
        on_store_failure: t.on_store_failure,
        endpoint_overrides,
        token_lifetime_seconds: t.token_lifetime.map(|d| d.0.as_secs()),
        // Capped here, once, so the agent never has to compare a user's limit with the key's.
        end_user: t.end_user.as_ref().map(|u| EndUserLimitsSpec {
            gpu_seconds_per_minute: u.gpu_seconds_per_minute.map(|v| v.min(t.gpu_seconds_per_minute)),
            burst_gpu_seconds: u.burst_gpu_seconds.map(|v| v.min(t.burst_gpu_seconds)),
            max_concurrent_streams: u.max_concurrent_streams.map(|v| v.min(t.max_concurrent_streams)),
        }),
        one_stream_per_token: t.one_stream_per_token,
    }
}
