//! The gRPC door: service `infergate.v1.Inference` (agent/proto/infergate/v1/inference.proto).
//! Key in metadata `authorization: Bearer <key>` or `x-api-key`. Refusals become statuses via
//! [`edge::grpc_status`] (code, `x-infergate-code`, `retry-after`); responses carry `x-request-id`.
//!
//! ```text
//!  Transcribe       ─▶ edge::authenticate ─▶ oneshot::run ─▶ TranscribeResponse (+ x-infergate-fallback)
//!  ListModels       ─▶ edge::authenticate ─▶ oneshot::models
//!  StreamTranscribe ─▶ connection cap ─▶ edge::authenticate ─▶ spawn: first message `start` (auth deadline)
//!                      ─▶ Session::open ─▶ Session::drive(GrpcTransport: messages ⇄ Inbound / results)
//! ```
use super::edge;
use crate::gateway::{Credential, Gateway};
use crate::oneshot::{self, OneShot};
use crate::outcome::{Door, RequestOutcome};
use crate::session::{Event, Gone, Inbound, Ready, Session, Transport};
use crate::tokens::stream::{Presented, Terms};
use infergate_crds::endpoint::Feature;
use infergate_gate::admission::{Identity, Request};
use infergate_gate::refusal::{Refusal, RefusalCode};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Status, Streaming};

pub mod pb {
    tonic::include_proto!("infergate.v1");
}

use pb::inference_server::{Inference, InferenceServer};
use pb::{stream_request, stream_response};
use tonic::service::interceptor::InterceptedService;

/// The gRPC service behind a key check on the request headers.
pub type Service = tonic::service::interceptor::InterceptedService<InferenceServer<GrpcDoor>, KeyCheck>;

/// The service, with every call's key checked from its metadata before any message is decoded, so a call without
/// a valid key holds no buffer and no task (the handlers check the key again, with the rest of the request). The
/// message limit is the larger of the upload limit (unary) and the stream message limit.
pub fn service(gateway: Arc<Gateway>) -> Service {
    let max_message = (gateway.settings.max_upload_bytes + 1024).max(edge::MAX_STREAM_MESSAGE_BYTES);
    let check = KeyCheck { gateway: Arc::clone(&gateway) };
    InterceptedService::new(InferenceServer::new(GrpcDoor { gateway }).max_decoding_message_size(max_message), check)
}

/// Refuses a call whose metadata carries no genuine key, before its first message is read.
#[derive(Clone)]
pub struct KeyCheck {
    gateway: Arc<Gateway>,
}

impl tonic::service::Interceptor for KeyCheck {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let presented = edge::metadata_key(request.metadata());
        let refusal = match presented.as_deref() {
            Some(key) => match self.gateway.authenticate(&self.gateway.snapshot(), &Credential::Key(key)) {
                Ok(_) => return Ok(request),
                Err(refusal) => refusal,
            },
            None => Refusal::missing_key(),
        };
        // The method is not known here: the route label is the service's.
        let mut outcome = self.gateway.begin(Door::Grpc, "Inference/*", edge::metadata_traceparent(request.metadata()));
        self.gateway.refused(&refusal, &mut outcome);
        Err(edge::grpc_status(&refusal, &outcome.request_id))
    }
}

pub struct GrpcDoor {
    gateway: Arc<Gateway>,
}

impl GrpcDoor {
    fn authenticate<T>(&self, request: &tonic::Request<T>, outcome: &mut RequestOutcome) -> Result<Identity, Status> {
        edge::authenticate(&self.gateway, edge::metadata_key(request.metadata()).as_deref(), outcome)
            .map_err(|refusal| edge::grpc_status(&refusal, &outcome.request_id))
    }
}

/// The verified client certificate of the call's TLS connection (mutual TLS), if any.
fn grpc_client_cert<T>(request: &tonic::Request<T>) -> Option<Arc<infergate_gate::admission::ClientCert>> {
    request.extensions().get::<super::tls::GrpcPeer>().and_then(|peer| peer.client_cert.clone())
}

fn with_request_id<T>(message: T, request_id: &str) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    if let Ok(v) = MetadataValue::try_from(request_id) {
        response.metadata_mut().insert(edge::REQUEST_ID_HEADER, v);
    }
    response
}

type ResponseStream = Pin<Box<dyn futures::Stream<Item = Result<pb::StreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Inference for GrpcDoor {
    async fn transcribe(
        &self,
        request: tonic::Request<pb::TranscribeRequest>,
    ) -> Result<tonic::Response<pb::TranscribeResponse>, Status> {
        let mut outcome =
            self.gateway.begin(Door::Grpc, "Inference/Transcribe", edge::metadata_traceparent(request.metadata()));
        outcome.client_cert = grpc_client_cert(&request);
        let identity = self.authenticate(&request, &mut outcome)?;
        let req = request.into_inner();
        let mut fields = vec![("response_format".to_string(), "json".to_string())];
        if !req.language.is_empty() {
            fields.push(("language".into(), req.language));
        }
        if !req.prompt.is_empty() {
            fields.push(("prompt".into(), req.prompt));
        }
        fields.extend(req.redact.map(redaction_fields).unwrap_or_default());
        let filename = if req.filename.is_empty() { "audio.wav".to_string() } else { req.filename };
        let one_shot = OneShot {
            model: &req.model,
            feature: Feature::Transcribe,
            without_audio: false,
            origin: None,
            audio: req.audio.into(),
            filename,
            content_type: "application/octet-stream".into(),
            fields,
        };
        let served = oneshot::run(&self.gateway, identity, one_shot, &mut outcome)
            .await
            .map_err(|r| edge::grpc_status(&r, &outcome.request_id))?;
        let request_id = &outcome.request_id;
        let mut response = with_request_id(
            pb::TranscribeResponse {
                text: served.text.unwrap_or_default(),
                audio_seconds: served.audio_seconds,
                gpu_seconds: served.gpu_seconds,
                request_id: request_id.clone(),
                redactions: served.redactions.as_ref().map(pb_counts).unwrap_or_default(),
                redacted_audio: served.redacted_audio.unwrap_or_default().into(),
            },
            request_id,
        );
        // Same name as the HTTP header: the request was served by the endpoint's fallback.
        if let Some(v) = served.fallback.and_then(|f| MetadataValue::try_from(f.as_str()).ok()) {
            response.metadata_mut().insert(edge::FALLBACK_HEADER, v);
        }
        Ok(response)
    }

    async fn list_models(
        &self,
        request: tonic::Request<pb::ListModelsRequest>,
    ) -> Result<tonic::Response<pb::ListModelsResponse>, Status> {
        let mut outcome =
            self.gateway.begin(Door::Grpc, "Inference/ListModels", edge::metadata_traceparent(request.metadata()));
        outcome.client_cert = grpc_client_cert(&request);
        let identity = self.authenticate(&request, &mut outcome)?;
        let models = oneshot::models(&self.gateway, &identity)
            .into_iter()
            .map(|m| pb::Model {
                id: m.id,
                features: m.features.into_iter().map(str::to_string).collect(),
                endpoint: m.endpoint,
            })
            .collect();
        Ok(with_request_id(pb::ListModelsResponse { models }, &outcome.request_id))
    }

    type StreamTranscribeStream = ResponseStream;

    async fn stream_transcribe(
        &self,
        request: tonic::Request<Streaming<pb::StreamRequest>>,
    ) -> Result<tonic::Response<Self::StreamTranscribeStream>, Status> {
        let mut outcome = self.gateway.begin(
            Door::Grpc,
            "Inference/StreamTranscribe",
            edge::metadata_traceparent(request.metadata()),
        );
        outcome.client_cert = grpc_client_cert(&request);
        let gateway = Arc::clone(&self.gateway);
        let connection = gateway.connection(Door::Grpc).map_err(|r| {
            gateway.refused(&r, &mut outcome);
            edge::grpc_status(&r, &outcome.request_id)
        })?;
        let identity = self.authenticate(&request, &mut outcome)?;
        let (tx, rx) = mpsc::channel(16);
        let request_id = outcome.request_id.clone();
        let transport = GrpcTransport { inbound: request.into_inner(), tx, request_id: request_id.clone() };
        tokio::spawn(async move {
            let _connection = connection;
            run_stream(gateway, identity, transport, outcome).await;
        });
        Ok(with_request_id(Box::pin(ReceiverStream::new(rx)) as ResponseStream, &request_id))
    }
}

/// The first message must be `start`, within the auth deadline; then the session drives the stream.
async fn run_stream(
    gateway: Arc<Gateway>,
    identity: Identity,
    mut transport: GrpcTransport,
    mut outcome: RequestOutcome,
) {
    let first = tokio::time::timeout(gateway.settings.auth_timeout, transport.inbound.message()).await;
    let start = match first {
        Err(_) => {
            let r =
                Refusal::new(RefusalCode::AuthTimeout, "no start message within the deadline after opening the stream");
            gateway.refused(&r, &mut outcome);
            return transport.refuse(&r).await;
        }
        Ok(Err(_)) | Ok(Ok(None)) => return,
        Ok(Ok(Some(pb::StreamRequest { msg: Some(stream_request::Msg::Start(start)) }))) => start,
        Ok(Ok(Some(_))) => {
            return transport
                .refuse(&Refusal::bad_request("the first stream message must be `start` with a model"))
                .await;
        }
    };
    let (feature, fields) = match start_terms(&start) {
        Ok(terms) => terms,
        Err(refusal) => return transport.refuse(&refusal).await,
    };
    let request = Request { model: &start.model, feature, origin: None };
    match Session::open(&gateway, identity, &request, outcome, fields).await {
        Ok(session) => session.drive(&mut transport).await,
        Err(refusal) => transport.refuse(&refusal).await,
    }
}

/// What a `start` message asks for: the feature, and the one-shot form fields (language, redaction) the session
/// reads. Public for the gRPC fuzz target, which drives sessions through the door's own readings.
pub fn start_terms(start: &pb::StreamStart) -> Result<(Feature, Vec<(String, String)>), Refusal> {
    let feature = match start.feature.as_str() {
        "" | "transcribe" => Feature::Transcribe,
        "embed" => Feature::Embed,
        "verify" => Feature::Verify,
        "vad" => Feature::Vad,
        _ => return Err(Refusal::bad_request("unknown feature: use transcribe, embed, verify or vad")),
    };
    let mut fields =
        if start.language.is_empty() { vec![] } else { vec![("language".to_string(), start.language.clone())] };
    fields.extend(start.redact.clone().map(redaction_fields).unwrap_or_default());
    Ok((feature, fields))
}

/// A message after `start`, as the session sees it.
pub fn inbound(message: pb::StreamRequest) -> Inbound {
    match message.msg {
        Some(stream_request::Msg::Audio(bytes)) => Inbound::Audio(bytes.into()),
        Some(stream_request::Msg::End(_)) => Inbound::End,
        Some(stream_request::Msg::Refresh(refresh)) => Inbound::Refresh(Presented(refresh.token)),
        Some(stream_request::Msg::Start(_)) | None => {
            Inbound::Invalid(Refusal::bad_request("the stream has started: send audio or end"))
        }
    }
}

/// The bidirectional gRPC stream as a stream transport: `audio`/`end` messages in, results and a final
/// status out. Ending normally is dropping the sender (status OK).
struct GrpcTransport {
    inbound: Streaming<pb::StreamRequest>,
    tx: mpsc::Sender<Result<pb::StreamResponse, Status>>,
    request_id: String,
}

impl GrpcTransport {
    async fn send(&mut self, message: pb::StreamResponse) -> Result<(), Gone> {
        self.tx.send(Ok(message)).await.map_err(|_| Gone)
    }
}

impl Transport for GrpcTransport {
    async fn recv(&mut self) -> Inbound {
        tokio::select! {
            // The client dropped the response stream: nobody reads what this stream would say.
            _ = self.tx.closed() => Inbound::Closed,
            message = self.inbound.message() => match message {
                // The client went away or half-closed without `end`: nothing more to say.
                Ok(None) | Err(_) => Inbound::Closed,
                Ok(Some(m)) => inbound(m),
            },
        }
    }

    async fn ready(&mut self, ready: Ready<'_>) -> Result<(), Gone> {
        self.send(pb::StreamResponse {
            msg: Some(stream_response::Msg::Ready(pb::StreamReady {
                request_id: ready.request_id.to_string(),
                stream_id: ready.stream_id,
                key_id: ready.key_id,
                token_expires_at: ready.token.map_or(0, |t| t.expires_at.timestamp()),
                token_grace_seconds: ready.token.map_or(0, |t| t.grace.as_secs() as u32),
            })),
        })
        .await
    }

    async fn refreshed(&mut self, result: &Result<Terms, Refusal>) -> Result<(), Gone> {
        let answer = match result {
            Ok(terms) => pb::StreamRefreshed {
                accepted: true,
                token_expires_at: terms.expires_at.timestamp(),
                ..Default::default()
            },
            Err(refusal) => pb::StreamRefreshed {
                code: refusal.code.as_str().to_string(),
                message: refusal.message.to_string(),
                ..Default::default()
            },
        };
        self.send(pb::StreamResponse { msg: Some(stream_response::Msg::Refreshed(answer)) }).await
    }

    async fn event(&mut self, event: &Event) -> Result<(), Gone> {
        self.send(result_message(event)).await?;
        let audio = match event {
            Event::Partial { audio, .. } | Event::Final { audio, .. } => audio,
        };
        if let Some(audio) = audio {
            let message = pb::RedactedAudio { pcm: audio.pcm.to_vec(), start_seconds: audio.start_seconds };
            self.send(pb::StreamResponse { msg: Some(stream_response::Msg::Audio(message)) }).await?;
        }
        Ok(())
    }

    async fn refuse(&mut self, refusal: &Refusal) {
        let _ = self.tx.send(Err(edge::grpc_status(refusal, &self.request_id))).await;
    }

    async fn done(&mut self) {}
}

fn result_message(event: &Event) -> pb::StreamResponse {
    let result = match event {
        Event::Partial { text, segment, start_seconds, end_seconds, words, redactions, .. } => pb::TranscriptResult {
            words: pb_words(words),
            redactions: redactions.as_ref().map(pb_counts).unwrap_or_default(),
            r#final: false,
            text: text.clone(),
            segment: *segment,
            start_seconds: *start_seconds,
            end_seconds: *end_seconds,
            audio_seconds: *end_seconds,
            gpu_seconds: 0.0,
        },
        Event::Final { text, segments, audio_seconds, gpu_seconds, words, redactions, .. } => pb::TranscriptResult {
            words: pb_words(words),
            redactions: redactions.as_ref().map(pb_counts).unwrap_or_default(),
            r#final: true,
            text: text.clone(),
            segment: *segments,
            start_seconds: 0.0,
            end_seconds: *audio_seconds,
            audio_seconds: *audio_seconds,
            gpu_seconds: *gpu_seconds,
        },
    };
    pb::StreamResponse { msg: Some(stream_response::Msg::Result(result)) }
}

/// The proto's redaction ask as the one-shot form fields every door's ask is read from.
fn redaction_fields(redact: pb::Redaction) -> Vec<(String, String)> {
    crate::redaction::AskOption::Full {
        entities: redact.entities,
        style: Some(redact.style).filter(|s| !s.is_empty()),
        audio: Some(redact.audio).filter(|a| !a.is_empty()),
    }
    .into_fields()
}

fn pb_counts(counts: &crate::redaction::Counts) -> std::collections::HashMap<String, u32> {
    counts.iter().map(|(e, n)| (e.name().to_string(), *n)).collect()
}

fn pb_words(words: &[crate::backend::TimedWord]) -> Vec<pb::Word> {
    words.iter().map(|w| pb::Word { word: w.word.trim().to_string(), start: w.start, end: w.end }).collect()
}
