//! infergate agent: the data plane. Every request and audio stream passes through here.
//!
//! ```text
//!  config: cluster (watch gateway-config Secrets) | standalone (compile local manifests)
//!            └─▶ Snapshot::build ─▶ Gateway::apply ─▶ ArcSwap<Snapshot> ─▶ streams::Registry::enforce
//!
//!  doors/ (protocol only)                    core services                   infergate-gate (no server code)
//!   http  /v1/audio/*, /v1/models, tickets ─▶ oneshot::run ──────────┐       admission::admit, limiter,
//!   grpc  infergate.v1.Inference ──────────┬▶ session::Session::drive ┼─────▶ refusal, audio, audit,
//!   ws    /v1/stream ──────────────────────┘   (one stream loop)      │       streams, snapshot
//!   admin /metrics /healthz /readyz /usage /status                    └─▶ backend::Backend (upstream,
//!   edge: credential, Origin, request id, limits, refusal forms              builtin speaker / vad)
//!  every request: one outcome::RequestOutcome (door, route, key id, endpoint, outcome, GPU-seconds)
//! ```
//! Layering: `infergate-gate` holds the pure admission core; [`gateway`] is the shared state around it;
//! [`oneshot`] and [`session`] are the application services; [`doors`] are the I/O edges and only translate;
//! [`standalone`] and [`cluster`] deliver config; [`models`] fetches and verifies built-in weights; `main.rs`
//! only parses arguments.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod builtin;
pub mod cli;
pub mod cluster;
pub mod doors;
pub mod egress;
pub mod file_events;
pub mod gateway;
pub mod gpu;
pub mod memo;
pub mod metrics;
pub mod models;
pub mod oneshot;
pub mod outcome;
pub mod redaction;
pub mod serve;
pub mod session;
pub mod slots;
pub mod standalone;
pub mod tickets;
pub mod tokens;
pub mod transcriber;

/// The config snapshot lives in the gate crate; the config sources (`standalone`, `cluster`) name it here.
pub use infergate_gate::snapshot;

#[cfg(test)]
mod tests_gpu;
#[cfg(test)]
mod tests_immediate;
#[cfg(test)]
mod tests_oneshot;

/// The gateway with its counter store (in memory, or shared on Redis), the built-in models from the models
/// directory, and the GPU limit policy (NVML sampling, or CPU mode with nominal factors: one log line, never a
/// failure).
/// `default_issuer` is the session tokens' `iss` when `--token-issuer` is not given (the HTTP door's URL).
pub fn build_gateway(
    common: &cli::CommonArgs,
    default_issuer: String,
) -> anyhow::Result<std::sync::Arc<gateway::Gateway>> {
    let gpu = std::sync::Arc::new(gpu::Gpu::start());
    let store: std::sync::Arc<dyn infergate_gate::limiter::CounterStore> = match common.counter_store.redis()? {
        None => std::sync::Arc::new(infergate_gate::limiter::InMemoryStore::default()),
        Some(settings) => {
            let mode = settings.mode;
            let store = infergate_redis::RedisStore::start(settings)?;
            tracing::info!(mode = ?mode, "counter store: shared on Redis");
            store
        }
    };
    let limiter = std::sync::Arc::new(infergate_gate::limiter::Limiter::with_refill(store, gpu.refill()));
    let models_dir = builtin::ModelsDir::resolve(common.models_dir.as_deref());
    let loaded = builtin::load_all(&models_dir);
    let backends = backend::Backends::new(loaded.builtin).with_whisper(loaded.whisper);
    let mut settings = common.settings();
    settings.token_issuer = common.token_issuer.clone().unwrap_or(default_issuer);
    let gateway = gateway::Gateway::new(settings, limiter, backends);
    let hash_key = common.redaction_hash_key_file.as_deref().map(redaction::Engine::read_hash_key).transpose()?;
    gateway.attach_redaction(redaction::Engine::new(hash_key, builtin::ner_loader(&models_dir, &loaded.status)));
    gateway.attach_models(loaded.status);
    gateway.attach_gpu(gpu);
    Ok(gateway)
}
