//! What a stream door and [`Session::drive`](super::Session::drive) say to each other: client frames in
//! ([`Inbound`]), the start, results, refusals and refresh answers out ([`Transport`]).
use super::Event;
use crate::tokens::stream::{Presented, Terms};
use bytes::Bytes;
use infergate_gate::refusal::Refusal;
use std::future::Future;

/// What a door's client sent, translated from its protocol's frames.
#[derive(Debug)]
pub enum Inbound {
    /// Raw 16 kHz mono PCM16 little-endian.
    Audio(Bytes),
    /// The client ends the stream and wants the final result.
    End,
    /// A frame that only shows the client is alive (WebSocket ping/pong).
    Activity,
    /// A frame that is not valid on a running stream; the refusal says what to send instead.
    Invalid(Refusal),
    /// The client went away, or stopped listening, without `end`: nothing more to say.
    Closed,
    /// A new session token for the stream (`crate::tokens::stream`).
    Refresh(Presented),
}

/// The stream's start, as every door announces it.
pub struct Ready<'a> {
    pub request_id: &'a str,
    pub stream_id: u64,
    pub key_id: String,
    pub model: &'a str,
    /// For a stream opened with a session token: its expiry and the grace after it.
    pub token: Option<Terms>,
}

/// A stream door's frames: the WebSocket and gRPC doors implement it, [`Session::drive`] runs the loop.
/// A send that fails means the client is gone; the loop then ends without another word.
pub trait Transport: Send {
    /// The next client frame. Must be cancel-safe: it sits in a `select!` with the session's timers.
    fn recv(&mut self) -> impl Future<Output = Inbound> + Send;
    fn ready(&mut self, ready: Ready<'_>) -> impl Future<Output = Result<(), Gone>> + Send;
    fn event(&mut self, event: &Event) -> impl Future<Output = Result<(), Gone>> + Send;
    /// Ends the stream with a refusal (WebSocket: error message + 4xxx close; gRPC: status).
    fn refuse(&mut self, refusal: &Refusal) -> impl Future<Output = ()> + Send;
    /// Ends the stream normally after the final result.
    fn done(&mut self) -> impl Future<Output = ()> + Send;
    /// Answers a refresh: the new token's terms, or why it was refused (the stream goes on either way).
    fn refreshed(&mut self, result: &Result<Terms, Refusal>) -> impl Future<Output = Result<(), Gone>> + Send;
}

/// The client no longer reads what the stream sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone;
