//! The models the agent runs itself: the speaker encoder (`embed`, `verify`; `vad` too when its weights are
//! there) and Silero VAD (`vad`). Both run on the blocking pool through [`Blocking`], which measures their
//! compute time for settlement (wall time on the CPU).
//!
//! ```text
//!  --models-dir | $INFERGATE_MODELS_DIR | /var/lib/infergate/models (if present) | ./.cache/models
//!     ├─ speaker/pretrained.pt  ─▶ SpeakerEncoder (CUDA when it works, else CPU)
//!     └─ vad/silero_vad.onnx    ─▶ SileroVad (CPU)
//!  request ─▶ decode WAV/PCM16 to f32 16 kHz mono ─▶ [VAD trims silence: data minimisation] ─▶ embed
//! ```
//! Missing weights do not stop the agent: the model is registered as a backend that answers 503
//! `backend_unavailable` naming the missing file and the script that fetches it. Nothing biometric is stored
//! or logged: embeddings live only in the response.
use crate::backend::{Backend, BackendError, BackendRequest, BackendResponse, Blocking, BlockingModel};
use bytes::Bytes;
use infergate_crds::endpoint::{BuiltinModel, Feature, WhisperSize};
use infergate_speaker::{EMBEDDING_DIM, SpeakerEncoder};
use infergate_vad::{SegmentParams, SileroVad};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SAMPLE_RATE: u32 = 16_000;
/// The verify decision's default when the endpoint sets no `verifyThreshold`.
pub const DEFAULT_VERIFY_THRESHOLD: f64 = 0.75;
/// Fields the gateway passes to the built-in backend (never client-controlled names beyond these).
pub const FIELD_REFERENCE: &str = "reference_embedding";
pub const FIELD_EMBEDDING: &str = "embedding";
pub const FIELD_THRESHOLD: &str = "verify_threshold";
/// Trimmed speech shorter than this is not trusted for an embedding; the untrimmed audio is used instead.
const MIN_TRIMMED_SAMPLES: usize = SAMPLE_RATE as usize;

const SPEAKER_WEIGHTS: &str = "speaker/pretrained.pt";
const VAD_WEIGHTS: &str = "vad/silero_vad.onnx";
const SYSTEM_MODELS_DIR: &str = "/var/lib/infergate/models";

/// Where the weights are read from, and why that directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelsDir {
    pub path: PathBuf,
    pub source: &'static str,
}

impl ModelsDir {
    /// `--models-dir` (clap also reads `$INFERGATE_MODELS_DIR` into it), else the packaged location when it
    /// exists, else the repository's `.cache/models` (where the install scripts put weights for dev runs).
    pub fn resolve(flag_or_env: Option<&Path>) -> Self {
        if let Some(path) = flag_or_env {
            return ModelsDir { path: path.to_path_buf(), source: "--models-dir / INFERGATE_MODELS_DIR" };
        }
        if Path::new(SYSTEM_MODELS_DIR).is_dir() {
            return ModelsDir { path: PathBuf::from(SYSTEM_MODELS_DIR), source: "packaged default" };
        }
        ModelsDir { path: PathBuf::from(".cache/models"), source: "development default (./.cache/models)" }
    }
}

/// Each built-in model's state for `/readyz` and the Lease: `ready`, `installed (loads on first use)`, or
/// `missing: <why>`. Shared: a model loaded on first use updates its entry.
pub type ModelStates = Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>;

/// What start-up loaded: the backends, and each model's state.
pub struct Loaded {
    pub builtin: HashMap<BuiltinModel, Arc<dyn Backend>>,
    pub whisper: HashMap<WhisperSize, Arc<dyn Backend>>,
    pub status: ModelStates,
}

/// Every built-in model: speaker encoder, VAD and both Whisper sizes.
pub fn load_all(dir: &ModelsDir) -> Loaded {
    let mut states = std::collections::BTreeMap::new();
    let builtin = load_with_status(dir, &mut states);
    let status: ModelStates = Arc::new(std::sync::Mutex::new(states));
    // Whisper streams cut at pauses with their own VAD instance (stateless per call; 2 MB).
    let vad = SileroVad::load(&dir.path.join(VAD_WEIGHTS)).ok().map(Arc::new);
    let whisper = load_whisper(dir, vad, &status);
    Loaded { builtin, whisper, status }
}

fn state<T>(result: &Result<T, String>) -> String {
    match result {
        Ok(_) => "ready".into(),
        Err(why) => format!("missing: {why}"),
    }
}

/// Loads what is there and registers both built-ins; a model whose weights are missing answers 503.
pub fn load(dir: &ModelsDir) -> HashMap<BuiltinModel, Arc<dyn Backend>> {
    load_with_status(dir, &mut Default::default())
}

fn load_with_status(
    dir: &ModelsDir,
    status: &mut std::collections::BTreeMap<String, String>,
) -> HashMap<BuiltinModel, Arc<dyn Backend>> {
    tracing::info!(models_dir = %dir.path.display(), source = dir.source, "built-in model weights directory");
    let speaker_path = dir.path.join(SPEAKER_WEIGHTS);
    let vad_path = dir.path.join(VAD_WEIGHTS);
    let speaker = match SpeakerEncoder::load_prefer_cuda(&speaker_path) {
        Ok(encoder) => {
            match encoder.cuda_fallback_reason() {
                Some(reason) => {
                    tracing::info!(backend = encoder.backend_name(), reason, "speaker encoder loaded on the CPU")
                }
                None => tracing::info!(backend = encoder.backend_name(), "speaker encoder loaded"),
            }
            Ok(Arc::new(encoder))
        }
        Err(err) => {
            let message = format!(
                "speaker-encoder weights unavailable at {} ({err}); fetch them with `bash tests/tools/install-speaker-weights.sh` \
                 and point --models-dir at the directory holding speaker/pretrained.pt",
                speaker_path.display()
            );
            tracing::warn!(category = err.category(), "{message}");
            Err(message)
        }
    };
    let vad = match SileroVad::load(&vad_path) {
        Ok(vad) => {
            tracing::info!("Silero VAD loaded");
            Ok(Arc::new(vad))
        }
        Err(err) => {
            let message = format!(
                "VAD weights unavailable at {} ({err}); fetch them with `bash tests/tools/install-vad-weights.sh` \
                 and point --models-dir at the directory holding vad/silero_vad.onnx",
                vad_path.display()
            );
            tracing::warn!(category = err.category(), "{message}");
            Err(message)
        }
    };
    status.insert("speaker-encoder".into(), state(&speaker));
    status.insert("vad".into(), state(&vad));
    let jobs = crate::backend::builtin_job_permits();
    let mut out: HashMap<BuiltinModel, Arc<dyn Backend>> = HashMap::new();
    out.insert(
        BuiltinModel::SpeakerEncoder,
        Arc::new(Blocking::new(
            Arc::new(Builtin { kind: "speaker-encoder", speaker: speaker.clone(), vad: vad.clone() }),
            Arc::clone(&jobs),
        )),
    );
    let no_speaker = Err("the vad endpoint does not compute embeddings; use a speaker-encoder endpoint".to_string());
    out.insert(
        BuiltinModel::Vad,
        Arc::new(Blocking::new(Arc::new(Builtin { kind: "vad", speaker: no_speaker, vad }), jobs)),
    );
    out
}

/// Both Whisper sizes, each loaded (digests checked, CUDA when it works) on its first request: an agent whose
/// endpoints never name a size never pays for it (base is 300 MB of f32 weights). Until then `/readyz` says
/// whether its files are installed.
pub fn load_whisper(
    dir: &ModelsDir,
    vad: Option<Arc<SileroVad>>,
    status: &ModelStates,
) -> HashMap<WhisperSize, Arc<dyn Backend>> {
    let jobs = crate::backend::builtin_job_permits();
    [WhisperSize::TinyEn, WhisperSize::Base]
        .into_iter()
        .map(|size| {
            let transcriber = crate::transcriber::Transcriber::new(dir.path.clone(), size, vad.clone(), status.clone());
            let backend: Arc<dyn Backend> = Arc::new(Blocking::new(Arc::new(transcriber), Arc::clone(&jobs)));
            (size, backend)
        })
        .collect()
}

/// One built-in endpoint kind: what it can compute, or why not.
pub struct Builtin {
    kind: &'static str,
    speaker: Result<Arc<SpeakerEncoder>, String>,
    vad: Result<Arc<SileroVad>, String>,
}

impl Builtin {
    pub fn new(
        kind: &'static str,
        speaker: Result<Arc<SpeakerEncoder>, String>,
        vad: Result<Arc<SileroVad>, String>,
    ) -> Self {
        Builtin { kind, speaker, vad }
    }

    fn speaker(&self) -> Result<&SpeakerEncoder, BackendError> {
        self.speaker.as_deref().map_err(|m| BackendError::Unavailable(m.clone()))
    }

    fn vad(&self) -> Result<&SileroVad, BackendError> {
        self.vad.as_deref().map_err(|m| BackendError::Unavailable(m.clone()))
    }

    /// VAD-trimmed speech (data minimisation: silence never reaches the encoder) when VAD is loaded and
    /// finds enough speech; otherwise the audio as sent. Returns the samples and the seconds of speech found.
    fn speech<'a>(&self, pcm: &'a [f32]) -> Result<(std::borrow::Cow<'a, [f32]>, Option<f64>), BackendError> {
        let Ok(vad) = self.vad.as_deref() else {
            return Ok((pcm.into(), None));
        };
        let trimmed = vad.trim_silence(pcm, SAMPLE_RATE).map_err(|e| BackendError::BadInput(e.to_string()))?;
        let speech_seconds = trimmed.len() as f64 / f64::from(SAMPLE_RATE);
        if trimmed.len() < MIN_TRIMMED_SAMPLES {
            return Ok((pcm.into(), Some(speech_seconds)));
        }
        Ok((trimmed.into(), Some(speech_seconds)))
    }

    fn embed(&self, pcm: &[f32]) -> Result<(Vec<f32>, Option<f64>), BackendError> {
        let encoder = self.speaker()?;
        let (speech, speech_seconds) = self.speech(pcm)?;
        let embedded = encoder.embed(&speech).map_err(|e| {
            if e.is_bad_input() {
                BackendError::BadInput(e.to_string())
            } else {
                BackendError::Failed(e.category().to_string())
            }
        })?;
        Ok((embedded.embedding.to_vec(), speech_seconds))
    }
}

impl BlockingModel for Builtin {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn run(&self, request: &BackendRequest) -> Result<BackendResponse, BackendError> {
        let field = |name: &str| request.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let body = match request.feature {
            Feature::Embed => {
                let pcm = decode(&request.audio, &request.filename)?;
                let (embedding, speech_seconds) = self.embed(&pcm)?;
                let mut body = serde_json::json!({
                    "model": request.model,
                    "embedding": embedding,
                    "audio_seconds": pcm.len() as f64 / f64::from(SAMPLE_RATE),
                });
                if let Some(s) = speech_seconds {
                    body["speech_seconds"] = serde_json::json!(s);
                }
                body
            }
            Feature::Verify => {
                let reference = parse_embedding(field(FIELD_REFERENCE), FIELD_REFERENCE)?.ok_or_else(|| {
                    BackendError::BadInput(format!(
                        "missing `{FIELD_REFERENCE}`: the 256-float embedding to compare with"
                    ))
                })?;
                let threshold =
                    field(FIELD_THRESHOLD).and_then(|t| t.parse::<f64>().ok()).unwrap_or(DEFAULT_VERIFY_THRESHOLD);
                let candidate = match parse_embedding(field(FIELD_EMBEDDING), FIELD_EMBEDDING)? {
                    // A client-computed embedding (the gateway checked the policy allows it): no model run.
                    Some(embedding) => embedding,
                    None => self.embed(&decode(&request.audio, &request.filename)?)?.0,
                };
                let similarity = f64::from(infergate_speaker::cosine(&to_array(&candidate), &to_array(&reference)));
                serde_json::json!({"model": request.model, "similarity": similarity, "threshold": threshold, "match": similarity >= threshold})
            }
            Feature::Vad => {
                let vad = self.vad()?;
                let pcm = decode(&request.audio, &request.filename)?;
                let segments = vad
                    .speech_segments(&pcm, SAMPLE_RATE, &SegmentParams::default())
                    .map_err(|e| BackendError::BadInput(e.to_string()))?;
                let rate = f64::from(SAMPLE_RATE);
                let speech: usize = segments.iter().map(|s| s.end - s.start).sum();
                serde_json::json!({
                    "model": request.model,
                    "segments": segments.iter().map(|s| serde_json::json!({"start": s.start as f64 / rate, "end": s.end as f64 / rate})).collect::<Vec<_>>(),
                    "speech_seconds": speech as f64 / rate,
                    "audio_seconds": pcm.len() as f64 / rate,
                })
            }
            Feature::Transcribe => {
                return Err(BackendError::Unavailable(format!("the built-in {} model does not transcribe", self.kind)));
            }
        };
        Ok(BackendResponse {
            content_type: "application/json".into(),
            body: Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise")),
            text: None,
            // The Blocking wrapper measures the wall time of this call (CPU); the CUDA path's own timing is
            // folded into the same wall clock because it blocks until its events complete.
            measured_gpu_seconds: None,
            billed_audio_seconds: None,
            words: Vec::new(),
        })
    }
}

fn to_array(v: &[f32]) -> infergate_speaker::Embedding {
    let mut out = [0.0f32; EMBEDDING_DIM];
    out.copy_from_slice(&v[..EMBEDDING_DIM]);
    out
}

/// A 256-float embedding given as JSON text; `Ok(None)` when absent.
pub fn parse_embedding(text: Option<&str>, name: &str) -> Result<Option<Vec<f32>>, BackendError> {
    let Some(text) = text else { return Ok(None) };
    let values: Vec<f64> = serde_json::from_str(text)
        .map_err(|_| BackendError::BadInput(format!("`{name}` must be a JSON array of {EMBEDDING_DIM} numbers")))?;
    check_embedding(&values, name).map_err(BackendError::BadInput).map(Some)
}

/// Length and finiteness of a client-supplied embedding.
pub fn check_embedding(values: &[f64], name: &str) -> Result<Vec<f32>, String> {
    if values.len() != EMBEDDING_DIM {
        return Err(format!("`{name}` has {} values; a speaker embedding has exactly {EMBEDDING_DIM}", values.len()));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("`{name}` holds a non-finite value; send {EMBEDDING_DIM} finite numbers"));
    }
    Ok(values.iter().map(|&v| v as f32).collect())
}

/// WAV (16-bit PCM, any channel count, mixed down) or raw `.pcm` (16 kHz mono s16le) to f32 samples at 16 kHz.
pub fn decode(bytes: &[u8], filename: &str) -> Result<Vec<f32>, BackendError> {
    let bad = |what: String| BackendError::BadInput(what);
    if bytes.is_empty() {
        return Err(bad("the audio file is empty; send 16 kHz mono 16-bit PCM WAV".into()));
    }
    if !bytes.starts_with(b"RIFF") {
        let lower = filename.to_ascii_lowercase();
        if lower.ends_with(".pcm") || lower.ends_with(".raw") || lower.ends_with(".s16le") {
            return Ok(samples(bytes, 1));
        }
        return Err(bad(
            "built-in models take 16-bit PCM WAV or raw 16 kHz mono PCM16 (.pcm); convert with e.g. `sox in.mp3 -r 16000 -c 1 -b 16 out.wav`".into(),
        ));
    }
    let wav = infergate_gate::audio::parse_wav(bytes)
        .map_err(|what| bad(format!("invalid WAV file: {what}; re-encode it as 16-bit PCM WAV")))?;
    let (tag, channels, rate, bits) = (wav.format_tag, wav.channels, wav.sample_rate, wav.bits_per_sample);
    // 1 = PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE, which sox writes for some layouts (still integer PCM when 16-bit).
    if !(tag == 1 || tag == 0xFFFE) || bits != 16 {
        return Err(bad(format!(
            "WAV is {bits}-bit (format tag {tag}); built-in models take 16-bit integer PCM: `sox in.wav -b 16 out.wav`"
        )));
    }
    if rate != SAMPLE_RATE {
        return Err(bad(format!(
            "WAV is sampled at {rate} Hz; built-in models take 16000 Hz: resample with `sox in.wav -r 16000 -c 1 out.wav`"
        )));
    }
    if channels == 0 {
        return Err(bad("invalid WAV file: zero channels".into()));
    }
    Ok(samples(wav.data, usize::from(channels)))
}

/// Little-endian PCM16 frames to mono floats in [-1, 1] (channels averaged).
fn samples(bytes: &[u8], channels: usize) -> Vec<f32> {
    let frame = 2 * channels;
    bytes
        .chunks_exact(frame)
        .map(|f| {
            let sum: f32 = f.chunks_exact(2).map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0).sum();
            sum / channels as f32
        })
        .collect()
}

/// The PII NER model (`ner/rampart` under the models directory) for redaction rules that name people or
/// places: loaded on the first such request, its state on `/readyz` like the other models'.
pub fn ner_loader(dir: &ModelsDir, states: &ModelStates) -> Option<crate::redaction::NerLoader> {
    const NAME: &str = "pii-ner";
    let path = dir.path.join(infergate_ner::MODEL_DIR);
    let state = if path.join("model_q4.onnx").is_file() {
        "installed (loaded by the first rule that names PERSON, LOCATION, STREET_ADDRESS or ZIP_CODE)".to_string()
    } else {
        "missing: run `infergate-agent models fetch --model pii-ner`".to_string()
    };
    states.lock().unwrap_or_else(|e| e.into_inner()).insert(NAME.into(), state);
    let states = Arc::clone(states);
    Some(Box::new(move || {
        let loaded = infergate_ner::NerModel::load(&path)
            .map(|m| Arc::new(m) as Arc<dyn infergate_redact::EntityModel>)
            .map_err(|e| e.to_string());
        match &loaded {
            Ok(_) => tracing::info!(model = NAME, "redaction NER model loaded"),
            Err(_) => tracing::warn!(model = NAME, "redaction NER model unusable; rules that need it are refused"),
        }
        let state = match &loaded {
            Ok(_) => "ready".to_string(),
            Err(why) => format!("missing: {why}"),
        };
        states.lock().unwrap_or_else(|e| e.into_inner()).insert(NAME.into(), state);
        loaded
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, frames: &[i16]) -> Vec<u8> {
        let mut h = infergate_gate::audio::wav_header((frames.len() * 2) as u32).to_vec();
        h[22..24].copy_from_slice(&channels.to_le_bytes());
        h[24..28].copy_from_slice(&rate.to_le_bytes());
        for s in frames {
            h.extend_from_slice(&s.to_le_bytes());
        }
        h
    }

    #[test]
    fn decodes_wav_and_pcm_and_refuses_other_rates() {
        assert_eq!(decode(&wav(16_000, 1, &[0, 16384, -32768]), "a.wav").unwrap(), vec![0.0, 0.5, -1.0]);
        assert_eq!(decode(&wav(16_000, 2, &[16384, 0, -16384, -16384]), "a.wav").unwrap(), vec![0.25, -0.5]);
        assert_eq!(decode(&[0, 64], "a.pcm").unwrap(), vec![0.5]);
        let err = decode(&wav(44_100, 1, &[0; 4]), "a.wav").unwrap_err();
        assert!(matches!(&err, BackendError::BadInput(m) if m.contains("44100 Hz") && m.contains("16000")), "{err}");
        assert!(matches!(decode(b"OggS", "a.ogg").unwrap_err(), BackendError::BadInput(_)));
    }

    #[test]
    fn embeddings_are_checked() {
        assert_eq!(parse_embedding(None, "embedding").unwrap(), None);
        let ok = serde_json::to_string(&vec![0.5; 256]).unwrap();
        assert_eq!(parse_embedding(Some(&ok), "embedding").unwrap().unwrap().len(), 256);
        let err = parse_embedding(Some("[1,2]"), "embedding").unwrap_err();
        assert!(err.to_string().contains("has 2 values"), "{err}");
        assert!(parse_embedding(Some("nope"), "embedding").is_err());
    }

    #[test]
    fn missing_weights_answer_unavailable_with_the_fix() {
        let dir = ModelsDir { path: PathBuf::from("/nonexistent/infergate-models"), source: "test" };
        let backends = load(&dir);
        let request = BackendRequest {
            feature: Feature::Embed,
            model: "m".into(),
            audio: Bytes::from(wav(16_000, 1, &[0; 16_000])),
            filename: "a.wav".into(),
            content_type: "audio/wav".into(),
            fields: vec![],
            request_id: "r".into(),
            traceparent: String::new(),
            want_words: false,
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let err = rt.block_on(backends[&BuiltinModel::SpeakerEncoder].call(request)).unwrap_err();
        let refusal = err.to_refusal();
        assert_eq!(refusal.code, infergate_gate::refusal::RefusalCode::BackendUnavailable);
        assert!(
            refusal.message.contains("install-speaker-weights.sh") && refusal.message.contains("pretrained.pt"),
            "{}",
            refusal.message
        );
    }
}
