use super::transcript::{self, parse};
use super::*;
use infergate_redact::{Policy, Redactor, Style};
use infergate_whisper::formats::{self, RenderOptions, ResponseFormat};

fn redactor(style: Style) -> Redactor {
    Redactor::new(Policy::new(EntitySet::PII.union(EntitySet::NUMBERS)).style(style))
}

/// A verbose_json answer with a card number split over two segments, words timed 0.5 s apart.
fn split_card() -> Vec<u8> {
    let words = ["My", "card", "is", "4111", "1111", "1111", "1111.", "Thanks."];
    let words_json: Vec<_> = words
        .iter()
        .enumerate()
        .map(|(i, w)| serde_json::json!({"word": w, "start": i as f64 * 0.5, "end": i as f64 * 0.5 + 0.4}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "task": "transcribe", "language": "english", "duration": 4.0,
        "text": "My card is 4111 1111 1111 1111. Thanks.",
        "segments": [
            {"id": 0, "seek": 0, "start": 0.0, "end": 2.4, "text": " My card is 4111 1111"},
            {"id": 1, "seek": 0, "start": 2.5, "end": 4.0, "text": " 1111 1111. Thanks."}
        ],
        "words": words_json,
    }))
    .unwrap()
}

#[test]
fn a_number_split_over_segments_is_redacted_in_every_format() {
    let mut t = parse(&split_card(), "application/json").unwrap();
    let report = transcript::redact(&mut t, &redactor(Style::Entity)).unwrap();
    assert_eq!(report.counts.get(&Entity::CreditCard), Some(&1));
    assert_eq!(report.muted, vec![(1.5, 3.4)]);
    let opts = RenderOptions { task: "transcribe", words: true, segments: true };
    for format in [
        ResponseFormat::Json,
        ResponseFormat::Text,
        ResponseFormat::Srt,
        ResponseFormat::Vtt,
        ResponseFormat::VerboseJson,
    ] {
        let body = formats::render(&t, format, &opts);
        assert!(!body.contains("4111") && !body.contains("1111"), "{format:?}: {body}");
        assert!(body.contains("[CREDIT_CARD]") && body.contains("Thanks"), "{format:?}: {body}");
    }
    let sse = formats::sse_events(&t).concat();
    assert!(!sse.contains("1111") && sse.contains("[CREDIT_CARD]"), "{sse}");
    // One replacement word, timed over the number.
    let words: Vec<_> = t.segments.iter().flat_map(|s| &s.words).map(|w| (w.word.trim(), w.start, w.end)).collect();
    assert!(words.contains(&("[CREDIT_CARD]", 1.5, 3.4)), "{words:?}");
}

#[test]
fn segments_without_words_are_redacted_as_one_text() {
    let body = serde_json::json!({
        "text": "x", "segments": [
            {"start": 0.0, "end": 2.0, "text": " Call me at 415 555"},
            {"start": 2.0, "end": 4.0, "text": " 0132 please."},
            {"start": 4.0, "end": 6.0, "text": " Bye."}
        ]
    });
    let mut t = parse(body.to_string().as_bytes(), "application/json").unwrap();
    let report = transcript::redact(&mut t, &redactor(Style::Entity)).unwrap();
    assert!(!t.text.contains("555") && !t.text.contains("0132"), "{}", t.text);
    for s in &t.segments {
        assert!(!s.text.contains("555") && !s.text.contains("0132"), "{}", s.text);
    }
    assert_eq!(report.muted, vec![(0.0, 2.0), (2.0, 4.0)], "both segments that held the number");
    assert_eq!(t.segments[2].text, " Bye.");
}

#[test]
fn json_and_text_answers_are_redacted_and_other_shapes_fail_closed() {
    let mut t = parse(br#"{"text":"my ssn is 536-22-8726"}"#, "application/json").unwrap();
    transcript::redact(&mut t, &redactor(Style::Entity)).unwrap();
    assert_eq!(t.text, "my ssn is [US_SSN]");
    let mut t = parse(b"email me at a.b@example.com\n", "text/plain; charset=utf-8").unwrap();
    transcript::redact(&mut t, &redactor(Style::Remove)).unwrap();
    assert_eq!(t.text.trim_end(), "email me at");
    assert!(parse(b"<html>", "text/html").is_none());
    assert!(parse(br#"{"no_text": 1}"#, "application/json").is_none());
}

#[test]
fn asks_parse_from_fields_and_refuse_with_the_fix() {
    let fields = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    let ask = Ask::from_fields(&fields(&[
        ("redact", "pci, ssn"),
        ("redact", "PERSON"),
        ("redact_style", "Marker"),
        ("redact_audio", "beep"),
    ]))
    .unwrap();
    assert_eq!(ask.entities, vec!["pci", "ssn", "PERSON"]);
    assert_eq!(ask.style, Some(RedactionStyle::Marker));
    assert_eq!(ask.audio, Some(AudioRedaction::Beep));
    assert_eq!(Ask::from_fields(&fields(&[("redact", "true")])).unwrap().entities, vec!["pii"]);
    let err = Ask::from_fields(&fields(&[("redact_style", "blur")])).unwrap_err();
    assert!(err.message.contains("entity, marker"), "{}", err.message);
    let err = Ask::from_fields(&fields(&[("redact_audio", "loud")])).unwrap_err();
    assert!(err.message.contains("silence"), "{}", err.message);
    let err = Ask::from_fields(&fields(&[("redact", "FINGERPRINT")])).unwrap().rule().unwrap_err();
    assert!(err.message.contains("FINGERPRINT") && err.message.contains("`redact`"), "{}", err.message);
    let option: AskOption = serde_json::from_str(r#"{"entities":["pci"],"audio":"silence"}"#).unwrap();
    assert_eq!(option.into_fields(), fields(&[("redact", "pci"), ("redact_audio", "silence")]));
    let option: AskOption = serde_json::from_str(r#""ssn""#).unwrap();
    assert_eq!(option.into_fields(), fields(&[("redact", "ssn")]));
}

#[test]
fn counts_read_the_same_in_header_and_json() {
    let mut counts = Counts::new();
    assert_eq!(header_value(&counts), "none");
    counts.insert(Entity::UsSsn, 2);
    counts.insert(Entity::CreditCard, 1);
    assert_eq!(header_value(&counts), "CREDIT_CARD=1, US_SSN=2");
    assert_eq!(counts_json(&counts), serde_json::json!({"CREDIT_CARD": 1, "US_SSN": 2}));
}

#[test]
fn the_crd_names_are_the_crate_names() {
    let mut from_crate: Vec<String> = EntitySet::GROUPS.iter().map(|(g, _)| g.to_string()).collect();
    from_crate.extend(Entity::ALL.iter().map(|e| e.name().to_string()));
    let from_crd: Vec<String> = infergate_crds::redaction::ENTITY_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        from_crd, from_crate,
        "crds/src/redaction.rs ENTITY_NAMES and infergate-redact must list the same names"
    );
}
