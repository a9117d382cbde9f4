//! Single-use stream tickets (`POST /v1/tickets`): minted for an authenticated identity (a key, or a session
//! token minted from one), redeemed once by a WebSocket that cannot send headers.
use crate::gateway::Credential;
use infergate_crds::key::{Environment, KeyDigest};
use infergate_gate::admission::{Identity, TokenGrant};
use infergate_gate::refusal::{Refusal, RefusalCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Single-use stream tickets, so browsers (which cannot set WebSocket headers) never put a key in a URL.
/// Stored by digest: a ticket is as secret as a key while it lives.
pub struct Tickets {
    ttl: Duration,
    /// Live tickets a key may hold at once (`--max-live-tickets-per-key`).
    per_key_cap: usize,
    live: Mutex<LiveTickets>,
}

#[derive(Default)]
struct LiveTickets {
    by_ticket: std::collections::HashMap<[u8; 32], TicketEntry>,
    /// Per key digest: (expiry, ticket digest) of its live tickets, oldest first (the TTL is one value, so
    /// insertion order is expiry order). Bounded by `per_key_cap` per key.
    by_key: std::collections::HashMap<[u8; 32], std::collections::VecDeque<(Instant, [u8; 32])>>,
}

#[derive(Clone)]
struct TicketEntry {
    digest: KeyDigest,
    environment: Environment,
    /// The session token the ticket was minted with: its scope and expiry still apply when it is redeemed.
    token: Option<Arc<TokenGrant>>,
    expires: Instant,
}

/// Bounds ticket memory: a key cannot mint more than this many live tickets in total across the agent.
const MAX_LIVE_TICKETS: usize = 100_000;

impl Tickets {
    pub(crate) fn new(ttl: Duration, per_key_cap: usize) -> Self {
        Tickets { ttl, per_key_cap, live: Mutex::default() }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Mints a ticket for an authenticated identity. The ticket carries the key's identity; scopes are checked
    /// again, against the config of the moment, when it is redeemed.
    pub fn issue(&self, identity: &Identity) -> Result<String, Refusal> {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut bytes);
        let ticket = format!("tk_{}", hex::encode(bytes));
        let ticket_digest = KeyDigest::of(&ticket).0;
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let LiveTickets { by_ticket, by_key } = &mut *live;
        let mine = by_key.entry(identity.digest.0).or_default();
        while mine.front().is_some_and(|(expires, _)| *expires <= now) {
            if let Some((_, expired)) = mine.pop_front() {
                by_ticket.remove(&expired);
            }
        }
        if mine.len() >= self.per_key_cap {
            let wait = mine.front().map_or(self.ttl, |(expires, _)| expires.saturating_duration_since(now));
            return Err(Refusal::new(
                RefusalCode::RateLimited,
                format!(
                    "this key holds {} unredeemed stream tickets, the most it may; redeem or let one expire, or \
                     raise --max-live-tickets-per-key",
                    mine.len()
                ),
            )
            .with_retry_after(wait.as_secs_f64().max(1.0)));
        }
        if by_ticket.len() >= MAX_LIVE_TICKETS {
            by_ticket.retain(|_, t| t.expires > now);
            if by_ticket.len() >= MAX_LIVE_TICKETS {
                return Err(Refusal::new(RefusalCode::ServerBusy, "too many unredeemed stream tickets; retry shortly")
                    .with_retry_after(5.0));
            }
        }
        let expires = now + self.ttl;
        mine.push_back((expires, ticket_digest));
        by_ticket.insert(
            ticket_digest,
            TicketEntry {
                digest: identity.digest,
                environment: identity.environment,
                token: identity.token.clone(),
                expires,
            },
        );
        Ok(ticket)
    }

    /// Redeems a ticket once.
    pub fn redeem(&self, ticket: &str) -> Result<Credential<'static>, Refusal> {
        let bad = || {
            Refusal::new(
                RefusalCode::BadTicket,
                "stream ticket is unknown, already used or expired; get a new one from POST /v1/tickets",
            )
        };
        let ticket_digest = KeyDigest::of(ticket).0;
        let entry = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let entry = live.by_ticket.remove(&ticket_digest).ok_or_else(bad)?;
            if let Some(mine) = live.by_key.get_mut(&entry.digest.0) {
                mine.retain(|(_, t)| *t != ticket_digest);
                if mine.is_empty() {
                    live.by_key.remove(&entry.digest.0);
                }
            }
            entry
        };
        if entry.expires <= Instant::now() {
            return Err(bad());
        }
        Ok(Credential::Identity { digest: entry.digest, environment: entry.environment, token: entry.token })
    }
}
