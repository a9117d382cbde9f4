//! The WebSocket door, `GET /v1/stream`.
//!
//! ```text
//!  client                                   agent
//!  upgrade (Authorization: Bearer | ?ticket=) ─▶  connection cap; key checked (or ticket redeemed)
//!  {"type":"auth","key":...}   (if no header/ticket; within the auth deadline)
//!  {"type":"start","model":...,"feature":"transcribe","language"?}
//!                                           ◀─ {"type":"ready","request_id","stream_id","key_id",
//!                                                 "token_expires_at"?,"token_grace_seconds"?}  (token streams)
//!  binary frames: 16 kHz mono PCM16 LE      ◀─ {"type":"partial","segment","text","start","end"} per segment
//!  {"type":"refresh","token":...}           ◀─ {"type":"refreshed","token_expires_at"}
//!                                              or {"type":"refresh_refused","error":{...}} (the stream goes on)
//!  {"type":"end"}                           ◀─ {"type":"final","text","segments","audio_seconds","gpu_seconds"}
//!                                           ◀─ close 1000
//!  any refusal: ◀─ {"type":"error","error":{"code","message","retry_after_seconds"?}} then close 4xxx "<code>: ..."
//! ```
//! Close codes are listed in `infergate_gate::refusal`. Keys in the query string are refused (400) unless the
//! agent runs with `--allow-query-keys`; they are never logged either way. This door only translates: the
//! auth/start handshake into [`Session::open`], then frames into [`Inbound`] for [`Session::drive`].
use super::edge;
use super::listener::PeerAddr;
use crate::gateway::{ConnectionGuard, Credential, Gateway, KeySlot};
use crate::outcome::{Door, RequestOutcome};
use crate::session::{Event, Gone, Inbound, Ready, Session, Transport};
use crate::tokens::stream::{Presented, Terms};
pub use axum::extract::ws::Message;
use axum::extract::ws::{CloseFrame, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use infergate_crds::endpoint::Feature;
use infergate_gate::admission::{Identity, Request};
use infergate_gate::refusal::{Refusal, RefusalCode};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// Normal close after `end`.
pub const CLOSE_DONE: u16 = 1000;

/// A client's JSON control message. Public for the fuzz target of this parser (fuzz/src/lib.rs).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    Auth {
        key: String,
    },
    Start {
        model: String,
        #[serde(default)]
        feature: Option<Feature>,
        #[serde(default)]
        language: Option<String>,
        /// More redaction than the endpoint and key give: `"pci,ssn"`, or `{"entities": [...], "style":
        /// "marker", "audio": "beep"}`.
        #[serde(default)]
        redact: Option<crate::redaction::AskOption>,
    },
    End,
    /// A new session token for a running stream (see `crate::tokens::stream`).
    Refresh {
        token: String,
    },
}

pub async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    peer: Option<axum::Extension<PeerAddr>>,
    client_cert: edge::ClientCertExt,
    ws: WebSocketUpgrade,
) -> Response {
    let mut outcome = gateway.begin(Door::WebSocket, "/v1/stream", edge::traceparent(&headers));
    edge::attach_client_cert(&mut outcome, client_cert);
    let query_key = query.get("api_key").or_else(|| query.get("key"));
    if query_key.is_some() && !gateway.settings.allow_query_keys {
        let refusal = Refusal::new(
            RefusalCode::QueryKeyRefused,
            "API keys in URLs are refused (they end up in logs and browser history): send the Authorization header, an auth message, or a ticket from POST /v1/tickets",
        );
        gateway.refused(&refusal, &mut outcome);
        return edge::http_refusal(&refusal, &outcome.request_id);
    }
    let connection = match gateway.connection(Door::WebSocket) {
        Ok(c) => c,
        Err(refusal) => {
            gateway.refused(&refusal, &mut outcome);
            return edge::http_refusal(&refusal, &outcome.request_id);
        }
    };
    // Authenticate now when the credential came with the upgrade, so the socket task never holds a plaintext key.
    // Refusals are recorded here; the socket task only closes with them.
    let initial: Result<Option<Identity>, Refusal> = if let Some(ticket) = query.get("ticket") {
        match gateway.tickets.redeem(ticket) {
            Ok(c) => gateway.authenticate_recorded(&c, &mut outcome).map(Some),
            Err(r) => {
                gateway.refused(&r, &mut outcome);
                Err(r)
            }
        }
    } else if let Some(key) = edge::header_key(&headers).or(query_key.map(|k| std::borrow::Cow::Borrowed(k.as_str()))) {
        gateway.authenticate_recorded(&Credential::Key(&key), &mut outcome).map(Some)
    } else {
        Ok(None)
    };
    // A socket that has not shown a key yet holds one of its client IP's few unauthenticated slots until it does,
    // so one address cannot fill the agent with idle upgrades.
    let unauthenticated = match (&initial, peer) {
        (Ok(None), Some(axum::Extension(PeerAddr(addr)))) => match gateway.unauthenticated_slot(addr.ip()) {
            Ok(slot) => Some(slot),
            Err(refusal) => {
                gateway.refused(&refusal, &mut outcome);
                return edge::http_refusal(&refusal, &outcome.request_id);
            }
        },
        _ => None,
    };
    let origin = edge::origin(&headers).map(str::to_string);
    let header = http::HeaderValue::from_str(&outcome.request_id).ok();
    let mut response =
        ws.max_message_size(edge::MAX_STREAM_MESSAGE_BYTES).max_frame_size(edge::MAX_STREAM_MESSAGE_BYTES).on_upgrade(
            move |socket| run(gateway, WsTransport(socket), connection, initial, unauthenticated, origin, outcome),
        );
    if let Some(v) = header {
        response.headers_mut().insert(edge::REQUEST_ID_HEADER, v);
    }
    response
}

/// Largest text message before a stream has started (auth and start messages).
const MAX_CONTROL_MESSAGE_BYTES: usize = 16 * 1024;

/// Phase 1, before the auth deadline: authenticate (if the upgrade carried no credential) and start. Then
/// the session drives the stream.
async fn run(
    gateway: Arc<Gateway>,
    mut socket: WsTransport,
    _connection: ConnectionGuard,
    initial: Result<Option<Identity>, Refusal>,
    mut unauthenticated: Option<KeySlot>,
    origin: Option<String>,
    mut outcome: RequestOutcome,
) {
    let mut identity = match initial {
        Ok(i) => i,
        Err(refusal) => return socket.refuse(&refusal).await,
    };
    let deadline = Instant::now() + gateway.settings.auth_timeout;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.0.recv()).await {
            Err(_) => {
                let refusal = Refusal::new(
                    RefusalCode::AuthTimeout,
                    format!(
                        "no auth and start message within {} s of connecting",
                        gateway.settings.auth_timeout.as_secs()
                    ),
                );
                gateway.refused(&refusal, &mut outcome);
                return socket.refuse(&refusal).await;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(m))) => m,
        };
        let text = match message {
            // Control messages are a few hundred bytes; before a stream starts nothing larger is read further.
            Message::Text(t) if t.len() > MAX_CONTROL_MESSAGE_BYTES => {
                let reason =
                    format!("control messages before a stream starts are at most {MAX_CONTROL_MESSAGE_BYTES} bytes");
                return socket.close(CloseFrame { code: 1009, reason: Utf8Bytes::from(reason) }).await;
            }
            Message::Text(t) => t,
            Message::Binary(_) => {
                let refusal =
                    Refusal::bad_request("send a start message before audio: {\"type\":\"start\",\"model\":\"...\"}");
                return socket.refuse(&refusal).await;
            }
            _ => continue,
        };
        let control = match serde_json::from_str::<Control>(text.as_str()) {
            Ok(c) => c,
            Err(_) => {
                let refusal = Refusal::bad_request(
                    "control messages are JSON with a type: auth {key}, start {model, feature?, language?}, or end",
                );
                return socket.refuse(&refusal).await;
            }
        };
        match control {
            Control::Auth { key } => {
                let result = gateway.authenticate_recorded(&Credential::Key(&key), &mut outcome);
                drop(key);
                match result {
                    Ok(i) => {
                        identity = Some(i);
                        drop(unauthenticated.take());
                    }
                    Err(refusal) => return socket.refuse(&refusal).await,
                }
            }
            Control::Start { model, feature, language, redact } => {
                let Some(id) = identity.take() else {
                    let refusal = Refusal::missing_key();
                    gateway.refused(&refusal, &mut outcome);
                    return socket.refuse(&refusal).await;
                };
                let request = Request {
                    model: &model,
                    feature: feature.unwrap_or(Feature::Transcribe),
                    origin: origin.as_deref(),
                };
                let mut fields = language.map(|l| vec![("language".to_string(), l)]).unwrap_or_default();
                if let Some(redact) = redact {
                    fields.extend(redact.into_fields());
                }
                return match Session::open(&gateway, id, &request, outcome, fields).await {
                    Ok(session) => session.drive(&mut socket).await,
                    Err(refusal) => socket.refuse(&refusal).await,
                };
            }
            Control::End => return socket.done().await,
            Control::Refresh { .. } => {
                let refusal = Refusal::bad_request(
                    "refresh replaces the token of a running stream: authenticate with the token, then start",
                );
                return socket.refuse(&refusal).await;
            }
        }
    }
}

/// The WebSocket as a stream transport: binary frames are audio, text frames are JSON control messages.
struct WsTransport(WebSocket);

impl WsTransport {
    async fn send_json(&mut self, value: &serde_json::Value) -> Result<(), Gone> {
        self.0.send(Message::Text(Utf8Bytes::from(value.to_string()))).await.map_err(|_| Gone)
    }

    /// Completes the closing handshake: reading until the client's Close (briefly) means the socket is not
    /// dropped while the client is still sending, which would reset the connection and lose the close frame
    /// on its side.
    async fn close(&mut self, frame: CloseFrame) {
        let _ = self.0.send(Message::Close(Some(frame))).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while let Some(Ok(message)) = self.0.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// What a client's frame means to a running stream. Public so the `ws_session` fuzz target reads frames exactly
/// as the door does.
pub fn inbound(message: Message) -> Inbound {
    match message {
        Message::Close(_) => Inbound::Closed,
        Message::Binary(bytes) => Inbound::Audio(bytes),
        Message::Text(text) => match serde_json::from_str::<Control>(text.as_str()) {
            Ok(Control::End) => Inbound::End,
            Ok(Control::Refresh { token }) => Inbound::Refresh(Presented(token)),
            Ok(_) => Inbound::Invalid(Refusal::bad_request(
                "the stream has started: send audio frames, {\"type\":\"refresh\",\"token\":...} or \
                 {\"type\":\"end\"}",
            )),
            Err(_) => Inbound::Invalid(Refusal::bad_request("control messages are JSON: {\"type\":\"end\"}")),
        },
        // Pings are answered by the library; they still count as activity.
        Message::Ping(_) | Message::Pong(_) => Inbound::Activity,
    }
}

impl Transport for WsTransport {
    async fn recv(&mut self) -> Inbound {
        match self.0.recv().await {
            None | Some(Err(_)) => Inbound::Closed,
            Some(Ok(message)) => inbound(message),
        }
    }

    async fn ready(&mut self, ready: Ready<'_>) -> Result<(), Gone> {
        let mut message = serde_json::json!({
            "type": "ready",
            "request_id": ready.request_id,
            "stream_id": ready.stream_id,
            "key_id": ready.key_id,
            "model": ready.model,
        });
        if let Some(terms) = ready.token {
            message["token_expires_at"] = terms.expires_at.timestamp().into();
            message["token_grace_seconds"] = terms.grace.as_secs().into();
        }
        self.send_json(&message).await
    }

    async fn refreshed(&mut self, result: &Result<Terms, Refusal>) -> Result<(), Gone> {
        let message = match result {
            Ok(terms) => serde_json::json!({"type": "refreshed", "token_expires_at": terms.expires_at.timestamp()}),
            Err(refusal) => {
                let mut body = refusal.to_json();
                body["type"] = "refresh_refused".into();
                body
            }
        };
        self.send_json(&message).await
    }

    async fn event(&mut self, event: &Event) -> Result<(), Gone> {
        self.send_json(&event_json(event)).await?;
        // Redacted audio follows its event as one binary frame (16 kHz mono PCM16); the event's
        // `audio_start`/`audio_bytes` say what it covers.
        let audio = match event {
            Event::Partial { audio, .. } | Event::Final { audio, .. } => audio,
        };
        if let Some(audio) = audio {
            self.0.send(Message::Binary(audio.pcm.clone())).await.map_err(|_| Gone)?;
        }
        Ok(())
    }

    async fn refuse(&mut self, refusal: &Refusal) {
        let _ = self.send_json(&edge::ws_error(refusal)).await;
        self.close(edge::ws_close(refusal)).await;
    }

    async fn done(&mut self) {
        self.close(CloseFrame { code: CLOSE_DONE, reason: Utf8Bytes::from_static("done") }).await;
    }
}

fn event_json(event: &Event) -> serde_json::Value {
    let (mut value, redactions, audio) = match event {
        Event::Partial { text, segment, start_seconds, end_seconds, words, redactions, audio } => (
            serde_json::json!({
                "type": "partial", "segment": segment, "text": text, "start": start_seconds, "end": end_seconds,
                "words": words_json(words),
            }),
            redactions,
            audio,
        ),
        Event::Final { text, segments, audio_seconds, gpu_seconds, words, redactions, audio } => (
            serde_json::json!({
                "type": "final", "text": text, "segments": segments, "audio_seconds": audio_seconds, "gpu_seconds": gpu_seconds,
                "words": words_json(words),
            }),
            redactions,
            audio,
        ),
    };
    if let Some(counts) = redactions {
        value["redactions"] = crate::redaction::counts_json(counts);
    }
    if let Some(audio) = audio {
        value["audio_start"] = audio.start_seconds.into();
        value["audio_bytes"] = audio.pcm.len().into();
    }
    value
}

/// `[{"word": "Hello,", "start": 0.0, "end": 0.46}, ...]` (trimmed words, stream seconds).
fn words_json(words: &[crate::backend::TimedWord]) -> serde_json::Value {
    words.iter().map(|w| serde_json::json!({"word": w.word.trim(), "start": w.start, "end": w.end})).collect()
}
