//! The built-in Whisper speech-to-text backend (`backend: {builtin: whisper, size: tiny.en | base}`).
//!
//! ```text
//!  upload ─▶ infergate_audio::decode (wav, flac, mp3, m4a, ogg, webm ─▶ 16 kHz mono) ─▶ Whisper::transcribe
//!         ─▶ formats::render (json, text, srt, vtt, verbose_json) or server-sent events (stream=true)
//!  settlement: the model's measured compute time (thread CPU time on the CPU, wall time around the GPU calls)
//! ```
//! Streams reach this backend segment by segment as 16 kHz PCM16 WAV (session.rs), like any other backend. The
//! request's form fields are parsed here and refused with the field to fix; nothing of the audio or the text is
//! logged.
use crate::backend::{BackendError, BackendRequest, BackendResponse, BlockingModel, Cut, TimedWord};
use bytes::Bytes;
use infergate_crds::endpoint::{Feature, WhisperSize};
use infergate_whisper::formats::{self, RenderOptions, ResponseFormat};
use infergate_whisper::{ModelSize, Options, Task, Whisper};
use std::path::Path;
use std::sync::Arc;

/// Field the HTTP door sets on `/v1/audio/translations` (never taken from the client's form).
pub const FIELD_TASK: &str = "infergate_task";
/// Longest upload decoded, whatever the endpoint allows: bounds the samples held in memory (2 h = 460 MB f32).
const MAX_DECODE_SECONDS: f64 = 2.0 * 3600.0;

pub fn model_size(size: WhisperSize) -> ModelSize {
    match size {
        WhisperSize::TinyEn => ModelSize::TinyEn,
        WhisperSize::Base => ModelSize::Base,
    }
}

/// Loads one size (CUDA when it works, else CPU); a missing or damaged file gives the message a request sees.
pub fn load(models_dir: &Path, size: WhisperSize) -> Result<Arc<Whisper>, String> {
    match Whisper::load_prefer_cuda(models_dir, model_size(size)) {
        Ok(model) => {
            match model.cuda_fallback_reason() {
                Some(reason) => tracing::info!(
                    size = size.as_str(),
                    backend = model.backend_name(),
                    reason,
                    "whisper loaded on the CPU"
                ),
                None => tracing::info!(size = size.as_str(), backend = model.backend_name(), "whisper loaded"),
            }
            Ok(Arc::new(model))
        }
        Err(err) => {
            let message = format!(
                "whisper {} weights unavailable under {} ({err}); fetch them with `infergate-agent models fetch --model whisper-{}`",
                size.as_str(),
                models_dir.display(),
                size.as_str()
            );
            // Absent files are the normal state of a size nobody fetched; a damaged file is worth a warning.
            if err.category() == "weights_missing" {
                tracing::info!(size = size.as_str(), "whisper weights not installed (its endpoints answer 503)");
            } else {
                tracing::warn!(category = err.category(), size = size.as_str(), "whisper weights unusable");
            }
            Err(message)
        }
    }
}

pub struct Transcriber {
    dir: std::path::PathBuf,
    size: WhisperSize,
    /// Loaded by the first request (on a blocking thread); concurrent first requests wait for the one load.
    model: std::sync::OnceLock<Result<Arc<Whisper>, String>>,
    /// Cuts stream segments at pauses when its weights are there (else streams cut at fixed lengths).
    vad: Option<Arc<infergate_vad::SileroVad>>,
    states: crate::builtin::ModelStates,
}

/// A stream segment is cut at a pause only after this much audio, so segments are not needlessly short.
const MIN_SEGMENT_SAMPLES: usize = 16_000;
/// A pause is at least this long (shorter gaps occur inside phrases, where a cut would clip a word).
const MIN_PAUSE_MS: u32 = 300;
/// Trailing silence must be this long before the buffer's end counts as a pause (speech may just be resuming).
const MIN_TRAILING_PAUSE_SAMPLES: usize = 8_000;

impl Transcriber {
    pub fn new(
        dir: std::path::PathBuf,
        size: WhisperSize,
        vad: Option<Arc<infergate_vad::SileroVad>>,
        states: crate::builtin::ModelStates,
    ) -> Self {
        let installed = dir.join(model_size(size).dir()).join("model.bin").is_file();
        let state = if installed {
            "installed (digests checked when first used)".to_string()
        } else {
            format!("missing: run `infergate-agent models fetch --model whisper-{}`", size.as_str())
        };
        states.lock().unwrap_or_else(|e| e.into_inner()).insert(Self::name(size), state);
        Self { dir, size, model: std::sync::OnceLock::new(), vad, states }
    }

    fn name(size: WhisperSize) -> String {
        format!("whisper-{}", size.as_str())
    }

    /// The model, loading it on first use and recording the outcome for `/readyz`.
    fn model(&self) -> Result<&Whisper, BackendError> {
        let loaded = self.model.get_or_init(|| {
            let result = load(&self.dir, self.size);
            let state = match &result {
                Ok(_) => "ready".to_string(),
                Err(why) => format!("missing: {why}"),
            };
            self.states.lock().unwrap_or_else(|e| e.into_inner()).insert(Self::name(self.size), state);
            result
        });
        loaded.as_deref().map_err(|m| BackendError::Unavailable(m.clone()))
    }

    /// The middle of the last pause that starts at least [`MIN_SEGMENT_SAMPLES`] into `pcm`, as a sample index.
    fn pause(&self, pcm: &[f32]) -> Option<Option<usize>> {
        let vad = self.vad.as_deref()?;
        let params = infergate_vad::SegmentParams { min_silence_ms: MIN_PAUSE_MS, ..Default::default() };
        let segments = vad.speech_segments(pcm, 16_000, &params).ok()?;
        if segments.is_empty() {
            return Some(Some(pcm.len())); // silence only: nothing would be split
        }
        let mut gaps: Vec<(usize, usize)> = segments.windows(2).map(|w| (w[0].end, w[1].start)).collect();
        let last_end = segments[segments.len() - 1].end;
        if pcm.len().saturating_sub(last_end) >= MIN_TRAILING_PAUSE_SAMPLES {
            gaps.push((last_end, pcm.len()));
        }
        let pause = gaps.into_iter().rev().find(|&(start, end)| end > start && start >= MIN_SEGMENT_SAMPLES);
        Some(pause.map(|(s, e)| (s + e) / 2))
    }
}

/// What the answer should look like, from the OpenAI form fields: one reading for the built-in backend and
/// for redaction, which re-renders any backend's answer in the client's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub format: ResponseFormat,
    /// `timestamp_granularities[]` contained `word`.
    pub words: bool,
    /// `segment` was asked for, or nothing was (OpenAI's default granularity).
    pub segments: bool,
    /// `stream=true`: server-sent events.
    pub stream: bool,
    pub translate: bool,
}

pub fn shape(fields: &[(String, String)]) -> Result<Shape, String> {
    let mut shape =
        Shape { format: ResponseFormat::Json, words: false, segments: false, stream: false, translate: false };
    for (name, value) in fields {
        match name.as_str() {
            "response_format" => shape.format = ResponseFormat::parse(value.trim())?,
            "timestamp_granularities[]" | "timestamp_granularities" => match value.trim() {
                "word" => shape.words = true,
                "segment" => shape.segments = true,
                other => return Err(format!("`timestamp_granularities[]` takes `word` or `segment`, got {other:?}")),
            },
            "stream" => shape.stream = value.trim() == "true",
            FIELD_TASK => shape.translate = value == "translate",
            _ => {}
        }
    }
    if (shape.words || shape.segments) && shape.format != ResponseFormat::VerboseJson {
        return Err("`timestamp_granularities[]` needs `response_format=verbose_json`".into());
    }
    if !shape.words {
        shape.segments = true;
    }
    Ok(shape)
}

/// A request's options, parsed from the OpenAI form fields.
struct Asked {
    options: Options,
    shape: Shape,
}

fn parse_fields(fields: &[(String, String)]) -> Result<Asked, BackendError> {
    let bad = |m: String| BackendError::BadInput(m);
    let shape = shape(fields).map_err(bad)?;
    let mut options = Options::default();
    for (name, value) in fields {
        match name.as_str() {
            "language" if !value.trim().is_empty() => options.language = Some(value.trim().to_ascii_lowercase()),
            "prompt" => options.prompt = Some(value.clone()),
            "temperature" => {
                let t: f32 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("`temperature` must be a number between 0 and 1, got {value:?}")))?;
                options.temperature = Some(t);
            }
            FIELD_TASK if value == "translate" => options.task = Task::Translate,
            _ => {}
        }
    }
    options.word_timestamps = shape.words;
    Ok(Asked { options, shape })
}

impl BlockingModel for Transcriber {
    fn kind(&self) -> &'static str {
        "whisper"
    }

    fn run(&self, request: &BackendRequest) -> Result<BackendResponse, BackendError> {
        if request.feature != Feature::Transcribe {
            return Err(BackendError::Unavailable("the built-in whisper model serves only transcribe".into()));
        }
        let model = self.model()?;
        let mut asked = parse_fields(&request.fields)?;
        asked.options.word_timestamps |= request.want_words;
        let hint =
            infergate_audio::Hint { filename: Some(&request.filename), content_type: Some(&request.content_type) };
        let decoded =
            infergate_audio::decode(&request.audio, hint, infergate_audio::Limits { max_seconds: MAX_DECODE_SECONDS })
                .map_err(|e| match e.http_status() {
                    415 => BackendError::UnsupportedMedia(e.to_string()),
                    _ => BackendError::BadInput(e.to_string()),
                })?;
        let transcript = model.transcribe(&decoded.samples, &asked.options).map_err(|e| {
            if e.is_bad_input() {
                BackendError::BadInput(e.to_string())
            } else {
                BackendError::Failed(e.category().to_string())
            }
        })?;
        let task = match asked.options.task {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        };
        let (content_type, body) = if asked.shape.stream {
            // Server-sent events as OpenAI's streaming transcription sends them: one delta per segment, then done.
            let mut body = String::new();
            for segment in &transcript.segments {
                let delta = if body.is_empty() { segment.text.trim_start() } else { segment.text.as_str() };
                body.push_str(&formats::sse_delta(delta));
            }
            body.push_str(&formats::sse_done(&transcript.text, transcript.duration));
            ("text/event-stream".to_string(), body)
        } else {
            let opts = RenderOptions { task, words: asked.shape.words, segments: asked.shape.segments };
            (asked.shape.format.content_type().to_string(), formats::render(&transcript, asked.shape.format, &opts))
        };
        Ok(BackendResponse {
            content_type,
            body: Bytes::from(body),
            text: Some(transcript.text.clone()),
            measured_gpu_seconds: Some(transcript.compute.as_secs_f64()),
            billed_audio_seconds: None,
            words: transcript
                .segments
                .iter()
                .flat_map(|s| &s.words)
                .map(|w| TimedWord { word: w.word.clone(), start: w.start, end: w.end })
                .collect(),
        })
    }

    fn cut(&self, pcm16le: &[u8]) -> Cut {
        let pcm: Vec<f32> =
            pcm16le.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
        match self.pause(&pcm) {
            // No VAD: fixed-length segments.
            None => Cut::All,
            Some(Some(at)) => Cut::At(at * 2),
            // Speech without a pause yet (or none at all: then the stream's length cap flushes it).
            Some(None) => Cut::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn form_fields_are_parsed_and_refused_with_the_fix() {
        let asked = parse_fields(&fields(&[
            ("language", "EN"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("temperature", "0.2"),
        ]))
        .unwrap();
        assert_eq!(asked.options.language.as_deref(), Some("en"));
        assert!(asked.shape.words && asked.options.word_timestamps && !asked.shape.segments);
        assert_eq!(asked.options.temperature, Some(0.2));
        let err = parse_fields(&fields(&[("timestamp_granularities[]", "word")])).err().unwrap();
        assert!(err.to_string().contains("verbose_json"), "{err}");
        let err = parse_fields(&fields(&[("temperature", "hot")])).err().unwrap();
        assert!(err.to_string().contains("temperature"), "{err}");
        let err = parse_fields(&fields(&[("response_format", "xml")])).err().unwrap();
        assert!(err.to_string().contains("verbose_json"), "{err}");
        assert_eq!(parse_fields(&fields(&[(FIELD_TASK, "translate")])).unwrap().options.task, Task::Translate);
    }
}
