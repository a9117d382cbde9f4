//! The signing-key ring and its rotation schedule, as pure functions of the clock.
//!
//! ```text
//!  time ─────────────────────────────────────────────────────────────────────────────────────▶
//!  k1  ├── signs ───────────────────────┤ verifies ── max_token_lifetime + 2·leeway ──┤ dropped
//!  k2                  ├ published ─────├── signs ─────────────────────────────────────────── …
//!                      ▲ generated      ▲ k2.activates_at = k1.activates_at + period
//!                        (publish_ahead before)
//! ```
//! A new key is published `publish_ahead` before it signs, so every agent (and every external verifier that
//! caches our JWKS) knows it before the first token it signs arrives. Agents switch signing keys on their own
//! clock at `activates_at`; no reconcile has to happen at that instant. A superseded key keeps verifying until
//! the longest token it can have signed has expired: a slow-clock agent may still sign with it up to `leeway`
//! after the switch, and verifiers accept up to `leeway` after `exp`, hence the two leeways.
//!
//! The operator's reconcile: `plan(now)`, `apply(plan, generator)`, store the ring, publish `jwks()`, then
//! requeue at `plan(now).next_check`. Applying a plan twice, or planning again right after, changes nothing.
use crate::claims::MAX_LIFETIME;
use crate::error::KeyError;
use crate::keys::{Jwks, PublicKey, SigningKey, StoredKey};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long each key signs before the next takes over.
    pub period: Duration,
    /// How long a key is published before it signs: longer than config propagation to every agent plus the
    /// JWKS cache time of external verifiers.
    pub publish_ahead: Duration,
    /// Longest lifetime any token is minted with (at least every lifetime passed to `mint`).
    pub max_token_lifetime: Duration,
    /// Clock skew allowed between hosts; the verifiers' leeway.
    pub leeway: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            period: Duration::from_secs(7 * 24 * 3600),
            publish_ahead: Duration::from_secs(3600),
            max_token_lifetime: MAX_LIFETIME,
            leeway: Duration::from_secs(60),
        }
    }
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl RotationPolicy {
    /// How long a key stays published after the next one starts signing.
    pub fn overlap(&self) -> Duration {
        self.max_token_lifetime + self.leeway * 2
    }
}

/// What the ring needs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPlan {
    /// Generate a key that starts signing at this instant.
    pub new_key_activates_at: Option<DateTime<Utc>>,
    /// Key ids whose overlap has ended.
    pub drop: Vec<String>,
    /// When the ring, as it is now, next needs a change (requeue then).
    pub next_check: DateTime<Utc>,
}

impl RotationPlan {
    pub fn is_empty(&self) -> bool {
        self.new_key_activates_at.is_none() && self.drop.is_empty()
    }
}

/// Signing keys ordered by `activates_at`: superseded keys (verify only), the current key, at most one pending.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

/// [`KeyRing`] as stored in the operator's Secret (one JSON value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRing {
    pub keys: Vec<StoredKey>,
}

impl KeyRing {
    pub fn new(first: SigningKey) -> KeyRing {
        KeyRing { keys: vec![first] }
    }

    /// A ring that signs from `now`, for a fresh install.
    pub fn bootstrap(now: DateTime<Utc>) -> KeyRing {
        Self::new(SigningKey::generate(now, now))
    }

    pub fn from_stored(stored: &StoredRing) -> Result<KeyRing, KeyError> {
        let mut keys = stored.keys.iter().map(SigningKey::from_stored).collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Invalid { kid: String::new(), reason: "the stored key ring is empty" });
        }
        keys.sort_by_key(|k| (k.activates_at(), k.created_at()));
        let mut kids: Vec<&str> = keys.iter().map(SigningKey::kid).collect();
        kids.sort_unstable();
        if let Some(twin) = kids.windows(2).find(|p| p[0] == p[1]) {
            return Err(KeyError::DuplicateKid(twin[0].to_owned()));
        }
        Ok(KeyRing { keys })
    }

    pub fn to_stored(&self) -> StoredRing {
        StoredRing { keys: self.keys.iter().map(SigningKey::to_stored).collect() }
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The key that signs at `now`: the newest already active (the oldest if the clock is behind all of them).
    pub fn signing_key(&self, now: DateTime<Utc>) -> &SigningKey {
        self.keys.iter().rev().find(|k| k.activates_at() <= now).unwrap_or(&self.keys[0])
    }

    /// Every public key of the ring, pending ones included: what agents and external verifiers must know.
    pub fn jwks(&self) -> Jwks {
        Jwks { keys: self.keys.iter().map(SigningKey::jwk).collect() }
    }

    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(|k| PublicKey::from_jwk(&k.jwk()).expect("our own JWKs load")).collect()
    }

    pub fn plan(&self, now: DateTime<Utc>, policy: &RotationPolicy) -> RotationPlan {
        let newest = self.keys.last().expect("a ring is never empty");
        // The next key is due when the newest has signed for `period`; only one key is ever pending.
        let due = add(newest.activates_at(), policy.period);
        let generate_at = sub(due, policy.publish_ahead).max(newest.activates_at());
        let new_key_activates_at =
            (now >= generate_at && newest.activates_at() <= now).then(|| due.max(add(now, policy.publish_ahead)));

        let mut next_check = match new_key_activates_at {
            // The newest key's overlap starts when the new one signs; the new one's successor is due a period on.
            Some(activates_at) => {
                add(activates_at, policy.overlap()).min(sub(add(activates_at, policy.period), policy.publish_ahead))
            }
            None => generate_at,
        };
        let mut drop = Vec::new();
        for pair in self.keys.windows(2) {
            // A key is superseded when its successor activates; it may go once its overlap has passed.
            let drop_at = add(pair[1].activates_at(), policy.overlap());
            if now >= drop_at {
                drop.push(pair[0].kid().to_owned());
            } else {
                next_check = next_check.min(drop_at);
            }
        }
        RotationPlan { new_key_activates_at, drop, next_check: next_check.max(now) }
    }

    /// Carries out `plan`. `generate(created_at, activates_at)` makes the new key (randomness stays out of the
    /// schedule, so tests can count calls). Dropping a key the plan names but the ring no longer has is a no-op.
    pub fn apply(
        &mut self,
        plan: &RotationPlan,
        now: DateTime<Utc>,
        generate: impl FnOnce(DateTime<Utc>, DateTime<Utc>) -> SigningKey,
    ) {
        self.keys.retain(|k| !plan.drop.iter().any(|d| d == k.kid()));
        if let Some(activates_at) = plan.new_key_activates_at {
            self.keys.push(generate(now, activates_at));
            self.keys.sort_by_key(|k| (k.activates_at(), k.created_at()));
        }
    }
}

/// One reconcile of the ring at `now`: bootstrap it when there is none, else plan and apply. Returns the ring,
/// whether it changed (and must be stored and published again), and when it next needs a look. What the operator
/// runs against its Secret and standalone mode against its state file.
pub fn rotate(ring: Option<KeyRing>, policy: &RotationPolicy, now: DateTime<Utc>) -> (KeyRing, bool, DateTime<Utc>) {
    let (mut ring, mut changed) = match ring {
        Some(ring) => (ring, false),
        None => (KeyRing::bootstrap(now), true),
    };
    let plan = ring.plan(now, policy);
    if !plan.is_empty() {
        ring.apply(&plan, now, SigningKey::generate);
        changed = true;
    }
    let next_check = ring.plan(now, policy).next_check;
    (ring, changed, next_check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn at(offset: Duration) -> DateTime<Utc> {
        add(t0(), offset)
    }

    /// Weekly keys, published an hour ahead, tokens of at most 15 min, a minute of skew.
    fn policy() -> RotationPolicy {
        RotationPolicy {
            period: 7 * DAY,
            publish_ahead: HOUR,
            max_token_lifetime: Duration::from_secs(900),
            leeway: Duration::from_secs(60),
        }
    }

    /// Plans and applies at `now`; returns the plan.
    fn reconcile(ring: &mut KeyRing, now: DateTime<Utc>) -> RotationPlan {
        let plan = ring.plan(now, &policy());
        ring.apply(&plan, now, SigningKey::generate);
        plan
    }

    fn no_generation(_: DateTime<Utc>, _: DateTime<Utc>) -> SigningKey {
        panic!("the schedule asked for a key it did not plan")
    }

    #[test]
    fn a_fresh_ring_needs_nothing_until_publish_ahead_before_the_period_ends() {
        let ring = KeyRing::bootstrap(t0());
        let plan = ring.plan(at(DAY), &policy());
        assert_eq!(plan, RotationPlan { new_key_activates_at: None, drop: vec![], next_check: at(7 * DAY - HOUR) });
    }

    #[test]
    fn the_next_key_is_generated_publish_ahead_before_it_signs() {
        let mut ring = KeyRing::bootstrap(t0());
        let plan = reconcile(&mut ring, at(7 * DAY - HOUR));
        assert_eq!(plan.new_key_activates_at, Some(at(7 * DAY)));
        assert_eq!(ring.keys().len(), 2);
        let (old, new) = (ring.keys()[0].kid().to_owned(), ring.keys()[1].kid().to_owned());
        // Published at once, signing only from activation.
        assert_eq!(ring.jwks().keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), [&old, &new]);
        assert_eq!(ring.signing_key(at(7 * DAY) - chrono::Duration::seconds(1)).kid(), old);
        assert_eq!(ring.signing_key(at(7 * DAY)).kid(), new);
    }

    #[test]
    fn planning_again_after_applying_changes_nothing() {
        let mut ring = KeyRing::bootstrap(t0());
        reconcile(&mut ring, at(7 * DAY - HOUR));
        let again = ring.plan(at(7 * DAY - HOUR), &policy());
        assert!(again.is_empty(), "{again:?}");
        ring.apply(&again, at(7 * DAY - HOUR), no_generation);
        assert_eq!(ring.keys().len(), 2);
        // Next: the old key's overlap ends 15 min + 2 min after the new key activates.
        assert_eq!(again.next_check, at(7 * DAY + Duration::from_secs(17 * 60)));
    }

    #[test]
    fn the_old_public_key_stays_until_its_longest_token_has_expired() {
        let mut ring = KeyRing::bootstrap(t0());
        let old = ring.keys()[0].kid().to_owned();
        reconcile(&mut ring, at(7 * DAY - HOUR));
        let drop_at = at(7 * DAY + policy().overlap());
        assert!(ring.plan(drop_at - chrono::Duration::seconds(1), &policy()).drop.is_empty());
        let plan = reconcile(&mut ring, drop_at);
        assert_eq!(plan.drop, [old]);
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(plan.next_check, at(14 * DAY - HOUR));
    }

    #[test]
    fn a_late_reconcile_still_publishes_ahead() {
        // The operator was down across the due time: the new key activates publish_ahead from now, not in the
        // past, so no agent sees a token from a key it has not been given.
        let mut ring = KeyRing::bootstrap(t0());
        let late = at(8 * DAY);
        let plan = reconcile(&mut ring, late);
        assert_eq!(plan.new_key_activates_at, Some(add(late, HOUR)));
        assert_eq!(ring.signing_key(late).kid(), ring.keys()[0].kid());
    }

    #[test]
    fn a_reconcile_after_a_long_outage_drops_and_generates_in_one_pass() {
        let mut ring = KeyRing::bootstrap(t0());
        reconcile(&mut ring, at(7 * DAY - HOUR));
        let plan = reconcile(&mut ring, at(30 * DAY));
        assert_eq!(plan.drop.len(), 1);
        assert!(plan.new_key_activates_at.is_some());
        assert_eq!(ring.keys().len(), 2);
    }

    #[test]
    fn rotate_bootstraps_once_then_waits_for_the_schedule() {
        let (ring, changed, next) = rotate(None, &policy(), t0());
        assert!(changed);
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(next, at(7 * DAY - HOUR));
        let (same, changed, _) = rotate(Some(ring.clone()), &policy(), at(DAY));
        assert!(!changed);
        assert_eq!(same.jwks(), ring.jwks());
        let (rotated, changed, _) = rotate(Some(ring), &policy(), next);
        assert!(changed);
        assert_eq!(rotated.keys().len(), 2);
    }

    #[test]
    fn stored_ring_round_trips() {
        let mut ring = KeyRing::bootstrap(t0());
        reconcile(&mut ring, at(7 * DAY - HOUR));
        let json = serde_json::to_string(&ring.to_stored()).unwrap();
        let back = KeyRing::from_stored(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.jwks(), ring.jwks());
        assert_eq!(back.signing_key(at(7 * DAY)).kid(), ring.signing_key(at(7 * DAY)).kid());
    }

    #[test]
    fn empty_or_duplicated_stored_rings_are_refused() {
        assert!(KeyRing::from_stored(&StoredRing { keys: vec![] }).is_err());
        let key = SigningKey::generate(t0(), t0()).to_stored();
        let twins = StoredRing { keys: vec![key.clone(), key] };
        assert!(matches!(KeyRing::from_stored(&twins), Err(KeyError::DuplicateKid(_))));
    }
}
