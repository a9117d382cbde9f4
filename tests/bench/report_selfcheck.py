#!/usr/bin/env python3
"""Hand-run check of tests/bench/report.py on fabricated inputs (not part of the test suite; nothing is benchmarked).

    python3 tests/bench/report_selfcheck.py [--keep]

Writes fabricated section logs and criterion estimates into a temporary directory, renders the report from them and
asserts the cells, ratios and verdicts; then checks the docs splice and that empty inputs render without errors.
The same directory also works for the shell path: CARGO_TARGET_DIR=<dir> bash tests/bench/all.sh --dry-run.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

RESULT = lambda obj: "RESULT " + json.dumps(obj)  # noqa: E731

LOGS = {
    "admission": ["admission/infergate_admit_and_charge/100k_keys  time:   [195.1 ns 200.0 ns 204.9 ns]"],
    "http": ["==> HTTP: nginx ...", "  nginx  26768 req/s   p50 1ms",
             RESULT({"bench": "http", "rounds": 3, "seconds": 10, "nginx_rps": 26768, "unauthenticated_rps": 21712,
                     "authenticated_rps": 14487, "authenticated_non_2xx": 0, "unauthenticated_listener": "admin",
                     "nginx_cpu_us": 5.1, "unauthenticated_cpu_us": 7.0, "authenticated_cpu_us": 7.7,
                     "upload_rps": 20000, "upload_nginx_rps": 100000, "upload_non_2xx": 0, "upload_cpu_us": 50.0,
                     "upload_nginx_cpu_us": 8.0, "upload_nginx_proxy_rps": 40000, "upload_nginx_proxy_cpu_us": 24.0,
                     "upload_seconds": 0.1}),
             RESULT({"bench": "streams", "streams": 8, "keys": 4, "duration_s": 60.0, "charged_gpu_s": 19.94,
                     "allowance_gpu_s": 20.0, "error_pct": -0.3}),
             RESULT({"bench": "revocation", "mode": "sighup", "trials": 25, "missed": 0,
                     "refusal": {"n": 25, "p50_ms": 386, "p99_ms": 468.4}, "close": {"n": 25, "p99_ms": 487.1}}),
             # an older loadgen without "mode": the second one is the poll run
             RESULT({"bench": "revocation", "trials": 25, "missed": 1,
                     "refusal": {"n": 25, "p99_ms": 798}, "close": {"n": 24, "p99_ms": 1200}})],
    "tls": ["round agent new/s ...", "means: ...",
            RESULT({"bench": "tls", "rounds": 3, "seconds": 8, "agent_new_per_s": 945, "nginx_new_per_s": 928,
                    "agent_reuse_per_s": 1039, "nginx_reuse_per_s": 902, "agent_tls_rps": 57574,
                    "nginx_tls_rps": 86386, "agent_plain_rps": 59594})],
    "redis": ["| contender | ns per admission | limitador AsyncRedisStorage / this |", "|---|---:|---:|",
              "| infergate redis leased (budget never runs out) | 39 | 5791.4x |",
              RESULT({"bench": "redis", "ns_per_admission": {
                  "infergate in-memory": 38, "infergate redis leased (budget never runs out)": 39,
                  "infergate redis leased (one key asking half its rate)": 5062,
                  "infergate redis leased (one key asking twice its rate)": 114437, "infergate redis exact": 133245,
                  "limitador in-memory": 1064, "limitador redis (AsyncRedisStorage)": 227702,
                  "limitador redis cached (CachedRedisStorage)": 4936}})],
    "whisper": [json.dumps(o) for o in (
        {"engine": "infergate", "compute_type": "float32", "file": "long_meeting.wav", "word_timestamps": False,
         "audio_seconds": 44.1, "median_seconds": 2.34, "rtf": 18.8},
        {"engine": "infergate", "compute_type": "float32", "file": "short_02_name.wav", "word_timestamps": False,
         "audio_seconds": 5.0, "median_seconds": 0.74, "rtf": 6.7},
        {"engine": "infergate", "compute_type": "float32", "file": "long_meeting.wav", "word_timestamps": True,
         "audio_seconds": 44.1, "median_seconds": 2.39, "rtf": 18.5},
        {"impl": "faster-whisper", "compute_type": "float32", "word_timestamps": False, "file": "long_meeting.wav",
         "audio_s": 44.1, "median_s": 1.74, "rtf": 25.4},
        {"impl": "faster-whisper", "compute_type": "float32", "word_timestamps": False, "file": "short_02_name.wav",
         "audio_s": 5.0, "median_s": 0.47, "rtf": 10.6},
        {"impl": "faster-whisper", "compute_type": "float32", "word_timestamps": False, "file": "short_total",
         "audio_s": 99.0, "median_s": 1.0, "rtf": 99.0},
        {"impl": "faster-whisper", "compute_type": "float32", "word_timestamps": True, "file": "long_meeting.wav",
         "audio_s": 44.1, "median_s": 1.89, "rtf": 23.4},
        {"impl": "faster-whisper", "compute_type": "int8", "word_timestamps": False, "file": "long_meeting.wav",
         "audio_s": 44.1, "median_s": 1.43, "rtf": 30.9},
    )] + ["[float32 words=off] long_meeting.wav: 44.1 s audio, median 1740 ms, rtf 25.4"],
    "speaker": ["speaker cpu (wall): 5 s utterance in 41.0 ms -> 24.39 embeddings/s, 122.0x real time per core",
                "speaker peer (resemblyzer torch 1.13, 1 thread): 5 s utterance in 250.0 ms -> 20.0x real time per core",
                "| 5 s utterance, 1 thread on cpu 1 | ms | rt per core | ms / infergate median |", "|---|---:|---:|---:|",
                "| infergate CpuEncoder, criterion median (embed_5s) | 40.6 | 123.2x | 1.00 |",
                "| infergate CpuEncoder, headline wall (5 runs) | 41.0 | 122.0x | 1.01 |",
                "| Resemblyzer 0.1.4 embed_utterance (gain + librosa mel + LSTM) | 250.0 | 20.0x | 6.16 |",
                "| Resemblyzer 0.1.4 forward only (LSTM on precomputed mel) | 100.0 | 50.0x | 2.46 |"],
    "redaction": ["overall F1  0.936 ...", RESULT({"bench": "redaction", "half": "report", "systems": {
        "infergate-full": {"f1": 0.936, "credit_card_recall": 1.0, "us_ssn_recall": 1.0, "kchars_per_s": 11.3},
        "infergate-patterns": {"f1": 0.274, "kchars_per_s": 200000.0},
        "presidio-full": {"f1": 0.650, "credit_card_recall": 0.625, "us_ssn_recall": 1.0, "kchars_per_s": 19.98},
        "presidio-patterns": {"f1": 0.231, "kchars_per_s": 218.0}}})],
    "operator": [json.dumps({"policies": 1000, "seconds": 3.1, "peak_rss_mib": 21.5}),
                 json.dumps({"policies": 10000, "seconds": 25.3, "peak_rss_mib": 70.2})],
    "load": ["load: 500 streams ...", RESULT({
        "bench": "load", "streams": 500, "window_s": 60.2, "verdict": "PASS", "unintended": {},
        "doors": {"ws": {"ack": {"n": 900, "p99_ms": 5120.4}}, "grpc": {"ack": {"n": 880, "p99_ms": 5230.0}}},
        "revocation": {"open_streams": 2, "closed": 2, "not_closed": 0, "close": {"n": 2, "p99_ms": 420.0,
                                                                                  "max_ms": 430.0}, "within_1s": True}})],
}

CRITERION = {  # path parts -> median ns
    ("admission", "infergate_admit_and_charge", "100k_keys"): 200.0,
    ("admission", "limitador_check_and_update", "100k_keys"): 4000.0,
    ("admission", "governor_keyed_check", "100k_keys"): 150.0,
    ("admission_breakdown_100k", "2_authenticate"): 125.0,
    ("admission", "infergate_admit_and_charge", "1k_keys"): 300.0,
    ("admission", "limitador_check_and_update", "1k_keys"): 3000.0,
    ("tokens_100k", "api_key_admit"): 400.0,
    ("tokens_100k", "token_cached_admit"): 450.0,
    ("tokens_100k", "token_uncached_admit"): 61000.0,
    ("token_verify_uncached",): 46000.0,
    ("token_ed25519_dalek_floor",): 38000.0,
    ("speaker_cpu", "embed_5s"): 40e6,
}


def fabricate(target: Path):
    logs, crit = target / "bench" / "logs", target / "criterion"
    logs.mkdir(parents=True)
    for section, lines in LOGS.items():
        (logs / f"{section}.log").write_text("\n".join(lines) + "\n")
        (logs / f"{section}.status.json").write_text(json.dumps(
            {"section": section, "rc": 0, "seconds": 12.0, "command": f"bash tests/bench/{section}.sh",
             "ended": time.time()}))
    (logs / "soak.status.json").write_text(json.dumps(
        {"section": "soak", "rc": None, "seconds": 0, "command": "bash tests/bench/load.sh soak", "ended": time.time(),
         "skipped": "tests/bench/load.sh is not there"}))
    for parts, ns in CRITERION.items():
        p = crit.joinpath(*parts, "new")
        p.mkdir(parents=True)
        (p / "estimates.json").write_text(json.dumps({"median": {"point_estimate": ns}, "mean": {"point_estimate": 1}}))
    return logs, crit


def args_for(logs, crit, **kw):
    a = dict(logs=str(logs), criterion=str(crit), sections=None, out=None, docs=None, started=time.time() - 60,
             load_start="1.00 0.50 0.25", knobs="BENCH_HTTP_SECONDS=10", dry_run=False)
    a.update(kw)
    return argparse.Namespace(**a)


def cells(rows, prefix):
    hits = [r for r in rows if r.name.startswith(prefix)]
    assert len(hits) == 1, f"{len(hits)} rows start with {prefix!r}: {[r.name for r in rows]}"
    return hits[0]


def check(r, ours=None, ratio=None, met="unset", peer=None):
    if ours is not None:
        assert r.ours == ours, f"{r.name}: infergate {r.ours!r} != {ours!r}"
    if ratio is not None:
        assert r.ratio is not None and abs(r.ratio - ratio) < 0.005, f"{r.name}: ratio {r.ratio} != {ratio}"
    if met != "unset":
        assert r.met is met, f"{r.name}: met {r.met} != {met}"
    if peer is not None:
        assert r.peer == peer, f"{r.name}: peer {r.peer!r} != {peer!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    keep = ap.parse_args().keep
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-check-"))
    logs, crit = fabricate(tmp)
    out = tmp / "bench" / "report.md"
    summary, rows = report.render(args_for(logs, crit, out=str(out), sections=" ".join(report.SECTIONS + ["soak"])))

    check(cells(rows, "admission decision, 100k_keys"), "200 ns", 20.0, True, "limitador: 4.0 us")
    check(cells(rows, "admission decision, 1k_keys"), "300 ns", 10.0, False)
    assert not [r for r in rows if "1m_keys" in r.name], "1m_keys has no results: no row"
    check(cells(rows, "admission 100k_keys vs governor"), "200 ns", 0.75, None)
    check(cells(rows, "admission floor, 100k_keys"), "125 ns", 32.0, None, "limitador: 4.0 us")
    check(cells(rows, "session token admit, cached"), "450 ns", 400 / 450, True)
    check(cells(rows, "session token admit, uncached"), "61.0 us", met=False)
    check(cells(rows, "HTTP authenticated"), "14,487", 14487 / 26768, False, "nginx return 200: 26,768")
    check(cells(rows, "HTTP key check cost"), "33.3% (14,487 req/s)", 14487 / 21712, False)
    assert "agent admin /healthz" in cells(rows, "HTTP key check cost").peer
    check(cells(rows, "HTTP server CPU"), "7.70 us", 5.1 / 7.7, None, "nginx return 200: 5.10 us")
    check(cells(rows, "HTTP key check CPU"), "+10.0% (7.70 us)", 7.0 / 7.7, None)
    check(cells(rows, "HTTP small authenticated upload (0.1 s WAV)"), "20,000", 0.2, False,
          "nginx return 200, same POST: 100,000")
    check(cells(rows, "HTTP small upload vs nginx proxying"), "20,000", 0.5, None, "nginx proxy_pass: 40,000")
    check(cells(rows, "revocation (write + SIGHUP)"), "468 / 487 ms", met=True)
    check(cells(rows, "revocation (file poll only)"), "798 / 1200 ms", met=False)
    check(cells(rows, "tier accounting"), "19.94 GPU-s (-0.30%)", met=True)
    check(cells(rows, "TLS 1.3 full handshakes"), "945", 945 / 928, True)
    check(cells(rows, "TLS cost vs"), met=True)
    check(cells(rows, "Redis leased, budget never runs out"), "39 ns", 227702 / 39, True)
    check(cells(rows, "Redis leased, one key at half its rate"), "5.1 us", 227702 / 5062, True)
    check(cells(rows, "Redis leased, one key at twice its rate"), "114.4 us", 227702 / 114437, None)
    check(cells(rows, "Whisper tiny.en, 1 core, word times off (x"), "15.9x", (49.1 / 3.08) / (49.1 / 2.21), False)
    check(cells(rows, "Whisper tiny.en, 1 core, word times on"), "18.5x", 1.89 / 2.39, False)
    check(cells(rows, "Whisper tiny.en, 1 core, word times off, vs int8"), ratio=1.43 / 2.34, met=None)
    check(cells(rows, "speaker encoder, 5 s"), "123x", 123.2 / 20.0, True)
    check(cells(rows, "speaker encoder vs Resemblyzer's LSTM"), ratio=123.2 / 50.0)
    check(cells(rows, "redaction word F1"), "0.936", 0.936 / 0.650, True)
    check(cells(rows, "redaction card / SSN"), "1.000 / 1.000", met=True, peer="Presidio full: 0.625 / 1.000")
    check(cells(rows, "redaction speed, patterns + NER"), "11.3", 11.3 / 19.98, False)
    check(cells(rows, "operator cold start, 10,000 policies: seconds"), "25.3 s", met=True)
    check(cells(rows, "operator cold start, 10,000 policies: peak"), "70.2 MiB", met=False)
    check(cells(rows, "operator cold start, 1,000 policies"), "3.1 s, 21.5 MiB", met=None)
    check(cells(rows, "load: unintended"), "0", met=True)
    check(cells(rows, "load: revoked key's"), "p99 420 ms, max 430 ms (2/2)", met=True)
    check(cells(rows, "load: chunk-to-ack p99 (ws / grpc)"), "5,120 / 5,230 ms")
    check(cells(rows, "soak: unintended"), met=None)
    for needle in ("| benchmark ", "| **no** |", "| yes ", "Machine: `", "load average (1/5/15 min) 1.00 0.50 0.25",
                   "knobs: `BENCH_HTTP_SECONDS=10`", "- `soak`: skipped: tests/bench/load.sh is not there"):
        assert needle in summary, f"summary lacks {needle!r}"
    assert "predate" not in summary, "fresh criterion files flagged stale"
    text = out.read_text()
    assert text.startswith("# infergate benchmarks: summary") and "## Raw results" in text and '"bench": "tls"' in text

    # A criterion file older than its section's run is called out.
    old = crit / "tokens_100k" / "api_key_admit" / "new" / "estimates.json"
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    summary, _ = report.render(args_for(logs, crit, sections="admission"))
    assert "some predate this run" in summary

    # The docs splice replaces only the block between the markers, and again on a second run.
    docs = tmp / "benchmarks.md"
    before, after = "# Title\n\nintro\n\n", "\n## 1. Hand-written\n\ntext | with | pipes\n"
    docs.write_text(before + report.START_MARK + "\nold block\n" + report.END_MARK + after)
    for _ in range(2):
        report.render(args_for(logs, crit, docs=str(docs), dry_run=True))
        d = docs.read_text()
        assert d.startswith(before + report.START_MARK + "\nGenerated by `bash tests/bench/all.sh --write-docs`"), d[:200]
        assert d.endswith(report.END_MARK + after) and "old block" not in d and d.count(report.START_MARK) == 1
        assert "**Dry run**" in d and "| admission decision, 100k_keys (median)" in d
    docs.write_text("no markers here\n")
    try:
        report.render(args_for(logs, crit, docs=str(docs)))
        raise AssertionError("a file without markers was accepted")
    except SystemExit as e:
        assert "no <!-- bench:summary:start -->" in str(e)

    # Nothing on disk: every section still renders, with n/a and "?".
    empty = tmp / "empty"
    summary, rows = report.render(args_for(empty / "logs", empty / "criterion",
                                           sections=" ".join(report.SECTIONS + ["soak"])))
    assert all(r.ours is None and r.met is None for r in rows), [r for r in rows if r.ours is not None]
    assert "no all.sh log" in summary

    print(f"report.py self-check: OK ({len(LOGS)} fabricated logs, {len(CRITERION)} criterion estimates)")
    if keep:
        print(f"kept: {tmp}   (try: CARGO_TARGET_DIR={tmp} bash tests/bench/all.sh --dry-run)")
    else:
        import shutil
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
