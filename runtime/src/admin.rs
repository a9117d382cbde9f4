//! The admin router both binaries serve on their admin port.
//!
//! ```text
//!  GET /metrics ─▶ before_scrape hook (refresh gauges) ─▶ Prometheus text of the component's registry
//!  GET /healthz ─▶ "ok"                 (the process is alive)
//!  GET /readyz  ─▶ Readiness::check()   (200 with a detail line, or 503 with the reason)
//! ```
//! Components add their own routes (`/usage`, `/status`) by merging into the returned router. Every registry gets
//! `infergate_build_info{component,version}` so dashboards can tell which build answers.
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;

/// What `/readyz` reports.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok(detail)` when ready (the detail is the response body), `Err(reason)` otherwise (503 with the reason).
    fn check(&self) -> Result<String, String>;
}

impl<F> Readiness for F
where
    F: Fn() -> Result<String, String> + Send + Sync + 'static,
{
    fn check(&self) -> Result<String, String> {
        self()
    }
}

/// Called before each scrape, for gauges that are cheaper to read on demand than to keep current.
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    readiness: Arc<dyn Readiness>,
    before_scrape: Option<BeforeScrape>,
}

/// Registers `<prefix>_build_info{component,version} 1` in `registry`.
pub fn register_build_info(registry: &Registry, component: &str, version: &str) -> prometheus::Result<()> {
    let info = IntGaugeVec::new(
        Opts::new("build_info", "Always 1; the labels say which component and version answer"),
        &["component", "version"],
    )?;
    info.with_label_values(&[component, version]).set(1);
    registry.register(Box::new(info))
}

/// `/metrics`, `/healthz` and `/readyz` over `registry` and `readiness`.
pub fn router(registry: Registry, readiness: Arc<dyn Readiness>, before_scrape: Option<BeforeScrape>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { registry, readiness, before_scrape })
}

async fn metrics(State(state): State<AdminState>) -> Response {
    if let Some(refresh) = &state.before_scrape {
        refresh();
    }
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {err}\n")).into_response(),
    }
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.readiness.check() {
        Ok(detail) => (StatusCode::OK, with_newline(detail)).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, with_newline(reason)).into_response(),
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Binds an admin address up front, so a taken port fails start-up with a message that says what to change.
pub async fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {flag} {addr}: {e}; pick a free address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get(router: axum::Router, path: &str) -> (StatusCode, String) {
        let response =
            router.oneshot(axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn registry() -> Registry {
        let registry = Registry::new_custom(Some("infergate".into()), None).unwrap();
        register_build_info(&registry, "test", "0.0.0").unwrap();
        registry
    }

    #[tokio::test]
    async fn metrics_carry_build_info_and_run_the_scrape_hook() {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let hook: BeforeScrape = Arc::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let router = router(registry(), Arc::new(|| Ok("ok".to_string())), Some(hook));
        let (status, body) = get(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("infergate_build_info{component=\"test\",version=\"0.0.0\"} 1"), "{body}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn readyz_says_why_it_is_not_ready() {
        let router = router(registry(), Arc::new(|| Err("no gateway config applied yet".to_string())), None);
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "no gateway config applied yet\n".into())
        );
        assert_eq!(get(router, "/healthz").await, (StatusCode::OK, "ok\n".into()));
    }
}
