//! GPU-seconds per end user (the `act` of session tokens minted with `end_user`), for the admin API and
//! metrics, by hashed id only ([`EndUser`]: `u_` + 16 hex of SHA-256 over the policy and the app's user id).
//!
//! Both views are bounded, because end users are not: the admin map keeps [`MAX_USERS`] users and counts the
//! rest as one overflow row, and the metric labels the first [`MAX_LABELLED`] users it sees and the rest as
//! `other` (a Prometheus series per user is only affordable for a few hundred users).
use infergate_gate::snapshot::KeyRef;
use infergate_gate::token::EndUser;
use prometheus::{CounterVec, Opts, Registry};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Users kept in the admin API's per-user usage.
pub const MAX_USERS: usize = 100_000;
/// Users with a metric series of their own.
pub const MAX_LABELLED: usize = 500;
/// The metric label of every user past [`MAX_LABELLED`].
pub const OTHER: &str = "other";

#[derive(Default)]
struct Inner {
    usage: HashMap<(KeyRef, EndUser), f64>,
    /// GPU-seconds of users that arrived after the map was full, per key.
    overflow: HashMap<KeyRef, f64>,
    labelled: HashSet<EndUser>,
}

pub struct EndUserUsage {
    inner: Mutex<Inner>,
    gpu_seconds: CounterVec,
}

/// One row of the admin API's `endUsers`.
#[derive(Debug, PartialEq)]
pub struct Row {
    pub key: KeyRef,
    /// `None`: the users counted after [`MAX_USERS`] were kept.
    pub user: Option<EndUser>,
    pub gpu_seconds: f64,
}

impl EndUserUsage {
    pub fn register(registry: &Registry) -> Self {
        let gpu_seconds = CounterVec::new(
            Opts::new(
                "end_user_gpu_seconds_total",
                "GPU-seconds charged per end user of session tokens minted with end_user: the hashed id (u_ + 16 \
                 hex), or `other` past the first 500 users",
            ),
            &["user"],
        )
        .expect("valid metric");
        registry.register(Box::new(gpu_seconds.clone())).expect("metric names are unique");
        EndUserUsage { inner: Mutex::default(), gpu_seconds }
    }

    pub fn charged(&self, key: KeyRef, user: EndUser, gpu_seconds: f64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let labelled = inner.labelled.contains(&user) || {
            let room = inner.labelled.len() < MAX_LABELLED;
            if room {
                inner.labelled.insert(user);
            }
            room
        };
        let label = if labelled { user.to_string() } else { OTHER.to_owned() };
        self.gpu_seconds.with_label_values(&[label.as_str()]).inc_by(gpu_seconds.max(0.0));
        let full = inner.usage.len() >= MAX_USERS;
        match inner.usage.get_mut(&(key, user)) {
            Some(total) => *total += gpu_seconds,
            None if !full => {
                inner.usage.insert((key, user), gpu_seconds);
            }
            None => *inner.overflow.entry(key).or_insert(0.0) += gpu_seconds,
        }
    }

    /// Every user's GPU-seconds, by key then user, the overflow rows last.
    pub fn rows(&self) -> Vec<Row> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<Row> =
            inner.usage.iter().map(|(&(key, user), &gpu_seconds)| Row { key, user: Some(user), gpu_seconds }).collect();
        rows.sort_by_key(|r| (r.key, r.user));
        let mut overflow: Vec<Row> =
            inner.overflow.iter().map(|(&key, &gpu_seconds)| Row { key, user: None, gpu_seconds }).collect();
        overflow.sort_by_key(|r| r.key);
        rows.extend(overflow);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up_per_key_and_user() {
        let usage = EndUserUsage::register(&Registry::new());
        let (alice, bob) = (EndUser::of("ns/app", "alice"), EndUser::of("ns/app", "bob"));
        usage.charged(KeyRef(1), alice, 1.5);
        usage.charged(KeyRef(1), alice, 0.5);
        usage.charged(KeyRef(1), bob, 1.0);
        let rows = usage.rows();
        assert_eq!(rows.len(), 2);
        let of = |u: EndUser| rows.iter().find(|r| r.user == Some(u)).unwrap().gpu_seconds;
        assert_eq!((of(alice), of(bob)), (2.0, 1.0));
    }

    #[test]
    fn the_same_user_id_in_two_policies_is_two_users() {
        assert_ne!(EndUser::of("ns/a", "alice"), EndUser::of("ns/b", "alice"));
        assert_ne!(EndUser::of("ns/a", "b\0c"), EndUser::of("ns/a\0b", "c"));
        let shown = EndUser::of("ns/a", "alice@example.com").to_string();
        assert!(shown.starts_with("u_") && shown.len() == 18 && !shown.contains("alice"), "{shown}");
    }

    #[test]
    fn metric_series_are_bounded() {
        let registry = Registry::new();
        let usage = EndUserUsage::register(&registry);
        for n in 0..MAX_LABELLED + 10 {
            usage.charged(KeyRef(1), EndUser::of("ns/app", &n.to_string()), 1.0);
        }
        let families = registry.gather();
        let series = families[0].get_metric();
        assert_eq!(series.len(), MAX_LABELLED + 1);
        let other = series.iter().find(|m| m.get_label()[0].value() == OTHER).unwrap();
        assert_eq!(other.get_counter().get_value(), 10.0);
    }
}
