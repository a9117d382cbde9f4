//! `infergate-operator validate`: the files or JSON lines in, the messages of
//! [`infergate_compile::validate::validate_object`] out (the same check standalone mode runs on every load).
use infergate_compile::manifests;
pub use infergate_compile::validate::validate_object;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// `infergate-operator validate -f PATH...`: every problem in every file, non-zero exit if any.
pub fn validate_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let docs = manifests::load_documents(files)?;
    let mut problems = vec![];
    for doc in &docs {
        if let Err(errors) = validate_object(&doc.value) {
            problems.extend(errors.into_iter().map(|e| format!("{}: {e}", doc.origin)));
        }
    }
    if problems.is_empty() {
        // Beyond the schema: duplicates and anything the typed model refuses.
        manifests::into_set(docs.clone())?;
    }
    if problems.is_empty() {
        println!("{} infergate object(s) valid", docs.len());
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    anyhow::bail!("{} problem(s) found; fix the fields named above", problems.len())
}

/// `validate --stdin-jsonl`: one JSON object per input line, one `{"ok":bool,"errors":[...]}` line per object,
/// flushed at once, so a long-running caller (the API stand-in in the e2e tests) can keep one process open.
pub fn serve_jsonl(input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let errors = match serde_json::from_str::<Value>(&line) {
            Ok(object) => validate_object(&object).err().unwrap_or_default(),
            Err(e) => vec![format!("input line is not a JSON object: {e}")],
        };
        let reply = serde_json::json!({ "ok": errors.is_empty(), "errors": errors });
        writeln!(output, "{reply}")?;
        output.flush()?;
    }
    Ok(())
}

pub fn serve_stdin() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    serve_jsonl(stdin.lock(), stdout.lock())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: Value) -> Value {
        json!({"apiVersion": "infergate.dev/v1alpha1", "kind": "ApiKeyPolicy",
               "metadata": {"name": "x", "namespace": "checkout"}, "spec": spec})
    }

    #[test]
    fn jsonl_answers_one_line_per_object() {
        let input = format!(
            "{}\n\nnot json\n{}\n",
            policy(json!({"tier": "free", "secretName": "k", "scopes": [{"endpoint": "e"}]})),
            policy(json!({"tier": "free", "secretName": "k"}))
        );
        let mut out = vec![];
        serve_jsonl(input.as_bytes(), &mut out).unwrap();
        let lines: Vec<Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], json!({"ok": true, "errors": []}));
        assert_eq!(lines[1]["ok"], json!(false));
        assert_eq!(
            lines[2],
            json!({"ok": false, "errors": ["ApiKeyPolicy checkout/x: spec.scopes: Required value: add spec.scopes"]})
        );
    }
}
