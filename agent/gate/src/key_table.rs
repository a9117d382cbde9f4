//! The snapshot's key index: an open-addressing table whose slots hold the whole record, one cache line each.
//!
//! ```text
//!  digest ─▶ KeyRef (first 8 bytes) ─▶ keyed mix ─▶ slot ─▶ same id? ct_eq(whole digest)? ─▶ KeyRecord
//!                                                     └─ else next slot (linear probe) until an empty one
//! ```
//! Why not a `HashMap<KeyRef, Vec<KeyRecord>>`: with 100k keys every lookup missed the cache three times (the
//! control bytes, the bucket, the `Vec`'s heap block), and those misses were most of the admission decision's
//! time. Here a lookup touches one 64-byte slot (linear probing keeps a rare second probe on the next line).
//! The probe start is the key id mixed with a per-table random seed: key ids are uniform digest bits, but a
//! policy author can write revocation digests with chosen bits, and must not be able to pile them onto one run of
//! slots. Records sharing a key id (possible the same way) sit in the same probe run and are told apart by the
//! whole digest, compared in constant time, so a forged record never stands in for another key.
use crate::snapshot::{KeyRecord, KeyRef, KeyStatus};
use chrono::{DateTime, Utc};
use infergate_crds::key::KeyDigest;
use std::hash::BuildHasher;

const EMPTY: u8 = 0;
const ACTIVE: u8 = 1;
const REVOKED: u8 = 2;

/// One record in 64 bytes. `at` is `valid_from` (active) or `revoked_at` (revoked).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    digest: KeyDigest,
    policy: u32,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
    kind: u8,
    has_until: bool,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Slot {
    const EMPTY: Slot = Slot {
        digest: KeyDigest([0; 32]),
        policy: 0,
        at: DateTime::<Utc>::UNIX_EPOCH,
        until: DateTime::<Utc>::UNIX_EPOCH,
        kind: EMPTY,
        has_until: false,
    };

    fn of(record: &KeyRecord) -> Slot {
        let (kind, at, until) = match record.status {
            KeyStatus::Active { valid_from, valid_until } => (ACTIVE, valid_from, valid_until),
            KeyStatus::Revoked { revoked_at } => (REVOKED, revoked_at, None),
        };
        Slot {
            digest: record.digest,
            policy: record.policy,
            at,
            until: until.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            kind,
            has_until: until.is_some(),
        }
    }

    fn record(&self) -> KeyRecord {
        let status = if self.kind == REVOKED {
            KeyStatus::Revoked { revoked_at: self.at }
        } else {
            KeyStatus::Active { valid_from: self.at, valid_until: self.has_until.then_some(self.until) }
        };
        KeyRecord { digest: self.digest, policy: self.policy, status }
    }

    fn id(&self) -> KeyRef {
        KeyRef::of(&self.digest)
    }
}

/// A fixed-capacity table built once per snapshot (it never grows: the builder knows how many records come).
pub(crate) struct KeyTable {
    slots: Vec<Slot>,
    len: usize,
    seed: foldhash::fast::RandomState,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable").field("len", &self.len).field("slots", &self.slots.len()).finish()
    }
}

impl KeyTable {
    /// Room for `records` at a load of 3/4. A hit reads ~2.5 adjacent slots on average; a load of 1/2 (1.5 slots)
    /// measured no faster at 100k keys, the larger table costing what the shorter runs saved. Sized exactly, not
    /// to a power of two, which would make the table up to 1.5x larger again (1M keys: 85 MB, not 134 MB, held
    /// twice while a new snapshot replaces the old).
    pub(crate) fn with_capacity(records: usize) -> Self {
        let capacity = (records + records / 3 + 2).max(16);
        KeyTable { slots: vec![Slot::EMPTY; capacity], len: 0, seed: foldhash::fast::RandomState::default() }
    }

    #[inline]
    fn next(&self, at: usize) -> usize {
        if at + 1 == self.slots.len() { 0 } else { at + 1 }
    }

    fn start(&self, key: KeyRef) -> usize {
        // Multiply-shift maps the 64-bit hash onto 0..len without a division or a power-of-two size.
        ((u128::from(self.seed.hash_one(key.0)) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slots of every record whose digest starts with `key`'s bits, in probe order.
    fn run(&self, key: KeyRef) -> impl Iterator<Item = &Slot> {
        let start = self.start(key);
        self.slots[start..]
            .iter()
            .chain(&self.slots[..start])
            .take_while(|slot| slot.kind != EMPTY)
            .filter(move |slot| slot.id() == key)
    }

    /// Adds `record`, replacing (and returning) a record with the same full digest.
    pub(crate) fn insert(&mut self, record: KeyRecord) -> Option<KeyRecord> {
        // Capacity is fixed by the builder; growing is a bug, but the table must never loop forever: one slot
        // always stays empty, so every probe (`get` has no step limit) ends.
        assert!(self.len + 1 < self.slots.len(), "key table sized for fewer records than inserted");
        let mut at = self.start(KeyRef::of(&record.digest));
        loop {
            let slot = &mut self.slots[at];
            if slot.kind == EMPTY {
                *slot = Slot::of(&record);
                self.len += 1;
                return None;
            }
            if slot.digest.ct_eq(&record.digest) {
                let previous = slot.record();
                *slot = Slot::of(&record);
                return Some(previous);
            }
            at = self.next(at);
        }
    }

    /// The record with exactly this digest (compared in constant time), if any.
    pub(crate) fn get(&self, digest: &KeyDigest) -> Option<KeyRecord> {
        let key = KeyRef::of(digest);
        let mut at = self.start(key);
        loop {
            let slot = &self.slots[at];
            if slot.kind == EMPTY {
                return None;
            }
            // The id bits are not secret (they are the key id); only the whole-digest match is constant time.
            if slot.id() == key && slot.digest.ct_eq(digest) {
                return Some(slot.record());
            }
            at = self.next(at);
        }
    }

    /// Every record whose digest starts with `key`'s bits.
    pub(crate) fn with_id(&self, key: KeyRef) -> impl Iterator<Item = KeyRecord> + '_ {
        self.run(key).map(Slot::record)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = KeyRecord> + '_ {
        self.slots.iter().filter(|s| s.kind != EMPTY).map(Slot::record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(first: u64, rest: u8, policy: u32) -> KeyRecord {
        let mut digest = [rest; 32];
        digest[..8].copy_from_slice(&first.to_be_bytes());
        let valid_from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        KeyRecord { digest: KeyDigest(digest), policy, status: KeyStatus::Active { valid_from, valid_until: None } }
    }

    #[test]
    fn full_table_of_shared_ids_finds_each_by_whole_digest() {
        // 12 records under one id and 4 under another: one long probe run through a 16-slot table.
        let mut table = KeyTable::with_capacity(11);
        assert_eq!(table.slots.len(), 16);
        for i in 0..12 {
            assert!(table.insert(record(7, i, u32::from(i))).is_none());
        }
        for i in 0..3 {
            assert!(table.insert(record(9, i, 100 + u32::from(i))).is_none());
        }
        for i in 0..12 {
            assert_eq!(table.get(&record(7, i, 0).digest).map(|r| r.policy), Some(u32::from(i)));
        }
        assert!(table.get(&record(7, 200, 0).digest).is_none());
        assert_eq!(table.with_id(KeyRef(7)).count(), 12);
        assert_eq!(table.with_id(KeyRef(9)).count(), 3);
        assert_eq!(table.with_id(KeyRef(8)).count(), 0);
        assert_eq!((table.len(), table.iter().count()), (15, 15));
    }

    #[test]
    fn same_digest_replaces_and_round_trips_status() {
        let mut table = KeyTable::with_capacity(1);
        let mut first = record(1, 1, 1);
        let until = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        first.status = KeyStatus::Active { valid_from: until - chrono::Duration::days(3), valid_until: Some(until) };
        assert!(table.insert(first).is_none());
        let revoked = KeyRecord { status: KeyStatus::Revoked { revoked_at: until }, ..record(1, 1, 2) };
        let previous = table.insert(revoked).expect("same digest replaces");
        assert_eq!(previous.status, first.status);
        let now = table.get(&first.digest).expect("still there");
        assert_eq!((now.policy, now.status), (2, KeyStatus::Revoked { revoked_at: until }));
        assert_eq!(table.len(), 1);
    }
}
