//! Open streams, so that a config change can end the streams of a key that is no longer valid.
//!
//! ```text
//!  stream task ──register(digest, endpoint)──▶ Registry ◀──enforce(&snapshot, now)── snapshot swap / 1 s tick
//!       ▲                                          │ key revoked / expired / suspended / gone, or (scoped)
//!       │                                          │ scope, endpoint or Origin no longer allowed
//!       └──────────── watch: Some(Refusal) ◀───────┘
//!  stream task: flush the pending result, then close with the refusal's code ("key revoked", ...)
//! ```
//! The registry holds digests and key refs, never plaintext keys. Its lock is held only to copy entries,
//! never across I/O or while notifying.
use crate::admission::{self, Request};
use crate::refusal::Refusal;
use crate::snapshot::{KeyRef, Snapshot};
use chrono::{DateTime, Utc};
use infergate_crds::endpoint::Feature;
use infergate_crds::key::{Environment, KeyDigest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

struct Entry {
    key: KeyRef,
    digest: KeyDigest,
    environment: Environment,
    endpoint: String,
    /// What the stream was admitted for; re-authorized on every check when present.
    scope: Option<StreamScope>,
    door: &'static str,
    close: watch::Sender<Option<Refusal>>,
}

/// What an open stream was admitted to do: re-checked against each new snapshot, so a stream whose key loses the
/// scope, whose endpoint is deleted, or whose Origin is no longer allowed closes with that refusal's code.
#[derive(Clone, Debug)]
pub struct StreamScope {
    pub model: String,
    pub feature: Feature,
    pub origin: Option<String>,
}

/// What [`Registry::enforce`] closed, for audit lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Enforced {
    pub stream_id: u64,
    pub key: KeyRef,
    pub endpoint: String,
    pub door: &'static str,
    pub reason: &'static str,
}

#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

/// A registered stream. Dropping it unregisters; `closed` resolves when the stream must end.
pub struct StreamHandle {
    registry: Arc<Registry>,
    pub id: u64,
    close: watch::Receiver<Option<Refusal>>,
}

impl StreamHandle {
    /// Resolves with the reason once the stream must close. Cancel-safe, so it can sit in a `select!`.
    pub async fn closed(&mut self) -> Refusal {
        loop {
            if let Some(reason) = self.close.borrow_and_update().clone() {
                return reason;
            }
            if self.close.changed().await.is_err() {
                // The registry dropped the sender: the agent is shutting down.
                return Refusal::new(
                    crate::refusal::RefusalCode::BackendUnavailable,
                    "the agent is shutting down; reconnect",
                );
            }
        }
    }
}

impl StreamHandle {
    /// A second view of the close signal, to race work that holds the session (a queued charge, a backend call).
    pub fn signal(&self) -> CloseSignal {
        CloseSignal(self.close.clone())
    }
}

/// The close signal of one stream, detached from its [`StreamHandle`].
pub struct CloseSignal(watch::Receiver<Option<Refusal>>);

impl CloseSignal {
    /// Resolves with the reason once the stream must close (at once if it already must).
    pub async fn closed(mut self) -> Refusal {
        match self.0.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().expect("waited for Some"),
            Err(_) => {
                Refusal::new(crate::refusal::RefusalCode::BackendUnavailable, "the agent is shutting down; reconnect")
            }
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.registry.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Registry {
    pub fn register(
        self: &Arc<Self>,
        key: KeyRef,
        digest: KeyDigest,
        environment: Environment,
        endpoint: &str,
        door: &'static str,
    ) -> StreamHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = watch::channel(None);
        let entry = Entry { key, digest, environment, endpoint: endpoint.to_string(), scope: None, door, close: tx };
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, entry);
        StreamHandle { registry: Arc::clone(self), id, close: rx }
    }

    /// [`register`](Self::register), with the scope the stream was admitted for re-checked on every
    /// [`enforce`](Self::enforce), not only its key.
    pub fn register_scoped(
        self: &Arc<Self>,
        key: KeyRef,
        digest: KeyDigest,
        environment: Environment,
        endpoint: &str,
        door: &'static str,
        scope: StreamScope,
    ) -> StreamHandle {
        let handle = self.register(key, digest, environment, endpoint, door);
        if let Some(entry) = self.open.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&handle.id) {
            entry.scope = Some(scope);
        }
        handle
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open streams per key, for the admin usage view.
    pub fn per_key(&self) -> HashMap<KeyRef, usize> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        for e in open.values() {
            *out.entry(e.key).or_insert(0) += 1;
        }
        out
    }

    /// Re-checks every open stream's key against `snapshot` at `now` and signals those that must close.
    /// Called on every snapshot swap and on a one-second tick (expiry needs no config change).
    pub fn enforce(&self, snapshot: &Snapshot, now: DateTime<Utc>) -> Vec<Enforced> {
        let mut closed = Vec::new();
        // `send_replace` on a watch channel only swaps a value and wakes a task: no I/O under the lock.
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for (id, e) in open.iter() {
            if e.close.borrow().is_some() {
                continue;
            }
            let checked =
                admission::identify(snapshot, &e.digest, e.environment, now).and_then(|identity| match &e.scope {
                    None => Ok(()),
                    Some(scope) => {
                        let request =
                            Request { model: &scope.model, feature: scope.feature, origin: scope.origin.as_deref() };
                        admission::authorize(snapshot, identity, &request).map(|_| ())
                    }
                });
            if let Err(refusal) = checked {
                let reason = refusal.code.as_str();
                e.close.send_replace(Some(refusal));
                closed.push(Enforced {
                    stream_id: *id,
                    key: e.key,
                    endpoint: e.endpoint.clone(),
                    door: e.door,
                    reason,
                });
            }
        }
        closed
    }
}
