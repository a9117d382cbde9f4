//! The decoding loop around the network: 30 s windows with seek, the prompt, greedy decoding (or sampling)
//! with Whisper's suppressions and timestamp rules, the temperature fallback, and segment splitting. It follows
//! faster-whisper 1.2 (`generate_segments`, with CTranslate2's timestamp rules) so the reference transcripts in
//! tests/fixtures are the oracle; beam search and `best_of > 1` are not implemented (greedy is the reference
//! setting and what the agent runs).
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::align::{self, WordTiming};
use crate::ct2;
use crate::error::WhisperError;
use crate::mel::Frontend;
use crate::model::{Decoder, WhisperBackend, WhisperWeights};
use crate::sampling::{Rng, argmax, compression_ratio, log_softmax, log_sum_exp, sample, softmax_at};
use crate::tokenizer::Tokenizer;
use crate::weights::{ModelConfig, ModelFiles, ModelSize};
use crate::{CHUNK_FRAMES, CpuWhisper, CudaWhisper, SAMPLE_RATE, Segment, Transcript, Word};

/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per second.
const FRAMES_PER_SECOND: f64 = 100.0;
/// Mel frames per timestamp step (two: the encoder halves the time axis).
const INPUT_STRIDE: usize = 2;
/// Fallback schedule when the request does not fix a temperature (OpenAI's and faster-whisper's default).
const TEMPERATURES: [f32; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
const COMPRESSION_RATIO_THRESHOLD: f32 = 2.4;
const LOG_PROB_THRESHOLD: f32 = -1.0;
const NO_SPEECH_THRESHOLD: f32 = 0.6;
/// The prompt is reset when a window needed a temperature above this.
const PROMPT_RESET_ON_TEMPERATURE: f32 = 0.5;
/// The first timestamp may not be later than 1 s into the window.
const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Task {
    #[default]
    Transcribe,
    /// Speech in any language to English text (multilingual models only).
    Translate,
}

/// What a request may set.
#[derive(Clone, Debug)]
pub struct Options {
    /// ISO 639-1 code; `None` detects it (multilingual models) or is English (`.en` models).
    pub language: Option<String>,
    pub task: Task,
    /// Text that conditions the first window (names, spelling, style), as OpenAI's `prompt`.
    pub prompt: Option<String>,
    /// A fixed temperature; `None` runs the fallback schedule from 0.0.
    pub temperature: Option<f32>,
    pub word_timestamps: bool,
    /// Feed each window's text to the next (the reference default).
    pub condition_on_previous_text: bool,
    /// Seed for sampling at temperatures above 0, so a request is reproducible.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            prompt: None,
            temperature: None,
            word_timestamps: false,
            condition_on_previous_text: true,
            seed: 0x5eed,
        }
    }
}

/// A loaded model: backend, tokenizer and decoding configuration.
pub struct Whisper {
    backend: Box<dyn WhisperBackend>,
    tokenizer: Tokenizer,
    config: ModelConfig,
    size: ModelSize,
    frontend: Frontend,
    suppress: Vec<u32>,
    cuda_fallback_reason: Option<String>,
}

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper").field("size", &self.size).field("backend", &self.backend.name()).finish()
    }
}

/// One window's decode.
struct Decoded {
    tokens: Vec<u32>,
    avg_logprob: f32,
    compression_ratio: f32,
    no_speech_prob: f32,
    temperature: f32,
}

/// A segment before words are attached: times in seconds, tokens including timestamps.
struct RawSegment {
    start: f64,
    end: f64,
    tokens: Vec<u32>,
    words: Vec<Word>,
}

impl Whisper {
    /// Loads `<models_dir>/whisper/<size>` on the CPU backend.
    pub fn load(models_dir: &Path, size: ModelSize) -> Result<Self, WhisperError> {
        let (files, weights) = Self::read(models_dir, size)?;
        Self::with_backend(&files, Box::new(CpuWhisper::new(weights)))
    }

    /// Loads on the GPU when CUDA works on this node, else on the CPU, remembering why.
    pub fn load_prefer_cuda(models_dir: &Path, size: ModelSize) -> Result<Self, WhisperError> {
        let (files, weights) = Self::read(models_dir, size)?;
        match CudaWhisper::new(weights.clone(), 0) {
            Ok(cuda) => Self::with_backend(&files, Box::new(cuda)),
            Err(err) => {
                let mut model = Self::with_backend(&files, Box::new(CpuWhisper::new(weights)))?;
                model.cuda_fallback_reason = Some(err.to_string());
                Ok(model)
            }
        }
    }

    fn read(models_dir: &Path, size: ModelSize) -> Result<(ModelFiles, Arc<WhisperWeights>), WhisperError> {
        let files = ModelFiles::load(models_dir, size)?;
        let corrupt = |reason: String| WhisperError::WeightsCorrupt { path: files.dir.join("model.bin"), reason };
        let parsed = ct2::parse(&files.model_bin).map_err(corrupt)?;
        let weights = WhisperWeights::from_ct2(&parsed).map_err(corrupt)?;
        Ok((files, Arc::new(weights)))
    }

    pub fn with_backend(files: &ModelFiles, backend: Box<dyn WhisperBackend>) -> Result<Self, WhisperError> {
        let tokenizer = Tokenizer::from_bytes(&files.tokenizer_json)?;
        // config.json's suppress list is the model's non-speech tokens; the special tokens are added as
        // faster-whisper's `get_suppressed_tokens` does.
        let mut suppress = files.config.suppress_ids.clone();
        suppress.extend([tokenizer.sot, tokenizer.sot_prev, tokenizer.no_speech]);
        suppress.extend(tokenizer.transcribe.iter().chain(&tokenizer.translate));
        if let Some(lm) = tokenizer_id(&tokenizer, "<|startoflm|>") {
            suppress.push(lm);
        }
        suppress.sort_unstable();
        suppress.dedup();
        Ok(Self {
            backend,
            tokenizer,
            config: files.config.clone(),
            size: files.size,
            frontend: Frontend::new(),
            suppress,
            cuda_fallback_reason: None,
        })
    }

    pub fn size(&self) -> ModelSize {
        self.size
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn cuda_fallback_reason(&self) -> Option<&str> {
        self.cuda_fallback_reason.as_deref()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Checks what a request asks for against what this model can do.
    pub fn check(&self, options: &Options) -> Result<(), WhisperError> {
        if options.task == Task::Translate && !self.size.multilingual() {
            return Err(WhisperError::BadInput(format!(
                "translation needs a multilingual model; this endpoint runs whisper {} (English only): use an endpoint \
                 with size: base",
                self.size.as_str()
            )));
        }
        if let Some(lang) = &options.language {
            let ok = if self.size.multilingual() { self.tokenizer.language_id(lang).is_some() } else { lang == "en" };
            if !ok {
                return Err(WhisperError::BadInput(format!(
                    "language `{lang}` is not supported by whisper {}; send an ISO 639-1 code such as `en`{}",
                    self.size.as_str(),
                    if self.size.multilingual() { ", `de` or `fr`" } else { " (this model is English only)" }
                )));
            }
        }
        if let Some(t) = options.temperature {
            if !(0.0..=1.0).contains(&t) || t.is_nan() {
                return Err(WhisperError::BadInput(format!("temperature must be between 0 and 1, got {t}")));
            }
        }
        Ok(())
    }

    /// Transcribes 16 kHz mono samples in [-1, 1].
    pub fn transcribe(&self, samples: &[f32], options: &Options) -> Result<Transcript, WhisperError> {
        self.check(options)?;
        let clock = ComputeClock::start(self.backend.name());
        let mel = self.frontend.log_mel(samples);
        let content_frames = mel.content_frames();
        let duration = samples.len() as f64 / SAMPLE_RATE as f64;
        let mut language = options.language.clone().unwrap_or_else(|| "en".to_string());
        let mut detected = options.language.is_some() || !self.size.multilingual();
        let mut all_tokens: Vec<u32> = Vec::new();
        if let Some(prompt) = options.prompt.as_deref().filter(|p| !p.trim().is_empty()) {
            all_tokens.extend(self.tokenizer.encode(&format!(" {}", prompt.trim()))?);
        }
        let mut prompt_reset_since = 0;
        let mut rng = Rng(options.seed | 1);
        let mut segments: Vec<Segment> = Vec::new();
        let mut seek = 0usize;
        let mut last_speech = 0.0f64;
        while seek < content_frames {
            let time_offset = seek as f64 / FRAMES_PER_SECOND;
            let segment_size = CHUNK_FRAMES.min(content_frames - seek);
            let segment_duration = segment_size as f64 / FRAMES_PER_SECOND;
            let mut decoder = self.backend.encode(&mel.window(seek, segment_size))?;
            if !detected {
                language = self.detect_language(decoder.as_mut())?;
                detected = true;
            }
            let sot_sequence = self.sot_sequence(&language, options.task);
            let previous = &all_tokens[prompt_reset_since..];
            let decoded = self.decode_with_fallback(decoder.as_mut(), previous, &sot_sequence, options, &mut rng)?;
            if decoded.no_speech_prob > NO_SPEECH_THRESHOLD && decoded.avg_logprob <= LOG_PROB_THRESHOLD {
                seek += segment_size;
                continue;
            }
            let previous_seek = seek;
            let (mut current, next_seek, single_timestamp_ending) =
                self.split_by_timestamps(&decoded.tokens, time_offset, segment_size, segment_duration, seek);
            seek = next_seek;
            if options.word_timestamps {
                last_speech = self.add_words(
                    decoder.as_mut(),
                    &sot_sequence,
                    &mut current,
                    segment_size,
                    time_offset,
                    &language,
                    last_speech,
                )?;
                if !single_timestamp_ending {
                    if let Some(end) = current.iter().rev().flat_map(|s| s.words.last()).next().map(|w| w.end) {
                        if end > time_offset {
                            seek = (end * FRAMES_PER_SECOND).round() as usize;
                        }
                    }
                }
            }
            for raw in current {
                let text = self.tokenizer.decode(&raw.tokens);
                if raw.start == raw.end || text.trim().is_empty() {
                    continue;
                }
                all_tokens.extend(&raw.tokens);
                segments.push(Segment {
                    id: segments.len() as u32,
                    seek: previous_seek as u32,
                    start: round2(raw.start),
                    end: round2(raw.end),
                    text,
                    tokens: raw.tokens,
                    temperature: decoded.temperature,
                    avg_logprob: decoded.avg_logprob,
                    compression_ratio: decoded.compression_ratio,
                    no_speech_prob: decoded.no_speech_prob,
                    words: raw.words,
                });
            }
            if !options.condition_on_previous_text || decoded.temperature > PROMPT_RESET_ON_TEMPERATURE {
                prompt_reset_since = all_tokens.len();
            }
        }
        let text = segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
        Ok(Transcript { text, language, duration, segments, compute: clock.elapsed() })
    }

    fn sot_sequence(&self, language: &str, task: Task) -> Vec<u32> {
        let mut seq = vec![self.tokenizer.sot];
        if self.size.multilingual() {
            seq.extend(self.tokenizer.language_id(language));
            let task = match task {
                Task::Transcribe => self.tokenizer.transcribe,
                Task::Translate => self.tokenizer.translate,
            };
            seq.extend(task);
        }
        seq
    }

    /// The most likely language token at the start-of-transcript position.
    fn detect_language(&self, decoder: &mut dyn Decoder) -> Result<String, WhisperError> {
        decoder.reset();
        let logits = decoder.step(&[self.tokenizer.sot])?;
        let best = self
            .tokenizer
            .languages
            .iter()
            .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))
            .map(|(code, _)| code.clone());
        Ok(best.unwrap_or_else(|| "en".into()))
    }

    fn decode_with_fallback(
        &self,
        decoder: &mut dyn Decoder,
        previous: &[u32],
        sot_sequence: &[u32],
        options: &Options,
        rng: &mut Rng,
    ) -> Result<Decoded, WhisperError> {
        let schedule: Vec<f32> = match options.temperature {
            Some(t) => vec![t],
            None => TEMPERATURES.to_vec(),
        };
        let mut results: Vec<Decoded> = Vec::new();
        for &temperature in &schedule {
            let decoded = self.decode_once(decoder, previous, sot_sequence, temperature, rng)?;
            let too_repetitive = decoded.compression_ratio > COMPRESSION_RATIO_THRESHOLD;
            let mut needs_fallback = too_repetitive || decoded.avg_logprob < LOG_PROB_THRESHOLD;
            if decoded.no_speech_prob > NO_SPEECH_THRESHOLD && decoded.avg_logprob < LOG_PROB_THRESHOLD {
                needs_fallback = false; // silence
            }
            if !needs_fallback {
                return Ok(decoded);
            }
            results.push(decoded);
        }
        // Every temperature failed: the best average log-probability among the not-too-repetitive ones.
        let last_temperature = *schedule.last().unwrap_or(&0.0);
        let any_ok = results.iter().any(|r| r.compression_ratio <= COMPRESSION_RATIO_THRESHOLD);
        let mut best = results
            .into_iter()
            .filter(|r| !any_ok || r.compression_ratio <= COMPRESSION_RATIO_THRESHOLD)
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
            .expect("the schedule is never empty");
        best.temperature = last_temperature;
        Ok(best)
    }

    fn decode_once(
        &self,
        decoder: &mut dyn Decoder,
        previous: &[u32],
        sot_sequence: &[u32],
        temperature: f32,
        rng: &mut Rng,
    ) -> Result<Decoded, WhisperError> {
        let tk = &self.tokenizer;
        let n_text_ctx = self.backend.dims().n_text_ctx;
        decoder.reset();
        let mut prefix = Vec::new();
        if !previous.is_empty() {
            prefix.push(tk.sot_prev);
            prefix.extend(&previous[previous.len().saturating_sub(n_text_ctx / 2 - 1)..]);
        }
        prefix.push(tk.sot);
        // The logits at the start-of-transcript position carry the no-speech probability.
        let mut logits = decoder.step(&prefix)?;
        let no_speech_prob = softmax_at(&logits, tk.no_speech as usize);
        if sot_sequence.len() > 1 {
            logits = decoder.step(&sot_sequence[1..])?;
        }
        let prompt_len = prefix.len() + sot_sequence.len() - 1;
        let max_new = n_text_ctx.saturating_sub(prompt_len);
        let mut tokens: Vec<u32> = Vec::new();
        let mut sum_logprob = 0.0f64;
        loop {
            self.apply_rules(&mut logits, &tokens);
            let logprobs = log_softmax(&logits);
            let next = if temperature > 0.0 { sample(&logits, temperature, rng) } else { argmax(&logits) };
            sum_logprob += f64::from(logprobs[next as usize]);
            if next == tk.eot {
                break;
            }
            tokens.push(next);
            if tokens.len() >= max_new {
                break;
            }
            logits = decoder.step(&[next])?;
        }
        let text = tk.decode(&tokens);
        Ok(Decoded {
            avg_logprob: (sum_logprob / (tokens.len() + 1) as f64) as f32,
            compression_ratio: compression_ratio(text.trim()),
            no_speech_prob,
            temperature,
            tokens,
        })
    }

    /// Suppressions and Whisper's timestamp rules on the logits for the next token after `sampled`.
    fn apply_rules(&self, logits: &mut [f32], sampled: &[u32]) {
        let tk = &self.tokenizer;
        let ts = tk.timestamp_begin as usize;
        let eot = tk.eot as usize;
        let neg = f32::NEG_INFINITY;
        for &t in &self.suppress {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = neg;
            }
        }
        logits[tk.no_timestamps as usize] = neg;
        if sampled.is_empty() {
            // suppress_blank: no leading space or immediate end.
            for &t in &self.config.suppress_ids_begin {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = neg;
                }
            }
            // The first token is a timestamp no later than MAX_INITIAL_TIMESTAMP.
            logits[..ts].fill(neg);
            let last_allowed = ts + MAX_INITIAL_TIMESTAMP_INDEX as usize + 1;
            if last_allowed < logits.len() {
                logits[last_allowed..].fill(neg);
            }
            return;
        }
        let is_ts = |t: u32| t as usize >= ts;
        let last_was_ts = sampled.last().is_some_and(|&t| is_ts(t));
        let penultimate_was_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_was_ts {
            if penultimate_was_ts {
                logits[ts..].fill(neg); // a pair closes a segment: text (or the end) comes next
            } else {
                logits[..eot].fill(neg); // a segment's end timestamp: another timestamp or the end
            }
        }
        // Timestamps never go backwards (and a new segment cannot start where the last one ended twice).
        if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            let floor = if last_was_ts && !penultimate_was_ts { last_ts as usize } else { last_ts as usize + 1 };
            let len = logits.len();
            logits[ts..floor.min(len)].fill(neg);
        }
        // If all timestamps together are likelier than any single text token, emit a timestamp.
        let logprobs = log_softmax(logits);
        let ts_logprob = log_sum_exp(&logprobs[ts..]);
        let max_text = logprobs[..ts].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if ts_logprob > max_text {
            logits[..ts].fill(neg);
        }
    }

    /// faster-whisper's `_split_segments_by_timestamps`: returns the segments, the next seek and whether the
    /// window ended on a single timestamp.
    fn split_by_timestamps(
        &self,
        tokens: &[u32],
        time_offset: f64,
        segment_size: usize,
        segment_duration: f64,
        seek: usize,
    ) -> (Vec<RawSegment>, usize, bool) {
        let ts = self.tokenizer.timestamp_begin;
        let is_ts = |t: u32| t >= ts;
        let position = |t: u32| f64::from(t - ts);
        let single_timestamp_ending =
            tokens.len() >= 2 && !is_ts(tokens[tokens.len() - 2]) && is_ts(tokens[tokens.len() - 1]);
        let consecutive: Vec<usize> = (1..tokens.len()).filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1])).collect();
        let mut out = Vec::new();
        if consecutive.is_empty() {
            let mut duration = segment_duration;
            if let Some(&last) = tokens.iter().rev().find(|&&t| is_ts(t)) {
                if last != ts {
                    duration = position(last) * TIME_PRECISION;
                }
            }
            out.push(RawSegment {
                start: time_offset,
                end: time_offset + duration,
                tokens: tokens.to_vec(),
                words: vec![],
            });
            return (out, seek + segment_size, single_timestamp_ending);
        }
        let mut slices = consecutive;
        if single_timestamp_ending {
            slices.push(tokens.len());
        }
        let mut last = 0;
        for &current in &slices {
            let sliced = &tokens[last..current];
            out.push(RawSegment {
                start: time_offset + position(sliced[0]) * TIME_PRECISION,
                end: time_offset + position(sliced[sliced.len() - 1]) * TIME_PRECISION,
                tokens: sliced.to_vec(),
                words: vec![],
            });
            last = current;
        }
        let next = if single_timestamp_ending {
            seek + segment_size
        } else {
            seek + position(tokens[last - 1]) as usize * INPUT_STRIDE
        };
        (out, next, single_timestamp_ending)
    }

    /// Word timings for every segment of a window (faster-whisper's `add_word_timestamps`).
    #[allow(clippy::too_many_arguments)]
    fn add_words(
        &self,
        decoder: &mut dyn Decoder,
        sot_sequence: &[u32],
        segments: &mut [RawSegment],
        num_frames: usize,
        time_offset: f64,
        language: &str,
        mut last_speech: f64,
    ) -> Result<f64, WhisperError> {
        let eot = self.tokenizer.eot;
        let per_segment: Vec<Vec<u32>> =
            segments.iter().map(|s| s.tokens.iter().copied().filter(|&t| t < eot).collect()).collect();
        let text_tokens: Vec<u32> = per_segment.iter().flatten().copied().collect();
        if text_tokens.is_empty() {
            return Ok(last_speech);
        }
        let mut alignment: Vec<WordTiming> = align::find_alignment(
            decoder,
            &self.tokenizer,
            sot_sequence,
            &text_tokens,
            num_frames,
            &self.config.alignment_heads,
            language,
        )?;
        let (median, max_duration) = align::clamp_long_words(&mut alignment);
        align::merge_punctuations(&mut alignment);
        let mut word_index = 0;
        for (segment, seg_tokens) in segments.iter_mut().zip(&per_segment) {
            let mut saved = 0;
            let mut words = Vec::new();
            while word_index < alignment.len() && saved < seg_tokens.len() {
                let timing = &alignment[word_index];
                if !timing.word.is_empty() {
                    words.push(Word {
                        word: timing.word.clone(),
                        start: round2(time_offset + timing.start),
                        end: round2(time_offset + timing.end),
                        probability: timing.probability,
                    });
                }
                saved += timing.tokens.len();
                word_index += 1;
            }
            if !words.is_empty() {
                align::fix_segment_edges(
                    &mut words,
                    &mut segment.start,
                    &mut segment.end,
                    last_speech,
                    median,
                    max_duration,
                );
                last_speech = segment.end;
            }
            segment.words = words;
        }
        Ok(last_speech)
    }
}

fn tokenizer_id(tokenizer: &Tokenizer, token: &str) -> Option<u32> {
    let ids = tokenizer.encode(token).ok()?;
    // An added special token encodes to itself alone.
    (ids.len() == 1 && ids[0] > tokenizer.eot).then(|| ids[0])
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Compute time as the limiter settles it: the thread's CPU time on the CPU backend (waiting for a core is not
/// billed), wall time around the GPU backend's synchronous calls.
struct ComputeClock {
    cpu: Option<cpu_time::ThreadTime>,
    wall: Instant,
}

impl ComputeClock {
    fn start(backend: &str) -> Self {
        Self { cpu: (backend == "cpu").then(cpu_time::ThreadTime::now), wall: Instant::now() }
    }

    fn elapsed(&self) -> Duration {
        match &self.cpu {
            Some(t) => t.elapsed(),
            None => self.wall.elapsed(),
        }
    }
}
