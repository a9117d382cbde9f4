//! One audio stream, whatever door it came through: ingress limits, charging as audio arrives, segmenting to
//! the backend, and the graceful close on revocation. The doors translate frames; [`Session::drive`] runs
//! the one stream loop over their [`Transport`].
//!
//! ```text
//!  door: start message ─▶ Session::open (scope, per-key connections, stream slot, backend) ─▶ drive(transport)
//!  drive: transport.ready ─▶ loop select! {
//!           session.revoked()                  ─▶ flush (≤ flush_deadline) ─▶ transport.close(refusal)
//!           deadline (idle / session length)   ─▶ flush ─▶ close
//!           transport.recv() ─ Audio ─▶ on_audio: chunk size, messages/s, total audio,
//!                                       charge chunk_seconds × cost (waits ≤ queue timeout, else 4290),
//!                                       buffer; every segment_seconds ─▶ backend ─▶ Event::Partial
//!                            ─ End   ─▶ finish: backend(remainder) ─▶ Event::Final ─▶ transport.done
//!                            ─ Closed (client gone) ─▶ return }
//!  each segment: its chunk charges settle once, through Gateway::settle, against the measured GPU time
//! ```
use crate::backend::{Backend, BackendRequest, Backends, Cut, TimedWord};
use crate::gateway::{Gateway, KeyConnectionGuard};
use crate::outcome::RequestOutcome;
use crate::redaction::stream::{Released, StreamRedaction};
use crate::redaction::{self, Counts};
use crate::tokens::{self, stream::Terms};
use bytes::{Bytes, BytesMut};
use infergate_gate::admission::{self, Grant, Identity, Request, TokenGrant};
use infergate_gate::audio::{self, pcm16_seconds, wav_header};
use infergate_gate::audit::StreamClosedEvent;
use infergate_gate::limiter::{Charge, Limiter, StreamSlot};
use infergate_gate::refusal::{Refusal, RefusalCode};
use infergate_gate::streams::{StreamHandle, StreamScope};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;

mod transport;
pub use transport::{Gone, Inbound, Ready, Transport};

/// A result to send to the client.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One segment's text; `words` (stream times) when the backend gives them (the built-in Whisper does).
    Partial {
        text: String,
        segment: u32,
        start_seconds: f64,
        end_seconds: f64,
        words: Vec<TimedWord>,
        /// With redaction on: what this event's text had redacted, by type (the final: the whole stream's).
        redactions: Option<Counts>,
        /// With audio redaction on: the audio released with this event, redacted.
        audio: Option<RedactedAudio>,
    },
    Final {
        text: String,
        segments: u32,
        audio_seconds: f64,
        gpu_seconds: f64,
        words: Vec<TimedWord>,
        redactions: Option<Counts>,
        audio: Option<RedactedAudio>,
    },
}

/// Redacted 16 kHz mono PCM16 (little-endian) from `start_seconds` of the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct RedactedAudio {
    pub pcm: Bytes,
    pub start_seconds: f64,
}

pub struct Session {
    gateway: Arc<Gateway>,
    pub grant: Grant,
    /// The request's record: door, request id, key, endpoint, outcome code, GPU-seconds (the running total).
    outcome: RequestOutcome,
    handle: StreamHandle,
    _slot: StreamSlot,
    /// The stream's session token's `jti` binding, when its tier allows one stream per token.
    token_slot: Option<StreamSlot>,
    _key_connection: KeyConnectionGuard,
    backend: Arc<dyn Backend>,
    fields: Vec<(String, String)>,
    started: Instant,
    last_message: Instant,
    window_start: Instant,
    window_messages: u32,
    buffer: BytesMut,
    /// Audio seconds already sent to the backend (the start of the buffered segment).
    flushed_seconds: f64,
    audio_seconds: f64,
    /// The chunk charges of the buffered segment, settled once against the backend's measured time.
    segment_charge: Option<Charge>,
    segments: u32,
    transcript: String,
    /// Every segment's words, in stream time.
    words: Vec<TimedWord>,
    /// The stream's redaction (endpoint, policy and the start message's ask), when one applies.
    redaction: Option<StreamRedaction>,
    redactions: Counts,
    closed_code: &'static str,
}

impl Session {
    /// Authorizes and opens a stream: scope, per-key connection cap, the tier's stream cap (queued), backend.
    /// Every refusal is recorded on `outcome`.
    pub async fn open(
        gateway: &Arc<Gateway>,
        identity: Identity,
        request: &Request<'_>,
        mut outcome: RequestOutcome,
        mut fields: Vec<(String, String)>,
    ) -> Result<Session, Refusal> {
        let snapshot = gateway.snapshot();
        let key = identity.key;
        outcome.identity(&identity);
        let grant = admission::decide(&snapshot, &identity, request, infergate_gate::clock::now())
            .inspect_err(|refusal| gateway.refused(refusal, &mut outcome))?;
        outcome.grant(&grant);
        let mut refused = |refusal: Refusal| {
            gateway.refused(&refusal, &mut outcome);
            refusal
        };
        let ask = redaction::Ask::from_fields(&fields).map_err(&mut refused)?;
        fields.retain(|(name, _)| !redaction::oneshot::is_redaction_field(name));
        let redaction = match redaction::rule_for(&grant, &ask).map_err(&mut refused)? {
            Some(rule) => {
                let redactor = gateway.redaction().redactor(&rule).map_err(&mut refused)?;
                Some(StreamRedaction::new(redactor, rule.audio))
            }
            None => None,
        };
        let key_connection = gateway.key_connection(key).await.map_err(&mut refused)?;
        let backend = gateway.backends.for_endpoint(&grant.endpoint.shard).map_err(&mut refused)?;
        if let Some(token) = &grant.identity.token {
            // Streams carry raw PCM16: a token limited to other codecs cannot stream.
            token.check_codec(audio::codec_name(infergate_crds::endpoint::Codec::Pcm16)).map_err(&mut refused)?;
        }
        let token_slot = gateway.limiter.bind_token(&grant).await.map_err(&mut refused)?;
        let slot = gateway.limiter.open_stream(&grant).await.map_err(&mut refused)?;
        gateway.admitted(&grant);
        let handle = gateway.streams.register_scoped(
            key,
            grant.identity.digest,
            grant.identity.environment,
            &grant.endpoint.label,
            outcome.door.as_str(),
            StreamScope {
                model: request.model.to_string(),
                feature: request.feature,
                origin: request.origin.map(str::to_string),
            },
        );
        gateway.metrics.open_streams.inc();
        let now = Instant::now();
        Ok(Session {
            gateway: Arc::clone(gateway),
            grant,
            outcome,
            handle,
            _slot: slot,
            token_slot,
            _key_connection: key_connection,
            backend,
            fields,
            started: now,
            last_message: now,
            window_start: now,
            window_messages: 0,
            buffer: BytesMut::new(),
            flushed_seconds: 0.0,
            audio_seconds: 0.0,
            segment_charge: None,
            segments: 0,
            transcript: String::new(),
            words: Vec::new(),
            redaction,
            redactions: Counts::new(),
            closed_code: "client_closed",
        })
    }

    /// Runs the stream to its end over a door's transport: ready, then audio until `end`, a limit, the
    /// client leaving, or revocation. Every refusal is recorded once and sent through the transport.
    pub async fn drive(mut self, transport: &mut impl Transport) {
        let ready = Ready {
            request_id: &self.outcome.request_id,
            stream_id: self.handle.id,
            key_id: self.grant.key().to_string(),
            model: &self.grant.endpoint.shard.model,
            token: Terms::of(&self.grant.identity, self.gateway.settings.token_grace),
        };
        if transport.ready(ready).await.is_err() {
            return;
        }
        // A handle of its own: the select below also borrows `self` mutably.
        let gateway = Arc::clone(&self.gateway);
        loop {
            let deadline = self.deadline();
            let step = tokio::select! {
                reason = self.revoked() => return self.close_after_flush(transport, &reason).await,
                _ = gateway.drained() => {
                    let refusal = Refusal::new(
                        RefusalCode::ShuttingDown,
                        "the agent is shutting down (its pod is terminating); open a new stream to continue on another agent",
                    );
                    self.gateway.refused(&refusal, &mut self.outcome);
                    return self.close_after_flush(transport, &refusal).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let refusal = self.deadline_refusal();
                    self.gateway.refused(&refusal, &mut self.outcome);
                    return self.close_after_flush(transport, &refusal).await;
                }
                inbound = transport.recv() => match inbound {
                    Inbound::Closed => return,
                    inbound => {
                        // The frame's work may wait on the limiter's queue or a backend call: revocation must not
                        // wait for either, so it races the work (dropping it keeps what was charged so far).
                        let revoked = self.handle.signal();
                        tokio::select! {
                            biased;
                            reason = revoked.closed() => {
                                self.set_close_reason(reason.code.as_str());
                                return transport.refuse(&reason).await;
                            }
                            step = self.on_inbound(inbound) => step,
                        }
                    }
                },
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Send(event)) => {
                    if transport.event(&event).await.is_err() {
                        return;
                    }
                }
                Ok(Step::Refreshed(result)) => {
                    if transport.refreshed(&result).await.is_err() {
                        return;
                    }
                }
                Ok(Step::Finished(event)) => {
                    let _ = transport.event(&event).await;
                    return transport.done().await;
                }
                Err(refusal) => {
                    self.gateway.refused(&refusal, &mut self.outcome);
                    self.set_close_reason(refusal.code.as_str());
                    return transport.refuse(&refusal).await;
                }
            }
        }
    }

    /// One client frame: every frame counts against the messages-per-second limit first.
    async fn on_inbound(&mut self, inbound: Inbound) -> Result<Step, Refusal> {
        self.on_message()?;
        match inbound {
            Inbound::Audio(chunk) => Ok(self.on_audio(chunk).await?.map_or(Step::Continue, Step::Send)),
            Inbound::End => Ok(Step::Finished(self.finish().await?)),
            Inbound::Activity => Ok(Step::Continue),
            Inbound::Refresh(token) => Ok(Step::Refreshed(self.refresh(&token).await)),
            Inbound::Invalid(refusal) => Err(refusal),
            Inbound::Closed => unreachable!("handled by the loop"),
        }
    }

    /// Replaces the stream's token: checked against the stream's, then bound to the stream in the old token's
    /// place when the tier binds tokens to streams. A refused refresh changes nothing.
    async fn refresh(&mut self, presented: &tokens::stream::Presented) -> Result<Terms, Refusal> {
        let checked = tokens::stream::check(&self.gateway, &self.grant, presented);
        let checked = match checked {
            Ok(new) if self.token_slot.is_some() => {
                let mut rebound = self.grant.clone();
                rebound.identity.token = Some(Arc::clone(&new));
                match self.gateway.limiter.bind_token(&rebound).await {
                    Ok(slot) => {
                        self.token_slot = slot;
                        Ok(new)
                    }
                    Err(refusal) => Err(refusal),
                }
            }
            other => other,
        };
        tokens::stream::apply(&self.gateway, &mut self.grant, checked, self.handle.id)
    }

    /// Server-initiated close of a running stream: flush the pending result (bounded), then refuse.
    async fn close_after_flush(&mut self, transport: &mut impl Transport, refusal: &Refusal) {
        if let Some(event) = self.flush_before_close(refusal).await {
            let _ = transport.event(&event).await;
        }
        transport.refuse(refusal).await;
    }

    pub fn stream_id(&self) -> u64 {
        self.handle.id
    }

    /// When the stream must end if nothing else happens: the idle timeout, the session limit, or its token's
    /// expiry plus the grace (re-read on every turn of the loop, so a refresh moves it).
    fn deadline(&self) -> Instant {
        let limits = &self.grant.endpoint.shard.limits;
        let limit = (self.last_message + limits.idle_timeout.0).min(self.started + limits.max_session_duration.0);
        tokens::stream::close_at(&self.grant.identity, self.gateway.settings.token_grace)
            .map_or(limit, |at| at.min(limit))
    }

    /// The refusal for a reached [`deadline`](Self::deadline).
    fn deadline_refusal(&self) -> Refusal {
        let limits = &self.grant.endpoint.shard.limits;
        let grace = self.gateway.settings.token_grace;
        if tokens::stream::close_at(&self.grant.identity, grace).is_some_and(|at| Instant::now() >= at) {
            tokens::stream::expired(self.gateway.settings.token_grace)
        } else if Instant::now() >= self.started + limits.max_session_duration.0 {
            Refusal::new(
                RefusalCode::SessionTooLong,
                format!(
                    "stream reached the endpoint's maximum session duration ({}); open a new stream",
                    limits.max_session_duration
                ),
            )
        } else {
            Refusal::new(
                RefusalCode::IdleTimeout,
                format!(
                    "stream sent nothing for {} (the endpoint's idle timeout); send audio or end the stream",
                    limits.idle_timeout
                ),
            )
        }
    }

    /// Resolves when the key's config no longer allows this stream. Cancel-safe.
    async fn revoked(&mut self) -> Refusal {
        self.handle.closed().await
    }

    /// Counts one client message against the endpoint's messages-per-second limit.
    fn on_message(&mut self) -> Result<(), Refusal> {
        let now = Instant::now();
        self.last_message = now;
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_messages = 0;
        }
        self.window_messages += 1;
        let max = self.grant.endpoint.shard.limits.max_messages_per_second;
        if self.window_messages > max {
            return Err(Refusal::new(
                RefusalCode::TooManyMessages,
                format!(
                    "stream sent more than {max} messages in one second (the endpoint's limit); send larger chunks less often"
                ),
            ));
        }
        Ok(())
    }

    /// Takes one audio chunk (raw PCM16). Returns a partial result when a segment completes.
    async fn on_audio(&mut self, chunk: Bytes) -> Result<Option<Event>, Refusal> {
        let limits = &self.grant.endpoint.shard.limits;
        if chunk.len() > limits.max_chunk_bytes as usize {
            return Err(Refusal::new(
                RefusalCode::OversizedChunk,
                format!(
                    "audio chunk of {} bytes exceeds the endpoint's maximum of {} bytes; send smaller chunks",
                    chunk.len(),
                    limits.max_chunk_bytes
                ),
            ));
        }
        if chunk.len() % 2 != 0 {
            return Err(Refusal::bad_request("audio chunks must hold whole 16-bit samples (an even number of bytes)"));
        }
        let seconds = pcm16_seconds(chunk.len());
        let (cap, by_token) = TokenGrant::audio_cap(self.grant.identity.token.as_deref(), limits.max_audio_seconds);
        if self.audio_seconds + seconds > cap + 1e-9 {
            let whose = if by_token { "session token's" } else { "endpoint's" };
            return Err(Refusal::new(
                RefusalCode::AudioTooLong,
                format!("stream exceeded the {whose} maximum of {cap} s of audio; open a new stream"),
            ));
        }
        let cost = Limiter::estimate_stream(&self.grant, seconds);
        let charge = self.gateway.limiter.charge(&self.grant, cost).await?;
        self.gateway.charged(&self.grant, charge.gpu_seconds);
        self.outcome.gpu_seconds += charge.gpu_seconds;
        match &mut self.segment_charge {
            Some(segment) if segment.origin == charge.origin => segment.absorb(charge),
            // The counter store went down (or came back) mid-segment: the chunks charged to the other counters
            // stay charged at their estimate; the segment's measured time settles the rest.
            _ => {
                let _earlier = self.segment_charge.replace(charge);
            }
        }
        self.audio_seconds += seconds;
        self.outcome.audio_seconds = self.audio_seconds;
        self.buffer.extend_from_slice(&chunk);
        let buffered = pcm16_seconds(self.buffer.len());
        let segment = self.gateway.settings.segment_seconds;
        if buffered >= segment {
            // A backend with a voice-activity detector cuts at a pause, so no word is split between segments;
            // without a pause the stream still cuts at twice the segment length.
            let take = match self.backend.cut(&self.buffer) {
                Cut::At(n) if n > 0 && n < self.buffer.len() => n - n % 2,
                Cut::Wait if buffered < 2.0 * segment => return Ok(None),
                _ => self.buffer.len(),
            };
            return self.flush_segment(take).await.map(|e| e.map(|(event, _)| event));
        }
        Ok(None)
    }

    /// Sends the first `take` buffered bytes to the backend. `None` when nothing is buffered. The segment's
    /// charge (every chunk so far) settles against what the backend measured for the audio it got: audio kept
    /// for the next segment is refunded now and charged when that segment's time is measured.
    async fn flush_segment(&mut self, take: usize) -> Result<Option<(Event, String)>, Refusal> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let pcm = self.buffer.split_to(take.min(self.buffer.len())).freeze();
        let start_seconds = self.flushed_seconds;
        let seconds = pcm16_seconds(pcm.len());
        let mut wav = BytesMut::with_capacity(44 + pcm.len());
        wav.extend_from_slice(&wav_header(pcm.len() as u32));
        wav.extend_from_slice(&pcm);
        let (span, traceparent) = self.outcome.backend_span(self.backend.kind());
        let request = BackendRequest {
            feature: self.grant.feature,
            model: Backends::backend_model(&self.grant.endpoint.shard),
            audio: wav.freeze(),
            filename: format!("segment-{}.wav", self.segments),
            content_type: "audio/wav".into(),
            fields: self.fields.clone(),
            request_id: self.outcome.request_id.clone(),
            traceparent,
            want_words: true,
        };
        let timer = std::time::Instant::now();
        let response = self.backend.call(request).instrument(span.clone()).await.map_err(|e| e.to_refusal())?;
        self.gateway.metrics.backend_seconds.observe(timer.elapsed().as_secs_f64());
        if let Some(charge) = self.segment_charge.take() {
            let settled = self.gateway.settle(charge, response.settlement(&self.grant));
            // Refunds too: the key's usage must add up to what the final result tells the client.
            self.gateway.charged(&self.grant, settled.delta);
            self.outcome.gpu_seconds += settled.delta;
        }
        let mut text = response.text.unwrap_or_default();
        let mut words: Vec<TimedWord> = response
            .words
            .into_iter()
            .map(|w| TimedWord { start: w.start + start_seconds, end: w.end + start_seconds, word: w.word })
            .collect();
        let end_seconds = start_seconds + seconds;
        let (mut redactions, mut audio) = (None, None);
        if let Some(redaction) = &mut self.redaction {
            let timer = std::time::Instant::now();
            let released = redaction.push(&text, words, &pcm, start_seconds, end_seconds);
            self.gateway.metrics.redaction_seconds.observe(timer.elapsed().as_secs_f64());
            let released = released.map_err(|e| redaction::failed(e.category()))?;
            (text, words, redactions, audio) = self.take_released(released);
        }
        let segment = self.segments;
        self.segments += 1;
        self.flushed_seconds += seconds;
        self.record(&text, &words);
        Ok(Some((
            Event::Partial { text: text.clone(), segment, start_seconds, end_seconds, words, redactions, audio },
            text,
        )))
    }

    /// Adds released text and words to the stream's transcript.
    fn record(&mut self, text: &str, words: &[TimedWord]) {
        self.words.extend(words.iter().cloned());
        if !text.trim().is_empty() {
            if !self.transcript.is_empty() {
                self.transcript.push(' ');
            }
            self.transcript.push_str(text.trim());
        }
    }

    /// A redaction's release as event parts; its counts join the stream's.
    fn take_released(&mut self, released: Released) -> (String, Vec<TimedWord>, Option<Counts>, Option<RedactedAudio>) {
        self.gateway.metrics.redacted(&released.counts);
        redaction::add_counts(&mut self.redactions, &released.counts);
        let audio = released.audio.map(|(pcm, start_seconds)| RedactedAudio { pcm: Bytes::from(pcm), start_seconds });
        (released.text, released.words, Some(released.counts), audio)
    }

    /// Releases what the redaction still holds back (the stream is ending): its text joins the final.
    fn release_held(&mut self) -> Result<Option<RedactedAudio>, Refusal> {
        let Some(redaction) = &mut self.redaction else { return Ok(None) };
        let released = redaction.finish(self.flushed_seconds).map_err(|e| redaction::failed(e.category()))?;
        let (text, words, _, audio) = self.take_released(released);
        self.record(&text, &words);
        Ok(audio)
    }

    /// Ends the stream normally: flushes what is buffered and returns the final result.
    async fn finish(&mut self) -> Result<Event, Refusal> {
        let flushed = self.flush_segment(usize::MAX).await?;
        let audio = self.final_audio(flushed)?;
        self.closed_code = "completed";
        Ok(self.final_event(audio))
    }

    /// The last segment's partial is folded into the final: its redacted audio, and what the redaction still
    /// held back, go out with the final, in order.
    fn final_audio(&mut self, flushed: Option<(Event, String)>) -> Result<Option<RedactedAudio>, Refusal> {
        let last = match flushed {
            Some((Event::Partial { audio, .. }, _)) => audio,
            _ => None,
        };
        let held = self.release_held()?;
        Ok(match (last, held) {
            (Some(a), Some(b)) => {
                let mut pcm = BytesMut::with_capacity(a.pcm.len() + b.pcm.len());
                pcm.extend_from_slice(&a.pcm);
                pcm.extend_from_slice(&b.pcm);
                Some(RedactedAudio { pcm: pcm.freeze(), start_seconds: a.start_seconds })
            }
            (a, b) => a.or(b),
        })
    }

    /// For a stream being closed by the server (revocation, limits): flush within the deadline, best effort.
    async fn flush_before_close(&mut self, reason: &Refusal) -> Option<Event> {
        self.closed_code = reason.code.as_str();
        // A draining agent gives the pending segment the shutdown grace (half of it: the close must fit too);
        // a revocation keeps its short deadline, since the key must stop working promptly.
        let deadline = match reason.code {
            RefusalCode::ShuttingDown => self.gateway.settings.shutdown_grace / 2,
            _ => self.gateway.settings.flush_deadline,
        };
        match tokio::time::timeout(deadline, self.flush_segment(usize::MAX)).await {
            Ok(Ok(flushed)) => self.final_audio(flushed).ok().map(|audio| self.final_event(audio)),
            _ => None,
        }
    }

    /// Marks why the stream ended, for the audit line written on drop.
    fn set_close_reason(&mut self, code: &'static str) {
        self.closed_code = code;
    }

    fn final_event(&self, audio: Option<RedactedAudio>) -> Event {
        Event::Final {
            text: self.transcript.clone(),
            segments: self.segments,
            audio_seconds: self.audio_seconds,
            gpu_seconds: self.outcome.gpu_seconds,
            words: self.words.clone(),
            redactions: self.redaction.as_ref().map(|_| self.redactions.clone()),
            audio,
        }
    }
}

/// What one client frame led to.
enum Step {
    Continue,
    Send(Event),
    /// The final result; the stream ends normally after it.
    Finished(Event),
    /// A refresh's answer; the stream goes on.
    Refreshed(Result<Terms, Refusal>),
}

impl Drop for Session {
    fn drop(&mut self) {
        self.gateway.metrics.open_streams.dec();
        self.gateway.metrics.stream_closed(self.closed_code);
        self.gateway.audit.stream_closed(StreamClosedEvent {
            key: self.grant.key(),
            stream_id: self.handle.id,
            door: self.outcome.door.as_str(),
            endpoint: &self.grant.endpoint.label,
            code: self.closed_code,
            request_id: &self.outcome.request_id,
            gpu_seconds: self.outcome.gpu_seconds,
            audio_seconds: self.audio_seconds,
        });
    }
}
