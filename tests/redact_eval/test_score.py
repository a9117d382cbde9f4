"""Hand-made cases for the word-level redaction scorer (score.py). Standard library + pytest only:
    .venv/bin/python -m pytest tests/redact_eval/test_score.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import score  # noqa: E402

SCOPE = score.DEFAULT_SCOPE


def span(text: str, value: str, entity: str, nth: int = 0) -> dict:
    start = -1
    for _ in range(nth + 1):
        start = text.index(value, start + 1)
    return {"start": start, "end": start + len(value), "entity": entity}


def one(text: str, gold: list[dict], pred: list[dict], **kw) -> dict:
    return score.score([{"id": "a", "text": text, "spans": gold}], {"a": pred}, kw.pop("scope", SCOPE), **kw)


def test_words_strip_punctuation_and_drop_pure_punctuation():
    text = 'Hello, (John)! -- "4111-1111" ?!'
    assert [text[s:e] for s, e in score.words(text)] == ["Hello", "John", "4111-1111"]


def test_words_keep_inner_punctuation_and_unicode():
    text = "Mirjana Lovrić's e-mail: a.b@c.de\n\n83244 R José"
    assert [text[s:e] for s, e in score.words(text)] == [
        "Mirjana", "Lovrić's", "e-mail", "a.b@c.de", "83244", "R", "José"]


def test_perfect_prediction():
    t = "Call John Smith at 555-123-4567 please"
    gold = [span(t, "John Smith", "PERSON"), span(t, "555-123-4567", "PHONE_NUMBER")]
    r = one(t, gold, gold)
    assert r["overall"]["tp"] == 3 and r["overall"]["fp"] == 0 and r["overall"]["fn"] == 0
    assert r["overall"]["f1"] == 1.0
    assert r["per_type"]["PERSON"]["f1"] == 1.0
    assert r["per_type"]["PHONE_NUMBER"]["gold_words"] == 1


def test_partial_name_and_false_positive():
    t = "Call John Smith at home today"
    gold = [span(t, "John Smith", "PERSON")]
    pred = [span(t, "John", "PERSON"), span(t, "today", "PERSON")]
    o = one(t, gold, pred)["overall"]
    assert (o["tp"], o["fp"], o["fn"]) == (1, 1, 1)
    assert o["precision"] == 0.5 and o["recall"] == 0.5 and o["f1"] == 0.5


def test_overlap_by_one_character_counts_for_the_whole_word():
    t = "card 4111111111111111 ok"
    gold = [span(t, "4111111111111111", "CREDIT_CARD")]
    s = gold[0]["start"]
    pred = [{"start": s + 4, "end": s + 6, "entity": "CREDIT_CARD"}]
    assert one(t, gold, pred)["per_type"]["CREDIT_CARD"]["recall"] == 1.0


def test_no_predictions_and_missing_id():
    t = "My SSN is 123-45-6789"
    gold = [span(t, "123-45-6789", "US_SSN")]
    r = score.score([{"id": "a", "text": t, "spans": gold}], {}, SCOPE)
    assert r["overall"]["recall"] == 0.0 and r["overall"]["precision"] == 1.0 and r["overall"]["f1"] == 0.0
    assert r["per_type"]["US_SSN"]["recall"] == 0.0


def test_out_of_scope_ignored_unless_strict():
    t = "Anna works for Contoso Ltd in Paris"
    gold = [span(t, "Anna", "PERSON"), span(t, "Contoso Ltd", "ORGANIZATION"), span(t, "Paris", "LOCATION")]
    pred = [span(t, "Anna", "PERSON"), span(t, "Contoso Ltd", "ORGANIZATION"), span(t, "Paris", "LOCATION")]
    lax = one(t, gold, pred)
    assert lax["out_of_scope_words"] == 2
    assert (lax["overall"]["tp"], lax["overall"]["fp"]) == (2, 0)
    strict = one(t, gold, pred, strict=True)
    assert (strict["overall"]["tp"], strict["overall"]["fp"]) == (2, 2)
    assert strict["overall"]["precision"] == 0.5
    # not redacting the organisation costs nothing either way
    keep = one(t, gold, [span(t, "Anna", "PERSON"), span(t, "Paris", "LOCATION")], strict=True)
    assert keep["overall"]["f1"] == 1.0


def test_scope_override_makes_a_type_out_of_scope():
    t = "Anna lives in Paris"
    gold = [span(t, "Anna", "PERSON"), span(t, "Paris", "LOCATION")]
    r = one(t, gold, [span(t, "Anna", "PERSON")], scope=["PERSON"])
    assert r["overall"]["f1"] == 1.0 and r["out_of_scope_words"] == 1
    assert "LOCATION" not in r["per_type"]


def test_typed_mismatch_is_untyped_hit_but_typed_miss():
    t = "card 4111111111111111 ok"
    gold = [span(t, "4111111111111111", "CREDIT_CARD")]
    pred = [span(t, "4111111111111111", "PHONE_NUMBER")]
    r = one(t, gold, pred)
    assert r["overall"]["recall"] == 1.0
    assert r["per_type"]["CREDIT_CARD"]["recall"] == 0.0
    assert r["per_type"]["PHONE_NUMBER"]["precision"] == 0.0
    assert r["overall"]["typed_recall"] == 0.0


def test_address_family_is_compatible():
    t = "Send it to 12 Oak Street Springfield 62704 now"
    gold = [span(t, "12 Oak Street", "STREET_ADDRESS"), span(t, "Springfield", "LOCATION"),
            span(t, "62704", "ZIP_CODE")]
    pred = [{"start": gold[0]["start"], "end": gold[2]["end"], "entity": "ADDRESS"}]  # alias -> STREET_ADDRESS
    r = one(t, gold, pred)
    for ty in ("STREET_ADDRESS", "LOCATION", "ZIP_CODE"):
        assert r["per_type"][ty]["recall"] == 1.0
        assert r["per_type"][ty]["precision"] == 1.0
    assert r["per_type"]["STREET_ADDRESS"]["gold_words"] == 3


def test_alias_normalisation():
    assert score.norm_label("gpe") == "LOCATION"
    assert score.norm_label("PER") == "PERSON"
    assert score.norm_label("NRP") == "NATIONALITY"
    assert score.norm_label("CUSTOM_THING") == "CUSTOM_THING"


def test_date_of_birth_accepts_date_time_but_pays_for_other_dates():
    t = "Born 3/29/1982 and seen this morning"
    gold = [span(t, "3/29/1982", "DATE_OF_BIRTH")]
    pred = [span(t, "3/29/1982", "DATE_TIME"), span(t, "this morning", "DATE_TIME")]
    r = one(t, gold, pred)
    dob = r["per_type"]["DATE_OF_BIRTH"]
    assert dob["recall"] == 1.0
    assert dob["pred_words"] == 3 and dob["precision"] == pytest.approx(1 / 3)
    assert r["per_type"]["DATE_TIME"]["recall"] is None  # an out-of-scope predicted type: precision only


def test_word_with_two_gold_types_takes_the_larger_overlap():
    t = "x Ann-62704 y"
    s = t.index("Ann")
    gold = [{"start": s, "end": s + 3, "entity": "PERSON"}, {"start": s + 4, "end": s + 9, "entity": "ZIP_CODE"}]
    r = one(t, gold, [])
    assert r["per_type"]["ZIP_CODE"]["gold_words"] == 1 and r["per_type"]["PERSON"]["gold_words"] == 0


def test_cli_json_and_table(tmp_path, capsys):
    t = "Call John at 555-123-4567"
    ds = tmp_path / "d.jsonl"
    pr = tmp_path / "p.jsonl"
    ds.write_text(json.dumps({"id": "1", "template": 0, "text": t,
                              "spans": [span(t, "John", "PERSON"), span(t, "555-123-4567", "PHONE_NUMBER")]}) + "\n")
    pr.write_text(json.dumps({"id": "1", "spans": [span(t, "John", "PERSON")]}) + "\n")
    assert score.main([str(ds), str(pr), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"]["recall"] == 0.5 and out["per_type"]["PHONE_NUMBER"]["recall"] == 0.0
    assert score.main([str(ds), f"a={pr}", f"b={pr}", "--extra", "kchars/s:a=1.0"]) == 0
    table = capsys.readouterr().out
    assert "overall F1" in table and "kchars/s" in table


def test_committed_data_is_well_formed():
    data = Path(__file__).resolve().parent / "data"
    seen_templates = {}
    for half in ("tune", "report"):
        rows = score.load_jsonl(str(data / f"{half}.jsonl"))
        assert 500 <= len(rows) <= 1500
        for r in rows:
            assert set(r) == {"id", "template", "text", "spans"}
            for s in r["spans"]:
                assert 0 <= s["start"] < s["end"] <= len(r["text"])
                assert r["text"][s["start"]:s["end"]].strip() == r["text"][s["start"]:s["end"]]
            assert seen_templates.setdefault(r["template"], half) == half, "template in both halves"
        perfect = score.score(rows, {r["id"]: r["spans"] for r in rows}, SCOPE)
        assert perfect["overall"]["f1"] == 1.0
        for ty in SCOPE:
            assert perfect["per_type"][ty]["gold_words"] > 0, (half, ty)
