//! The front doors: each translates one protocol into calls on the core ([`crate::oneshot`] for one-shot
//! requests, [`crate::session::Session`] for streams) and never imports another door.
//!
//! ```text
//!  http  (axum: /v1/audio/*, /v1/models, /v1/tickets) ─┐
//!  grpc  (tonic: infergate.v1.Inference)               ├─▶ edge (credential, Origin, request id, limits,
//!  ws    (axum upgrade at /v1/stream)                  ┘         refusal ─▶ protocol form)
//!  oauth (axum, on the HTTP listener: POST /v1/oauth/token, /.well-known/{jwks.json,openid-configuration})
//!          one-shot ─▶ oneshot::run          stream ─▶ Session::open ─▶ Session::drive(transport)
//!  admin (axum, separate port: /metrics /healthz /readyz /usage /status)
//!  listener: the HTTP/WebSocket accept loop (connection caps, header-read and keep-alive timeouts); it asks
//!            http::immediate first (GET /healthz, GET /v1/models answered from the head), then axum's router
//! ```
pub mod admin;
pub mod edge;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod oauth;
pub mod tls;
pub mod ws;
