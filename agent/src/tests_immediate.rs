//! The HTTP door's immediate answers (`listener::Immediate`) and its router answer the same requests alike; what
//! the immediate lane does not take goes to the router.
use crate::doors::listener::Head;
use crate::gateway::Gateway;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use infergate_crds::endpoint::Feature;
use infergate_gate::testing::{key, mk_endpoint, mk_policy};
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt as _;

fn gateway() -> Arc<Gateway> {
    let shards = vec![
        mk_endpoint("stt", "whisper-1").features(&[Feature::Transcribe]).upstream("http://127.0.0.1:9/v1").shard(),
        mk_policy("app").key(&key(1)).revoked(&key(2)).scope("stt", "whisper-1", &[Feature::Transcribe]).shard(),
        // A policy that wants a client certificate as well as the key: refused here, where none was presented.
        mk_policy("mtls").key(&key(3)).client_certificate(&["CN=app"], &[]).scope("stt", "whisper-1", &[]).shard(),
    ];
    Gateway::serving(&shards, HashMap::new())
}

/// Status, headers but the per-request one, and body. `content-length` is left out: axum's router sets it from
/// the body's exact size, hyper writes the same for the immediate answer's body on the wire.
async fn parts(response: axum::response::Response) -> (StatusCode, Vec<(String, String)>, bytes::Bytes) {
    let (head, body) = response.into_parts();
    let mut headers: Vec<(String, String)> = head
        .headers
        .iter()
        .filter(|(name, _)| *name != "x-request-id" && *name != "content-length")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    (head.status, headers, axum::body::to_bytes(body, usize::MAX).await.unwrap())
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    pairs.iter().map(|(name, value)| (axum::http::HeaderName::from_static(name), value.parse().unwrap())).collect()
}

#[tokio::test]
async fn immediate_answers_equal_the_routers_and_it_leaves_the_rest_to_the_router() {
    let gateway = gateway();
    let immediate = crate::doors::http::immediate(Arc::clone(&gateway));
    let router = crate::doors::http::router(Arc::clone(&gateway), axum::routing::get(crate::doors::ws::upgrade));
    let bearer = |k: &str| ("authorization", format!("Bearer {k}"));
    let mut mistyped = key(1).expose().to_string();
    mistyped.pop();
    mistyped.push(if key(1).expose().ends_with('A') { 'B' } else { 'A' });
    let taken: Vec<(&str, HeaderMap, StatusCode)> = vec![
        ("/healthz", headers(&[]), StatusCode::OK),
        ("/v1/models", headers(&[bearer(key(1).expose())]), StatusCode::OK),
        ("/v1/models?limit=1", headers(&[("x-api-key", key(1).expose().to_string())]), StatusCode::OK),
        ("/v1/models", headers(&[]), StatusCode::UNAUTHORIZED),
        ("/v1/models", headers(&[bearer(&mistyped)]), StatusCode::UNAUTHORIZED),
        ("/v1/models", headers(&[bearer(key(9).expose())]), StatusCode::UNAUTHORIZED),
        ("/v1/models", headers(&[bearer(key(2).expose())]), StatusCode::UNAUTHORIZED),
        ("/v1/models", headers(&[bearer(key(3).expose())]), StatusCode::FORBIDDEN),
    ];
    for (uri, headers, status) in taken {
        let uri: Uri = uri.parse().unwrap();
        let head = Head { method: &Method::GET, uri: &uri, headers: &headers, client_cert: None };
        let answered = parts(immediate(&head).expect("taken")).await;
        let mut request = Request::builder().method(Method::GET).uri(uri.clone()).body(Body::empty()).unwrap();
        *request.headers_mut() = headers.clone();
        let routed = parts(router.clone().oneshot(request).await.unwrap()).await;
        assert_eq!(answered.0, status, "{uri}: {:?}", answered.2);
        assert_eq!(answered, routed, "{uri}");
    }
    let bearer = headers(&[bearer(key(1).expose())]);
    for (method, uri) in [
        (Method::HEAD, "/healthz"),
        (Method::HEAD, "/v1/models"),
        (Method::POST, "/v1/models"),
        (Method::GET, "/v1/models/whisper-1"),
        (Method::GET, "/v1/models/"),
        (Method::GET, "/v1/stream"),
        (Method::GET, "/healthz/"),
    ] {
        let uri: Uri = uri.parse().unwrap();
        let head = Head { method: &method, uri: &uri, headers: &bearer, client_cert: None };
        assert!(immediate(&head).is_none(), "{method} {uri} is the router's");
    }
}
