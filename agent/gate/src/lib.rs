//! infergate gate: the admission core every door calls. Plain synchronous functions over an immutable
//! snapshot, plus the counters they charge; no server framework, no I/O.
//!
//! ```text
//!  shards ─▶ snapshot::Snapshot::build ─▶ (the agent swaps it atomically)
//!  request ─▶ admission::admit(&snapshot, key, request, now) ─▶ Grant | Refusal (refusal::RefusalCode)
//!  Grant ─▶ limiter::Limiter (token bucket over a CounterStore; async wait queue; stream slots)
//!  audio bytes ─▶ audio::inspect (seconds, codec) ─▶ the pre-charge
//!  open streams ─▶ streams::Registry::enforce(&snapshot, now) ─▶ close signals for revoked keys
//!  every refusal and closed stream ─▶ audit::Audit (one JSON line, key ids only)
//! ```
//! Dependency direction: `infergate-crds` ◀ this crate ◀ the agent's doors. The only async pieces are the
//! limiter's wait queue (`tokio::time`) and the registry's close signal (`tokio::sync::watch`).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod audio;
pub mod audit;
pub mod clock;
mod key_table;
pub mod limiter;
mod memory;
pub mod redaction;
pub mod refusal;
pub mod snapshot;
mod stream_slots;
pub mod streams;
pub mod token;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_end_user;
#[cfg(test)]
mod tests_store_failure;
