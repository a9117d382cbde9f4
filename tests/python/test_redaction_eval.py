"""The redaction quality targets of issue 13, checked in the test command on the committed labelled set:
tests/redact_eval/data/report.jsonl (presidio-evaluator templates filled by Faker under a fixed seed, split by
template; nothing was tuned on this half). The predictor is the real redactor (patterns + the NER model) through
`agent/ner/examples/redact_jsonl.rs`, built by the test command's `cargo build --all-targets`; the scorer is
tests/redact_eval/score.py (per word: the unit that gets muted). Speed is not checked here: it is a benchmark
(tests/redact_eval/run.sh, side by side with Presidio), never a timed test.
"""
import json
import subprocess
import sys

import pytest

from gateway_fixtures import ROOT

EVAL = ROOT / "tests" / "redact_eval"
NER = ROOT / ".cache" / "models" / "ner" / "rampart" / "model_q4.onnx"
BIN = ROOT / "target" / "debug" / "examples" / "redact_jsonl"

sys.path.insert(0, str(EVAL))
import score  # noqa: E402  (tests/redact_eval/score.py)


@pytest.fixture(scope="module")
def scored():
    if not NER.exists():
        pytest.skip("the pii-ner model is installed by tests/tools/install-ner-weights.sh")
    assert BIN.exists(), f"{BIN} is built by `cargo build --workspace --all-targets`"
    dataset = score.load_jsonl(str(EVAL / "data" / "report.jsonl"))
    lines = "".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in dataset)
    run = subprocess.run([str(BIN), "--entities", "pii", "--model-dir", str(NER.parent)], input=lines,
                         capture_output=True, text=True, timeout=900, check=True)
    preds = {}
    for line in run.stdout.splitlines():
        row = json.loads(line)
        preds[row["id"]] = row["spans"]
    return score.score(dataset, preds, score.DEFAULT_SCOPE)


def test_overall_word_f1_on_the_report_half(scored):
    overall = scored["overall"]
    assert overall["f1"] >= 0.92, json.dumps(overall)


def test_card_and_ssn_recall(scored):
    for entity in ("CREDIT_CARD", "US_SSN"):
        assert scored["per_type"][entity]["recall"] >= 0.98, json.dumps(scored["per_type"][entity])


def test_every_structured_type_is_found(scored):
    for entity in ("PHONE_NUMBER", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "DATE_OF_BIRTH"):
        assert scored["per_type"][entity]["f1"] >= 0.9, (entity, scored["per_type"][entity])
