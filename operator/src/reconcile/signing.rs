//! The session-token signing keys of the installation: generated once, rotated on schedule, published to agents.
//!
//! ```text
//!  leader only, after the caches sync; every minute, or at the ring's next_check if sooner:
//!    GET Secret infergate-cfg-signing-keys (config namespace; read directly, never from a cache)
//!      absent      ─▶ rotate(None)  = bootstrap ─▶ create (409: another writer was first, read it next round)
//!      present     ─▶ rotate(ring)  ─▶ changed? ─▶ server-side apply
//!      unreadable  ─▶ nothing is written (a new ring would invalidate every token); logged and counted
//!  agents watch the same Secret (label component=gateway-config, kind signing) ─▶ Tokens::set_ring
//! ```
//! The Secret is the record and the publication at once: a restarted or newly elected operator reads the ring
//! back from it and never generates a second one while it exists. Only a deleted Secret is regenerated, which
//! invalidates every token minted so far (documented in docs/operations.md).
use super::context::Context;
use chrono::{DateTime, Utc};
use infergate_crds::gateway::{SHARD_DATA_KEY, SHARD_SCHEMA_VERSION, SIGNING_SHARD_SECRET, Shard, SigningShard};
use infergate_token::{KeyRing, RotationPolicy, SigningKey, StoredRing};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::sync::Arc;
use std::time::Duration;

/// Re-read at least this often: a deleted Secret is recreated, and a rotation is never later than this.
const RECHECK: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(10);
/// The `kind` label of this task's reconcile metrics.
const METRIC_KIND: &str = "signingkeys";

/// What the reconcile does with the Secret it read.
#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    /// The ring is current; look again at this instant.
    Keep { next_check: DateTime<Utc> },
    /// Create the Secret with this ring (there was none).
    Create { ring: StoredRing, next_check: DateTime<Utc> },
    /// Replace the ring with this one (it rotated).
    Update { ring: StoredRing, next_check: DateTime<Utc> },
    /// The Secret exists but holds no usable ring: write nothing. A fixed reason, no key material.
    Unreadable { reason: &'static str },
}

/// The stored ring in a signing shard Secret, or why there is none usable.
fn read_ring(secret: &Secret) -> Result<KeyRing, &'static str> {
    let bytes = secret.data.as_ref().and_then(|d| d.get(SHARD_DATA_KEY)).ok_or("the Secret has no shard.json")?;
    match Shard::from_json(&bytes.0).map_err(|e| e.category())? {
        Shard::Signing(shard) => KeyRing::from_stored(&shard.ring).map_err(|e| e.category()),
        _ => Err("the Secret holds another kind of shard"),
    }
}

/// The pure step: the Secret as read (or `None`), the clock, the schedule.
pub(super) fn decide(
    secret: Option<&Secret>,
    now: DateTime<Utc>,
    policy: &RotationPolicy,
    generate: impl Fn(DateTime<Utc>, DateTime<Utc>) -> SigningKey,
) -> Decision {
    let existing = match secret.map(read_ring).transpose() {
        Ok(ring) => ring,
        Err(reason) => return Decision::Unreadable { reason },
    };
    let created = existing.is_none();
    let mut ring = existing.unwrap_or_else(|| KeyRing::new(generate(now, now)));
    let plan = ring.plan(now, policy);
    let rotated = !plan.is_empty();
    if rotated {
        ring.apply(&plan, now, &generate);
    }
    let next_check = ring.plan(now, policy).next_check;
    match (created, rotated) {
        (true, _) => Decision::Create { ring: ring.to_stored(), next_check },
        (false, true) => Decision::Update { ring: ring.to_stored(), next_check },
        (false, false) => Decision::Keep { next_check },
    }
}

/// The Secret that carries `ring`, labelled like every shard so agents pick it up.
pub(super) fn signing_secret(ring: StoredRing, namespace: &str) -> Secret {
    let shard = Shard::Signing(SigningShard { schema_version: SHARD_SCHEMA_VERSION, ring });
    infergate_compile::publish::shard_secret(&shard, namespace)
}

pub(super) async fn run(ctx: Arc<Context>) {
    if ctx.wait_synced().await.is_err() {
        return;
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config_namespace);
    let policy = RotationPolicy::default();
    loop {
        let wait = match step(&ctx, &api, &policy).await {
            Ok(next_check) => (next_check - Utc::now()).to_std().unwrap_or(Duration::ZERO).clamp(RETRY / 10, RECHECK),
            Err(category) => {
                ctx.metrics.reconcile_failed(METRIC_KIND, category);
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One reconcile; returns when to look again, or the failure's metric category.
async fn step(ctx: &Context, api: &Api<Secret>, policy: &RotationPolicy) -> Result<DateTime<Utc>, &'static str> {
    let _timer = ctx.metrics.reconcile_started(METRIC_KIND);
    let secret = api.get_opt(SIGNING_SHARD_SECRET).await.map_err(|err| {
        tracing::warn!(secret = SIGNING_SHARD_SECRET, error = %err, "cannot read the signing-key Secret; retrying");
        "signing_read"
    })?;
    let namespace = &ctx.config_namespace;
    let (ring, next_check, created) = match decide(secret.as_ref(), Utc::now(), policy, SigningKey::generate) {
        Decision::Keep { next_check } => return Ok(next_check),
        Decision::Unreadable { reason } => {
            tracing::error!(
                secret = SIGNING_SHARD_SECRET,
                namespace = %namespace,
                reason,
                "the signing-key Secret holds no usable key ring; not replacing it (that would invalidate every \
                 session token). Fix or delete the Secret to have a new ring generated"
            );
            return Err("signing_unreadable");
        }
        Decision::Create { ring, next_check } => (ring, next_check, true),
        Decision::Update { ring, next_check } => (ring, next_check, false),
    };
    let kids: Vec<String> = ring.keys.iter().map(|k| k.kid.clone()).collect();
    let desired = signing_secret(ring, namespace);
    let written = if created {
        match crate::kube_apply::create_secret(api, &desired).await {
            // Another writer created it between our read and this create: read theirs next round.
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Utc::now()),
            other => other,
        }
    } else {
        crate::kube_apply::apply_secret(api, &desired).await
    };
    written.map_err(|err| {
        tracing::warn!(secret = SIGNING_SHARD_SECRET, error = %err, "cannot write the signing-key Secret; retrying");
        "signing_write"
    })?;
    tracing::info!(
        target: "infergate::audit",
        event = if created { "signing_keys_generated" } else { "signing_keys_rotated" },
        secret = SIGNING_SHARD_SECRET,
        namespace = %namespace,
        key_ids = ?kids,
        next_check = %next_check,
        "session-token signing keys written"
    );
    Ok(next_check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::cell::Cell;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn no_generation(_: DateTime<Utc>, _: DateTime<Utc>) -> SigningKey {
        panic!("a ring that exists must never be regenerated")
    }

    fn bootstrapped() -> (Secret, StoredRing) {
        let Decision::Create { ring, .. } = decide(None, t0(), &RotationPolicy::default(), SigningKey::generate) else {
            panic!("no Secret: the ring is created");
        };
        (signing_secret(ring.clone(), "infergate-system"), ring)
    }

    #[test]
    fn without_a_secret_one_key_is_generated_and_published_as_a_signing_shard() {
        let (secret, ring) = bootstrapped();
        assert_eq!(ring.keys.len(), 1);
        assert_eq!(secret.metadata.name.as_deref(), Some(SIGNING_SHARD_SECRET));
        let labels = secret.metadata.labels.clone().unwrap();
        assert_eq!(labels["infergate.dev/component"], "gateway-config");
        assert_eq!(labels["infergate.dev/shard-kind"], "signing");
        assert!(!labels.contains_key("infergate.dev/owner-name"));
        assert_eq!(read_ring(&secret).unwrap().jwks(), KeyRing::from_stored(&ring).unwrap().jwks());
    }

    #[test]
    fn an_existing_ring_is_read_back_and_kept() {
        let (secret, _) = bootstrapped();
        let later = t0() + chrono::Duration::days(1);
        let decision = decide(Some(&secret), later, &RotationPolicy::default(), no_generation);
        assert_eq!(
            decision,
            Decision::Keep { next_check: t0() + chrono::Duration::days(7) - chrono::Duration::hours(1) }
        );
    }

    #[test]
    fn a_due_rotation_adds_exactly_one_key() {
        let (secret, ring) = bootstrapped();
        let due = t0() + chrono::Duration::days(7) - chrono::Duration::hours(1);
        let generated = Cell::new(0);
        let generate = |created, activates| {
            generated.set(generated.get() + 1);
            SigningKey::generate(created, activates)
        };
        let Decision::Update { ring: rotated, .. } = decide(Some(&secret), due, &RotationPolicy::default(), generate)
        else {
            panic!("the rotation is due");
        };
        assert_eq!(generated.get(), 1);
        assert_eq!(rotated.keys.len(), 2);
        assert_eq!(rotated.keys[0], ring.keys[0], "the current key stays, unchanged");
    }

    #[test]
    fn an_unreadable_secret_is_never_replaced() {
        let (mut secret, _) = bootstrapped();
        secret.data.as_mut().unwrap().insert(SHARD_DATA_KEY.into(), k8s_openapi::ByteString(b"{".to_vec()));
        let decision = decide(Some(&secret), t0(), &RotationPolicy::default(), no_generation);
        assert_eq!(decision, Decision::Unreadable { reason: "malformed" });
        secret.data = None;
        let decision = decide(Some(&secret), t0(), &RotationPolicy::default(), no_generation);
        assert_eq!(decision, Decision::Unreadable { reason: "the Secret has no shard.json" });
    }
}
