//! OpenAI's `response_format`s for `/v1/audio/transcriptions` and `/translations`, and the stream events of
//! `stream=true`, rendered from a [`Transcript`]. Pure functions: the HTTP door picks the format, sets
//! [`ResponseFormat::content_type`] and writes the string.
//!
//! ```text
//!  Transcript ─┬─ json          {"text", "usage": {"type": "duration", "seconds": ceil(duration)}}
//!              ├─ text          text + "\n"
//!              ├─ srt / vtt     one cue per segment
//!              ├─ verbose_json  task, language name, duration, text, segments and/or words, usage
//!              └─ sse_events    data: {"type": "transcript.text.delta", ...} per segment, then ...done
//! ```
//! Shapes follow what the OpenAI SDK parses (`openai.types.audio`): translations have no `usage` or `words`
//! (`Translation`, `TranslationVerbose`), and their verbose `language` is always `english`, the output's.
use crate::{Segment, Transcript};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    const ALL: [(&'static str, ResponseFormat); 5] = [
        ("json", ResponseFormat::Json),
        ("text", ResponseFormat::Text),
        ("srt", ResponseFormat::Srt),
        ("verbose_json", ResponseFormat::VerboseJson),
        ("vtt", ResponseFormat::Vtt),
    ];

    /// The `response_format` form field, exactly as OpenAI spells it.
    pub fn parse(value: &str) -> Result<Self, String> {
        Self::ALL.iter().find(|(name, _)| *name == value).map(|(_, format)| *format).ok_or_else(|| {
            // The value is echoed so the client sees its typo, cut short since it is arbitrary input.
            let shown: String = value.chars().take(32).collect();
            format!("response_format must be one of json, text, srt, verbose_json, vtt; got {shown:?}")
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, format)| *format == self).map_or("json", |(name, _)| name)
    }

    /// `Content-Type` for the rendered body. OpenAI sends text and srt as plain text; vtt gets its registered
    /// type so a browser `<track>` accepts it.
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseFormat::Json | ResponseFormat::VerboseJson => "application/json",
            ResponseFormat::Text | ResponseFormat::Srt => "text/plain; charset=utf-8",
            ResponseFormat::Vtt => "text/vtt; charset=utf-8",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RenderOptions<'a> {
    /// `"transcribe"` or `"translate"`: which endpoint answered.
    pub task: &'a str,
    /// `timestamp_granularities[]` contained `word`.
    pub words: bool,
    /// `timestamp_granularities[]` contained `segment`. With neither set, segments are returned (OpenAI's
    /// default granularity).
    pub segments: bool,
}

pub fn render(t: &Transcript, format: ResponseFormat, opts: &RenderOptions<'_>) -> String {
    match format {
        ResponseFormat::Json => json(t, opts),
        ResponseFormat::Text => format!("{}\n", t.text.trim()),
        ResponseFormat::Srt => srt(&t.segments),
        ResponseFormat::Vtt => vtt(&t.segments),
        ResponseFormat::VerboseJson => verbose_json(t, opts),
    }
}

/// OpenAI's `usage` for duration-billed models: whole seconds, rounded up.
#[derive(Serialize)]
struct Usage {
    r#type: &'static str,
    seconds: u64,
}

impl Usage {
    fn of(duration_seconds: f64) -> Self {
        let seconds =
            if duration_seconds.is_finite() && duration_seconds > 0.0 { duration_seconds.ceil() } else { 0.0 };
        Usage { r#type: "duration", seconds: seconds as u64 }
    }
}

fn is_translation(opts: &RenderOptions<'_>) -> bool {
    opts.task == "translate"
}

#[derive(Serialize)]
struct JsonBody<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

fn json(t: &Transcript, opts: &RenderOptions<'_>) -> String {
    let usage = (!is_translation(opts)).then(|| Usage::of(t.duration));
    to_json(&JsonBody { text: t.text.trim(), usage })
}

#[derive(Serialize)]
struct VerboseBody<'a> {
    task: &'a str,
    language: &'a str,
    duration: f64,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    words: Option<Vec<WordOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<Vec<SegmentOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct SegmentOut<'a> {
    id: u32,
    seek: u32,
    start: f64,
    end: f64,
    /// As decoded, with Whisper's leading space (OpenAI keeps it here).
    text: &'a str,
    tokens: &'a [u32],
    temperature: f64,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
}

#[derive(Serialize)]
struct WordOut<'a> {
    word: &'a str,
    start: f64,
    end: f64,
}

fn verbose_json(t: &Transcript, opts: &RenderOptions<'_>) -> String {
    let translation = is_translation(opts);
    let words = (opts.words && !translation).then(|| {
        t.segments
            .iter()
            .flat_map(|s| &s.words)
            .map(|w| WordOut { word: w.word.trim(), start: time(w.start), end: time(w.end) })
            .collect()
    });
    let segments = (opts.segments || !opts.words || translation).then(|| {
        t.segments
            .iter()
            .map(|s| SegmentOut {
                id: s.id,
                seek: s.seek,
                start: time(s.start),
                end: time(s.end),
                text: &s.text,
                tokens: &s.tokens,
                temperature: short_f32(s.temperature),
                avg_logprob: short_f32(s.avg_logprob),
                compression_ratio: short_f32(s.compression_ratio),
                no_speech_prob: short_f32(s.no_speech_prob),
            })
            .collect()
    });
    to_json(&VerboseBody {
        task: if translation { "translate" } else { "transcribe" },
        language: if translation { "english" } else { language_name(&t.language) },
        duration: (t.duration * 1000.0).round() / 1000.0,
        text: t.text.trim(),
        words,
        segments,
        usage: (!translation).then(|| Usage::of(t.duration)),
    })
}

fn to_json(body: &impl Serialize) -> String {
    // Infallible for these types: string keys, finite-or-null numbers, no maps with non-string keys.
    serde_json::to_string(body).expect("response bodies serialise")
}

/// Segment and word times to 10 ms: Whisper's timestamps are 20 ms steps from a 10 ms seek, so no precision
/// is lost and `0.3` does not come out as `0.30000001192092896`.
fn time(seconds: f64) -> f64 {
    if seconds.is_finite() { (seconds.max(0.0) * 100.0).round() / 100.0 } else { 0.0 }
}

/// An f32 score as the f64 with the same shortest decimal form (`-0.3`, not `-0.30000001192092896`).
fn short_f32(value: f32) -> f64 {
    if value.is_finite() { value.to_string().parse().unwrap_or(0.0) } else { 0.0 }
}

fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (index, (segment, text)) in cues(segments).enumerate() {
        let (start, end) = (clock(segment.start, ','), clock(segment.end, ','));
        out.push_str(&format!("{}\n{start} --> {end}\n{text}\n\n", index + 1));
    }
    out
}

fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for (segment, text) in cues(segments) {
        out.push_str(&format!("{} --> {}\n{text}\n\n", clock(segment.start, '.'), clock(segment.end, '.')));
    }
    out
}

/// Segments with their cue text: trimmed, and skipped when empty, since a blank line would end the cue.
/// Text lines are kept but a blank line inside a segment would too, so runs of newlines collapse to one.
fn cues(segments: &[Segment]) -> impl Iterator<Item = (&Segment, String)> {
    segments.iter().filter_map(|s| {
        let text = s.text.trim().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
        (!text.is_empty()).then_some((s, text))
    })
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT); hours grow past two digits rather than wrap.
fn clock(seconds: f64, separator: char) -> String {
    let millis = if seconds.is_finite() { (seconds.max(0.0) * 1000.0).round() as u64 } else { 0 };
    let (hours, minutes, secs, ms) = (millis / 3_600_000, millis / 60_000 % 60, millis / 1000 % 60, millis % 1000);
    format!("{hours:02}:{minutes:02}:{secs:02}{separator}{ms:03}")
}

#[derive(Serialize)]
struct DeltaEvent<'a> {
    r#type: &'static str,
    delta: &'a str,
}

#[derive(Serialize)]
struct DoneEvent<'a> {
    r#type: &'static str,
    text: &'a str,
    usage: Usage,
}

/// One `transcript.text.delta` server-sent event. The SDK reads `data:` lines only (no `event:` line, no
/// `[DONE]` sentinel: the stream ends when the response does); JSON escapes newlines, so one line suffices.
pub fn sse_delta(delta: &str) -> String {
    format!("data: {}\n\n", to_json(&DeltaEvent { r#type: "transcript.text.delta", delta }))
}

/// The closing `transcript.text.done` event, with the full text and the same duration `usage` as `json`.
/// (The SDK types this event's usage as token counts; its parser does not validate, and a duration-billed
/// model has no tokens to report.)
pub fn sse_done(text: &str, duration_seconds: f64) -> String {
    let done = DoneEvent { r#type: "transcript.text.done", text, usage: Usage::of(duration_seconds) };
    format!("data: {}\n\n", to_json(&done))
}

/// The whole stream for a finished transcript: one delta per segment, then done. The deltas concatenate to
/// the done event's text (the first loses Whisper's leading space, as the top-level text does).
pub fn sse_events(t: &Transcript) -> Vec<String> {
    let mut events: Vec<String> = t
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| if i == 0 { s.text.trim_start() } else { s.text.as_str() })
        .filter(|delta| !delta.is_empty())
        .map(sse_delta)
        .collect();
    events.push(sse_done(t.text.trim(), t.duration));
    events
}

/// OpenAI's `language` in verbose_json: Whisper's full lower-case name for the ISO code the model detected
/// (Whisper's own table, all 100 codes); an unknown code is returned as it is.
pub fn language_name(code: &str) -> &str {
    LANGUAGES.iter().find(|(iso, _)| *iso == code).map_or(code, |(_, name)| name)
}

#[rustfmt::skip]
const LANGUAGES: [(&str, &str); 100] = [
    ("en", "english"), ("zh", "chinese"), ("de", "german"), ("es", "spanish"), ("ru", "russian"),
    ("ko", "korean"), ("fr", "french"), ("ja", "japanese"), ("pt", "portuguese"), ("tr", "turkish"),
    ("pl", "polish"), ("ca", "catalan"), ("nl", "dutch"), ("ar", "arabic"), ("sv", "swedish"),
    ("it", "italian"), ("id", "indonesian"), ("hi", "hindi"), ("fi", "finnish"), ("vi", "vietnamese"),
    ("he", "hebrew"), ("uk", "ukrainian"), ("el", "greek"), ("ms", "malay"), ("cs", "czech"),
    ("ro", "romanian"), ("da", "danish"), ("hu", "hungarian"), ("ta", "tamil"), ("no", "norwegian"),
    ("th", "thai"), ("ur", "urdu"), ("hr", "croatian"), ("bg", "bulgarian"), ("lt", "lithuanian"),
    ("la", "latin"), ("mi", "maori"), ("ml", "malayalam"), ("cy", "welsh"), ("sk", "slovak"),
    ("te", "telugu"), ("fa", "persian"), ("lv", "latvian"), ("bn", "bengali"), ("sr", "serbian"),
    ("az", "azerbaijani"), ("sl", "slovenian"), ("kn", "kannada"), ("et", "estonian"), ("mk", "macedonian"),
    ("br", "breton"), ("eu", "basque"), ("is", "icelandic"), ("hy", "armenian"), ("ne", "nepali"),
    ("mn", "mongolian"), ("bs", "bosnian"), ("kk", "kazakh"), ("sq", "albanian"), ("sw", "swahili"),
    ("gl", "galician"), ("mr", "marathi"), ("pa", "punjabi"), ("si", "sinhala"), ("km", "khmer"),
    ("sn", "shona"), ("yo", "yoruba"), ("so", "somali"), ("af", "afrikaans"), ("oc", "occitan"),
    ("ka", "georgian"), ("be", "belarusian"), ("tg", "tajik"), ("sd", "sindhi"), ("gu", "gujarati"),
    ("am", "amharic"), ("yi", "yiddish"), ("lo", "lao"), ("uz", "uzbek"), ("fo", "faroese"),
    ("ht", "haitian creole"), ("ps", "pashto"), ("tk", "turkmen"), ("nn", "nynorsk"), ("mt", "maltese"),
    ("sa", "sanskrit"), ("lb", "luxembourgish"), ("my", "myanmar"), ("bo", "tibetan"), ("tl", "tagalog"),
    ("mg", "malagasy"), ("as", "assamese"), ("tt", "tatar"), ("haw", "hawaiian"), ("ln", "lingala"),
    ("ha", "hausa"), ("ba", "bashkir"), ("jw", "javanese"), ("su", "sundanese"), ("yue", "cantonese"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Word;
    use std::time::Duration;

    fn segment(id: u32, start: f64, end: f64, text: &str) -> Segment {
        Segment {
            id,
            seek: 0,
            start,
            end,
            text: text.to_string(),
            tokens: vec![50364, 2425, 50464],
            temperature: 0.0,
            avg_logprob: -0.3,
            compression_ratio: 1.2,
            no_speech_prob: 0.01,
            words: Vec::new(),
        }
    }

    fn word(word: &str, start: f64, end: f64) -> Word {
        Word { word: word.to_string(), start, end, probability: 0.9 }
    }

    fn transcript(language: &str, duration: f64, segments: Vec<Segment>) -> Transcript {
        let text = segments.iter().map(|s| s.text.as_str()).collect::<String>();
        Transcript { text, language: language.to_string(), duration, segments, compute: Duration::ZERO }
    }

    fn two_segments() -> Transcript {
        let mut first = segment(0, 0.0, 1.5, " Hello there.");
        first.words = vec![word(" Hello", 0.0, 0.6), word(" there.", 0.6, 1.5)];
        let mut second = segment(1, 1.5, 3.3, " General Kenobi.");
        second.seek = 150;
        second.words = vec![word(" General", 1.5, 2.2), word(" Kenobi.", 2.2, 3.3)];
        transcript("en", 3.5, vec![first, second])
    }

    const TRANSCRIBE: RenderOptions<'static> = RenderOptions { task: "transcribe", words: false, segments: false };

    #[test]
    fn parse_accepts_openai_names_and_lists_them_otherwise() {
        assert_eq!(ResponseFormat::parse("verbose_json"), Ok(ResponseFormat::VerboseJson));
        assert_eq!(ResponseFormat::parse("vtt").map(ResponseFormat::as_str), Ok("vtt"));
        assert_eq!(
            ResponseFormat::parse("JSON"),
            Err(r#"response_format must be one of json, text, srt, verbose_json, vtt; got "JSON""#.to_string())
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(ResponseFormat::Json.content_type(), "application/json");
        assert_eq!(ResponseFormat::Srt.content_type(), "text/plain; charset=utf-8");
        assert_eq!(ResponseFormat::Vtt.content_type(), "text/vtt; charset=utf-8");
    }

    #[test]
    fn json_is_trimmed_text_and_whole_seconds_of_usage() {
        assert_eq!(
            render(&two_segments(), ResponseFormat::Json, &TRANSCRIBE),
            r#"{"text":"Hello there. General Kenobi.","usage":{"type":"duration","seconds":4}}"#
        );
    }

    #[test]
    fn json_escapes_quotes_backslashes_and_control_characters() {
        let t = transcript("en", 1.0, vec![segment(0, 0.0, 1.0, " \"Quote\" \\ tab\t line\nend é")]);
        assert_eq!(
            render(&t, ResponseFormat::Json, &TRANSCRIBE),
            r#"{"text":"\"Quote\" \\ tab\t line\nend é","usage":{"type":"duration","seconds":1}}"#
        );
    }

    #[test]
    fn translation_json_has_no_usage() {
        let opts = RenderOptions { task: "translate", ..TRANSCRIBE };
        assert_eq!(render(&two_segments(), ResponseFormat::Json, &opts), r#"{"text":"Hello there. General Kenobi."}"#);
    }

    #[test]
    fn text_ends_with_a_newline() {
        assert_eq!(render(&two_segments(), ResponseFormat::Text, &TRANSCRIBE), "Hello there. General Kenobi.\n");
    }

    #[test]
    fn srt_numbers_cues_from_one_with_comma_millis() {
        assert_eq!(
            render(&two_segments(), ResponseFormat::Srt, &TRANSCRIBE),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,300\nGeneral Kenobi.\n\n"
        );
    }

    #[test]
    fn vtt_has_a_header_and_dot_millis() {
        assert_eq!(
            render(&two_segments(), ResponseFormat::Vtt, &TRANSCRIBE),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n00:00:01.500 --> 00:00:03.300\nGeneral Kenobi.\n\n"
        );
    }

    #[test]
    fn clock_edge_cases() {
        assert_eq!(clock(0.0, ','), "00:00:00,000");
        assert_eq!(clock(59.999, ','), "00:00:59,999");
        assert_eq!(clock(59.9996, '.'), "00:01:00.000");
        assert_eq!(clock(3600.0, ','), "01:00:00,000");
        assert_eq!(clock(3725.042, '.'), "01:02:05.042");
        assert_eq!(clock(360_000.5, ','), "100:00:00,500");
        assert_eq!(clock(-1.0, ','), "00:00:00,000");
        assert_eq!(clock(f64::NAN, ','), "00:00:00,000");
    }

    #[test]
    fn empty_segments_make_no_cue_and_blank_lines_cannot_end_one() {
        let t = transcript("en", 2.0, vec![segment(0, 0.0, 1.0, "  "), segment(1, 1.0, 2.0, " one\n\n two ")]);
        assert_eq!(render(&t, ResponseFormat::Srt, &TRANSCRIBE), "1\n00:00:01,000 --> 00:00:02,000\none\ntwo\n\n");
    }

    #[test]
    fn an_empty_transcript_in_every_format() {
        let t = transcript("en", 0.0, Vec::new());
        assert_eq!(
            render(&t, ResponseFormat::Json, &TRANSCRIBE),
            r#"{"text":"","usage":{"type":"duration","seconds":0}}"#
        );
        assert_eq!(render(&t, ResponseFormat::Text, &TRANSCRIBE), "\n");
        assert_eq!(render(&t, ResponseFormat::Srt, &TRANSCRIBE), "");
        assert_eq!(render(&t, ResponseFormat::Vtt, &TRANSCRIBE), "WEBVTT\n\n");
        assert_eq!(
            render(&t, ResponseFormat::VerboseJson, &TRANSCRIBE),
            r#"{"task":"transcribe","language":"english","duration":0.0,"text":"","segments":[],"usage":{"type":"duration","seconds":0}}"#
        );
    }

    #[test]
    fn verbose_json_has_openai_segment_fields_in_order() {
        let mut t = two_segments();
        t.duration = 3.4567;
        t.segments.truncate(1);
        t.text = " Hello there.".to_string();
        assert_eq!(
            render(&t, ResponseFormat::VerboseJson, &TRANSCRIBE),
            concat!(
                r#"{"task":"transcribe","language":"english","duration":3.457,"text":"Hello there.","#,
                r#""segments":[{"id":0,"seek":0,"start":0.0,"end":1.5,"text":" Hello there.","#,
                r#""tokens":[50364,2425,50464],"temperature":0.0,"avg_logprob":-0.3,"compression_ratio":1.2,"#,
                r#""no_speech_prob":0.01}],"usage":{"type":"duration","seconds":4}}"#
            )
        );
    }

    #[test]
    fn verbose_json_words_only_when_asked_and_trimmed() {
        let opts = RenderOptions { words: true, ..TRANSCRIBE };
        let body: serde_json::Value =
            serde_json::from_str(&render(&two_segments(), ResponseFormat::VerboseJson, &opts)).unwrap();
        assert_eq!(
            body["words"],
            serde_json::json!([
                {"word": "Hello", "start": 0.0, "end": 0.6},
                {"word": "there.", "start": 0.6, "end": 1.5},
                {"word": "General", "start": 1.5, "end": 2.2},
                {"word": "Kenobi.", "start": 2.2, "end": 3.3},
            ])
        );
        // Only `word` granularity: no segments, as OpenAI answers.
        assert!(body.get("segments").is_none());
        let both = RenderOptions { words: true, segments: true, ..TRANSCRIBE };
        let body: serde_json::Value =
            serde_json::from_str(&render(&two_segments(), ResponseFormat::VerboseJson, &both)).unwrap();
        assert_eq!((body["words"].as_array().unwrap().len(), body["segments"].as_array().unwrap().len()), (4, 2));
        let plain: serde_json::Value =
            serde_json::from_str(&render(&two_segments(), ResponseFormat::VerboseJson, &TRANSCRIBE)).unwrap();
        assert!(plain.get("words").is_none());
        assert_eq!(plain["segments"][1]["seek"], 150);
    }

    #[test]
    fn verbose_times_lose_float_noise() {
        let mut t = two_segments();
        t.segments[0].end = 1.500_000_059_604_644_8;
        t.segments[0].avg_logprob = -0.123_456_79;
        let body: serde_json::Value =
            serde_json::from_str(&render(&t, ResponseFormat::VerboseJson, &TRANSCRIBE)).unwrap();
        assert_eq!(body["segments"][0]["end"], 1.5);
        assert_eq!(body["segments"][0]["avg_logprob"], -0.123_456_79);
    }

    #[test]
    fn verbose_translation_is_english_without_words_or_usage() {
        let opts = RenderOptions { task: "translate", words: true, segments: false };
        let mut t = two_segments();
        t.language = "de".to_string();
        let body: serde_json::Value = serde_json::from_str(&render(&t, ResponseFormat::VerboseJson, &opts)).unwrap();
        assert_eq!((body["task"].as_str(), body["language"].as_str()), (Some("translate"), Some("english")));
        assert!(body.get("words").is_none() && body.get("usage").is_none());
        assert_eq!(body["segments"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn language_names_follow_whisper_and_unknown_codes_pass_through() {
        assert_eq!(language_name("en"), "english");
        assert_eq!(language_name("zh"), "chinese");
        assert_eq!(language_name("haw"), "hawaiian");
        assert_eq!(language_name("yue"), "cantonese");
        assert_eq!(language_name("xx"), "xx");
    }

    #[test]
    fn sse_frames_are_single_data_lines() {
        assert_eq!(
            sse_delta(" Hi\n\"there\""),
            "data: {\"type\":\"transcript.text.delta\",\"delta\":\" Hi\\n\\\"there\\\"\"}\n\n"
        );
        assert_eq!(
            sse_done("Hi there", 2.01),
            "data: {\"type\":\"transcript.text.done\",\"text\":\"Hi there\",\"usage\":{\"type\":\"duration\",\"seconds\":3}}\n\n"
        );
    }

    #[test]
    fn sse_deltas_concatenate_to_the_done_text() {
        let events = sse_events(&two_segments());
        assert_eq!(events.len(), 3);
        let deltas: String = events[..2]
            .iter()
            .map(|e| {
                let body: serde_json::Value =
                    serde_json::from_str(e.strip_prefix("data: ").unwrap().trim_end()).unwrap();
                body["delta"].as_str().unwrap().to_string()
            })
            .collect();
        let done: serde_json::Value =
            serde_json::from_str(events[2].strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(done["text"].as_str(), Some(deltas.as_str()));
        assert_eq!(deltas, "Hello there. General Kenobi.");
    }
}
