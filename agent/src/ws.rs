//! The WebSocket door, `GET /v1/stream`.
//!
//! ```text
//!  client                                   agent
//!  upgrade (Authorization: Bearer | ?ticket=) ─▶  connection cap; key checked (or ticket redeemed)
//!  {"type":"auth","key":...}   (if no header/ticket; within the auth deadline)
//!  {"type":"start","model":...,"feature":"transcribe","language"?}
//!                                           ◀─ {"type":"ready","request_id","stream_id","key_id"}
//!  binary frames: 16 kHz mono PCM16 LE      ◀─ {"type":"partial","segment","text","start","end"} per segment
//!  {"type":"end"}                           ◀─ {"type":"final","text","segments","audio_seconds","gpu_seconds"}
//!                                           ◀─ close 1000
//!  any refusal: ◀─ {"type":"error","error":{"code","message","retry_after_seconds"?}} then close 4xxx "<code>: ..."
//! ```
//! Close codes are listed in [`crate::refusal`]. Keys in the query string are refused (400) unless the agent runs
//! with `--allow-query-keys`; they are never logged either way.
use crate::admission::{Identity, Request};
use crate::gateway::{ConnectionGuard, Credential, Door, Gateway, RefusalContext};
use crate::http::{origin, presented_key, refusal_response};
use crate::refusal::{Refusal, RefusalCode};
use crate::session::{Event, Session};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use infergate_crds::endpoint::Feature;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// Normal close after `end`.
pub const CLOSE_DONE: u16 = 1000;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Auth {
        key: String,
    },
    Start {
        model: String,
        #[serde(default)]
        feature: Option<Feature>,
        #[serde(default)]
        language: Option<String>,
    },
    End,
}

pub async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let request_id = crate::gateway::request_id();
    let query_key = query.get("api_key").or_else(|| query.get("key"));
    if query_key.is_some() && !gateway.settings.allow_query_keys {
        let refusal = Refusal::new(
            RefusalCode::QueryKeyRefused,
            "API keys in URLs are refused (they end up in logs and browser history): send the Authorization header, an auth message, or a ticket from POST /v1/tickets",
        );
        gateway.refused(&refusal, &RefusalContext::new(Door::WebSocket, &request_id));
        return refusal_response(&refusal, &request_id);
    }
    let connection = match gateway.connection(Door::WebSocket) {
        Ok(c) => c,
        Err(refusal) => {
            gateway.refused(&refusal, &RefusalContext::new(Door::WebSocket, &request_id));
            return refusal_response(&refusal, &request_id);
        }
    };
    // Authenticate now when the credential came with the upgrade, so the socket task never holds a plaintext key.
    // Refusals are recorded here; the socket task only closes with them.
    let initial: Result<Option<Identity>, Refusal> = if let Some(ticket) = query.get("ticket") {
        match gateway.tickets.redeem(ticket) {
            Ok(c) => gateway.authenticate_recorded(&c, Door::WebSocket, &request_id).map(Some),
            Err(r) => {
                gateway.refused(&r, &RefusalContext::new(Door::WebSocket, &request_id));
                Err(r)
            }
        }
    } else if let Some(key) = presented_key(&headers).or(query_key.map(String::as_str)) {
        gateway.authenticate_recorded(&Credential::Key(key), Door::WebSocket, &request_id).map(Some)
    } else {
        Ok(None)
    };
    let origin = origin(&headers).map(str::to_string);
    let max_message = 16 * 1024 * 1024 + 1024;
    let header = http::HeaderValue::from_str(&request_id).ok();
    let mut response = ws
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| run(gateway, socket, connection, initial, origin, request_id));
    if let Some(v) = header {
        response.headers_mut().insert(crate::http::REQUEST_ID_HEADER, v);
    }
    response
}

async fn run(
    gateway: Arc<Gateway>,
    mut socket: WebSocket,
    _connection: ConnectionGuard,
    initial: Result<Option<Identity>, Refusal>,
    origin: Option<String>,
    request_id: String,
) {
    let door = Door::WebSocket;
    let mut identity = match initial {
        Ok(i) => i,
        Err(refusal) => return close_with(&mut socket, &refusal).await,
    };
    // Phase 1: authenticate (if needed) and start, before the auth deadline.
    let deadline = Instant::now() + gateway.settings.auth_timeout;
    let mut session = loop {
        let message = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                let refusal = Refusal::new(
                    RefusalCode::AuthTimeout,
                    format!(
                        "no auth and start message within {} s of connecting",
                        gateway.settings.auth_timeout.as_secs()
                    ),
                );
                gateway.refused(&refusal, &RefusalContext::new(door, &request_id));
                return close_with(&mut socket, &refusal).await;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(m))) => m,
        };
        let text = match message {
            Message::Text(t) => t,
            Message::Binary(_) => {
                let refusal =
                    Refusal::bad_request("send a start message before audio: {\"type\":\"start\",\"model\":\"...\"}");
                return close_with(&mut socket, &refusal).await;
            }
            _ => continue,
        };
        let control = match serde_json::from_str::<Control>(text.as_str()) {
            Ok(c) => c,
            Err(_) => {
                let refusal = Refusal::bad_request(
                    "control messages are JSON with a type: auth {key}, start {model, feature?, language?}, or end",
                );
                return close_with(&mut socket, &refusal).await;
            }
        };
        match control {
            Control::Auth { key } => {
                let result = gateway.authenticate_recorded(&Credential::Key(&key), door, &request_id);
                drop(key);
                match result {
                    Ok(i) => identity = Some(i),
                    Err(refusal) => return close_with(&mut socket, &refusal).await,
                }
            }
            Control::Start { model, feature, language } => {
                let Some(id) = identity.take() else {
                    let refusal = Refusal::missing_key();
                    gateway.refused(&refusal, &RefusalContext::new(door, &request_id));
                    return close_with(&mut socket, &refusal).await;
                };
                let request = Request {
                    model: &model,
                    feature: feature.unwrap_or(Feature::Transcribe),
                    origin: origin.as_deref(),
                };
                let fields = language.map(|l| vec![("language".to_string(), l)]).unwrap_or_default();
                match Session::open(&gateway, id, &request, door, request_id.clone(), fields).await {
                    Ok(s) => break s,
                    Err(refusal) => return close_with(&mut socket, &refusal).await,
                }
            }
            Control::End => return close_done(&mut socket).await,
        }
    };
    let ready = serde_json::json!({
        "type": "ready",
        "request_id": session.request_id,
        "stream_id": session.stream_id(),
        "key_id": session.grant.key().to_string(),
        "model": session.grant.endpoint.shard.model,
    });
    if send_json(&mut socket, &ready).await.is_err() {
        return;
    }

    // Phase 2: audio until end, a limit, or revocation.
    loop {
        let deadline = session.deadline();
        tokio::select! {
            reason = session.revoked() => {
                return close_after_flush(&mut socket, &mut session, &reason).await;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let refusal = session.deadline_refusal();
                gateway.refused(&refusal, &RefusalContext::new(door, &session.request_id).grant(&session.grant));
                return close_after_flush(&mut socket, &mut session, &refusal).await;
            }
            message = socket.recv() => {
                let message = match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(m)) => m,
                };
                let step = match message {
                    Message::Binary(bytes) => match session.on_message() {
                        Err(r) => Err(r),
                        Ok(()) => session.on_audio(bytes).await,
                    },
                    Message::Text(text) => match session.on_message() {
                        Err(r) => Err(r),
                        Ok(()) => match serde_json::from_str::<Control>(text.as_str()) {
                            Ok(Control::End) => {
                                match session.finish().await {
                                    Ok(event) => {
                                        let _ = send_json(&mut socket, &event_json(&event)).await;
                                        return close_done(&mut socket).await;
                                    }
                                    Err(r) => Err(r),
                                }
                            }
                            Ok(_) => Err(Refusal::bad_request("the stream has started: send audio frames or {\"type\":\"end\"}")),
                            Err(_) => Err(Refusal::bad_request("control messages are JSON: {\"type\":\"end\"}")),
                        },
                    },
                    // Pings are answered by the library; they still count as activity.
                    _ => session.on_message().map(|_| None),
                };
                match step {
                    Ok(None) => {}
                    Ok(Some(event)) => {
                        if send_json(&mut socket, &event_json(&event)).await.is_err() {
                            return;
                        }
                    }
                    Err(refusal) => {
                        gateway.refused(&refusal, &RefusalContext::new(door, &session.request_id).grant(&session.grant));
                        session.set_close_reason(refusal.code.as_str());
                        return close_with(&mut socket, &refusal).await;
                    }
                }
            }
        }
    }
}

fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::Partial { text, segment, start_seconds, end_seconds } => serde_json::json!({
            "type": "partial", "segment": segment, "text": text, "start": start_seconds, "end": end_seconds,
        }),
        Event::Final { text, segments, audio_seconds, gpu_seconds } => serde_json::json!({
            "type": "final", "text": text, "segments": segments, "audio_seconds": audio_seconds, "gpu_seconds": gpu_seconds,
        }),
    }
}

async fn send_json(socket: &mut WebSocket, value: &serde_json::Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(Utf8Bytes::from(value.to_string()))).await
}

/// Server-initiated close of a running stream: flush the pending result (bounded), then close with the code.
async fn close_after_flush(socket: &mut WebSocket, session: &mut Session, refusal: &Refusal) {
    if let Some(event) = session.flush_before_close(refusal).await {
        let _ = send_json(socket, &event_json(&event)).await;
    }
    close_with(socket, refusal).await;
}

async fn close_with(socket: &mut WebSocket, refusal: &Refusal) {
    let mut body = refusal.to_json();
    body["type"] = "error".into();
    let _ = send_json(socket, &body).await;
    let frame = CloseFrame { code: refusal.code.ws_close_code(), reason: Utf8Bytes::from(refusal.ws_reason()) };
    let _ = socket.send(Message::Close(Some(frame))).await;
    finish_close(socket).await;
}

/// Completes the closing handshake: reading until the client's Close (briefly) means the socket is not dropped
/// while the client is still sending, which would reset the connection and lose the close frame on its side.
async fn finish_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn close_done(socket: &mut WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame { code: CLOSE_DONE, reason: Utf8Bytes::from_static("done") })))
        .await;
    finish_close(socket).await;
}
