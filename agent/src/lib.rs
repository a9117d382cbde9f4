//! infergate agent: the data plane. Every request and audio stream passes through here.
//!
//! ```text
//!  config: cluster (watch gateway-config Secrets) | standalone (operator compile on local manifests)
//!            └─▶ Snapshot::build ─▶ ArcSwap<Snapshot> ─▶ streams::Registry::enforce (close revoked streams)
//!
//!  doors:  http (OpenAI /v1/audio/transcriptions, /v1/models, /v1/tickets, WebSocket /v1/stream)
//!          grpc (infergate.v1.Inference)          admin (/metrics /healthz /readyz)
//!            └─▶ admission::admit (sync) ─▶ limiter (sync bucket, async queue) ─▶ backend::Backend
//! ```
//! Layering: [`refusal`], [`snapshot`], [`admission`], [`limiter`] and [`streams`] are plain libraries with no
//! server code; [`gateway`] ties them together for the doors; [`http`], [`ws`], [`grpc`], [`admin`] are the I/O
//! edges; [`standalone`] and [`cluster`] deliver config; `main.rs` only parses arguments.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod audio;
pub mod audit;
pub mod backend;
pub mod gateway;
pub mod limiter;
pub mod metrics;
pub mod refusal;
pub mod snapshot;
pub mod streams;

#[cfg(test)]
mod tests;
