//! `compile_endpoint` and `compile_tier`: the objects whose outcome depends only on their own spec and on the
//! other endpoints (fallbacks, model names).
use super::events::Log;
use super::{EndpointLookup, EndpointOutcome, ObjectRef, reasons};
use chrono::{DateTime, Utc};
use infergate_crds::conditions::{self, READY};
use infergate_crds::gateway::{EndpointShard, SHARD_SCHEMA_VERSION, UPSTREAM_CREDENTIAL_LABEL, UpstreamCredential};
use infergate_crds::{InferenceEndpoint, InferenceEndpointStatus, NamespacedName, RateTier, RateTierStatus};
use k8s_openapi::api::core::v1::Secret;

/// Condition type on endpoints with a `spec.fallback`: the fallback endpoint exists.
pub const FALLBACK_RESOLVED: &str = "FallbackResolved";

/// The credential `backend.upstream.auth` names, from the labelled Secrets the caller sees: `Ok(None)` when the
/// endpoint names none, `Err(why)` (a message that says what to fix) when it cannot be resolved.
pub fn upstream_credential<'a>(
    endpoint: &InferenceEndpoint,
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> Result<Option<UpstreamCredential>, String> {
    let Some(auth) = endpoint.spec.backend.upstream.as_ref().and_then(|u| u.auth.as_ref()) else {
        return Ok(None);
    };
    let namespace = endpoint.metadata.namespace.as_deref().unwrap_or_default();
    let secret = secrets
        .into_iter()
        .find(|s| {
            s.metadata.namespace.as_deref().unwrap_or_default() == namespace
                && s.metadata.name.as_deref() == Some(auth.secret_name.as_str())
        })
        .ok_or_else(|| {
            format!(
                "upstream credential Secret {namespace}/{} not found: create it with the data key {:?} and the label \
                 {UPSTREAM_CREDENTIAL_LABEL}=true (only Secrets so labelled are read)",
                auth.secret_name, auth.key
            )
        })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&auth.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&auth.key)).map(|v| v.trim().to_string()))
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!(
                "upstream credential Secret {namespace}/{} has no non-empty data key {:?}",
                auth.secret_name, auth.key
            )
        })?;
    if value.chars().any(|c| c.is_control()) {
        return Err(format!(
            "upstream credential in Secret {namespace}/{} key {:?} holds control characters; it cannot be sent as a header",
            auth.secret_name, auth.key
        ));
    }
    let value = if auth.header.eq_ignore_ascii_case("authorization") { format!("Bearer {value}") } else { value };
    Ok(Some(UpstreamCredential { header: auth.header.to_ascii_lowercase(), value }))
}

pub fn compile_endpoint(
    endpoint: &InferenceEndpoint,
    endpoints: &dyn EndpointLookup,
    policies_using: u32,
    credential: Result<Option<UpstreamCredential>, String>,
    now: DateTime<Utc>,
) -> EndpointOutcome {
    let spec = &endpoint.spec;
    let at = name_of(endpoint);
    let generation = endpoint.metadata.generation;
    let previous = endpoint.status.clone().unwrap_or_default();
    let regarding = ObjectRef {
        kind: "InferenceEndpoint",
        namespace: endpoint.metadata.namespace.clone(),
        name: at.name.clone(),
        uid: endpoint.metadata.uid.clone(),
    };
    let mut log = Log::new(at.clone(), regarding, now);

    // Clients pick an endpoint by model name, so two endpoints with one name would be ambiguous. The oldest
    // keeps it (then the first by namespace/name, for objects without a creation time); the others step back.
    let winner = endpoints
        .with_model(&spec.model)
        .into_iter()
        .filter(|other| may_share_an_agent(endpoint, other))
        .chain(std::iter::once(endpoint))
        .min_by_key(|e| {
            let created = e.metadata.creation_timestamp.as_ref().map(|t| conditions::from_jiff(t.0));
            (created.is_none(), created, name_of(e))
        })
        .map(name_of)
        .unwrap_or_else(|| at.clone());

    let mut fresh = vec![];
    let fallback = spec.fallback.as_ref().map(|f| NamespacedName::new(at.namespace.clone(), f.clone()));
    let fallback_ok = match &fallback {
        None => None,
        Some(f) => {
            let found = endpoints.get(f).is_some();
            let condition = if found {
                conditions::condition(
                    FALLBACK_RESOLVED,
                    true,
                    "Resolved",
                    format!("fallback {f} exists"),
                    generation,
                    now,
                )
            } else {
                conditions::condition(
                    FALLBACK_RESOLVED,
                    false,
                    reasons::FALLBACK_NOT_FOUND,
                    format!(
                        "fallback InferenceEndpoint {f} not found (it must be in the same namespace): \
                         serving without a fallback; create it or fix spec.fallback"
                    ),
                    generation,
                    now,
                )
            };
            let was = previous.conditions.iter().find(|c| c.type_ == FALLBACK_RESOLVED);
            if !found && was.is_none_or(|w| w.status != "False") {
                log.event(true, reasons::FALLBACK_NOT_FOUND, condition.message.clone());
            }
            fresh.push(condition);
            Some(found)
        }
    };

    let ready = if let Err(why) = &credential {
        conditions::condition(READY, false, reasons::UPSTREAM_CREDENTIAL_MISSING, why.clone(), generation, now)
    } else if winner != at {
        conditions::condition(
            READY,
            false,
            reasons::MODEL_CONFLICT,
            format!(
                "model {:?} is already served by InferenceEndpoint {winner}: change spec.model (clients select \
                 endpoints by model name, so it must be unique)",
                spec.model
            ),
            generation,
            now,
        )
    } else {
        let features: Vec<&str> = spec.features.iter().map(|f| f.as_str()).collect();
        conditions::condition(
            READY,
            true,
            reasons::PUBLISHED,
            format!("published as model {:?} ({})", spec.model, features.join(", ")),
            generation,
            now,
        )
    };
    log.ready_transition(&previous.conditions, &ready);
    let publish = ready.status == "True";
    fresh.push(ready);

    let shard = publish.then(|| EndpointShard {
        schema_version: SHARD_SCHEMA_VERSION,
        endpoint: at.clone(),
        generation: generation.unwrap_or(0),
        model: spec.model.clone(),
        features: spec.features.clone(),
        environment: spec.environment,
        backend: spec.backend.clone(),
        cost: spec.cost.clone(),
        limits: spec.limits.clone(),
        fallback: fallback.filter(|_| fallback_ok == Some(true)),
        node_selector: spec.node_selector.clone(),
        // Filled by the caller that knows the nodes (the operator); standalone serves everything.
        serving_nodes: None,
        verify_threshold: spec.verify_threshold,
        upstream_credential: credential.ok().flatten(),
        redaction: spec.redaction.clone(),
    });
    EndpointOutcome {
        shard,
        status: InferenceEndpointStatus {
            observed_generation: generation,
            conditions: conditions::merge(&previous.conditions, fresh),
            policies: policies_using,
        },
        events: log.events,
    }
}

/// A tier has no references of its own (the schema already checked its values); status counts its users.
pub fn compile_tier(tier: &RateTier, policies_using: u32, now: DateTime<Utc>) -> RateTierStatus {
    let previous = tier.status.clone().unwrap_or_default();
    let generation = tier.metadata.generation;
    let ready = conditions::condition(
        READY,
        true,
        reasons::ACCEPTED,
        format!("used by {policies_using} ApiKeyPolicy(ies)"),
        generation,
        now,
    );
    RateTierStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, vec![ready]),
        policies: policies_using,
    }
}

fn name_of(e: &InferenceEndpoint) -> NamespacedName {
    NamespacedName::new(e.metadata.namespace.clone().unwrap_or_default(), e.metadata.name.clone().unwrap_or_default())
}

/// Two endpoints can be served by one agent unless their node selectors require different values for one label.
fn may_share_an_agent(a: &InferenceEndpoint, b: &InferenceEndpoint) -> bool {
    match (&a.spec.node_selector, &b.spec.node_selector) {
        (Some(x), Some(y)) => x.iter().all(|(k, v)| y.get(k).is_none_or(|w| w == v)),
        _ => true,
    }
}
