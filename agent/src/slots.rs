//! Per-key slot counters: a key's long-lived connections and its one-shot requests in flight on this agent, and
//! the connection slot that, with a shared counter store, also holds across agents.
use infergate_gate::snapshot::{KeyMap, KeyRef};
use std::sync::{Arc, Mutex};

/// Counters per key with a cap, and a cap on their sum: a key's open connections, or its requests in flight.
pub struct KeySlots {
    per_key_cap: u32,
    total_cap: usize,
    held: Mutex<(KeyMap<u32>, usize)>,
}

/// Which cap a [`KeySlots::take`] ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotsFull {
    Key,
    Total,
}

impl KeySlots {
    pub fn new(per_key_cap: u32, total_cap: usize) -> Arc<Self> {
        Arc::new(KeySlots { per_key_cap, total_cap, held: Mutex::default() })
    }

    pub fn take(self: &Arc<Self>, key: KeyRef) -> Result<KeySlot, SlotsFull> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (per_key, total) = &mut *held;
        if *total >= self.total_cap {
            return Err(SlotsFull::Total);
        }
        let mine = per_key.entry(key).or_insert(0);
        if *mine >= self.per_key_cap {
            return Err(SlotsFull::Key);
        }
        *mine += 1;
        *total += 1;
        Ok(KeySlot { slots: Arc::clone(self), key })
    }
}

/// One taken slot; dropping it gives the slot back.
pub struct KeySlot {
    slots: Arc<KeySlots>,
    key: KeyRef,
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        let (per_key, total) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_key.get_mut(&self.key) {
            *mine -= 1;
            if *mine == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

/// The shared-store "endpoint" under which a key's connection slots are counted (stream slots use real endpoint
/// bucket ids, which are hashes of `namespace/name` and never this value).
pub(crate) const CONNECTIONS_BUCKET: u64 = u64::MAX;

/// A key's long-lived connection slot: on this agent, and across agents when the counter store is shared.
pub struct KeyConnectionGuard {
    pub(crate) _local: KeySlot,
    pub(crate) global: Option<(Arc<dyn infergate_gate::limiter::CounterStore>, infergate_gate::limiter::BucketKey)>,
}

impl Drop for KeyConnectionGuard {
    fn drop(&mut self) {
        if let Some((store, bucket)) = self.global.take() {
            store.release_stream(bucket);
        }
    }
}
