//! The immutable gateway config an agent runs: built once from the operator's shards, swapped atomically.
//!
//! ```text
//!  shards (policy, endpoint) ──build──▶ Snapshot { keys: KeyTable (digest ─▶ KeyRecord ─▶ policy index),
//!                                                  endpoints by model, policies, revision }
//!                          readers: arc_swap load (no lock) ─▶ admission::admit(&snapshot, ...)
//! ```
//! Keys are indexed by their full SHA-256 digest in [`crate::key_table`]: found by the first 8 bytes (the bits
//! of the [`KeyId`]) and matched on the whole digest in constant time. A record that merely shares a key id
//! (anyone can write a digest with a known id's bits) never shadows another key.
use crate::key_table::KeyTable;
use chrono::{DateTime, Utc};
use infergate_crds::NamespacedName;
use infergate_crds::endpoint::Feature;
use infergate_crds::gateway::{EndpointLimits, EndpointShard, PolicyShard, Shard, TierLimits};
use infergate_crds::key::{Environment, KeyDigest, KeyId};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A key's handle: the first 8 digest bytes, i.e. the numeric form of its [`KeyId`]. Copy, hashable, loggable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRef(pub u64);

impl KeyRef {
    pub fn of(digest: &KeyDigest) -> Self {
        KeyRef(u64::from_be_bytes(digest.0[..8].try_into().expect("8 bytes")))
    }
    pub fn key_id(self) -> KeyId {
        KeyId(self.to_string())
    }
    /// The handle named by a key id, `kid_` + 16 lowercase hex (as a session token's `client_id` carries it).
    pub fn parse(key_id: &str) -> Option<Self> {
        let hex = key_id.strip_prefix("kid_")?;
        if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(KeyRef)
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kid_{:016x}", self.0)
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Identity hasher for [`KeyRef`]s, which are already uniformly distributed digest bits.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys, which this map never uses; fold bytes in anyway so it stays correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type KeyMap<V> = HashMap<KeyRef, V, BuildHasherDefault<IdentityHasher>>;

/// A set of [`Feature`]s as a bit mask, so scope checks do not allocate or scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureSet(u8);

impl FeatureSet {
    pub fn bit(f: Feature) -> u8 {
        match f {
            Feature::Transcribe => 1,
            Feature::Embed => 2,
            Feature::Verify => 4,
            Feature::Vad => 8,
        }
    }
    pub fn of(features: &[Feature]) -> Self {
        FeatureSet(features.iter().fold(0, |acc, f| acc | Self::bit(*f)))
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, f: Feature) -> bool {
        self.0 & Self::bit(f) != 0
    }
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        [Feature::Transcribe, Feature::Embed, Feature::Verify, Feature::Vad]
            .into_iter()
            .filter(move |f| self.contains(*f))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyStatus {
    /// Accepted between `valid_from` and `valid_until` (a retiring key's overlap end).
    Active { valid_from: DateTime<Utc>, valid_until: Option<DateTime<Utc>> },
    /// Never accepted; kept to answer "revoked" rather than "unknown" and to close open streams.
    Revoked { revoked_at: DateTime<Utc> },
}

#[derive(Clone, Copy, Debug)]
pub struct KeyRecord {
    pub digest: KeyDigest,
    pub policy: u32,
    pub status: KeyStatus,
}

/// One policy as the gateway applies it.
///
/// `repr(C)`, hot fields first: every admission reads the validity and scope fields, and with the compiler's
/// order they sat ~400 bytes from the `Arc`'s counts, which the grant's clone also touches: two cache lines
/// where one will do at 100k keys, when the policy is rarely still in L1.
#[derive(Debug)]
#[repr(C)]
pub struct PolicyConfig {
    pub expires_at: Option<DateTime<Utc>>,
    /// (endpoint index, allowed features) pairs; a handful per policy, so a linear scan beats a map.
    pub scopes: Vec<(u32, FeatureSet)>,
    pub suspended: bool,
    pub environment: Environment,
    /// Stable across snapshots and key rotations (hash of `namespace/name`): the policy's buckets and stream
    /// slots are keyed by it, so a rotated key, or both keys of an overlap window, share one budget.
    pub bucket_id: u64,
    pub tier: TierLimits,
    pub name: NamespacedName,
    pub allowed_origins: Vec<String>,
    pub allow_client_embeddings: bool,
    /// Mutual TLS for this policy's keys: which verified client certificates are accepted.
    pub require_client_certificate: Option<infergate_crds::policy::ClientCertificateRequirement>,
    /// The policy's `spec.redaction`, parsed; applied on top of each endpoint's.
    pub redaction: crate::redaction::Configured,
    /// The policy's current key (not a retiring one): what tokens of a trusted external issuer are charged to.
    pub current_key: Option<KeyDigest>,
    /// External token issuers the policy trusts (`spec.trustedIssuers`).
    pub trusted_issuers: Vec<infergate_crds::policy::TrustedIssuer>,
}

impl PolicyConfig {
    pub fn scope_for(&self, endpoint: u32) -> Option<FeatureSet> {
        self.scopes.iter().find(|(e, _)| *e == endpoint).map(|(_, f)| *f)
    }

    /// `*` allows every Origin; otherwise an exact, case-insensitive match of `scheme://host[:port]`.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin.trim_end_matches('/')))
    }
}

/// One endpoint as the gateway serves it.
#[derive(Debug)]
pub struct EndpointConfig {
    pub index: u32,
    /// Stable across snapshots (hash of `namespace/name`), unlike `index`: counters are keyed by it.
    pub bucket_id: u64,
    pub shard: EndpointShard,
    /// `namespace/name`: the metric label and the key of tier overrides.
    pub label: String,
    pub features: FeatureSet,
    /// The endpoint's `spec.redaction`, parsed.
    pub redaction: crate::redaction::Configured,
}

/// Options that come from the agent, not from the config.
#[derive(Clone, Debug, Default)]
pub struct SnapshotOptions {
    /// When set, only keys of this environment are accepted (a live-only production agent).
    pub environment: Option<Environment>,
    /// This agent's node (cluster mode). An endpoint with a `nodeSelector` whose shard does not list this node
    /// is served by other agents: requests for its model get `served_elsewhere`, naming the endpoint's Service.
    /// `None` (standalone): every endpoint is served here.
    pub node_name: Option<String>,
    /// The namespace of the per-endpoint Services (the operator's), for the `served_elsewhere` message.
    pub service_namespace: Option<String>,
}

/// A problem found while building; the offending shard part is skipped, the rest is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildWarning(pub String);

#[derive(Debug)]
pub struct Snapshot {
    /// Hash over the shard revisions, published on the agent's Lease.
    pub revision: String,
    /// Records by digest, one cache line each.
    keys: KeyTable,
    policies: Vec<Arc<PolicyConfig>>,
    endpoints: Vec<Arc<EndpointConfig>>,
    /// Looked up for every request by the client's model name: foldhash, seeded per process.
    by_model: HashMap<String, u32, foldhash::fast::RandomState>,
    /// Models of endpoints whose `nodeSelector` excludes this agent's node, with the endpoint.
    elsewhere: HashMap<String, NamespacedName>,
    /// (policy, issuer) for every policy's `trustedIssuers`: a handful at most, scanned.
    issuers: Vec<(u32, String)>,
    pub options: SnapshotOptions,
}

/// A stable 64-bit id for a `namespace/name` label (the first 8 bytes of its SHA-256).
fn stable_id(label: &str) -> u64 {
    u64::from_be_bytes(KeyDigest::of(label).0[..8].try_into().expect("8 bytes"))
}

impl Snapshot {
    pub fn empty() -> Self {
        Self::build(&[], SnapshotOptions::default()).0
    }

    /// Builds the snapshot from every shard the agent sees. Order does not matter. Policy scopes that name an
    /// endpoint without a shard are dropped (the key cannot reach an endpoint this agent does not know).
    pub fn build<'a>(
        shards: impl IntoIterator<Item = &'a Shard>,
        options: SnapshotOptions,
    ) -> (Self, Vec<BuildWarning>) {
        let revised: Vec<(&Shard, String)> = shards.into_iter().map(|s| (s, s.revision())).collect();
        Self::build_revised(revised.iter().map(|(s, r)| (*s, r.as_str())), options)
    }

    /// [`build`](Self::build) with each shard's revision already known. A shard's revision hashes its whole JSON
    /// (100k key entries are ~20 MB of it), and was most of a rebuild's time; the cluster-mode agent computes it
    /// once when a shard arrives, so a change re-hashes only the shard that changed.
    pub fn build_revised<'a>(
        shards: impl IntoIterator<Item = (&'a Shard, &'a str)>,
        options: SnapshotOptions,
    ) -> (Self, Vec<BuildWarning>) {
        let shards: Vec<(&Shard, &str)> = shards.into_iter().collect();
        let mut warnings = Vec::new();
        let mut endpoint_shards: Vec<&EndpointShard> = Vec::new();
        let mut policy_shards: Vec<&PolicyShard> = Vec::new();
        for (shard, _) in &shards {
            match shard {
                Shard::Endpoint(e) => endpoint_shards.push(e),
                Shard::Policy(p) => policy_shards.push(p),
                // The agent's token signer reads it (`Tokens::set_ring`); it still counts in the revision below.
                Shard::Signing(_) => {}
            }
        }
        endpoint_shards.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        policy_shards.sort_by(|a, b| a.policy.cmp(&b.policy));

        let mut endpoints = Vec::new();
        let mut by_model = HashMap::default();
        let mut by_name = HashMap::new();
        let mut elsewhere: HashMap<String, NamespacedName> = HashMap::new();
        for e in endpoint_shards {
            let here = infergate_crds::gateway::served_on(e, options.node_name.as_deref());
            if !here {
                elsewhere.entry(e.model.clone()).or_insert_with(|| e.endpoint.clone());
                continue;
            }
            let index = endpoints.len() as u32;
            if let Some(other) = by_model.get(&e.model) {
                let other: &Arc<EndpointConfig> = &endpoints[*other as usize];
                warnings.push(BuildWarning(format!(
                    "endpoint {} serves model {:?}, already served by {}; ignoring it (model names must be unique)",
                    e.endpoint, e.model, other.label
                )));
                continue;
            }
            by_model.insert(e.model.clone(), index);
            by_name.insert(e.endpoint.clone(), index);
            let label = e.endpoint.to_string();
            let bucket_id = stable_id(&label);
            endpoints.push(Arc::new(EndpointConfig {
                index,
                bucket_id,
                label,
                features: FeatureSet::of(&e.features),
                redaction: crate::redaction::Configured::parse(e.redaction.as_ref()),
                shard: e.clone(),
            }));
        }

        let records = policy_shards.iter().map(|p| p.keys.len() + p.revoked.len()).sum();
        let mut keys = KeyTable::with_capacity(records);
        let mut policies = Vec::new();
        let mut issuers = Vec::new();
        let mut revisions: Vec<&str> = shards.iter().map(|(_, r)| *r).collect();
        revisions.sort_unstable();
        for p in policy_shards {
            let index = policies.len() as u32;
            let scopes = p
                .scopes
                .iter()
                .filter_map(|s| match by_name.get(&s.endpoint) {
                    Some(i) => Some((*i, FeatureSet::of(&s.features))),
                    // Served on other nodes: expected, not a problem.
                    None if elsewhere.values().any(|e| *e == s.endpoint) => None,
                    None => {
                        warnings.push(BuildWarning(format!(
                            "policy {} names endpoint {} which has no shard here; that scope is inactive",
                            p.policy, s.endpoint
                        )));
                        None
                    }
                })
                .collect();
            policies.push(Arc::new(PolicyConfig {
                bucket_id: stable_id(&p.policy.to_string()),
                name: p.policy.clone(),
                environment: p.environment,
                tier: p.tier.clone(),
                suspended: p.suspended,
                expires_at: p.expires_at,
                scopes,
                allowed_origins: p.allowed_origins.clone(),
                allow_client_embeddings: p.allow_client_embeddings,
                require_client_certificate: p.require_client_certificate.clone(),
                redaction: crate::redaction::Configured::parse(p.redaction.as_ref()),
                current_key: p
                    .keys
                    .iter()
                    .filter(|k| k.state == infergate_crds::policy::KeyState::Current)
                    .max_by_key(|k| k.valid_from)
                    .map(|k| k.digest),
                trusted_issuers: p.trusted_issuers.clone(),
            }));
            for trusted in &p.trusted_issuers {
                issuers.push((index, trusted.issuer.clone()));
            }
            for k in &p.keys {
                let record = KeyRecord {
                    digest: k.digest,
                    policy: index,
                    status: KeyStatus::Active { valid_from: k.valid_from, valid_until: k.valid_until },
                };
                if let Some(previous) = keys.insert(record) {
                    warnings.push(BuildWarning(format!(
                        "key {} appears twice (policy {}); keeping the later entry",
                        k.key_id, policies[previous.policy as usize].name
                    )));
                }
            }
            // Revocations win over any active entry for the same digest: refusing is the safe side.
            for r in &p.revoked {
                let status = KeyStatus::Revoked { revoked_at: r.revoked_at };
                keys.insert(KeyRecord { digest: r.digest, policy: index, status });
            }
        }
        let revision = infergate_crds::gateway::revision_of(revisions.join(",").as_bytes());
        // A model served here is not "elsewhere", whatever other endpoints of it exist on other nodes.
        elsewhere.retain(|model, _| !by_model.contains_key(model));
        (Snapshot { revision, keys, policies, endpoints, by_model, elsewhere, issuers, options }, warnings)
    }

    /// The record of the key with exactly this digest (compared in constant time; for an ordinary key, its
    /// first 128 bits: see `key_table`), if any.
    pub fn key_by_digest(&self, digest: &KeyDigest) -> Option<KeyRecord> {
        self.keys.get(digest)
    }

    /// The record of the key with these id bits in policy `policy` (`namespace/name`): how a session token, which
    /// names its key by id and policy but never carries its digest, finds the key it was minted from. `None` when
    /// no record, or more than one, matches (two keys of one policy sharing 64 digest bits: refuse, never guess).
    pub fn key_in_policy(&self, key: KeyRef, policy: &str) -> Option<KeyRecord> {
        let (namespace, name) = policy.split_once('/')?;
        self.keys.only_with_id(key, |p| {
            let owner = &self.policies[p as usize].name;
            owner.namespace == namespace && owner.name == name
        })
    }

    /// The first record whose digest starts with these bits. Ambiguous when two digests share them, so a caller
    /// that holds the digest authenticates with [`key_by_digest`](Self::key_by_digest) instead.
    pub fn key(&self, key: KeyRef) -> Option<KeyRecord> {
        self.keys.with_id(key).next()
    }
    /// The policies that trust external issuer `iss`, with that issuer's entry.
    pub fn trusting(
        &self,
        iss: &str,
    ) -> impl Iterator<Item = (&Arc<PolicyConfig>, &infergate_crds::policy::TrustedIssuer)> {
        self.issuers.iter().filter(move |(_, i)| i == iss).filter_map(|(p, i)| {
            let policy = &self.policies[*p as usize];
            policy.trusted_issuers.iter().find(|t| &t.issuer == i).map(|t| (policy, t))
        })
    }

    /// Every distinct JWKS URI of the trusted issuers, with whether plain HTTP is allowed for it.
    pub fn jwks_uris(&self) -> Vec<(String, bool)> {
        let mut uris: Vec<(String, bool)> = self
            .policies
            .iter()
            .flat_map(|p| p.trusted_issuers.iter().map(|t| (t.jwks_uri.clone(), t.allow_insecure_http)))
            .collect();
        uris.sort();
        uris.dedup();
        uris
    }

    pub fn policy(&self, index: u32) -> &Arc<PolicyConfig> {
        &self.policies[index as usize]
    }
    pub fn policies(&self) -> &[Arc<PolicyConfig>] {
        &self.policies
    }
    pub fn endpoint(&self, index: u32) -> &Arc<EndpointConfig> {
        &self.endpoints[index as usize]
    }
    pub fn endpoints(&self) -> &[Arc<EndpointConfig>] {
        &self.endpoints
    }
    /// The endpoint that serves `model` on other nodes, when no endpoint here does.
    pub fn served_elsewhere(&self, model: &str) -> Option<&NamespacedName> {
        self.elsewhere.get(model)
    }
    pub fn endpoint_by_model(&self, model: &str) -> Option<&Arc<EndpointConfig>> {
        self.by_model.get(model).map(|i| &self.endpoints[*i as usize])
    }
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Revoked key ids, most recent first, for the agent's Lease.
    pub fn revoked_key_ids(&self, max: usize) -> Vec<KeyId> {
        let mut revoked: Vec<(DateTime<Utc>, KeyRef)> = self
            .keys
            .iter()
            .filter_map(|r| match r.status {
                KeyStatus::Revoked { revoked_at } => Some((revoked_at, KeyRef::of(&r.digest))),
                KeyStatus::Active { .. } => None,
            })
            .collect();
        revoked.sort_by(|a, b| b.cmp(a));
        revoked.into_iter().take(max).map(|(_, k)| k.key_id()).collect()
    }

    /// The limits for a policy's key on one endpoint (tier defaults merged with the endpoint override).
    pub fn limits(&self, policy: &PolicyConfig, endpoint: &EndpointConfig) -> EndpointLimits {
        policy.tier.for_endpoint(&endpoint.shard.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{key, mk_policy, t0};
    use infergate_crds::gateway::RevokedKey;

    /// A digest sharing only `of`'s first 8 bytes, i.e. its key id: anyone who has seen the id can write one.
    fn same_key_id(of: &KeyDigest) -> KeyDigest {
        let mut twin = *of;
        twin.0[8..].iter_mut().for_each(|b| *b = !*b);
        twin
    }

    fn snapshot_with_forged_twins() -> (Snapshot, KeyDigest) {
        let victim = key(1);
        let Shard::Policy(mut attacker) = mk_policy("zz-mallory").key(&key(2)).shard() else {
            unreachable!("a policy builder builds policy shards")
        };
        let twin = same_key_id(&victim.digest());
        attacker.revoked.push(RevokedKey { key_id: victim.id(), digest: twin, revoked_at: t0() });
        let shards = [mk_policy("app").key(&victim).shard(), Shard::Policy(attacker)];
        (Snapshot::build(&shards, SnapshotOptions::default()).0, twin)
    }

    #[test]
    fn a_record_sharing_a_key_id_does_not_shadow_the_key() {
        let (snapshot, _) = snapshot_with_forged_twins();
        let record = snapshot.key_by_digest(&key(1).digest()).expect("the victim's key is still indexed");
        assert_eq!(record.digest, key(1).digest());
        assert!(matches!(record.status, KeyStatus::Active { .. }), "{:?}", record.status);
        assert_eq!(snapshot.policy(record.policy).name, NamespacedName::new("default", "app"));
    }

    #[test]
    fn records_sharing_a_key_id_are_both_kept() {
        let (snapshot, twin) = snapshot_with_forged_twins();
        assert_eq!(snapshot.key_count(), 3);
        let forged = snapshot.key_by_digest(&twin).expect("the forged record is indexed under its own digest");
        assert_eq!(snapshot.policy(forged.policy).name, NamespacedName::new("default", "zz-mallory"));
    }
}
