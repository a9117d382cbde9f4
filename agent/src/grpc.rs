//! The gRPC door: service `infergate.v1.Inference` (agent/proto/infergate/v1/inference.proto).
//! Key in metadata `authorization: Bearer <key>` or `x-api-key`. Refusals become statuses via
//! [`Refusal::to_status`] (code, `x-infergate-code`, `retry-after`); responses carry `x-request-id`.
use crate::admission::{Identity, Request};
use crate::gateway::{Credential, Door, Gateway, RefusalContext};
use crate::http::{OneShot, run_one_shot};
use crate::refusal::{Refusal, RefusalCode};
use crate::session::{Event, Session};
use infergate_crds::endpoint::Feature;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Status, Streaming};

pub mod pb {
    tonic::include_proto!("infergate.v1");
}

use pb::inference_server::{Inference, InferenceServer};
use pb::{stream_request, stream_response};

pub fn service(gateway: Arc<Gateway>) -> InferenceServer<GrpcDoor> {
    let max = 16 * 1024 * 1024 + 1024;
    InferenceServer::new(GrpcDoor { gateway }).max_decoding_message_size(max)
}

pub struct GrpcDoor {
    gateway: Arc<Gateway>,
}

fn presented_key(md: &MetadataMap) -> Option<&str> {
    if let Some(v) = md.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim());
        }
        return Some(v);
    }
    md.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

fn status(refusal: &Refusal, request_id: &str) -> Status {
    let mut s = refusal.to_status();
    if let Ok(v) = MetadataValue::try_from(request_id) {
        s.metadata_mut().insert("x-request-id", v);
    }
    s
}

impl GrpcDoor {
    fn authenticate(&self, md: &MetadataMap, request_id: &str) -> Result<Identity, Status> {
        let result = match presented_key(md) {
            None => {
                let refusal = Refusal::new(
                    RefusalCode::MissingKey,
                    "no API key: send metadata `authorization: Bearer <key>` or `x-api-key`",
                );
                self.gateway.refused(&refusal, &RefusalContext::new(Door::Grpc, request_id));
                Err(refusal)
            }
            Some(key) => self.gateway.authenticate_recorded(&Credential::Key(key), Door::Grpc, request_id),
        };
        result.map_err(|refusal| status(&refusal, request_id))
    }
}

fn with_request_id<T>(message: T, request_id: &str) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    if let Ok(v) = MetadataValue::try_from(request_id) {
        response.metadata_mut().insert("x-request-id", v);
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
        let request_id = crate::gateway::request_id();
        let identity = self.authenticate(request.metadata(), &request_id)?;
        let req = request.into_inner();
        let mut fields = vec![("response_format".to_string(), "json".to_string())];
        if !req.language.is_empty() {
            fields.push(("language".into(), req.language));
        }
        if !req.prompt.is_empty() {
            fields.push(("prompt".into(), req.prompt));
        }
        let filename = if req.filename.is_empty() { "audio.wav".to_string() } else { req.filename };
        let outcome = run_one_shot(
            &self.gateway,
            identity,
            OneShot {
                model: &req.model,
                feature: infergate_crds::endpoint::Feature::Transcribe,
                without_audio: false,
                origin: None,
                audio: req.audio.into(),
                filename,
                content_type: "application/octet-stream".into(),
                fields,
            },
            Door::Grpc,
            &request_id,
        )
        .await
        .map_err(|r| status(&r, &request_id))?;
        let fallback = outcome.fallback.clone();
        let mut response = with_request_id(
            pb::TranscribeResponse {
                text: outcome.text.unwrap_or_default(),
                audio_seconds: outcome.audio_seconds,
                gpu_seconds: outcome.gpu_seconds,
                request_id: request_id.clone(),
            },
            &request_id,
        );
        // Same name as the HTTP header: the request was served by the endpoint's fallback.
        if let Some(v) = fallback.and_then(|f| MetadataValue::try_from(f.as_str()).ok()) {
            response.metadata_mut().insert(crate::http::FALLBACK_HEADER, v);
        }
        Ok(response)
    }

    async fn list_models(
        &self,
        request: tonic::Request<pb::ListModelsRequest>,
    ) -> Result<tonic::Response<pb::ListModelsResponse>, Status> {
        let request_id = crate::gateway::request_id();
        let identity = self.authenticate(request.metadata(), &request_id)?;
        let models = crate::http::models_for(&self.gateway, &identity)
            .into_iter()
            .map(|(id, features, endpoint)| pb::Model {
                id,
                features: features.into_iter().map(str::to_string).collect(),
                endpoint,
            })
            .collect();
        Ok(with_request_id(pb::ListModelsResponse { models }, &request_id))
    }

    type StreamTranscribeStream = ResponseStream;

    async fn stream_transcribe(
        &self,
        request: tonic::Request<Streaming<pb::StreamRequest>>,
    ) -> Result<tonic::Response<Self::StreamTranscribeStream>, Status> {
        let request_id = crate::gateway::request_id();
        let gateway = Arc::clone(&self.gateway);
        let connection = gateway.connection(Door::Grpc).map_err(|r| {
            gateway.refused(&r, &RefusalContext::new(Door::Grpc, &request_id));
            status(&r, &request_id)
        })?;
        let identity = self.authenticate(request.metadata(), &request_id)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let rid = request_id.clone();
        tokio::spawn(async move {
            let _connection = connection;
            run_stream(gateway, identity, inbound, tx, rid).await;
        });
        Ok(with_request_id(Box::pin(ReceiverStream::new(rx)) as ResponseStream, &request_id))
    }
}

type Tx = mpsc::Sender<Result<pb::StreamResponse, Status>>;

fn result_message(event: &Event) -> pb::StreamResponse {
    let result = match event {
        Event::Partial { text, segment, start_seconds, end_seconds } => pb::TranscriptResult {
            r#final: false,
            text: text.clone(),
            segment: *segment,
            start_seconds: *start_seconds,
            end_seconds: *end_seconds,
            audio_seconds: *end_seconds,
            gpu_seconds: 0.0,
        },
        Event::Final { text, segments, audio_seconds, gpu_seconds } => pb::TranscriptResult {
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

async fn run_stream(
    gateway: Arc<Gateway>,
    identity: Identity,
    mut inbound: Streaming<pb::StreamRequest>,
    tx: Tx,
    request_id: String,
) {
    let door = Door::Grpc;
    let fail = |refusal: Refusal| {
        let tx = tx.clone();
        let request_id = request_id.clone();
        async move {
            let _ = tx.send(Err(status(&refusal, &request_id))).await;
        }
    };
    // The first message must be `start`, within the auth deadline.
    let first = tokio::time::timeout(gateway.settings.auth_timeout, inbound.message()).await;
    let start = match first {
        Err(_) => {
            let r =
                Refusal::new(RefusalCode::AuthTimeout, "no start message within the deadline after opening the stream");
            gateway.refused(&r, &RefusalContext::new(door, &request_id).identity(&identity));
            return fail(r).await;
        }
        Ok(Err(_)) | Ok(Ok(None)) => return,
        Ok(Ok(Some(pb::StreamRequest { msg: Some(stream_request::Msg::Start(start)) }))) => start,
        Ok(Ok(Some(_))) => {
            return fail(Refusal::bad_request("the first stream message must be `start` with a model")).await;
        }
    };
    let feature = match start.feature.as_str() {
        "" | "transcribe" => Feature::Transcribe,
        "embed" => Feature::Embed,
        "verify" => Feature::Verify,
        "vad" => Feature::Vad,
        _ => {
            return fail(Refusal::bad_request("unknown feature: use transcribe, embed, verify or vad")).await;
        }
    };
    let fields =
        if start.language.is_empty() { vec![] } else { vec![("language".to_string(), start.language.clone())] };
    let request = Request { model: &start.model, feature, origin: None };
    let mut session = match Session::open(&gateway, identity, &request, door, request_id.clone(), fields).await {
        Ok(s) => s,
        Err(r) => return fail(r).await,
    };
    let ready = pb::StreamResponse {
        msg: Some(stream_response::Msg::Ready(pb::StreamReady {
            request_id: request_id.clone(),
            stream_id: session.stream_id(),
            key_id: session.grant.key().to_string(),
        })),
    };
    if tx.send(Ok(ready)).await.is_err() {
        return;
    }
    loop {
        let deadline = session.deadline();
        tokio::select! {
            reason = session.revoked() => {
                if let Some(event) = session.flush_before_close(&reason).await {
                    let _ = tx.send(Ok(result_message(&event))).await;
                }
                return fail(reason).await;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let reason = session.deadline_refusal();
                gateway.refused(&reason, &RefusalContext::new(door, &request_id).grant(&session.grant));
                if let Some(event) = session.flush_before_close(&reason).await {
                    let _ = tx.send(Ok(result_message(&event))).await;
                }
                return fail(reason).await;
            }
            _ = tx.closed() => return,
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(m)) => m,
                    // The client went away or half-closed without `end`: nothing more to say.
                    Ok(None) | Err(_) => return,
                };
                let step = match session.on_message() {
                    Err(r) => Err(r),
                    Ok(()) => match message.msg {
                        Some(stream_request::Msg::Audio(bytes)) => session.on_audio(bytes.into()).await,
                        Some(stream_request::Msg::End(_)) => match session.finish().await {
                            Ok(event) => {
                                let _ = tx.send(Ok(result_message(&event))).await;
                                return;
                            }
                            Err(r) => Err(r),
                        },
                        Some(stream_request::Msg::Start(_)) | None => {
                            Err(Refusal::bad_request("the stream has started: send audio or end"))
                        }
                    },
                };
                match step {
                    Ok(None) => {}
                    Ok(Some(event)) => {
                        if tx.send(Ok(result_message(&event))).await.is_err() {
                            return;
                        }
                    }
                    Err(refusal) => {
                        gateway.refused(&refusal, &RefusalContext::new(door, &request_id).grant(&session.grant));
                        session.set_close_reason(refusal.code.as_str());
                        return fail(refusal).await;
                    }
                }
            }
        }
    }
}
