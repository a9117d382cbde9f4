//! Stream slots: the concurrent-stream caps a stream holds while it is open.
//!
//! ```text
//!  open ─▶ end user's slot (tier endUser.maxConcurrentStreams, when the token acts for a user)
//!       ─▶ key's slot (tier maxConcurrentStreams, per policy and endpoint)            ─▶ StreamSlot
//!  token stream (tier oneStreamPerToken) ─▶ the token's jti slot (cap 1)             ─▶ StreamSlot
//! ```
//! Every count lives in the counter store, so with a shared store the caps hold across agents. A slot taken
//! before a later one is refused is given back at once (the guard drops). Slots are released when dropped,
//! without waiting for I/O.
use crate::admission::Grant;
use crate::limiter::{BucketKey, Limiter, Origin, end_user_bucket, store_refusal};
use crate::refusal::{Refusal, RefusalCode};
use infergate_crds::tier::OnStoreFailure;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The jti slots' endpoint half: a token's slot is one per token, whatever endpoint it streams to.
const TOKEN_SLOTS: u64 = 0x6a74_695f_736c_6f74; // "jti_slot"

impl Limiter {
    /// Takes one slot of `bucket` under `cap`, or by the tier's store-failure policy when the store cannot
    /// answer. `Ok(None)`: the cap is full.
    async fn acquire(
        self: &Arc<Self>,
        grant: &Grant,
        bucket: BucketKey,
        cap: u32,
    ) -> Result<Option<StreamSlot>, Refusal> {
        let (acquired, origin) = match self.store.acquire_stream(bucket, cap).await {
            Ok(acquired) => (acquired, Origin::Store),
            Err(err) => match grant.identity.policy.tier.on_store_failure {
                OnStoreFailure::Local => {
                    self.failures.local.fetch_add(1, Ordering::Relaxed);
                    // Rounded up: a cap of 1 over three agents must still let one stream in somewhere.
                    let share = cap.div_ceil(self.store.agents().max(1));
                    (self.fallback.acquire_now(bucket, share), Origin::Local)
                }
                OnStoreFailure::FailOpen => {
                    self.failures.fail_open.fetch_add(1, Ordering::Relaxed);
                    (cap > 0, Origin::Unmetered)
                }
                OnStoreFailure::FailClosed => {
                    self.failures.fail_closed.fetch_add(1, Ordering::Relaxed);
                    return Err(store_refusal(err));
                }
            },
        };
        Ok(acquired.then(|| StreamSlot { limiter: Arc::clone(self), bucket, origin, inner: None }))
    }

    /// Takes a stream slot for the grant's (key, endpoint), and for its end user when the tier caps users'
    /// streams, or refuses with `stream_cap`.
    pub async fn try_open_stream(self: &Arc<Self>, grant: &Grant) -> Result<StreamSlot, Refusal> {
        let user_cap = grant.identity.policy.tier.end_user.as_ref().and_then(|u| u.max_concurrent_streams);
        let user = grant.identity.token.as_ref().and_then(|t| t.end_user);
        let user_slot = match (user, user_cap) {
            (Some(user), Some(cap)) => match self.acquire(grant, end_user_bucket(user, grant), cap).await? {
                Some(slot) => Some(slot),
                None => {
                    return Err(Refusal::new(
                        RefusalCode::StreamCap,
                        format!(
                            "end user {user} already holds {cap} open stream(s) on {}, the most tier {} allows one \
                             end user; close one and retry",
                            grant.endpoint.label,
                            grant.tier()
                        ),
                    )
                    .with_retry_after(1.0));
                }
            },
            _ => None,
        };
        let cap = grant.limits.max_concurrent_streams;
        match self.acquire(grant, Self::bucket(grant), cap).await? {
            Some(mut slot) => {
                slot.inner = user_slot.map(Box::new);
                Ok(slot)
            }
            None => {
                let message = if cap == 0 {
                    format!(
                        "tier {} does not allow streaming (maxConcurrentStreams: 0); use the one-shot request instead",
                        grant.tier()
                    )
                } else {
                    format!(
                        "key already holds {cap} open stream(s) on {}, its tier's maximum; close one and retry",
                        grant.endpoint.label
                    )
                };
                Err(Refusal::new(RefusalCode::StreamCap, message).with_retry_after(1.0))
            }
        }
    }

    /// [`try_open_stream`](Self::try_open_stream), waiting in the key's queue up to the tier's timeout for a
    /// slot to free up.
    pub async fn open_stream(self: &Arc<Self>, grant: &Grant) -> Result<StreamSlot, Refusal> {
        let first = match self.try_open_stream(grant).await {
            Ok(slot) => return Ok(slot),
            Err(refusal) => refusal,
        };
        let tier = &grant.identity.policy.tier;
        if first.code != RefusalCode::StreamCap || tier.queue_max_depth == 0 || grant.limits.max_concurrent_streams == 0
        {
            return Err(first);
        }
        let _slot = self.enter_queue(grant)?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(tier.queue_timeout_ms);
        // Slots free up when another stream ends; polling at 20 ms keeps this path simple and it is not hot.
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(slot) = self.try_open_stream(grant).await {
                return Ok(slot);
            }
        }
        Err(Refusal::new(
            RefusalCode::QueueTimeout,
            format!(
                "waited the tier's queue timeout ({} ms) for a stream slot; close a stream and retry",
                tier.queue_timeout_ms
            ),
        )
        .with_retry_after(1.0))
    }

    /// Binds the grant's session token to one stream when its tier says `oneStreamPerToken`: the token's `jti`
    /// holds a slot of cap 1 until the returned guard drops. `Ok(None)` when there is nothing to bind (an API
    /// key, or a tier that lets a token hold several streams).
    pub async fn bind_token(self: &Arc<Self>, grant: &Grant) -> Result<Option<StreamSlot>, Refusal> {
        let Some(token) = grant.identity.token.as_ref().filter(|_| grant.identity.policy.tier.one_stream_per_token)
        else {
            return Ok(None);
        };
        let digest = infergate_crds::key::KeyDigest::of(&token.jti);
        let bucket =
            BucketKey { policy: u64::from_be_bytes(digest.0[..8].try_into().expect("8 bytes")), endpoint: TOKEN_SLOTS };
        match self.acquire(grant, bucket, 1).await? {
            Some(slot) => Ok(Some(slot)),
            None => Err(Refusal::new(
                RefusalCode::StreamCap,
                format!(
                    "this session token (jti {}) already holds an open stream, and tier {} binds each token to one \
                     stream; close that stream, or mint a token per stream",
                    token.jti,
                    grant.tier()
                ),
            )
            .with_retry_after(1.0)),
        }
    }
}

/// A held stream slot, with the end user's slot it was opened under, if any; released when dropped (at once:
/// a shared store's release does not wait for I/O).
pub struct StreamSlot {
    limiter: Arc<Limiter>,
    bucket: BucketKey,
    origin: Origin,
    inner: Option<Box<StreamSlot>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        match self.origin {
            Origin::Store => self.limiter.store.release_stream(self.bucket),
            Origin::Local => self.limiter.fallback.release_now(self.bucket),
            Origin::Unmetered => {}
        }
    }
}
