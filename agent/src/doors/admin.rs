//! The admin listener (separate port, not for clients): `/metrics`, `/healthz`, `/readyz`, and `/usage`
//! (per-key GPU-seconds and open streams by key id, which metric labels deliberately do not carry), and
//! `/status` (config revision, CPU/GPU mode and each tier's current refill factor). Reads the gateway's state
//! only; no client request passes through here.
use crate::gateway::Gateway;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/usage", get(usage))
        .route("/status", get(status))
        .with_state(gateway)
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    gateway.metrics.queue_depth.set(gateway.limiter.queue_depth());
    gateway.metrics.open_streams.set(gateway.streams.len() as i64);
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], gateway.metrics.render()).into_response()
}

/// Ready once a config snapshot has been applied: before that every key would be refused as unknown.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.is_ready() {
        (StatusCode::OK, format!("ok revision={}", gateway.snapshot().revision)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no gateway config applied yet").into_response()
    }
}

async fn usage(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let streams = gateway.streams.per_key();
    let keys: Vec<_> = gateway
        .usage()
        .into_iter()
        .map(|(key, gpu_seconds)| {
            serde_json::json!({"keyId": key.to_string(), "gpuSeconds": gpu_seconds, "openStreams": streams.get(&key).copied().unwrap_or(0)})
        })
        .collect();
    Json(serde_json::json!({"revision": gateway.snapshot().revision, "keys": keys}))
}

async fn status(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let gpu = gateway
        .gpu()
        .map(|g| g.status_json())
        .unwrap_or_else(|| serde_json::json!({"mode": "cpu", "refillFactors": {}}));
    Json(serde_json::json!({"revision": gateway.snapshot().revision, "ready": gateway.is_ready(), "gpu": gpu}))
}
