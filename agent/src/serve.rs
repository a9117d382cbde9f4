//! Binds the three listeners and runs them until shutdown; also the one-second stream re-check tick.
//!
//! ```text
//!  bind http, admin, grpc (a taken port fails start-up, naming the flag)
//!  serve ─┬─ http  (axum: doors::http + doors::ws)   ─┐
//!         ├─ admin (runtime admin router + /usage /status)  ├─ until SIGTERM / SIGINT (runtime::shutdown)
//!         ├─ grpc  (tonic: doors::grpc)              ─┘
//!         └─ tick: every 1 s Gateway::enforce_streams (expiry, suspension between config changes)
//! ```
use crate::doors::admin::AdminAccess;
use crate::gateway::Gateway;
use anyhow::Context;
use infergate_runtime::shutdown::Shutdown;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// HTTP/2 streams one gRPC connection may have open at once.
const GRPC_MAX_CONCURRENT_STREAMS: u32 = 256;

#[derive(Clone, Debug)]
pub struct Listeners {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<crate::doors::tls::TlsSettings>,
    pub admin_token_file: Option<PathBuf>,
}

impl Listeners {
    pub fn new(http: SocketAddr, grpc: SocketAddr, admin: SocketAddr, common: &crate::cli::CommonArgs) -> Self {
        Listeners { http, grpc, admin, tls: common.tls(), admin_token_file: common.admin_token_file.clone() }
    }
}

/// Binds every listener first (so a port clash fails fast), then serves until ctrl-c / SIGTERM.
pub async fn serve(gateway: Arc<Gateway>, listeners: Listeners) -> anyhow::Result<()> {
    // A bad pair fails start-up here, naming the file: never plaintext on a port configured for TLS.
    let tls = match listeners.tls.clone() {
        Some(settings) => Some(crate::doors::tls::Tls::start(settings, &gateway.metrics.registry)?),
        None => None,
    };
    let access = AdminAccess::from_flags(listeners.admin_token_file.as_deref(), listeners.admin)?;
    let http = tokio::net::TcpListener::bind(listeners.http)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", listeners.http))?;
    let admin = infergate_runtime::admin::bind(listeners.admin, "--admin-addr").await?;
    let grpc = tokio::net::TcpListener::bind(listeners.grpc)
        .await
        .with_context(|| format!("cannot listen on --grpc-addr {}", listeners.grpc))?;
    tracing::info!(
        http = %http.local_addr()?,
        grpc = %grpc.local_addr()?,
        admin = %admin.local_addr()?,
        tls = tls.is_some(),
        "listening"
    );

    let tick = {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                gateway.enforce_streams();
                gateway.tokens.purge_expired(chrono::Utc::now());
            }
        })
    };
    // The trusted external issuers' JWKS: its own task, so a slow identity provider never delays the tick above.
    let jwks = {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                gateway.tokens.external.refresh(&gateway.snapshot()).await;
            }
        })
    };
    let shutdown = Shutdown::on_signals();
    let stream = axum::routing::get(crate::doors::ws::upgrade);
    let http_app = crate::doors::http::router(Arc::clone(&gateway), stream)
        .merge(crate::doors::oauth::router(Arc::clone(&gateway)));
    let refused = gateway.metrics.http_connections_refused.clone();
    let admin_app = crate::doors::admin::router(Arc::clone(&gateway), access, tls.clone());
    let grpc_service = crate::doors::grpc::service(Arc::clone(&gateway));
    let grpc_server = tonic::transport::Server::builder()
        // Bounds per connection and for idle peers: a client cannot open unbounded streams on one connection,
        // and a dead peer's connection is found and dropped.
        .max_concurrent_streams(Some(GRPC_MAX_CONCURRENT_STREAMS))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .add_service(grpc_service);
    let grpc_serving = async {
        match &tls {
            None => {
                // No Nagle on stream replies: a partial held for the client's delayed ACK was ~40 ms late (the
                // builder's `tcp_nodelay` only reaches listeners tonic binds itself, not one handed in).
                let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
                grpc_server.serve_with_incoming_shutdown(incoming, shutdown.clone().wait()).await
            }
            Some(tls) => {
                let handshake = gateway.settings.listener.header_read_timeout;
                let incoming = crate::doors::tls::grpc_incoming(grpc, Arc::clone(tls), handshake);
                grpc_server.serve_with_incoming_shutdown(incoming, shutdown.clone().wait()).await
            }
        }
    };
    // Every listener runs until shutdown and then finishes what it holds (tonic waits for its open RPCs); a
    // listener that fails ends the agent at once.
    let servers = async {
        tokio::try_join!(
            async {
                crate::doors::listener::serve(
                    http,
                    http_app,
                    crate::doors::http::immediate(Arc::clone(&gateway)),
                    gateway.settings.listener,
                    refused,
                    shutdown.clone(),
                    tls.clone(),
                )
                .await
                .context("http listener failed")
            },
            async {
                axum::serve(admin, admin_app)
                    .with_graceful_shutdown(shutdown.clone().wait())
                    .await
                    .context("admin listener failed")
            },
            async { grpc_serving.await.context("grpc listener failed") },
        )
        .map(|_| ())
    };
    tokio::pin!(servers);
    let grace = gateway.settings.shutdown_grace;
    let result = tokio::select! {
        // Shutdown first: the listeners see it too and may finish in the same poll, before the streams drained.
        biased;
        _ = shutdown.clone().wait() => {
            // Streams (WebSocket sessions run outside the listener) get their pending result and a going-away
            // close; then the listeners and the sessions finish, within the grace.
            gateway.begin_drain();
            let drained = async {
                let r = (&mut servers).await;
                while gateway.metrics.open_streams.get() > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r
            };
            match tokio::time::timeout(grace, drained).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        open_streams = gateway.metrics.open_streams.get(),
                        grace_seconds = grace.as_secs_f64(),
                        "shutdown grace over with streams still open; exiting"
                    );
                    Ok(())
                }
            }
        }
        r = &mut servers => r,
    };
    tick.abort();
    jwks.abort();
    // Unused GPU-second leases go back to a shared store, and this agent's slots are released, before it exits.
    let _ = tokio::time::timeout(Duration::from_secs(2), gateway.limiter.store().flush()).await;
    result
}
