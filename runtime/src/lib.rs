//! The process runtime both infergate binaries share, so that the operator and the agent start, log, trace, expose
//! their admin endpoints and stop the same way.
//!
//! ```text
//!  main.rs ─▶ runtime::main(component, telemetry args, body)
//!               ├─ crypto::install_provider        (one rustls provider: ring)
//!               ├─ tokio multi-thread runtime
//!               ├─ telemetry::init                 (JSON or text lines on stderr; OTLP spans when configured)
//!               └─ body ─▶ admin::router           (/metrics /healthz /readyz + build_info)
//!                        ─▶ shutdown::Shutdown      (SIGTERM / SIGINT fan-out for graceful drain)
//!  doors ─▶ trace::TraceContext                    (W3C traceparent in, child traceparent out to upstreams)
//!  listeners ─▶ tls::Tls                            (rustls configs from PEM files, reloaded on change)
//! ```
//! Nothing here knows about keys, policies or requests: it is infrastructure with no product logic, so both
//! binaries can depend on it without depending on each other.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod crypto;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;

use std::future::Future;
use std::process::ExitCode;

/// Runs `body` as the whole life of a binary: the rustls provider, a multi-thread tokio runtime, logging and optional
/// OTLP export (initialised inside the runtime, which the gRPC exporter needs), then the body. An error is printed
/// once as `error: ...` with its causes, and the process exits non-zero; spans still buffered are flushed first.
pub fn main<F, Fut>(component: &'static str, telemetry: &telemetry::TelemetryArgs, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crypto::install_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let guard = {
        let _inside = runtime.enter();
        match telemetry::init(component, telemetry) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        }
    };
    let result = runtime.block_on(body());
    drop(guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
