//! The admin listener (separate port, not for clients): the runtime's `/metrics`, `/healthz`, `/readyz`, plus
//! `/usage` (per-key GPU-seconds and open streams by key id, which metric labels deliberately do not carry) and
//! `/status` (config revision, CPU/GPU mode and each tier's current refill factor). Reads the gateway's state
//! only; no client request passes through here.
//!
//! ```text
//!  /metrics /healthz /readyz ─▶ always open (probes, scrapes)
//!  /usage /status ─▶ AdminAccess: Token (Bearer, constant-time) | Loopback (listener on 127.0.0.0/8 or ::1) | Closed
//! ```
use crate::gateway::Gateway;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// Who may read `/usage` and `/status`: they name key ids and usage, which a tenant's neighbour should not see.
#[derive(Clone)]
pub enum AdminAccess {
    /// `Authorization: Bearer <token>` with the token from `--admin-token-file`.
    Token(Arc<str>),
    /// No token configured, but the listener is on loopback: only this host reaches it.
    Loopback,
    /// No token and a routable listener: the two routes refuse, saying how to open them.
    Closed,
}

impl AdminAccess {
    /// From the flags: a token file wins; otherwise the listener address decides.
    pub fn from_flags(token_file: Option<&std::path::Path>, admin: std::net::SocketAddr) -> anyhow::Result<Self> {
        if let Some(path) = token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read --admin-token-file {}: {e}; mount the admin token Secret there",
                    path.display()
                )
            })?;
            let token = token.trim();
            anyhow::ensure!(
                token.len() >= 16,
                "--admin-token-file {} holds {} characters; use a random token of at least 16",
                path.display(),
                token.len()
            );
            return Ok(AdminAccess::Token(token.into()));
        }
        Ok(if admin.ip().is_loopback() { AdminAccess::Loopback } else { AdminAccess::Closed })
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        match self {
            AdminAccess::Loopback => Ok(()),
            AdminAccess::Closed => Err((
                StatusCode::FORBIDDEN,
                "this route names key ids: start the agent with --admin-token-file, or bind --admin-addr to loopback\n",
            )
                .into_response()),
            AdminAccess::Token(expected) => {
                let presented = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                    .map(str::trim)
                    .unwrap_or("");
                if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
                    Ok(())
                } else {
                    Err((
                        StatusCode::UNAUTHORIZED,
                        [(http::header::WWW_AUTHENTICATE, "Bearer")],
                        "send Authorization: Bearer <the token in --admin-token-file>\n",
                    )
                        .into_response())
                }
            }
        }
    }
}

#[derive(Clone)]
struct AdminState {
    gateway: Arc<Gateway>,
    access: AdminAccess,
}

/// `tls`: the doors' certificates; while no valid pair exists the agent is not ready, saying why.
pub fn router(gateway: Arc<Gateway>, access: AdminAccess, tls: Option<Arc<crate::doors::tls::Tls>>) -> Router {
    let readiness = {
        let gateway = Arc::clone(&gateway);
        move || match tls.as_ref().and_then(|tls| tls.problem()) {
            Some(problem) => Err(format!("no valid TLS certificate pair: {problem}")),
            None => gateway.readiness(),
        }
    };
    let before_scrape: infergate_runtime::admin::BeforeScrape = {
        let gateway = Arc::clone(&gateway);
        Arc::new(move || {
            gateway.metrics.queue_depth.set(gateway.limiter.queue_depth());
            gateway.metrics.observe_counter_store(&gateway.limiter);
            gateway.metrics.open_streams.set(gateway.streams.len() as i64);
        })
    };
    let base =
        infergate_runtime::admin::router(gateway.metrics.registry.clone(), Arc::new(readiness), Some(before_scrape));
    let guarded = Router::new()
        .route("/usage", get(usage))
        .route("/status", get(status))
        .with_state(AdminState { gateway, access });
    base.merge(guarded)
}

async fn usage(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(refused) = state.access.check(&headers) {
        return refused;
    }
    let gateway = &state.gateway;
    let streams = gateway.streams.per_key();
    let local = gateway.usage();
    // With a shared counter store, usage is the fleet's (every agent's settled GPU-seconds); this agent's own
    // share stays visible as `agentGpuSeconds`. Open streams are this agent's.
    let (scope, usage) = match gateway.global_usage().await {
        Some(global) => ("global", global),
        None => ("agent", local.clone()),
    };
    let local: std::collections::HashMap<_, _> = local.into_iter().collect();
    let keys: Vec<_> = usage
        .into_iter()
        .map(|(key, gpu_seconds)| {
            serde_json::json!({
                "keyId": key.to_string(),
                "gpuSeconds": gpu_seconds,
                "agentGpuSeconds": local.get(&key).copied().unwrap_or(0.0),
                "openStreams": streams.get(&key).copied().unwrap_or(0),
            })
        })
        .collect();
    // Per end user, this agent's share only (the shared store keeps usage per key), by hashed id; `user: null`
    // counts the users past the admin map's bound.
    let end_users: Vec<_> = gateway
        .tokens
        .end_users
        .rows()
        .into_iter()
        .map(|row| {
            serde_json::json!({
                "keyId": row.key.to_string(),
                "user": row.user.map(|u| u.to_string()),
                "agentGpuSeconds": row.gpu_seconds,
            })
        })
        .collect();
    Json(serde_json::json!({
        "revision": gateway.snapshot().revision,
        "scope": scope,
        "keys": keys,
        "endUsers": end_users,
    }))
    .into_response()
}

async fn status(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(refused) = state.access.check(&headers) {
        return refused;
    }
    let gateway = &state.gateway;
    let gpu = gateway
        .gpu()
        .map(|g| g.status_json())
        .unwrap_or_else(|| serde_json::json!({"mode": "cpu", "refillFactors": {}}));
    Json(serde_json::json!({"revision": gateway.snapshot().revision, "ready": gateway.is_ready(), "gpu": gpu}))
        .into_response()
}
