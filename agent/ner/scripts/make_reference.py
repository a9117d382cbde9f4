#!/usr/bin/env python3
"""Writes tests/fixtures/reference.json: onnxruntime's labels (and a sample of logits) for the Rampart model on
a set of sentences, for tests/reference.rs to hold tract's output against. Run once; CI never needs Python.

    python3 -m venv .cache/nervenv && .cache/nervenv/bin/pip install onnxruntime tokenizers numpy
    bash tests/tools/install-ner-weights.sh
    .cache/nervenv/bin/python agent/ner/scripts/make_reference.py

Windows follow src/windows.rs exactly (sentences packed to 32 tokens, long ones cut to 64 with 16 shared, each
token labelled by the window that owns it), so a text of several windows checks the stitching too. Offsets are in
characters (Unicode scalars), as Python counts; the Rust test converts. `expected` is what the redactor should
return under `pii` with the model (entity, covered text): written by hand, and checked here against this script's
own decoding so a wrong expectation fails at generation time, not as a puzzle in CI.

The sentences are invented; the names, streets and numbers in them belong to no one (card and SSN are the
standard test values).
"""
import json
import os
import sys

import numpy as np
import onnxruntime
import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../.."))
MODEL_DIR = os.path.join(ROOT, ".cache/models/ner/rampart")
OUT = os.path.join(ROOT, "agent/ner/tests/fixtures/reference.json")

PACK_TOKENS, MAX_TOKENS, OVERLAP_TOKENS = 32, 64, 16
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "ste", "apt", "ave", "rd", "blvd", "ln", "ct", "hwy", "mt", "ft",
                 "jr", "sr", "no", "co", "inc", "dept", "vs", "etc"}

CASES = [
    ("My name is John O'Brien and I live at 1234 Elm Street, Springfield, IL 62704.",
     [("PERSON", "John O'Brien"), ("STREET_ADDRESS", "1234 Elm Street, Springfield, IL 62704")]),
    ("hi this is maria gonzalez calling from twenty two oak avenue in austin texas",
     [("PERSON", "maria gonzalez"), ("LOCATION", "austin texas")]),
    # The model misses "Apartment 5B" (it finds "Apt 4B" and "Suite 12"): expectations record what it does.
    ("Please ship it to Apartment 5B, 77 Massachusetts Avenue, Cambridge, MA 02139.",
     [("STREET_ADDRESS", "77 Massachusetts Avenue, Cambridge, MA 02139")]),
    ("my card number is 4111 1111 1111 1111 and my name is david chen",
     [("CREDIT_CARD", "4111 1111 1111 1111"), ("PERSON", "david chen")]),
    ("Dr. Priya Raghunathan moved from Boise, Idaho to Portland, Oregon last spring.",
     [("PERSON", "Priya Raghunathan"), ("LOCATION", "Boise"), ("LOCATION", "Idaho"), ("LOCATION", "Portland"),
      ("LOCATION", "Oregon")]),
    ("The meeting with Sarah Johnson is on Tuesday.", [("PERSON", "Sarah Johnson")]),
    ("uh yeah so my zip code is 90210 and i'm on sunset boulevard",
     [("ZIP_CODE", "90210"), ("STREET_ADDRESS", "sunset boulevard")]),
    ("Call me at 212-555-0100; my SSN is 078-05-1120 and I'm Robert Smith.",
     [("PHONE_NUMBER", "212-555-0100"), ("US_SSN", "078-05-1120"), ("PERSON", "Robert Smith")]),
    # ... and "Chicago" after "weather in".
    ("The weather in Chicago was cold, said Emily, who lives on Lake Shore Drive.",
     [("PERSON", "Emily"), ("STREET_ADDRESS", "Lake Shore Drive")]),
    ("I'm José Álvarez from San José, California.",
     [("PERSON", "José Álvarez"), ("LOCATION", "San José"), ("LOCATION", "California")]),
    ("thank you for calling, how can i help you today", []),
    # ... and most of this address: "1600", "NW", "Washington" and "20500" come out unlabelled, which splits it.
    ("Ship to 1600 Pennsylvania Ave NW, Washington, DC 20500, attention Mr. Lincoln.",
     [("STREET_ADDRESS", "Pennsylvania Ave"), ("LOCATION", "DC"), ("PERSON", "Lincoln")]),
    ("okay so the name on the account is kevin o'connor and the billing address is 48 maple drive denver colorado "
     "80203", [("PERSON", "kevin o'connor"), ("STREET_ADDRESS", "48 maple drive denver colorado 80203")]),
    # One run-on ASR sentence of more than 64 tokens: overlapping windows.
    ("so yeah i called them yesterday and the lady on the phone her name was jennifer walsh she said the package went "
     "to 310 riverside drive in columbus ohio instead of my place on 12 birch lane in dayton and then she told me to "
     "call back after the weekend because the warehouse in cincinnati was closed and nobody could check it until "
     "monday morning which honestly is ridiculous", None),
    # Sentences that do not pack into one window.
    ("Thanks for holding, I have pulled up the account you asked about this morning. The account belongs to Linda "
     "Park and the statements go to 9 Harbor View Road, Portland, Maine 04101. Is that still correct?", None),
]

# Types the crate maps (src/labels.rs); others read as "no entity".
MAPPED = {"GIVEN_NAME": "PERSON", "SURNAME": "PERSON", "BUILDING_NUMBER": "STREET_ADDRESS",
          "STREET_NAME": "STREET_ADDRESS", "SECONDARY_ADDRESS": "STREET_ADDRESS", "CITY": "LOCATION",
          "STATE": "LOCATION", "ZIP_CODE": "ZIP_CODE"}


def sentence_ends(text, offsets):
    ends = []
    for i, (start, end) in enumerate(offsets):
        if i + 1 == len(offsets):
            ends.append(i + 1)
            continue
        gap = text[end:max(offsets[i + 1][0], end)]
        if "\n" in gap:
            ends.append(i + 1)
            continue
        if text[start:end] in (".", "!", "?") and gap[:1].isspace():
            before = text[:start]
            j = len(before)
            while j > 0 and before[j - 1].isalnum():
                j -= 1
            word = before[j:]
            if not (len(word) == 1 or word.lower() in ABBREVIATIONS):
                ends.append(i + 1)
    return ends


def cut(a, b, words, windows):
    first = len(windows)
    start = a
    while True:
        end = min(start + MAX_TOKENS, b)
        windows.append([start, end, start, end])
        if end == b:
            break
        natural = end - OVERLAP_TOKENS
        nxt = natural
        while nxt > natural - OVERLAP_TOKENS and words[nxt] is not None and words[nxt] == words[nxt - 1]:
            nxt -= 1
        start = natural if (words[nxt] is not None and words[nxt] == words[nxt - 1]) else nxt
    for k in range(first + 1, len(windows)):
        split = (windows[k][0] + windows[k - 1][1]) // 2
        windows[k - 1][3] = split
        windows[k][2] = split


def plan(text, offsets, words):
    windows, pending, start = [], None, 0
    for end in sentence_ends(text, offsets):
        if pending is not None and end - pending[0] <= PACK_TOKENS:
            pending[1] = end
        else:
            if pending is not None:
                cut(pending[0], pending[1], words, windows)
            pending = [start, end]
        start = end
    if pending is not None:
        cut(pending[0], pending[1], words, windows)
    return windows


def decode(text, tokens, id2label):
    """The crate's decoding (labels.rs) with all four types wanted: for checking `expected` only."""
    words = []
    for t in tokens:
        if t["end"] <= t["start"]:
            continue
        if words and words[-1]["word"] == t["word"]:
            words[-1]["end"] = max(words[-1]["end"], t["end"])
            continue
        label = id2label[t["label"]]
        words.append({"start": t["start"], "end": t["end"], "word": t["word"],
                      "entity": MAPPED.get(label[2:]) if label != "O" else None})
    runs, joinable = [], False
    for w in words:
        if w["entity"] is None:
            joinable = False
            continue
        if joinable and runs and runs[-1][2] == w["entity"] and text[runs[-1][1]:w["start"]].strip() == "":
            runs[-1][1] = w["end"]
        else:
            runs.append([w["start"], w["end"], w["entity"]])
        joinable = True
    out = []
    for r in runs:
        if (out and out[-1][2] == "STREET_ADDRESS" and r[2] in ("STREET_ADDRESS", "LOCATION", "ZIP_CODE")
                and all(c.isspace() or c in ",.-#" for c in text[out[-1][1]:r[0]])):
            out[-1][1] = r[1]
        else:
            out.append(list(r))
    return [(e, text[s:t]) for s, t, e in out]


def main():
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        id2label = {int(k): v for k, v in json.load(f)["id2label"].items()}
    tokenizer = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(os.path.join(MODEL_DIR, "model_q4.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    cases, failures = [], 0
    for text, expected in CASES:
        enc = tokenizer.encode(text, add_special_tokens=False)
        windows = plan(text, enc.offsets, enc.word_ids)
        logits = np.zeros((len(enc.ids), len(id2label)), dtype=np.float32)
        for start, end, own_start, own_end in windows:
            ids = [cls, *enc.ids[start:end], sep]
            n = len(ids)
            out = session.run(None, {"input_ids": np.array([ids], dtype=np.int64),
                                     "attention_mask": np.ones((1, n), dtype=np.int64),
                                     "token_type_ids": np.zeros((1, n), dtype=np.int64)})[0][0][1:-1]
            logits[own_start:own_end] = out[own_start - start:own_end - start]
        tokens = []
        for i, (start, end) in enumerate(enc.offsets):
            token = {"id": enc.ids[i], "start": start, "end": end, "word": enc.word_ids[i],
                     "label": int(logits[i].argmax())}
            # Full logit rows for every labelled token and every fifth one: enough to see drift, small enough
            # to read in a diff.
            if token["label"] != 0 or i % 5 == 0:
                token["logits"] = [round(float(v), 4) for v in logits[i]]
            tokens.append(token)
        decoded = decode(text, tokens, id2label)
        if expected is not None:
            model_part = [e for e in expected if e[0] in MAPPED.values()]
            if decoded != model_part:
                print(f"expectation differs for {text!r}:\n  expected {model_part}\n  decoded  {decoded}",
                      file=sys.stderr)
                failures += 1
        cases.append({"text": text, "windows": [w[:2] for w in windows], "tokens": tokens,
                      "expected": [list(e) for e in (expected if expected is not None else decoded)]})
    if failures:
        sys.exit(f"{failures} expectations differ; fix the sentence or the expectation")
    doc = {"generator": "agent/ner/scripts/make_reference.py", "onnxruntime": onnxruntime.__version__,
           "tokenizers": tokenizers.__version__, "labels": [id2label[i] for i in range(len(id2label))],
           "cases": cases}
    with open(OUT, "w") as f:
        json.dump(doc, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
