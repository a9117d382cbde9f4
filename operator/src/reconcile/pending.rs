//! Writes whose watch event may not have reached the store yet.
//!
//! ```text
//!  reconcile writes X ─▶ record(key, version before, X) ─▶ next reconcile: view(key, stored version) = X
//!  watch event for key (newer version or delete) ─▶ forget_on ─▶ the store is the truth again
//! ```
//! A pending write is trusted while the store still shows the version from before the write; this keeps a
//! reconcile that runs in between from, say, issuing a second first key. Entries are dropped by the watch itself
//! when the store moves on, never by a timer: a slow API server can delay watch events by minutes, and a
//! timed-out entry would mean a regenerated key.
use kube::ResourceExt;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::Mutex;

struct Pending<T> {
    before: Option<String>,
    value: T,
}

/// Pending writes of one kind, by (namespace, name).
pub(super) struct PendingWrites<T>(Mutex<HashMap<(String, String), Pending<T>>>);

impl<T> Default for PendingWrites<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T: Clone> PendingWrites<T> {
    /// The written value, while the store still shows `stored_version` (the version the write started from).
    pub fn view(&self, key: (String, String), stored_version: Option<String>) -> Option<T> {
        let mut map = self.0.lock().expect("pending-write map poisoned");
        match map.get(&key) {
            Some(p) if p.before == stored_version => Some(p.value.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }
}

impl<T> PendingWrites<T> {
    pub fn record(&self, key: (String, String), before: Option<String>, value: T) {
        self.0.lock().expect("pending-write map poisoned").insert(key, Pending { before, value });
    }

    /// Called for every watch event of the object: once the store holds anything newer than the version a
    /// pending write started from (our write, a later one, or a delete), the store is the truth again.
    pub fn forget(&self, key: (String, String), event_version: Option<String>, deleted: bool) {
        let mut map = self.0.lock().expect("pending-write map poisoned");
        if map.get(&key).is_some_and(|p| deleted || p.before != event_version) {
            map.remove(&key);
        }
    }

    /// [`forget`](Self::forget) for one watch event, whatever the kind.
    pub fn forget_on<K: ResourceExt>(&self, event: &Result<watcher::Event<K>, watcher::Error>) {
        let (obj, deleted) = match event {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => (o, false),
            Ok(watcher::Event::Delete(o)) => (o, true),
            _ => return,
        };
        self.forget((obj.namespace().unwrap_or_default(), obj.name_any()), obj.resource_version(), deleted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_write_is_trusted_until_the_store_moves() {
        let map: PendingWrites<u32> = PendingWrites::default();
        let key = ("ns".to_string(), "name".to_string());
        assert_eq!(map.view(key.clone(), None), None);
        map.record(key.clone(), None, 7);
        // The store has not seen the write yet (still no object): the written value stands.
        assert_eq!(map.view(key.clone(), None), Some(7));
        // A watch event that still shows the old version changes nothing.
        map.forget(key.clone(), None, false);
        assert_eq!(map.view(key.clone(), None), Some(7));
        // The watch delivered the write: the store is the truth again, even if it later goes stale in a view.
        map.forget(key.clone(), Some("12".into()), false);
        assert_eq!(map.view(key.clone(), None), None);
        // A view that already shows a newer version also drops the entry.
        map.record(key.clone(), None, 8);
        assert_eq!(map.view(key.clone(), Some("13".into())), None);
        assert_eq!(map.view(key, None), None);
    }
}
