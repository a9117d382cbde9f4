//! The body of the `grpc_stream` target (a module of `fuzz/src/lib.rs`, by `#[path]`, so the replay test gets it
//! too). Input: gRPC's length-prefixed wire frames, `[compressed flag][length u32 BE][message]`, a short last
//! frame taking what is left; each message is decoded by prost as tonic would, and read by the door's functions.
use super::session::{Recorded, Source, check_released, check_stream, harness};
use infergate_agent::doors::grpc::pb::{self, stream_request};
use infergate_agent::doors::grpc::{inbound, start_terms};
use infergate_agent::gateway::Credential;
use infergate_agent::outcome::Door;
use infergate_agent::session::{Inbound, Session};
use infergate_gate::admission::Request;
use infergate_gate::testing::key;
use prost::Message;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// Each frame's message, or `Err` where tonic would end the call with an error status instead (a compressed
/// frame on a server that accepts no compression, or bytes prost cannot decode).
pub fn messages(mut data: &[u8]) -> Vec<Result<pb::StreamRequest, ()>> {
    let mut out = vec![];
    while let [flag, rest @ ..] = data {
        let len = match rest {
            [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]) as usize,
            _ => 0,
        };
        let body = rest.get(4..).unwrap_or_default();
        let (payload, tail) = body.split_at(len.min(body.len()));
        out.push(if *flag != 0 { Err(()) } else { pb::StreamRequest::decode(payload).map_err(drop) });
        data = tail;
    }
    out
}

/// The inverse of [`messages`] for seeds: uncompressed frames.
pub fn encode(messages: &[pb::StreamRequest]) -> Vec<u8> {
    let mut out = vec![];
    for m in messages {
        let bytes = m.encode_to_vec();
        out.push(0);
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The gRPC client's messages.
#[derive(Default)]
struct Wire {
    messages: VecDeque<Result<pb::StreamRequest, ()>>,
    /// The call ended from the client's side (end of its stream, or an error status): what follows is never read.
    closed: bool,
}

impl Source for Wire {
    // `GrpcTransport::recv`: an error status or the end of the client's stream is `Closed`.
    fn next(&mut self) -> Inbound {
        match self.messages.pop_front() {
            None | Some(Err(())) => {
                self.closed = true;
                Inbound::Closed
            }
            Some(Ok(message)) => inbound(message),
        }
    }
}

pub fn run(data: &[u8]) {
    let harness = harness();
    let gateway = &harness.gateway;
    let mut wire = Recorded { source: Wire { messages: messages(data).into(), closed: false }, ..Recorded::default() };
    harness.received_pcm_bytes.store(0, Ordering::Relaxed);
    harness.runtime.block_on(async {
        // `run_stream`: the first message must be `start`; anything else ends the call before a session.
        let Some(Ok(pb::StreamRequest { msg: Some(stream_request::Msg::Start(start)) })) =
            wire.source.messages.pop_front()
        else {
            return;
        };
        let Ok((feature, fields)) = start_terms(&start) else { return };
        let snapshot = gateway.snapshot();
        // As if the call's metadata carried `authorization: Bearer <key 1>` (checked before any message).
        let identity = gateway.authenticate(&snapshot, &Credential::Key(key(1).expose())).expect("key 1 is valid");
        let request = Request { model: &start.model, feature, origin: None };
        let outcome = gateway.begin(Door::Grpc, "Inference/StreamTranscribe", None);
        if let Ok(session) = Session::open(gateway, identity, &request, outcome, fields).await {
            session.drive(&mut wire).await;
            check_stream(wire.ready, wire.endings, wire.source.closed, &wire.events);
        }
    });
    check_released(gateway);
}

fn start(feature: &str) -> pb::StreamRequest {
    let start = pb::StreamStart {
        model: super::session::MODEL.into(),
        feature: feature.into(),
        language: "en".into(),
        ..Default::default()
    };
    pb::StreamRequest { msg: Some(stream_request::Msg::Start(start)) }
}

fn audio(bytes: Vec<u8>) -> pb::StreamRequest {
    pb::StreamRequest { msg: Some(stream_request::Msg::Audio(bytes)) }
}

fn end() -> pb::StreamRequest {
    pb::StreamRequest { msg: Some(stream_request::Msg::End(pb::StreamEnd::default())) }
}

pub fn seed_start_audio_end() -> Vec<u8> {
    encode(&[start("transcribe"), audio(vec![0x10; 6_400]), audio(vec![2; 6_400]), end()])
}

pub fn seed_audio_before_start() -> Vec<u8> {
    encode(&[audio(vec![1; 320]), start(""), end()])
}

pub fn seed_compressed_and_garbage() -> Vec<u8> {
    let mut out = encode(&[start("transcribe"), audio(vec![3; 640])]);
    out.extend_from_slice(&[1, 0, 0, 0, 2, 0x12, 0x00]);
    out.extend_from_slice(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]);
    out
}

pub fn seed_unknown_feature() -> Vec<u8> {
    let refresh = pb::StreamRequest {
        msg: Some(stream_request::Msg::Refresh(pb::StreamRefresh { token: "not.a.token".into() })),
    };
    let mut out = encode(&[start("translate"), end()]);
    out.extend(encode(&[start("vad"), refresh, start("embed"), audio(vec![0; 31]), end()]));
    out
}
