//! Log lines and spans.
//!
//! ```text
//!  tracing events/spans ─▶ EnvFilter (RUST_LOG, else the component's default)
//!                           ├─▶ fmt layer: one JSON object per line on stderr (default) or text for people
//!                           └─▶ OpenTelemetry layer ─▶ OTLP/gRPC batch exporter   (only with --otlp-endpoint)
//! ```
//! Audit lines are ordinary events with `audit = true` at the top level of the JSON object, so log pipelines route
//! them without parsing messages. Span fields are designed per component (see the doors and the reconciler); none
//! may carry a key, token, ticket, audio or transcript.
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The `tracing` target of audit lines (the operator's, standalone mode's and the agent's alike).
pub const AUDIT_TARGET: &str = "infergate::audit";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: what log pipelines expect.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// The logging and tracing flags both binaries take.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TelemetryArgs {
    /// Log line format: `json` (one object per line, the default) or `text` for people. `RUST_LOG` sets the level.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Export spans over OTLP/gRPC to this collector, e.g. `http://otel-collector:4317`. Off when unset.
    #[arg(long, env = "INFERGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot build the OTLP exporter for --otlp-endpoint {endpoint}: {source}; check the URL (http://host:4317)"
    )]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

impl TelemetryError {
    pub fn category(&self) -> &'static str {
        match self {
            TelemetryError::Exporter { .. } => "otlp_exporter",
            TelemetryError::AlreadyInstalled => "already_installed",
        }
    }
}

/// Flushes buffered spans when dropped; keep it alive for the life of the process.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // A collector that is gone must not hold the process up at exit: errors here are ignored.
            let _ = provider.shutdown();
        }
    }
}

/// The default filter per component: our own crates at `info`, the chatty client libraries at `warn`.
fn default_filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,hyper=warn,tower=warn,h2=warn,opentelemetry=warn"))
}

/// Installs the process-wide subscriber. With an OTLP endpoint it must run inside a tokio runtime (the gRPC
/// exporter's channel needs one); [`crate::main`] arranges that.
pub fn init(component: &'static str, args: &TelemetryArgs) -> Result<TelemetryGuard, TelemetryError> {
    // Flattened so that audit lines carry `"audit":true` at the top level; the span list is left out so that a
    // line's fields are exactly the ones its event declares.
    let json = || {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    };
    let fmt = match args.log_format {
        LogFormat::Json => json().boxed(),
        // Text is for people, but audit lines are records a pipeline collects: they stay one JSON object per
        // line in either format.
        LogFormat::Text => {
            let is_audit = |meta: &tracing::Metadata<'_>| meta.target() == AUDIT_TARGET;
            let text = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(tracing_subscriber::filter::filter_fn(move |meta| !is_audit(meta)));
            let audit = json().with_filter(tracing_subscriber::filter::filter_fn(is_audit));
            text.and_then(audit).boxed()
        }
    };
    let (otel, provider) = match &args.otlp_endpoint {
        Some(endpoint) => {
            let provider = otlp_provider(component, endpoint)?;
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(component)).boxed();
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(default_filter())
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    if let Some(endpoint) = &args.otlp_endpoint {
        tracing::info!(otlp_endpoint = %endpoint, "exporting spans over OTLP");
    }
    Ok(TelemetryGuard { provider })
}

fn otlp_provider(component: &'static str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|source| TelemetryError::Exporter { endpoint: endpoint.to_string(), source })?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(component).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
