//! tract against onnxruntime on committed sentences: the same tokens, the same label for every token, logits
//! within 1e-2, and the redactor's spans with the model as expected. tests/fixtures/reference.json comes from
//! scripts/make_reference.py (onnxruntime, same windows as src/windows.rs), run once; CI never needs Python.
//!
//! Without the weights these tests print SKIP and pass, except under `CI` (set), where missing weights fail:
//! a CI run that silently skipped the model would prove nothing.
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use infergate_ner::NerModel;
use infergate_redact::{EntitySet, Policy, Redactor};
use serde_json::Value;

fn model_dir() -> PathBuf {
    match std::env::var_os("INFERGATE_MODELS_DIR") {
        Some(dir) => PathBuf::from(dir).join(infergate_ner::MODEL_DIR),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models").join(infergate_ner::MODEL_DIR),
    }
}

/// The model, loaded once; `None` (printed) when the weights are not installed and `CI` is unset.
fn model() -> Option<Arc<NerModel>> {
    static MODEL: OnceLock<Option<Arc<NerModel>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = model_dir();
            if !dir.join("model_q4.onnx").exists() {
                let message =
                    format!("NER weights not installed under {} (tests/tools/install-ner-weights.sh)", dir.display());
                assert!(std::env::var_os("CI").is_none(), "{message}");
                eprintln!("SKIP: {message}");
                return None;
            }
            Some(Arc::new(NerModel::load(&dir).expect("installed weights load")))
        })
        .clone()
}

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    })
}

fn cases() -> &'static [Value] {
    reference()["cases"].as_array().unwrap()
}

/// Byte offset to character (Unicode scalar) offset, as Python counts.
fn chars(text: &str, byte: usize) -> u64 {
    text[..byte].chars().count() as u64
}

#[test]
fn labels_are_the_fixture_labels() {
    let Some(model) = model() else { return };
    let names: Vec<&str> = reference()["labels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(model.labels(), names);
}

#[test]
fn tokens_and_offsets_match_the_python_tokenizer() {
    let Some(model) = model() else { return };
    for (case, want) in cases().iter().enumerate() {
        let text = want["text"].as_str().unwrap();
        let got = model.classify(text).unwrap();
        let want_tokens = want["tokens"].as_array().unwrap();
        assert_eq!(got.tokens.len(), want_tokens.len(), "case {case}: token count");
        for (i, (g, w)) in got.tokens.iter().zip(want_tokens).enumerate() {
            let got = (u64::from(g.id), chars(text, g.start), chars(text, g.end), g.word.map(u64::from));
            let want = (
                w["id"].as_u64().unwrap(),
                w["start"].as_u64().unwrap(),
                w["end"].as_u64().unwrap(),
                w["word"].as_u64(),
            );
            assert_eq!(got, want, "case {case}, token {i}: (id, start, end, word)");
        }
    }
}

#[test]
fn every_token_label_matches_onnxruntime() {
    let Some(model) = model() else { return };
    let mut tokens = 0;
    for (case, want) in cases().iter().enumerate() {
        let got = model.classify(want["text"].as_str().unwrap()).unwrap();
        let got_labels: Vec<u64> = got.tokens.iter().map(|t| t.label as u64).collect();
        let want_labels: Vec<u64> =
            want["tokens"].as_array().unwrap().iter().map(|t| t["label"].as_u64().unwrap()).collect();
        assert_eq!(got_labels, want_labels, "case {case}: labels");
        tokens += got_labels.len();
    }
    assert!(tokens > 300, "the fixture should cover a few hundred tokens, has {tokens}");
}

#[test]
fn logits_are_within_a_hundredth_of_onnxruntime() {
    let Some(model) = model() else { return };
    let mut worst = 0f32;
    let mut rows = 0;
    for (case, want) in cases().iter().enumerate() {
        let got = model.classify(want["text"].as_str().unwrap()).unwrap();
        for (i, w) in want["tokens"].as_array().unwrap().iter().enumerate() {
            let Some(row) = w.get("logits") else { continue };
            let row: Vec<f32> = row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            for (g, w) in got.logits(i).iter().zip(&row) {
                let diff = (g - w).abs();
                assert!(diff < 1e-2, "case {case}, token {i}: logit {g} vs onnxruntime {w}");
                worst = worst.max(diff);
            }
            rows += 1;
        }
    }
    assert!(rows > 100, "the fixture should carry logits for over 100 tokens, has {rows}");
    eprintln!("largest logit difference from onnxruntime over {rows} tokens: {worst:.2e}");
}

#[test]
fn redacted_spans_cover_the_expected_characters() {
    let Some(model) = model() else { return };
    let redactor = Redactor::new(Policy::new(EntitySet::PII)).with_model(model);
    for (case, want) in cases().iter().enumerate() {
        let text = want["text"].as_str().unwrap();
        let got: Vec<(String, &str)> = redactor
            .try_redact(text)
            .unwrap()
            .spans
            .iter()
            .map(|s| (s.entity.name().to_owned(), &text[s.start..s.end]))
            .collect();
        let want: Vec<(String, &str)> = want["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_str().unwrap().to_owned(), e[1].as_str().unwrap()))
            .collect();
        assert_eq!(got, want, "case {case}: redacted spans");
    }
}

#[test]
fn the_model_is_shared_across_threads() {
    let Some(model) = model() else { return };
    let text = cases()[0]["text"].as_str().unwrap();
    let alone = model.classify(text).unwrap().tokens;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || model.classify(text).unwrap().tokens)
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), alone);
    }
}

#[test]
fn asr_words_the_model_finds_are_muted() {
    let Some(model) = model() else { return };
    let redactor = Redactor::new(Policy::new(EntitySet::PII)).with_model(model);
    let text = cases()[1]["text"].as_str().unwrap();
    let words: Vec<&str> = text.split(' ').collect();
    let muted: Vec<&str> = redactor
        .try_redact_words(&words)
        .unwrap()
        .muted
        .iter()
        .zip(&words)
        .filter(|(m, _)| **m)
        .map(|(_, w)| *w)
        .collect();
    assert_eq!(muted, ["maria", "gonzalez", "austin", "texas"]);
}

#[test]
fn odd_text_is_classified_without_panics() {
    let Some(model) = model() else { return };
    let redactor = Redactor::new(Policy::new(EntitySet::ALL)).with_model(model);
    let long_word = "x".repeat(3000);
    let many_sentences = "Ann Lee lives in Boise. ".repeat(200);
    for text in [
        "",
        "   \n\t ",
        "한국어 텍스트 서울특별시 종로구",
        "東京都千代田区 山田太郎",
        "e\u{301}mile zoe\u{308} \u{200b}\u{feff} 🎉🎉 ﬁ",
        "\u{0}\u{7}control\u{1b}[0m",
        long_word.as_str(),
        many_sentences.as_str(),
        "Dr. Dr. Dr. . . ! ? ...",
    ] {
        let redacted = redactor.try_redact(text).unwrap();
        assert!(redacted.spans.iter().all(|s| s.start < s.end && s.end <= text.len()));
    }
}
