//! The OAuth door on the HTTP listener: the token endpoint (RFC 6749 section 4.4) and the documents other
//! services verify infergate tokens with. Protocol only: the decision is [`crate::tokens::issue`].
//!
//! ```text
//!  POST /v1/oauth/token (form) ─▶ issue::client_credentials ─▶ 200 {access_token, token_type, expires_in, scope}
//!                                                           └─▶ 4xx {error, error_description, code?}
//!  GET /.well-known/jwks.json               ─▶ Tokens::jwks       (every key of the ring, pending ones too)
//!  GET /.well-known/openid-configuration    ─▶ Tokens::discovery
//! ```
//! Token responses and errors carry `Cache-Control: no-store` (RFC 6749 section 5.1); the key documents may be
//! cached for a few minutes: a new key is published an hour before it signs.
use super::edge;
use crate::gateway::Gateway;
use crate::outcome::Door;
use crate::tokens::issue::{self, OAuthError, TokenRequest};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use std::sync::Arc;

/// A token request is a few short fields; anything larger is not one.
const MAX_FORM_BYTES: usize = 8 * 1024;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(infergate_token::TOKEN_PATH, post(token))
        .route(infergate_token::JWKS_PATH, get(jwks))
        .route(infergate_token::OPENID_CONFIGURATION_PATH, get(discovery))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(gateway)
}

async fn token(
    State(gateway): State<Arc<Gateway>>,
    client_cert: edge::ClientCertExt,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut outcome = gateway.begin(Door::Http, infergate_token::TOKEN_PATH, edge::traceparent(&headers));
    edge::attach_client_cert(&mut outcome, client_cert);
    let result = form_of(&headers, &body).and_then(|form| {
        let authorization = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let request = TokenRequest { authorization, form: &form };
        issue::client_credentials(&gateway, &request, &mut outcome, chrono::Utc::now())
    });
    let mut response = match result {
        Ok(issued) => {
            let body = serde_json::json!({
                "access_token": issued.minted.token,
                "token_type": "Bearer",
                "expires_in": issued.minted.lifetime.as_secs(),
                "scope": issued.scope,
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(error) => {
            gateway.tokens.metrics.refused(error.error);
            let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = (status, Json(error.to_json())).into_response();
            if error.status == 401 {
                // RFC 6749 section 5.2: invalid_client on 401 names the scheme the client should authenticate with.
                response
                    .headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"infergate\""));
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    edge::set_request_id(&mut response, &outcome.request_id);
    response
}

/// The form body (RFC 6749 section 4.4.2: `application/x-www-form-urlencoded`, UTF-8).
fn form_of(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let refuse =
        |why: &str| OAuthError { status: 400, error: "invalid_request", description: why.to_owned(), code: None };
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(refuse("send the token request as application/x-www-form-urlencoded"));
    }
    serde_urlencoded::from_bytes(body).map_err(|_| refuse("the form body does not decode"))
}

async fn jwks(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut response = Json(gateway.tokens.jwks()).into_response();
    response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

async fn discovery(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut response = Json(gateway.tokens.discovery()).into_response();
    response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
