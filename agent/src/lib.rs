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

pub mod admin;
pub mod admission;
pub mod audio;
pub mod audit;
pub mod backend;
pub mod builtin;
pub mod cli;
pub mod cluster;
pub mod gateway;
pub mod gpu;
pub mod grpc;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod refusal;
pub mod serve;
pub mod session;
pub mod snapshot;
pub mod standalone;
pub mod streams;
pub mod ws;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gpu;

/// The gateway with the in-memory counter store, the built-in models from the models directory, and the GPU
/// limit policy (NVML sampling, or CPU mode with nominal factors: one log line, never a failure).
pub fn build_gateway(common: &cli::CommonArgs) -> anyhow::Result<std::sync::Arc<gateway::Gateway>> {
    let gpu = std::sync::Arc::new(gpu::Gpu::start());
    let limiter = std::sync::Arc::new(limiter::Limiter::with_refill(
        std::sync::Arc::new(limiter::InMemoryStore::default()),
        gpu.refill(),
    ));
    let models_dir = builtin::ModelsDir::resolve(common.models_dir.as_deref());
    let backends = backend::Backends::new(builtin::load(&models_dir));
    let gateway = gateway::Gateway::new(common.settings(), limiter, backends);
    gateway.attach_gpu(gpu);
    Ok(gateway)
}

/// JSON (default) or human log lines on stderr; `RUST_LOG` overrides the level.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if format == "text" { builder.try_init() } else { builder.json().flatten_event(true).try_init() };
}
