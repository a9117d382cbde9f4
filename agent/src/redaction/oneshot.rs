//! Redaction of one-shot transcriptions, whichever backend answered.
//!
//! ```text
//!  prepare: the client's format noted; the backend asked for verbose_json (segments, and words when audio
//!           or the client needs them), no SSE; `redact*` fields never forwarded
//!  finish:  body ─▶ transcript::parse ─▶ transcript::redact ─▶ the client's format rendered from the redacted
//!           transcript (+ "redactions", + "redacted_audio" in JSON) ─▶ the door
//! ```
//! The built-in Whisper and an upstream take the same path, so every format of both is redacted the same way.
use super::{Ask, Counts, Engine, FIELD_AUDIO, FIELD_REDACT, FIELD_STYLE, audio, counts_json, failed, transcript};
use crate::backend::BackendResponse;
use crate::transcriber::Shape;
use base64::Engine as _;
use bytes::Bytes;
use infergate_crds::redaction::AudioRedaction;
use infergate_gate::admission::Grant;
use infergate_gate::redaction::Rule;
use infergate_gate::refusal::Refusal;
use infergate_redact::Redactor;
use infergate_whisper::formats::{self, RenderOptions, ResponseFormat};

/// A request whose answer will be redacted.
pub struct Prepared {
    redactor: Redactor,
    rule: Rule,
    client: Shape,
}

pub fn is_redaction_field(name: &str) -> bool {
    matches!(name, FIELD_REDACT | FIELD_STYLE | FIELD_AUDIO)
}

/// Reads the request's own ask (refused when malformed, before anything is charged).
pub fn ask_of(fields: &[(String, String)]) -> Result<Ask, Refusal> {
    Ask::from_fields(fields)
}

/// Decides the request's rule on the endpoint that serves it and, when there is one, rewrites the fields the
/// backend gets. `None`: nothing to redact, the answer passes as the backend gives it.
pub fn prepare(
    engine: &Engine,
    grant: &Grant,
    ask: &Ask,
    fields: &mut Vec<(String, String)>,
) -> Result<Option<Prepared>, Refusal> {
    fields.retain(|(name, _)| !is_redaction_field(name));
    let Some(rule) = super::rule_for(grant, ask)? else { return Ok(None) };
    // Read (and refused) as the built-in backend reads it, before the fields are rewritten for the backend.
    let client = crate::transcriber::shape(fields).map_err(Refusal::bad_request)?;
    let json = matches!(client.format, ResponseFormat::Json | ResponseFormat::VerboseJson) && !client.stream;
    if ask.audio.is_some_and(|a| a != AudioRedaction::Off) && !json {
        return Err(Refusal::bad_request(format!(
            "`{FIELD_AUDIO}` returns the audio base64 in the JSON body: use response_format json or verbose_json without stream"
        )));
    }
    let redactor = engine.redactor(&rule)?;
    let want_words = client.words || (rule.audio != AudioRedaction::Off && json);
    fields.retain(|(name, _)| {
        !matches!(name.as_str(), "response_format" | "timestamp_granularities[]" | "timestamp_granularities" | "stream")
    });
    fields.push(("response_format".into(), "verbose_json".into()));
    fields.push(("timestamp_granularities[]".into(), "segment".into()));
    if want_words {
        fields.push(("timestamp_granularities[]".into(), "word".into()));
    }
    Ok(Some(Prepared { redactor, rule, client }))
}

/// The redacted answer.
pub struct Redone {
    pub body: Bytes,
    pub content_type: String,
    /// The redacted transcript text (gRPC's `text`).
    pub text: String,
    pub counts: Counts,
    /// The redacted audio as a WAV file, when audio redaction applied and the answer is JSON.
    pub audio: Option<Vec<u8>>,
}

/// Redacts the backend's answer and renders what the client asked for. `upload` is the request's audio, for
/// audio redaction. Fails closed on an answer that is not a transcript the agent can read.
pub fn finish(
    prepared: &Prepared,
    response: &BackendResponse,
    upload: &Bytes,
    filename: &str,
) -> Result<Redone, Refusal> {
    let mut t = transcript::parse(&response.body, &response.content_type)
        .ok_or_else(|| failed("the backend's answer is not a transcript in json, verbose_json or text"))?;
    let report = transcript::redact(&mut t, &prepared.redactor).map_err(|e| failed(e.category()))?;
    let client = prepared.client;
    let task = if client.translate { "translate" } else { "transcribe" };
    let (content_type, mut body) = if client.stream {
        ("text/event-stream".to_string(), formats::sse_events(&t).concat())
    } else {
        let opts = RenderOptions { task, words: client.words, segments: client.segments };
        (client.format.content_type().to_string(), formats::render(&t, client.format, &opts))
    };
    let json = matches!(client.format, ResponseFormat::Json | ResponseFormat::VerboseJson) && !client.stream;
    let mut audio_wav = None;
    if json {
        let mut value: serde_json::Value =
            serde_json::from_str(&body).map_err(|_| failed("the rendered answer is not JSON"))?;
        if let Some(object) = value.as_object_mut() {
            object.insert("redactions".into(), counts_json(&report.counts));
            if prepared.rule.audio != AudioRedaction::Off {
                let hint = infergate_audio::Hint { filename: Some(filename), content_type: None };
                let limits = infergate_audio::Limits { max_seconds: 2.0 * 3600.0 };
                let decoded = infergate_audio::decode(upload, hint, limits)
                    .map_err(|_| failed("the audio could not be decoded for audio redaction"))?;
                let mut pcm = audio::to_pcm16(&decoded.samples);
                audio::mute(&mut pcm, &report.muted, prepared.rule.audio, 0.0);
                let wav = audio::wav(&pcm);
                object.insert(
                    "redacted_audio".into(),
                    serde_json::json!({
                        "format": "wav",
                        "sample_rate": audio::SAMPLE_RATE,
                        "treatment": prepared.rule.audio.as_str(),
                        "data": base64::engine::general_purpose::STANDARD.encode(&wav),
                    }),
                );
                audio_wav = Some(wav);
            }
        }
        body = value.to_string();
    }
    Ok(Redone {
        body: Bytes::from(body),
        content_type,
        text: t.text.trim().to_string(),
        counts: report.counts,
        audio: audio_wav,
    })
}
