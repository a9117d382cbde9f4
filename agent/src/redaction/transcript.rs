//! Redacting a whole transcript: its text, its segments and its words, consistently, so no response format
//! (json, text, srt, vtt, verbose_json, server-sent events) carries what another one hides.
//!
//! The text is redacted as one piece, never segment by segment: a card number Whisper split over two
//! segments ("... 4111 1111" | "1111 1111 ...") is still one number. Redacted words are replaced by one word
//! per redacted span (`[CREDIT_CARD]`, timed from the span's first word to its last), so word lists,
//! segment texts and the top-level text all say the same.
use super::Counts;
use infergate_redact::{ModelError, Redactor};
use infergate_whisper::{Segment, Transcript, Word};
use serde::Deserialize;

/// What a redaction did: counts by type, and the audio to mute (seconds, in the transcript's time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub counts: Counts,
    pub muted: Vec<(f64, f64)>,
}

/// Redacts `t` in place. With word times (built-in Whisper, an upstream's `verbose_json` words) the muted
/// audio is the redacted words'; without them it is every segment that held a redaction (coarser, never less).
pub fn redact(t: &mut Transcript, redactor: &Redactor) -> Result<Report, ModelError> {
    if t.segments.iter().any(|s| !s.words.is_empty()) {
        return redact_words(t, redactor);
    }
    if !t.segments.is_empty() {
        return redact_segments(t, redactor);
    }
    let out = redactor.try_redact(&t.text)?;
    t.text = out.text;
    Ok(Report { counts: out.counts, muted: Vec::new() })
}

fn redact_words(t: &mut Transcript, redactor: &Redactor) -> Result<Report, ModelError> {
    let owners: Vec<(usize, &Word)> =
        t.segments.iter().enumerate().flat_map(|(i, s)| s.words.iter().map(move |w| (i, w))).collect();
    let texts: Vec<&str> = owners.iter().map(|(_, w)| w.word.trim()).collect();
    let out = redactor.try_redact_words(&texts)?;
    let mut rebuilt: Vec<Vec<Word>> = vec![Vec::new(); t.segments.len()];
    let mut muted = Vec::new();
    for piece in pieces(&out, &word_ranges(&texts), 0, owners.len()) {
        match piece {
            Piece::Word(i) => rebuilt[owners[i].0].push(owners[i].1.clone()),
            Piece::Redacted { first, last, replacement, .. } => {
                let (segment, word) = owners[first];
                let (start, end) = (word.start, owners[last].1.end);
                muted.push((start, end));
                if !replacement.is_empty() {
                    // Whisper's words carry their leading space; the replacement keeps the first word's.
                    let lead = if word.word.starts_with(' ') { " " } else { "" };
                    let probability = owners[first..=last].iter().map(|(_, w)| w.probability).fold(1.0, f32::min);
                    rebuilt[segment].push(Word { word: format!("{lead}{replacement}"), start, end, probability });
                }
            }
        }
    }
    for (segment, words) in t.segments.iter_mut().zip(rebuilt) {
        segment.text = words.iter().map(|w| w.word.as_str()).collect();
        segment.words = words;
    }
    t.text = t.segments.iter().map(|s| s.text.as_str()).collect();
    Ok(Report { counts: out.redacted.counts, muted })
}

fn redact_segments(t: &mut Transcript, redactor: &Redactor) -> Result<Report, ModelError> {
    let joined: String = t.segments.iter().map(|s| s.text.as_str()).collect();
    let out = redactor.try_redact(&joined)?;
    let mut muted = Vec::new();
    let mut at = 0;
    for segment in &mut t.segments {
        let range = at..at + segment.text.len();
        at = range.end;
        let mut text = String::with_capacity(segment.text.len());
        let mut copied = range.start;
        let mut touched = false;
        for span in out.redacted_spans_in(&range) {
            touched = true;
            let start = span.start.max(range.start);
            text.push_str(&joined[copied..start]);
            // The replacement goes where the span starts; a span begun in an earlier segment leaves nothing.
            if span.start >= range.start {
                text.push_str(&out.text[span.output()]);
            }
            copied = span.end.min(range.end);
        }
        text.push_str(&joined[copied..range.end]);
        if touched {
            muted.push((segment.start, segment.end));
        }
        segment.text = text;
    }
    t.text = out.text;
    Ok(Report { counts: out.counts, muted })
}

/// One step of the walk over redacted words: a word that stays, or a run of words one redacted span covers.
pub(super) enum Piece<'o> {
    Word(usize),
    Redacted { first: usize, last: usize, replacement: &'o str, entity: Option<infergate_redact::Entity> },
}

/// Each word's byte range in the text [`Redactor::try_redact_words`] joins (single spaces), to find the span that
/// covers it.
pub(super) fn word_ranges(texts: &[&str]) -> Vec<std::ops::Range<usize>> {
    let mut at = 0;
    texts
        .iter()
        .map(|text| {
            let range = at..at + text.len();
            at = range.end + 1;
            range
        })
        .collect()
}

/// Walks words `from..to` of a [`Redactor::try_redact_words`] result (`ranges` from [`word_ranges`]): each muted run that one
/// span covers becomes one [`Piece::Redacted`] with that span's replacement, shared by one-shot transcripts and
/// stream segments so both write redacted words the same way.
pub(super) fn pieces<'o>(
    out: &'o infergate_redact::RedactedWords,
    ranges: &[std::ops::Range<usize>],
    from: usize,
    to: usize,
) -> Vec<Piece<'o>> {
    let covers = |s: &infergate_redact::RedactedSpan, i: usize| s.start < ranges[i].end && ranges[i].start < s.end;
    let mut pieces = Vec::new();
    let mut i = from;
    while i < to {
        if !out.muted[i] {
            pieces.push(Piece::Word(i));
            i += 1;
            continue;
        }
        let span = out.redacted.spans.iter().find(|s| covers(s, i));
        let mut last = i;
        while last + 1 < to && out.muted[last + 1] && span.is_some_and(|s| covers(s, last + 1)) {
            last += 1;
        }
        let replacement = span.map_or("", |s| &out.redacted.text[s.output()]);
        pieces.push(Piece::Redacted { first: i, last, replacement, entity: span.map(|s| s.entity) });
        i = last + 1;
    }
    pieces
}

/// Spans that overlap a byte range of the redacted input.
trait SpansIn {
    fn redacted_spans_in(&self, range: &std::ops::Range<usize>) -> Vec<&infergate_redact::RedactedSpan>;
}

impl SpansIn for infergate_redact::Redacted {
    fn redacted_spans_in(&self, range: &std::ops::Range<usize>) -> Vec<&infergate_redact::RedactedSpan> {
        self.spans.iter().filter(|s| s.start < range.end && range.start < s.end).collect()
    }
}

/// A transcription answer in any of the shapes backends send, as a [`Transcript`]: OpenAI `verbose_json`
/// (segments and/or words), `json` (`{"text": ...}`), or plain text. `None` for anything else: the caller
/// fails closed rather than pass an answer it could not redact.
pub fn parse(body: &[u8], content_type: &str) -> Option<Transcript> {
    if content_type.starts_with("application/json") || body.first() == Some(&b'{') {
        let v: Verbose = serde_json::from_slice(body).ok()?;
        return Some(v.into_transcript());
    }
    if content_type.starts_with("text/plain") {
        let text = std::str::from_utf8(body).ok()?.trim_end_matches('\n').to_string();
        return Some(Transcript {
            text,
            language: String::new(),
            duration: 0.0,
            segments: Vec::new(),
            compute: Default::default(),
        });
    }
    None
}

#[derive(Deserialize)]
struct Verbose {
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    segments: Vec<SegmentIn>,
    #[serde(default)]
    words: Vec<WordIn>,
    #[serde(default)]
    usage: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SegmentIn {
    #[serde(default)]
    id: u32,
    #[serde(default)]
    seek: u32,
    start: f64,
    end: f64,
    text: String,
    #[serde(default)]
    tokens: Vec<u32>,
    #[serde(default)]
    temperature: f32,
    #[serde(default)]
    avg_logprob: f32,
    #[serde(default)]
    compression_ratio: f32,
    #[serde(default)]
    no_speech_prob: f32,
}

#[derive(Deserialize)]
struct WordIn {
    word: String,
    start: f64,
    end: f64,
}

impl Verbose {
    fn into_transcript(self) -> Transcript {
        let duration = self.duration.unwrap_or_else(|| {
            // `json` answers carry only the billed whole seconds.
            self.usage.as_ref().and_then(|u| u.get("seconds")).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
        });
        let mut segments: Vec<Segment> = self
            .segments
            .into_iter()
            .map(|s| Segment {
                id: s.id,
                seek: s.seek,
                start: s.start,
                end: s.end,
                text: s.text,
                tokens: s.tokens,
                temperature: s.temperature,
                avg_logprob: s.avg_logprob,
                compression_ratio: s.compression_ratio,
                no_speech_prob: s.no_speech_prob,
                words: Vec::new(),
            })
            .collect();
        let mut words = self.words.into_iter().map(|w| {
            // OpenAI's words come trimmed; Whisper's words (and segment texts) start with a space.
            let word = if w.word.starts_with(' ') { w.word } else { format!(" {}", w.word) };
            Word { word, start: w.start, end: w.end, probability: 1.0 }
        });
        if segments.is_empty() {
            let all: Vec<Word> = words.collect();
            if !all.is_empty() {
                let (start, end) = (all[0].start, all[all.len() - 1].end);
                segments.push(Segment {
                    id: 0,
                    seek: 0,
                    start,
                    end,
                    text: self.text.clone(),
                    tokens: Vec::new(),
                    temperature: 0.0,
                    avg_logprob: 0.0,
                    compression_ratio: 0.0,
                    no_speech_prob: 0.0,
                    words: all,
                });
            }
        } else {
            // Each word to the segment it starts in (the last one that starts at or before it).
            for word in words.by_ref() {
                let at = segments.iter().rposition(|s| s.start <= word.start + 1e-6).unwrap_or(0);
                segments[at].words.push(word);
            }
        }
        let text = if segments.iter().any(|s| !s.words.is_empty()) || segments.is_empty() {
            self.text
        } else {
            segments.iter().map(|s| s.text.as_str()).collect()
        };
        Transcript {
            text,
            language: self.language.unwrap_or_default(),
            duration,
            segments,
            compute: Default::default(),
        }
    }
}
