//! Redacts JSON lines for evaluation: reads `{"id": ..., "text": "..."}` per line on stdin, writes
//! `{"id": ..., "spans": [{"start": 0, "end": 10, "entity": "PERSON"}, ...]}` per line on stdout, with
//! offsets in characters (Unicode scalars, as Python indexes strings), end exclusive.
//!
//! ```text
//! cargo run --release -p infergate-ner --example redact_jsonl -- [--entities pii] [--no-ner] [--model-dir DIR]
//! ```
//! `--entities`: comma-separated groups and types (`pii`, `phi`, `pci`, `PERSON`, ...; default `pii`).
//! `--no-ner`: patterns only. `--model-dir`: the Rampart files (default `.cache/models/ner/rampart`).
//! stderr gets one summary line: lines, characters and seconds spent redacting (model loading apart).
//! A model failure stops the run (exit 1): an evaluation of partly redacted output would mislead.
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infergate_ner::NerModel;
use infergate_redact::{EntitySet, Policy, Redacted, Redactor};
use serde_json::{Value, json};

struct Args {
    entities: String,
    ner: bool,
    model_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { entities: "pii".into(), ner: true, model_dir: PathBuf::from(".cache/models/ner/rampart") };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--entities" => args.entities = argv.next().ok_or("--entities needs a value")?,
            "--no-ner" => args.ner = false,
            "--model-dir" => args.model_dir = argv.next().ok_or("--model-dir needs a value")?.into(),
            "-h" | "--help" => return Err("usage: redact_jsonl [--entities pii] [--no-ner] [--model-dir DIR]".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// The spans with byte offsets turned into character offsets; spans are in text order, so one walk.
fn char_spans(text: &str, redacted: &Redacted) -> Vec<Value> {
    let (mut byte, mut chars) = (0, 0);
    let mut to_chars = |target: usize| {
        chars += text[byte..target].chars().count();
        byte = target;
        chars
    };
    redacted
        .spans
        .iter()
        .map(|span| {
            let start = to_chars(span.start);
            let end = to_chars(span.end);
            json!({"start": start, "end": end, "entity": span.entity.name()})
        })
        .collect()
}

fn run(args: Args) -> Result<(), String> {
    let entities = EntitySet::from_names(args.entities.split(',').map(str::trim)).map_err(|e| e.to_string())?;
    let mut redactor = Redactor::new(Policy::new(entities));
    if args.ner {
        let model = NerModel::load(&args.model_dir).map_err(|e| e.to_string())?;
        redactor = redactor.with_model(Arc::new(model));
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut lines, mut chars, mut busy) = (0usize, 0usize, Duration::ZERO);
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        // Errors name the line, never its text.
        let record: Value = serde_json::from_str(&line).map_err(|_| format!("line {}: not JSON", number + 1))?;
        let text = record["text"].as_str().ok_or_else(|| format!("line {}: no string \"text\"", number + 1))?;
        let start = Instant::now();
        let redacted = redactor.try_redact(text).map_err(|e| format!("line {}: {e} ({})", number + 1, e.category()))?;
        busy += start.elapsed();
        let spans = char_spans(text, &redacted);
        serde_json::to_writer(&mut out, &json!({"id": record["id"], "spans": spans})).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())?;
        lines += 1;
        chars += text.chars().count();
    }
    out.flush().map_err(|e| e.to_string())?;
    let seconds = busy.as_secs_f64();
    eprintln!(
        "redact_jsonl: {lines} lines, {chars} chars, {seconds:.3} s redacting ({:.1} kchars/s, NER {})",
        chars as f64 / seconds.max(1e-9) / 1e3,
        if args.ner { "on" } else { "off" }
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("redact_jsonl: {message}");
            ExitCode::FAILURE
        }
    }
}
