//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (the process is alive), `/readyz`.
//!
//! Readiness follows the replica's role: a standby is ready as soon as it knows it is a standby (so a rolling
//! update can bring the new pod up before the old leader goes), a leader only once its caches have synced and the
//! controllers run.
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Where this replica stands; shared between the leader loop and `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Starting = 0,
    Standby = 1,
    LeaderSyncing = 2,
    LeaderReady = 3,
    ShuttingDown = 4,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::LeaderSyncing => "leader, caches syncing",
            Role::LeaderReady => "leader",
            Role::ShuttingDown => "shutting down",
        }
    }
    fn ready(self) -> bool {
        matches!(self, Role::Standby | Role::LeaderReady)
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Role::Standby,
            2 => Role::LeaderSyncing,
            3 => Role::LeaderReady,
            4 => Role::ShuttingDown,
            _ => Role::Starting,
        }
    }
}

#[derive(Default)]
pub struct RoleCell(AtomicU8);

impl RoleCell {
    pub fn set(&self, role: Role) {
        self.0.store(role as u8, Ordering::SeqCst);
    }
    pub fn get(&self) -> Role {
        Role::from_u8(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub role: Arc<RoleCell>,
}

pub fn router(state: AdminState) -> axum::Router {
    let role = state.role.clone();
    let readiness = move || {
        let role = role.get();
        if role.ready() { Ok(role.as_str().to_string()) } else { Err(role.as_str().to_string()) }
    };
    let metrics = state.metrics.clone();
    let before_scrape: infergate_runtime::admin::BeforeScrape = Arc::new(move || metrics.observe_revocations());
    infergate_runtime::admin::router(state.metrics.registry.clone(), Arc::new(readiness), Some(before_scrape))
}

/// Binds the admin address up front, so a taken port fails start-up with a clear message instead of a silent
/// server-less operator.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    infergate_runtime::admin::bind(addr, "--admin-addr").await
}

/// Serves until `shutdown` resolves, over TLS when `tls` is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    tls: Option<Arc<infergate_runtime::tls::Tls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await,
        Some(tls) => {
            let listener = infergate_runtime::tls::TlsListener {
                inner: listener,
                tls,
                handshake: std::time::Duration::from_secs(5),
            };
            axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
        }
    }
}
