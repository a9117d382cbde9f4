//! Standard status conditions (`metav1.Condition`) and the pure helper that keeps `lastTransitionTime`
//! stable unless the status actually flips.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";

/// Builds a condition. `observed_generation` is the generation of the spec this condition was computed from.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(to_jiff(now)),
    }
}

/// Merges freshly computed conditions with the previous ones: a condition whose status did not change keeps
/// its old `lastTransitionTime`, so re-reconciles do not churn status (and do not write at all when nothing changed).
pub fn merge(previous: &[Condition], mut fresh: Vec<Condition>) -> Vec<Condition> {
    for c in &mut fresh {
        if let Some(old) = previous.iter().find(|o| o.type_ == c.type_) {
            if old.status == c.status {
                c.last_transition_time = old.last_transition_time.clone();
            }
        }
    }
    fresh.sort_by(|a, b| a.type_.cmp(&b.type_));
    fresh
}

/// k8s-openapi 0.29 speaks `jiff`; the rest of infergate speaks `chrono`.
pub fn to_jiff(t: DateTime<Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

pub fn from_jiff(t: k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond() as u32).unwrap_or_default()
}
