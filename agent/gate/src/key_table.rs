//! The snapshot's key index: an open-addressing table of 32-byte slots (two per cache line) over the records.
//!
//! ```text
//!  digest ─▶ KeyRef (first 8 bytes) ─▶ keyed mix ─▶ slot ─▶ same id? ─▶ plain: ct_eq(first 16 bytes) ─▶ record
//!                                                     │                 other: ct_eq(whole digest of the record)
//!                                                     └─ else next slot (linear probe) until an empty one
//! ```
//! Why this shape: at 100k keys the index is bigger than the caches a neighbour leaves this core, and the one slot
//! a lookup reads is most of the admission decision's time (a dependent load right after SHA-256). A 64-byte slot
//! holding the whole record made that 8.5 MiB; 32-byte slots with the fields a lookup of an ordinary key needs
//! make it 4.3 MiB, and two neighbouring slots share a line, so a probe run of ~2.5 slots (load 3/4) reads one or
//! two lines. (A `HashMap<KeyRef, Vec<KeyRecord>>` missed three times per lookup.)
//!
//! A **plain** slot (an active key with no end, whose 16-byte digest prefix no other record in the table shares)
//! answers from the slot alone: the first 16 digest bytes compared in constant time, and `valid_from`. Accepting
//! the presented key on those 128 bits is sound: another string with the same 128 bits is a second preimage of
//! SHA-256 on 128 bits (~2^128 hashes), and a record that shares them (a revocation written with chosen bytes)
//! makes both slots **other**. An other slot (revoked, retiring, or sharing its prefix) also compares the
//! digest's last 16 bytes, from the slot's [`Cold`] half in a parallel array: a second read taken only for those.
//! Both halves together (64 bytes a slot) take what the one 64-byte slot did.
//!
//! The probe start is the key id mixed with a per-table random seed: key ids are uniform digest bits, but a
//! policy author can write revocation digests with chosen bits, and must not be able to pile them onto one run of
//! slots. Records sharing a key id sit in the same probe run (no deletions, so a run never breaks).
use crate::snapshot::{KeyRecord, KeyRef, KeyStatus};
use chrono::{DateTime, Utc};
use infergate_crds::key::KeyDigest;
use std::hash::BuildHasher;
use subtle::ConstantTimeEq;

/// Bytes of the digest a slot keeps: the key id (8) and 8 more. The other 16 are in the slot's [`Cold`] half.
const PREFIX: usize = 16;
/// The top two bits of [`Slot::tag`]: what the slot holds. Then [`SHARED_ID`], then 29 bits of policy index.
const EMPTY: u32 = 0;
const PLAIN: u32 = 1 << 30;
const OTHER: u32 = 2 << 30;
const KIND: u32 = 3 << 30;
/// Set on every record whose key id (first 8 digest bytes) another record in the table also has: ids are 64
/// uniform bits, so this is a forged revocation or a 2^-64 accident, and a walk by id for such a record must see
/// the whole run; for any other it may stop at the record.
const SHARED_ID: u32 = 1 << 29;
const POLICY: u32 = SHARED_ID - 1;

/// What every lookup reads: 32 bytes, two slots per cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    prefix: [u8; PREFIX],
    /// `valid_from` (active) or `revoked_at` (revoked).
    at: DateTime<Utc>,
    /// Kind (top two bits) and policy index.
    tag: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

/// The rest of a record, read only for an other slot (and by the builder and the enumerations).
#[derive(Clone, Copy)]
struct Cold {
    rest: [u8; 32 - PREFIX],
    until: Option<DateTime<Utc>>,
    revoked: bool,
}

const _: () = assert!(std::mem::size_of::<Cold>() == 32);

impl Slot {
    const EMPTY: Slot = Slot { prefix: [0; PREFIX], at: DateTime::<Utc>::UNIX_EPOCH, tag: EMPTY };

    fn kind(&self) -> u32 {
        self.tag & KIND
    }

    fn policy(&self) -> u32 {
        self.tag & POLICY
    }

    fn shared_id(&self) -> bool {
        self.tag & SHARED_ID != 0
    }

    fn id(&self) -> KeyRef {
        KeyRef(u64::from_be_bytes(self.prefix[..8].try_into().expect("8 bytes")))
    }
}

impl Cold {
    const EMPTY: Cold = Cold { rest: [0; 32 - PREFIX], until: None, revoked: false };
}

/// Whether `slot` holds `digest`'s first 16 bytes, in constant time (word-wise, like [`KeyDigest::ct_eq`]).
fn prefix_eq(slot: &Slot, digest: &KeyDigest) -> bool {
    let word = |b: &[u8], i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let diff = (word(&slot.prefix, 0) ^ word(&digest.0, 0)) | (word(&slot.prefix, 1) ^ word(&digest.0, 1));
    diff.ct_eq(&0).into()
}

/// A fixed-capacity table built once per snapshot (it never grows: the builder knows how many records come).
pub(crate) struct KeyTable {
    slots: Vec<Slot>,
    /// Parallel to `slots`.
    cold: Vec<Cold>,
    len: usize,
    seed: foldhash::fast::RandomState,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable").field("len", &self.len).field("slots", &self.slots.len()).finish()
    }
}

impl KeyTable {
    /// Room for `records` at a load of 3/4. A hit reads ~2.5 adjacent slots on average (one or two lines); a load
    /// of 1/2 measured no faster with 64-byte slots, the larger table costing what the shorter runs saved. Sized
    /// exactly, not to a power of two, which would make the table up to 1.5x larger again.
    pub(crate) fn with_capacity(records: usize) -> Self {
        let capacity = (records + records / 3 + 2).max(16);
        KeyTable {
            slots: vec![Slot::EMPTY; capacity],
            cold: vec![Cold::EMPTY; capacity],
            len: 0,
            seed: foldhash::fast::RandomState::default(),
        }
    }

    #[inline]
    fn next(&self, at: usize) -> usize {
        if at + 1 == self.slots.len() { 0 } else { at + 1 }
    }

    fn start(&self, key: KeyRef) -> usize {
        // Multiply-shift maps the 64-bit hash onto 0..len without a division or a power-of-two size.
        ((u128::from(self.seed.hash_one(key.0)) * self.slots.len() as u128) >> 64) as usize
    }

    /// The occupied slots from `key`'s probe start to the first empty one: every record with `key`'s id is
    /// among them (there are no deletions, so a run never breaks).
    fn run(&self, key: KeyRef) -> impl Iterator<Item = usize> + '_ {
        let start = self.start(key);
        (start..self.slots.len()).chain(0..start).take_while(|&at| self.slots[at].kind() != EMPTY)
    }

    fn digest(&self, at: usize) -> KeyDigest {
        let mut digest = [0u8; 32];
        digest[..PREFIX].copy_from_slice(&self.slots[at].prefix);
        digest[PREFIX..].copy_from_slice(&self.cold[at].rest);
        KeyDigest(digest)
    }

    fn record(&self, at: usize) -> KeyRecord {
        let (slot, cold) = (&self.slots[at], &self.cold[at]);
        let status = if cold.revoked {
            KeyStatus::Revoked { revoked_at: slot.at }
        } else {
            KeyStatus::Active { valid_from: slot.at, valid_until: cold.until }
        };
        KeyRecord { digest: self.digest(at), policy: slot.policy(), status }
    }

    /// Writes `record` into slot `at`, plain when it may be (an active key with no end, `alone` with its prefix),
    /// with `shared` for [`SHARED_ID`].
    fn put(&mut self, at: usize, record: &KeyRecord, alone: bool, shared: u32) {
        // Refusing to build beats folding a policy index into the flag bits.
        assert!(record.policy & !POLICY == 0, "a snapshot holds at most 2^29 policies");
        let (stamp, until, revoked) = match record.status {
            KeyStatus::Active { valid_from, valid_until } => (valid_from, valid_until, false),
            KeyStatus::Revoked { revoked_at } => (revoked_at, None, true),
        };
        let kind = if alone && until.is_none() && !revoked { PLAIN } else { OTHER };
        self.slots[at] = Slot {
            prefix: record.digest.0[..PREFIX].try_into().expect("16 bytes"),
            at: stamp,
            tag: kind | shared | record.policy,
        };
        self.cold[at] = Cold { rest: record.digest.0[PREFIX..].try_into().expect("16 bytes"), until, revoked };
    }

    /// Adds `record`, replacing (and returning) a record with the same full digest.
    pub(crate) fn insert(&mut self, record: KeyRecord) -> Option<KeyRecord> {
        // Capacity is fixed by the builder; growing is a bug, but the table must never loop forever: one slot
        // always stays empty, so every probe (`get` has no step limit) ends.
        assert!(self.len + 1 < self.slots.len(), "key table sized for fewer records than inserted");
        let key = KeyRef::of(&record.digest);
        let prefix = &record.digest.0[..PREFIX];
        // One walk of the run: the slots sharing the id and those sharing the prefix, and the empty slot that
        // ends it.
        let (mut same_id, mut sharing, mut free) = (Vec::new(), Vec::new(), self.start(key));
        for at in self.run(key) {
            if self.slots[at].id() == key {
                same_id.push(at);
            }
            if self.slots[at].prefix == prefix {
                sharing.push(at);
            }
            free = self.next(at);
        }
        if let Some(&same) = sharing.iter().find(|&&at| self.digest(at).ct_eq(&record.digest)) {
            let previous = self.record(same);
            // The same digest: who else has its id is unchanged.
            let shared = self.slots[same].tag & SHARED_ID;
            self.put(same, &record, sharing.len() == 1, shared);
            return Some(previous);
        }
        let shared = if same_id.is_empty() { 0 } else { SHARED_ID };
        self.put(free, &record, sharing.is_empty(), shared);
        for at in same_id {
            self.slots[at].tag |= SHARED_ID;
        }
        // Records that share a prefix compare whole digests from now on.
        for at in sharing {
            self.slots[at].tag = OTHER | (self.slots[at].tag & !KIND);
        }
        self.len += 1;
        None
    }

    /// The record with exactly this digest, if any: the first 16 bytes compared in constant time for a plain
    /// slot, all 32 for an other one.
    pub(crate) fn get(&self, digest: &KeyDigest) -> Option<KeyRecord> {
        let key = KeyRef::of(digest);
        let mut at = self.start(key);
        loop {
            let slot = &self.slots[at];
            // The id bits are not secret (they are the key id); only the digest comparisons are constant time.
            match slot.kind() {
                EMPTY => return None,
                PLAIN if slot.id() == key && prefix_eq(slot, digest) => {
                    let status = KeyStatus::Active { valid_from: slot.at, valid_until: None };
                    return Some(KeyRecord { digest: *digest, policy: slot.policy(), status });
                }
                OTHER if slot.id() == key && self.digest(at).ct_eq(digest) => return Some(self.record(at)),
                _ => {}
            }
            at = self.next(at);
        }
    }

    /// The one record with `key`'s id whose policy index `owned` accepts; `None` when none does, or more than
    /// one (never guess between them). The walk stops at the record unless its id is [`SHARED_ID`], so a session
    /// token finds its key in about the slots an API key's lookup reads, not the whole run to an empty slot. (The
    /// id bits are not secret: the early stop tells nothing a caller does not know.)
    pub(crate) fn only_with_id(&self, key: KeyRef, owned: impl Fn(u32) -> bool) -> Option<KeyRecord> {
        let mut at = self.start(key);
        loop {
            let slot = &self.slots[at];
            if slot.kind() == EMPTY {
                return None;
            }
            if slot.id() == key && owned(slot.policy()) {
                if !slot.shared_id() {
                    return Some(self.record(at));
                }
                let mut matching = self.with_id(key).filter(|r| owned(r.policy));
                let first = matching.next()?;
                return matching.next().is_none().then_some(first);
            }
            at = self.next(at);
        }
    }

    /// Every record whose digest starts with `key`'s bits.
    pub(crate) fn with_id(&self, key: KeyRef) -> impl Iterator<Item = KeyRecord> + '_ {
        self.run(key).filter(move |&at| self.slots[at].id() == key).map(|at| self.record(at))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = KeyRecord> + '_ {
        (0..self.slots.len()).filter(|&at| self.slots[at].kind() != EMPTY).map(|at| self.record(at))
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

    /// A revocation can be written with chosen digest bytes: one sharing a key's first 16 bytes must neither stand
    /// in for the key nor let a third digest with that prefix through. Sharing makes both slots compare whole
    /// digests; a digest with the prefix of a plain slot alone would need a 128-bit SHA-256 second preimage.
    #[test]
    fn records_sharing_a_prefix_are_told_apart_by_the_whole_digest() {
        let mut table = KeyTable::with_capacity(4);
        let key = record(5, 1, 1);
        assert!(table.insert(key).is_none());
        assert_eq!(table.slots.iter().filter(|s| s.kind() == PLAIN).count(), 1);
        let mut forged = key;
        forged.digest.0[31] ^= 0xff;
        forged.policy = 2;
        forged.status = KeyStatus::Revoked { revoked_at: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() };
        assert!(table.insert(forged).is_none());
        assert_eq!(table.slots.iter().filter(|s| s.kind() == PLAIN).count(), 0, "both compare whole digests");
        assert_eq!(table.get(&key.digest).map(|r| (r.policy, r.status)), Some((1, key.status)));
        assert_eq!(table.get(&forged.digest).map(|r| (r.policy, r.status)), Some((2, forged.status)));
        let mut third = key.digest;
        third.0[20] ^= 1;
        assert!(table.get(&third).is_none());
        // Replacing one of them keeps both whole-digest: they still share the prefix.
        assert!(table.insert(KeyRecord { policy: 3, ..key }).is_some());
        assert_eq!(table.slots.iter().filter(|s| s.kind() == PLAIN).count(), 0);
        assert_eq!(table.get(&key.digest).map(|r| r.policy), Some(3));
        let mut all: Vec<_> = table.iter().map(|r| (r.digest.0, r.policy)).collect();
        all.sort();
        assert_eq!(all, vec![(key.digest.0, 3), (forged.digest.0, 2)]);
    }

    /// Random tables against a map keyed by whole digest: few key ids and few prefixes, so runs share ids,
    /// records share prefixes, and digests come back to be replaced (revoked, retiring, active again).
    #[test]
    fn lookups_agree_with_a_map_of_whole_digests() {
        let mut state = 0x2026_1204_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for round in 0..50 {
            let inserts = 1 + (next() % 60) as usize;
            let mut table = KeyTable::with_capacity(inserts);
            let mut model: std::collections::HashMap<[u8; 32], KeyRecord> = Default::default();
            // 5 ids x 3 prefixes per id x 4 tails per prefix: 60 digests.
            let digest_of = |r: u64| {
                let mut d = [0u8; 32];
                d[..8].copy_from_slice(&(r % 5).to_be_bytes());
                d[8] = (r / 5 % 3) as u8;
                d[31] = (r / 15 % 4) as u8;
                KeyDigest(d)
            };
            for _ in 0..inserts {
                let r = next();
                let at = t + chrono::Duration::seconds((r >> 24) as i64 % 1000);
                let status = match (r >> 40) % 3 {
                    0 => KeyStatus::Active { valid_from: at, valid_until: None },
                    1 => KeyStatus::Active { valid_from: at, valid_until: Some(at + chrono::Duration::hours(1)) },
                    _ => KeyStatus::Revoked { revoked_at: at },
                };
                // Four policies, so a policy can hold two records of one id (the walk by id and policy refuses).
                let record = KeyRecord { digest: digest_of(r), policy: ((r >> 50) % 4) as u32, status };
                let previous = table.insert(record).map(|p| (p.policy, p.status));
                assert_eq!(
                    previous,
                    model.insert(record.digest.0, record).map(|p| (p.policy, p.status)),
                    "round {round}"
                );
            }
            assert_eq!(table.len(), model.len());
            for r in 0..60 {
                let digest = digest_of(r);
                let sharing: Vec<_> = model.values().filter(|m| m.digest.0[..PREFIX] == digest.0[..PREFIX]).collect();
                let want = match (model.get(&digest.0), &sharing[..]) {
                    (Some(m), _) => Some((m.digest.0, m.policy, m.status)),
                    // Another digest with the 16 bytes of a plain record alone stands for it: in the wild that
                    // is a 128-bit SHA-256 second preimage. Any other digest is found by nothing.
                    (None, [only]) if matches!(only.status, KeyStatus::Active { valid_until: None, .. }) => {
                        Some((digest.0, only.policy, only.status))
                    }
                    (None, _) => None,
                };
                assert_eq!(table.get(&digest).map(|g| (g.digest.0, g.policy, g.status)), want, "round {round}");
            }
            for id in 0..5 {
                let mut got: Vec<_> = table.with_id(KeyRef(id)).map(|r| (r.digest.0, r.policy)).collect();
                let mut want: Vec<_> = model
                    .values()
                    .filter(|m| KeyRef::of(&m.digest) == KeyRef(id))
                    .map(|m| (m.digest.0, m.policy))
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "round {round}");
                for policy in 0..4 {
                    let owned: Vec<_> = want.iter().filter(|(_, p)| *p == policy).collect();
                    let only = match &owned[..] {
                        [(digest, _)] => Some(*digest),
                        _ => None,
                    };
                    let got = table.only_with_id(KeyRef(id), |p| p == policy).map(|r| r.digest.0);
                    assert_eq!(got, only, "round {round}, id {id}, policy {policy}");
                }
            }
            for at in 0..table.slots.len() {
                if table.slots[at].kind() != EMPTY {
                    let id = table.slots[at].id();
                    let others = table.iter().filter(|r| KeyRef::of(&r.digest) == id).count() > 1;
                    assert_eq!(table.slots[at].shared_id(), others, "round {round}: SHARED_ID of slot {at}");
                }
            }
            let mut all: Vec<_> = table.iter().map(|r| (r.digest.0, r.policy, format!("{:?}", r.status))).collect();
            let mut want: Vec<_> = model.values().map(|m| (m.digest.0, m.policy, format!("{:?}", m.status))).collect();
            all.sort();
            want.sort();
            assert_eq!(all, want, "round {round}");
        }
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
