//! One audio stream, whatever door it came through: ingress limits, charging as audio arrives, segmenting to
//! the backend, and the graceful close on revocation.
//!
//! ```text
//!  door loop ──audio──▶ Session::on_audio ─ check chunk size, messages/s, total audio
//!                                          ─ charge chunk_seconds × cost (waits ≤ queue timeout, else 4290)
//!                                          ─ buffer; every segment_seconds ─▶ backend ─▶ Event::Partial
//!            ──end────▶ Session::finish ─▶ backend(remainder) ─▶ Event::Final
//!            select! { frame, session.deadline() (idle / session length), session.revoked() }
//!  revoked ─▶ finish within flush_deadline (pending result flushed) ─▶ close with the refusal's code
//! ```
use crate::admission::{Grant, Identity, Request};
use crate::audio::{pcm16_seconds, wav_header};
use crate::audit::StreamClosedEvent;
use crate::backend::{Backend, BackendRequest, Backends};
use crate::gateway::{Door, Gateway, KeyConnectionGuard, RefusalContext};
use crate::limiter::{Limiter, StreamSlot};
use crate::refusal::{Refusal, RefusalCode};
use crate::streams::StreamHandle;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A result to send to the client.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Partial { text: String, segment: u32, start_seconds: f64, end_seconds: f64 },
    Final { text: String, segments: u32, audio_seconds: f64, gpu_seconds: f64 },
}

pub struct Session {
    gateway: Arc<Gateway>,
    pub grant: Grant,
    pub request_id: String,
    pub door: Door,
    handle: StreamHandle,
    _slot: StreamSlot,
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
    gpu_seconds: f64,
    /// Charged for the buffered segment, settled against the backend's measured time.
    segment_charge: f64,
    segments: u32,
    transcript: String,
    closed_code: &'static str,
}

impl Session {
    /// Authorizes and opens a stream: scope, per-key connection cap, the tier's stream cap (queued), backend.
    pub async fn open(
        gateway: &Arc<Gateway>,
        identity: Identity,
        request: &Request<'_>,
        door: Door,
        request_id: String,
        fields: Vec<(String, String)>,
    ) -> Result<Session, Refusal> {
        let snapshot = gateway.snapshot();
        let key = identity.key;
        let grant = match gateway.authorize(&snapshot, identity.clone(), request) {
            Ok(g) => g,
            Err(refusal) => {
                gateway.refused(&refusal, &RefusalContext::new(door, &request_id).identity(&identity));
                return Err(refusal);
            }
        };
        let refused = |refusal: Refusal| {
            gateway.refused(&refusal, &RefusalContext::new(door, &request_id).grant(&grant));
            refusal
        };
        let key_connection = gateway.key_connection(key).map_err(refused)?;
        let backend = gateway.backends.for_endpoint(&grant.endpoint.shard).map_err(refused)?;
        let slot = gateway.limiter.open_stream(&grant).await.map_err(refused)?;
        gateway.admitted(&grant);
        let handle = gateway.streams.register(
            key,
            grant.identity.digest,
            grant.identity.environment,
            &grant.endpoint.label,
            door.as_str(),
        );
        gateway.metrics.open_streams.inc();
        let now = Instant::now();
        Ok(Session {
            gateway: Arc::clone(gateway),
            grant,
            request_id,
            door,
            handle,
            _slot: slot,
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
            gpu_seconds: 0.0,
            segment_charge: 0.0,
            segments: 0,
            transcript: String::new(),
            closed_code: "client_closed",
        })
    }

    pub fn stream_id(&self) -> u64 {
        self.handle.id
    }

    /// When the stream must end if nothing else happens: the idle timeout or the session limit.
    pub fn deadline(&self) -> Instant {
        let limits = &self.grant.endpoint.shard.limits;
        (self.last_message + limits.idle_timeout.0).min(self.started + limits.max_session_duration.0)
    }

    /// The refusal for a reached [`deadline`](Self::deadline).
    pub fn deadline_refusal(&self) -> Refusal {
        let limits = &self.grant.endpoint.shard.limits;
        if Instant::now() >= self.started + limits.max_session_duration.0 {
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
    pub async fn revoked(&mut self) -> Refusal {
        self.handle.closed().await
    }

    /// Counts one client message against the endpoint's messages-per-second limit.
    pub fn on_message(&mut self) -> Result<(), Refusal> {
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
    pub async fn on_audio(&mut self, chunk: Bytes) -> Result<Option<Event>, Refusal> {
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
        if self.audio_seconds + seconds > limits.max_audio_seconds + 1e-9 {
            return Err(Refusal::new(
                RefusalCode::AudioTooLong,
                format!(
                    "stream exceeded the endpoint's maximum of {} s of audio; open a new stream",
                    limits.max_audio_seconds
                ),
            ));
        }
        let cost = Limiter::estimate_stream(&self.grant, seconds);
        let charge = self.gateway.limiter.charge(&self.grant, cost).await?;
        self.gateway.charged(&self.grant, charge.gpu_seconds);
        self.gpu_seconds += charge.gpu_seconds;
        self.segment_charge += charge.gpu_seconds;
        self.audio_seconds += seconds;
        self.buffer.extend_from_slice(&chunk);
        if pcm16_seconds(self.buffer.len()) >= self.gateway.settings.segment_seconds {
            return self.flush_segment().await.map(|e| e.map(|(event, _)| event));
        }
        Ok(None)
    }

    /// Sends the buffered audio to the backend. `None` when nothing is buffered.
    async fn flush_segment(&mut self) -> Result<Option<(Event, String)>, Refusal> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let pcm = self.buffer.split().freeze();
        let start_seconds = self.flushed_seconds;
        let seconds = pcm16_seconds(pcm.len());
        let mut wav = BytesMut::with_capacity(44 + pcm.len());
        wav.extend_from_slice(&wav_header(pcm.len() as u32));
        wav.extend_from_slice(&pcm);
        let request = BackendRequest {
            feature: self.grant.feature,
            model: Backends::backend_model(&self.grant.endpoint.shard),
            audio: wav.freeze(),
            filename: format!("segment-{}.wav", self.segments),
            content_type: "audio/wav".into(),
            fields: self.fields.clone(),
            request_id: self.request_id.clone(),
        };
        let timer = std::time::Instant::now();
        let response = self.backend.call(request).await.map_err(|e| e.to_refusal())?;
        self.gateway.metrics.backend_seconds.observe(timer.elapsed().as_secs_f64());
        if let Some(measured) = response.measured_gpu_seconds.filter(|m| m.is_finite() && *m >= 0.0) {
            let delta = measured - self.segment_charge;
            let limiter = &self.gateway.limiter;
            let _ =
                limiter.store().adjust(Limiter::bucket(&self.grant), delta, limiter.params(&self.grant), limiter.now());
            self.gateway.charged(&self.grant, delta.max(0.0));
            if delta < 0.0 {
                self.gateway.metrics.refunded_gpu_seconds.inc_by(-delta);
            }
            self.gpu_seconds += delta;
        }
        self.segment_charge = 0.0;
        let text = response.text.unwrap_or_default();
        let segment = self.segments;
        self.segments += 1;
        self.flushed_seconds += seconds;
        if !text.is_empty() {
            if !self.transcript.is_empty() {
                self.transcript.push(' ');
            }
            self.transcript.push_str(text.trim());
        }
        Ok(Some((
            Event::Partial { text: text.clone(), segment, start_seconds, end_seconds: start_seconds + seconds },
            text,
        )))
    }

    /// Ends the stream normally: flushes what is buffered and returns the final result.
    pub async fn finish(&mut self) -> Result<Event, Refusal> {
        self.flush_segment().await?;
        self.closed_code = "completed";
        Ok(self.final_event())
    }

    /// For a stream being closed by the server (revocation, limits): flush within the deadline, best effort.
    pub async fn flush_before_close(&mut self, reason: &Refusal) -> Option<Event> {
        self.closed_code = reason.code.as_str();
        match tokio::time::timeout(self.gateway.settings.flush_deadline, self.flush_segment()).await {
            Ok(Ok(_)) => Some(self.final_event()),
            _ => None,
        }
    }

    /// Marks why the stream ended, for the audit line written on drop.
    pub fn set_close_reason(&mut self, code: &'static str) {
        self.closed_code = code;
    }

    fn final_event(&self) -> Event {
        Event::Final {
            text: self.transcript.clone(),
            segments: self.segments,
            audio_seconds: self.audio_seconds,
            gpu_seconds: self.gpu_seconds,
        }
    }

    pub fn audio_seconds(&self) -> f64 {
        self.audio_seconds
    }
    pub fn gpu_seconds(&self) -> f64 {
        self.gpu_seconds
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.gateway.metrics.open_streams.dec();
        self.gateway.metrics.stream_closed(self.closed_code);
        self.gateway.audit.stream_closed(StreamClosedEvent {
            key: self.grant.key(),
            stream_id: self.handle.id,
            door: self.door.as_str(),
            endpoint: &self.grant.endpoint.label,
            code: self.closed_code,
            request_id: &self.request_id,
            gpu_seconds: self.gpu_seconds,
            audio_seconds: self.audio_seconds,
        });
    }
}
