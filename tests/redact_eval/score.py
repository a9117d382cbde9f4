#!/usr/bin/env python3
"""Word-level scorer for PII redaction (issue 13, "Checks"). Standard library only.

    score.py DATASET.jsonl PRED.jsonl [NAME=PRED.jsonl ...] [--json] [--scope T,T,...] [--strict]

DATASET lines: {"id", "text", "spans": [{"start", "end", "entity"}]}  (see make_dataset.py)
PRED lines:    {"id", "spans": [{"start", "end", "entity"}]}          (character offsets into the same text)
An id missing from PRED counts as "no spans predicted".

The unit is the WORD, because a word is what gets muted or replaced:
- words are the whitespace-separated tokens of `text`, with punctuation and symbol characters (Unicode
  categories P* and S*) stripped from both edges; a token that is nothing but punctuation is not a word;
- a word is GOLD-POSITIVE if any gold span of an in-scope type overlaps it (its gold type is the in-scope
  span overlapping it most); a word overlapped only by out-of-scope gold spans (ORGANIZATION, URL, AGE, ...)
  is OUT-OF-SCOPE; every other word is NEGATIVE;
- a word is PREDICTED-POSITIVE if any predicted span overlaps it (of any type), and carries every
  predicted type that overlaps it.

Out-of-scope words are ignored by default (neither redacting nor keeping them is scored). With --strict they
are negatives: redacting "Microsoft" then costs precision.

Overall (untyped): TP = gold-positive and predicted-positive, FN = gold-positive and not predicted,
FP = negative and predicted. Precision, recall and F1 from those (micro over words).

Per type T (typed). Predicted labels are first normalised with ALIASES. fam(T) is the set of predicted
types accepted for a gold word of type T: T itself, plus COMPATIBLE[T]: the address parts STREET_ADDRESS,
LOCATION and ZIP_CODE accept one another (a system that calls a whole address one thing still redacts it
right), and DATE_OF_BIRTH accepts DATE_TIME (Presidio has no date-of-birth type).
  recall_T    = gold words of type T overlapped by a predicted span whose type is in fam(T)
                / gold words of type T;
  precision_T = scored words overlapped by a predicted span whose type p is in fam(T) and in fam(gold type)
                / scored words overlapped by a predicted span whose type is in fam(T)
(scored = not out-of-scope, unless --strict). So the three address rows share one precision (the address
family's), and the DATE_OF_BIRTH row's precision counts a DATE_TIME prediction on a non-birth word as wrong.
Rows are printed for every in-scope type and for every other predicted type that occurs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import defaultdict

DEFAULT_SCOPE = ["PERSON", "STREET_ADDRESS", "LOCATION", "ZIP_CODE", "PHONE_NUMBER", "EMAIL_ADDRESS",
                 "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "DATE_OF_BIRTH"]

# Predicted label -> evaluation label (upper-cased before lookup). Unknown labels pass through unchanged.
ALIASES = {
    "PER": "PERSON", "NAME": "PERSON", "FIRST_NAME": "PERSON", "LAST_NAME": "PERSON",
    "GIVEN_NAME": "PERSON", "SURNAME": "PERSON",
    "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION", "CITY": "LOCATION", "STATE": "LOCATION",
    "COUNTRY": "LOCATION",
    "ADDRESS": "STREET_ADDRESS", "STREET": "STREET_ADDRESS", "BUILDING_NUMBER": "STREET_ADDRESS",
    "ZIP": "ZIP_CODE", "ZIPCODE": "ZIP_CODE", "POSTCODE": "ZIP_CODE", "POSTAL_CODE": "ZIP_CODE",
    "PHONE": "PHONE_NUMBER", "TELEPHONE": "PHONE_NUMBER", "TELEPHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL": "EMAIL_ADDRESS",
    "CARD": "CREDIT_CARD", "CREDIT_CARD_NUMBER": "CREDIT_CARD", "PAYMENT_CARD": "CREDIT_CARD",
    "SSN": "US_SSN", "SOCIAL_SECURITY_NUMBER": "US_SSN",
    "IBAN": "IBAN_CODE",
    "IP": "IP_ADDRESS", "IPV4": "IP_ADDRESS", "IPV6": "IP_ADDRESS",
    "DOB": "DATE_OF_BIRTH", "BIRTH_DATE": "DATE_OF_BIRTH", "DATE": "DATE_TIME",
    "NRP": "NATIONALITY", "ORG": "ORGANIZATION", "DOMAIN_NAME": "URL",
}

_ADDRESS = {"STREET_ADDRESS", "LOCATION", "ZIP_CODE"}
COMPATIBLE = {  # gold type -> predicted types that count as the right type (besides itself)
    "STREET_ADDRESS": _ADDRESS, "LOCATION": _ADDRESS, "ZIP_CODE": _ADDRESS,
    "DATE_OF_BIRTH": {"DATE_TIME"},
}


def fam(t: str) -> set[str]:
    """Predicted types accepted for a gold word of type t."""
    return {t} | set(COMPATIBLE.get(t, ()))


def compatible(gold: str, pred: str) -> bool:
    return pred in fam(gold)


def norm_label(label: str) -> str:
    u = str(label).strip().upper()
    return ALIASES.get(u, u)


def _edge(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def words(text: str) -> list[tuple[int, int]]:
    """Whitespace tokens with punctuation/symbols stripped at both edges; empty results dropped."""
    out = []
    for m in re.finditer(r"\S+", text):
        s, e = m.start(), m.end()
        while s < e and _edge(text[s]):
            s += 1
        while e > s and _edge(text[e - 1]):
            e -= 1
        if s < e:
            out.append((s, e))
    return out


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def load_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def label_words(text: str, gold: list[dict], pred: list[dict], scope: set[str]):
    """Yield (gold_type or None, in_scope: bool|None, predicted types) per word.
    in_scope: True gold-positive, False negative, None out-of-scope gold."""
    for ws, we in words(text):
        best, best_ov, oos = None, 0, False
        for sp in gold:
            ov = _overlap(ws, we, sp["start"], sp["end"])
            if ov <= 0:
                continue
            if sp["entity"] in scope:
                if ov > best_ov:
                    best, best_ov = sp["entity"], ov
            else:
                oos = True
        ptypes = {norm_label(sp["entity"]) for sp in pred if _overlap(ws, we, sp["start"], sp["end"]) > 0}
        if best is not None:
            yield best, True, ptypes
        elif oos:
            yield None, None, ptypes
        else:
            yield None, False, ptypes


def prf(tp: int, fp: int, fn: int) -> dict:
    """Precision with no predictions is 1.0 (nothing wrong was redacted); recall with no gold is 1.0."""
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def score(dataset: list[dict], preds: dict[str, list[dict]], scope: list[str], strict: bool = False) -> dict:
    scope_set = set(scope)
    o_tp = o_fp = o_fn = 0
    gold_n = defaultdict(int)  # gold words per type
    rec_tp = defaultdict(int)  # gold words of type T with a compatible prediction
    words_by_ptypes = []  # (gold type or None, predicted types) of every scored predicted word
    n_words = n_oos = 0
    for row in dataset:
        pred = preds.get(row["id"], [])
        for gtype, pos, ptypes in label_words(row["text"], row["spans"], pred, scope_set):
            n_words += 1
            if pos is None:
                n_oos += 1
                if not strict:
                    continue
                pos = False
            if pos:
                gold_n[gtype] += 1
                if ptypes:
                    o_tp += 1
                else:
                    o_fn += 1
                if ptypes & fam(gtype):
                    rec_tp[gtype] += 1
            elif ptypes:
                o_fp += 1
            if ptypes:
                words_by_ptypes.append((gtype if pos else None, ptypes))

    all_ptypes = set().union(*(p for _, p in words_by_ptypes)) if words_by_ptypes else set()
    per_type = {}
    for t in list(scope) + sorted(all_ptypes - scope_set):
        accept = fam(t)
        pn = ptp = 0
        for g, ptypes in words_by_ptypes:
            hit = ptypes & accept
            if not hit:
                continue
            pn += 1
            if g is not None and hit & fam(g):
                ptp += 1
        g = gold_n.get(t, 0)
        if t not in scope_set and pn == 0:
            continue
        p = ptp / pn if pn else 1.0
        if t in scope_set:
            r = rec_tp[t] / g if g else 1.0
            f = 2 * p * r / (p + r) if p + r else 0.0
        else:  # a predicted type with no gold words of its own: only its precision means anything
            r = f = None
        per_type[t] = {"gold_words": g, "pred_words": pn, "tp_recall": rec_tp.get(t, 0),
                       "tp_precision": ptp, "precision": p, "recall": r, "f1": f,
                       "in_scope": t in scope_set}
    overall = {"tp": o_tp, "fp": o_fp, "fn": o_fn, **prf(o_tp, o_fp, o_fn)}
    typed_tp = sum(rec_tp[t] for t in scope)
    typed_g = sum(gold_n[t] for t in scope)
    overall["typed_recall"] = typed_tp / typed_g if typed_g else 1.0
    return {"scope": list(scope), "strict": strict, "sentences": len(dataset), "words": n_words,
            "out_of_scope_words": n_oos, "overall": overall, "per_type": per_type}


def load_preds(path: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in load_jsonl(path):
        out.setdefault(str(r["id"]), []).extend(r.get("spans", []))
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def table_one(res: dict) -> str:
    lines = [f"{'type':<18} {'gold_w':>7} {'pred_w':>7} {'P':>6} {'R':>6} {'F1':>6}"]
    for t, d in res["per_type"].items():
        mark = "" if d["in_scope"] else " (out of scope)"
        lines.append(f"{t:<18} {d['gold_words']:>7} {d['pred_words']:>7} {_fmt(d['precision']):>6} "
                      f"{_fmt(d['recall']):>6} {_fmt(d['f1']):>6}{mark}")
    o = res["overall"]
    lines.append(f"{'OVERALL(untyped)':<18} {o['tp'] + o['fn']:>7} {o['tp'] + o['fp']:>7} "
                 f"{_fmt(o['precision']):>6} {_fmt(o['recall']):>6} {_fmt(o['f1']):>6}")
    lines.append(f"words {res['words']}, out-of-scope words {res['out_of_scope_words']} "
                 f"({'negatives, --strict' if res['strict'] else 'ignored'}); overall TP {o['tp']} "
                 f"FP {o['fp']} FN {o['fn']}; typed recall {_fmt(o['typed_recall'])}")
    return "\n".join(lines)


def table_many(results: dict[str, dict], extra: dict[str, dict[str, str]] | None = None) -> str:
    """F1 per type side by side (R for card/SSN too), overall P/R/F1, and any extra rows (throughput)."""
    names = list(results)
    w = max(12, *(len(n) for n in names))
    head = f"{'':<18}" + "".join(f"{n:>{w + 1}}" for n in names)
    lines = [head]
    scope = next(iter(results.values()))["scope"]
    for t in scope:
        g = next(iter(results.values()))["per_type"][t]["gold_words"]
        cells = []
        for n in names:
            d = results[n]["per_type"].get(t)
            cells.append(f"{_fmt(d['f1']) if d else '-':>{w + 1}}")
        lines.append(f"{t + ' F1':<18}" + "".join(cells) + f"   ({g} words)")
    for t in ("CREDIT_CARD", "US_SSN"):
        if t in scope:
            lines.append(f"{t + ' R':<18}" + "".join(
                f"{_fmt(results[n]['per_type'][t]['recall']):>{w + 1}}" for n in names))
    for k, lab in (("precision", "overall P"), ("recall", "overall R"), ("f1", "overall F1")):
        lines.append(f"{lab:<18}" + "".join(f"{_fmt(results[n]['overall'][k]):>{w + 1}}" for n in names))
    for row, vals in (extra or {}).items():
        lines.append(f"{row:<18}" + "".join(f"{vals.get(n, '-'):>{w + 1}}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("preds", nargs="+", help="PRED.jsonl or NAME=PRED.jsonl")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--scope", help="comma-separated in-scope types (default: %s)" % ",".join(DEFAULT_SCOPE))
    ap.add_argument("--strict", action="store_true", help="out-of-scope gold words count as negatives")
    ap.add_argument("--extra", action="append", default=[],
                    help="ROW:NAME=VALUE extra table row cell (e.g. 'kchars/s:presidio=12.3'); repeatable")
    args = ap.parse_args(argv)

    scope = [s.strip() for s in args.scope.split(",")] if args.scope else DEFAULT_SCOPE
    dataset = load_jsonl(args.dataset)
    results = {}
    for spec in args.preds:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        results[name or path] = score(dataset, load_preds(path), scope, args.strict)
    extra: dict[str, dict[str, str]] = {}
    for e in args.extra:
        row, _, cell = e.partition(":")
        n, _, v = cell.partition("=")
        extra.setdefault(row, {})[n] = v
    if args.json:
        out = results if len(results) > 1 else next(iter(results.values()))
        json.dump(out, sys.stdout, indent=1)
        print()
    elif len(results) == 1:
        print(table_one(next(iter(results.values()))))
    else:
        print(table_many(results, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
