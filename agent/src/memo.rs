//! Answers that depend only on the snapshot and the caller's policy, computed once per snapshot and policy.
//!
//! ```text
//!  (snapshot, policy) ─▶ same snapshot as the memo's? ─▶ entry for this policy? ─▶ clone of the answer
//!                              └─ no: the memo restarts for this snapshot ─┴─ no: compute, remember, answer
//! ```
//! Entries hold `Weak` references: they keep the allocations' addresses from being reused (so an address match is
//! the same snapshot and policy), not the snapshot's contents, which a config change frees as before.
use infergate_gate::snapshot::{PolicyConfig, Snapshot};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

/// Entries kept per snapshot before the memo starts over: a bound on memory with 100k policies, far above what
/// a node's live callers use.
const MAX_ENTRIES: usize = 4096;

/// Generic over the snapshot and policy types only so its tests need no snapshot of their own.
pub struct PolicyMemo<T, S = Snapshot, P = PolicyConfig> {
    inner: RwLock<Memo<T, S, P>>,
}

struct Memo<T, S, P> {
    snapshot: Weak<S>,
    entries: HashMap<usize, (Weak<P>, T)>,
}

impl<T, S, P> Default for PolicyMemo<T, S, P> {
    fn default() -> Self {
        PolicyMemo { inner: RwLock::new(Memo { snapshot: Weak::new(), entries: HashMap::new() }) }
    }
}

impl<T: Clone, S, P> PolicyMemo<T, S, P> {
    /// The answer for `policy` under `snapshot`, from `compute` the first time.
    pub fn get_or_compute(&self, snapshot: &Arc<S>, policy: &Arc<P>, compute: impl FnOnce() -> T) -> T {
        let key = Arc::as_ptr(policy) as usize;
        {
            let memo = self.inner.read().unwrap_or_else(|e| e.into_inner());
            if std::ptr::eq(memo.snapshot.as_ptr(), Arc::as_ptr(snapshot))
                && let Some((_, value)) = memo.entries.get(&key)
            {
                return value.clone();
            }
        }
        let value = compute();
        let mut memo = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !std::ptr::eq(memo.snapshot.as_ptr(), Arc::as_ptr(snapshot)) || memo.entries.len() >= MAX_ENTRIES {
            memo.snapshot = Arc::downgrade(snapshot);
            memo.entries.clear();
        }
        memo.entries.insert(key, (Arc::downgrade(policy), value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_per_snapshot_and_policy_and_starts_over_for_a_new_snapshot() {
        let memo = PolicyMemo::<u32, u8, &'static str>::default();
        let (first, second) = (Arc::new(1u8), Arc::new(2u8));
        let (policy, other) = (Arc::new("team-a"), Arc::new("team-b"));
        let mut computed = 0;
        let mut get = |s: &Arc<u8>, p: &Arc<&'static str>, v: u32| {
            memo.get_or_compute(s, p, || {
                computed += 1;
                v
            })
        };
        assert_eq!(get(&first, &policy, 1), 1);
        assert_eq!(get(&first, &policy, 2), 1, "remembered");
        assert_eq!(get(&first, &other, 3), 3, "per policy");
        assert_eq!(get(&second, &policy, 4), 4, "a new snapshot starts over");
        assert_eq!(get(&first, &policy, 5), 5, "and the old one is gone");
        assert_eq!(computed, 4);
    }
}
