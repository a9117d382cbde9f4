#!/usr/bin/env python3
"""One table for every benchmark: infergate's headline number, its peer's, the ratio, the target, met or not.

tests/bench/all.sh runs the benchmarks, keeps each section's output in <logs>/<section>.log (and
<section>.status.json: command, exit status, seconds) and then calls this script, which reads those logs and
criterion's <criterion>/<group>/<bench>[/<scenario>]/new/estimates.json (median.point_estimate, in ns). Standard
library only.

    python3 tests/bench/report.py --logs target/bench/logs --criterion target/criterion --out target/bench/report.md
        [--sections "admission http ..."] [--docs docs/benchmarks.md] [--started EPOCH] [--load-start "1 5 15"]
        [--knobs "BENCH_X=1 ..."] [--dry-run]
    python3 tests/bench/report_selfcheck.py       (fabricated inputs: checks the cells, verdicts and the docs splice)

What each section reads (the contract for the scripts that print results):
  admission  criterion: admission/<contender>/<scenario>, tokens_100k/*, token_verify_uncached,
             token_ed25519_dalek_floor (cargo bench -p infergate-agent --bench admission; -p infergate-token --bench verify)
  http       run_all.sh: RESULT {"bench":"http"|"streams"|"revocation" (with "mode": "sighup"|"poll"), ...}
  tls        tls.sh: RESULT {"bench":"tls", ...}
  redis      redis.sh: RESULT {"bench":"redis","ns_per_admission":{contender: ns}}
  whisper    whisper.sh: JSON lines of agent/whisper/examples/rtf.rs ("engine":"infergate") and whisper_peer.py
             ("impl":"faster-whisper"); headline = total audio / total compute over the files both sides ran
  speaker    speaker.sh: its closing markdown table (| name | ms | <rt>x | ...), else its "... x real time per core"
             lines; infergate falls back to criterion speaker_cpu/embed_5s (5 s of audio per iteration)
  redaction  tests/redact_eval/run.sh: RESULT {"bench":"redaction","systems":{name: {f1, ..., kchars_per_s}}}
  operator   operator_scale.py: one JSON line per N ({"policies", "seconds", "peak_rss_mib", ...})
  load, soak load.sh [soak]: RESULT {"bench":"load"|"soak","unintended":{..},"revocation":{..},"doors":{..},"soak":{..}}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["admission", "http", "tls", "redis", "whisper", "speaker", "redaction", "operator", "load"]  # + "soak"
START_MARK, END_MARK = "<!-- bench:summary:start -->", "<!-- bench:summary:end -->"
RATIO_NOTE = ("Ratio: how many times better infergate is than the peer (peer time / infergate time, or infergate rate "
              "/ peer rate), so above 1 favours infergate. Met: `yes`, **no**, `?` (no result to judge), `-` (no target).")


@dataclass
class Row:
    name: str
    ours: str | None  # formatted infergate value; None: no result
    peer: str = "-"
    ratio: float | None = None
    target: str = "-"
    met: bool | None = None  # None: no target, or nothing to judge it by
    no_ratio: bool = False  # a peer column without a meaningful ratio (an allowance, a recall pair)


# ------------------------------------------------------------------------------------------------------ formatting


def ns(v):
    if v is None:
        return None
    for scale, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "us")):
        if v >= scale:
            return f"{v / scale:.{2 if scale == 1e9 else 1}f} {unit}"
    return f"{v:.0f} ns" if v >= 10 else f"{v:.1f} ns"


def num(v, unit="", nd=0):
    return None if v is None else f"{v:,.{nd}f}{unit}"


def ratio_cell(r):
    if r is None:
        return "n/a"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:,.0f}x"


def div(a, b):
    return a / b if a is not None and b else None


def peer(name, value):
    return f"{name}: {value}" if value is not None else f"{name}: n/a"


def judge(cond, *values):
    """cond() when every value is known, else None (no result to judge)."""
    return None if any(v is None for v in values) else bool(cond())


def when(ts):
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------------------- inputs


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Inputs:
    def __init__(self, logs: Path, criterion: Path):
        self.logs, self.criterion = logs, criterion
        self.crit_used: dict[str, list[float]] = {}  # section -> mtimes of the criterion files read
        self.stale: set[str] = set()  # sections that read criterion files older than their own run

    def log(self, section):
        p = self.logs / f"{section}.log"
        return p.read_text(errors="replace") if p.is_file() else None

    def status(self, section):
        p = self.logs / f"{section}.status.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def objects(self, section):
        """Every `RESULT {json}` line and every bare JSON-object line of the section's log."""
        out = []
        for line in (self.log(section) or "").splitlines():
            line = line.strip()
            if line.startswith("RESULT "):
                line = line[len("RESULT "):].strip()
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def crit(self, section, *parts):
        p = self.criterion.joinpath(*parts, "new", "estimates.json")
        try:
            v = json.loads(p.read_text())["median"]["point_estimate"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        mtime = p.stat().st_mtime
        self.crit_used.setdefault(section, []).append(mtime)
        st = self.status(section) or {}
        if st.get("ended") and not st.get("skipped") and mtime < st["ended"] - st.get("seconds", 0) - 1:
            self.stale.add(section)
        return float(v)


def first(objs, bench):
    return next((o for o in objs if o.get("bench") == bench), {})


# -------------------------------------------------------------------------------------------------------- sections


def admission(inp):
    rows = []
    c = lambda *p: inp.crit("admission", *p)  # noqa: E731
    for scen in ("100k_keys", "1k_keys", "1m_keys"):
        ours, lim = c("admission", "infergate_admit_and_charge", scen), c("admission", "limitador_check_and_update", scen)
        if scen != "100k_keys" and ours is None and lim is None:
            continue
        r = div(lim, ours)
        rows.append(Row(f"admission decision, {scen} (median)", ns(ours), peer("limitador", ns(lim)), r,
                        "<= 250 ns and >= 10x", judge(lambda: ours <= 250 and r >= 10, ours, r)))
    # The 10x half's floor, from the same criterion run: authentication alone (shape, the key's SHA-256, the table
    # lookup, the key's state) is work no decision that keeps the config contract (SHA-256 digests of whole keys)
    # can skip. Its ratio is the most the whole decision could reach if the scope check, the bucket charge and the
    # clock reads cost nothing.
    lim = c("admission", "limitador_check_and_update", "100k_keys")
    floor = c("admission_breakdown_100k", "2_authenticate")
    rows.append(Row("admission floor, 100k_keys: authentication alone (breakdown)", ns(floor),
                    peer("limitador", ns(lim)), div(lim, floor)))
    ours, gov = c("admission", "infergate_admit_and_charge", "100k_keys"), c("admission", "governor_keyed_check", "100k_keys")
    rows.append(Row("admission 100k_keys vs governor (keyed check, no key auth)", ns(ours), peer("governor", ns(gov)),
                    div(gov, ours)))
    key, tok, unc = (c("tokens_100k", b) for b in ("api_key_admit", "token_cached_admit", "token_uncached_admit"))
    rows.append(Row("session token admit, cached (100k keys)", ns(tok), peer("own API-key admit", ns(key)),
                    div(key, tok), "token <= 1.2x key", judge(lambda: tok <= 1.2 * key, tok, key)))
    rows.append(Row("session token admit, uncached (EdDSA verify)", ns(unc), target="<= 60 us",
                    met=judge(lambda: unc <= 60e3, unc)))
    ver, floor = c("token_verify_uncached"), c("token_ed25519_dalek_floor")
    rows.append(Row("token verify, uncached, vs a bare Ed25519 verify", ns(ver),
                    peer("ed25519-dalek verify_strict", ns(floor)), div(floor, ver)))
    return rows


def http(inp):
    objs = inp.objects("http")
    h = first(objs, "http")
    au, un, ng, bad = (h.get(k) for k in ("authenticated_rps", "unauthenticated_rps", "nginx_rps", "authenticated_non_2xx"))
    rows = [Row("HTTP authenticated GET /v1/models, req/s" + (f" ({bad} non-2xx)" if bad else ""), num(au),
                peer("nginx return 200", num(ng)), div(au, ng), ">= 1.0x",
                judge(lambda: au / ng >= 1.0 and not bad, au, ng)),
            Row("HTTP key check cost vs the agent's unauthenticated route", None if not (au and un) else
                f"{(1 - au / un) * 100:.1f}% ({num(au)} req/s)",
                peer(f"agent {h.get('unauthenticated_listener', '')} /healthz".replace("  ", " "), num(un)),
                div(au, un), "cost <= 5%", judge(lambda: 1 - au / un <= 0.05, au, un))]
    # The same two comparisons by the server's CPU per request (steadier than req/s with the client near
    # saturation on the other core); reference rows: the targets above are stated in req/s.
    cng, cun, cau = (h.get(k) for k in ("nginx_cpu_us", "unauthenticated_cpu_us", "authenticated_cpu_us"))
    if cau:
        rows += [Row("HTTP server CPU per authenticated GET /v1/models", f"{cau:.2f} us",
                     peer("nginx return 200", f"{cng:.2f} us"), div(cng, cau)),
                 Row("HTTP key check CPU vs the agent's unauthenticated route", f"{(cau / cun - 1) * 100:+.1f}% ({cau:.2f} us)",
                     peer("agent /healthz", f"{cun:.2f} us"), div(cun, cau))]
    # The small authenticated upload (item 2's second half): the agent forwards it to an upstream that answers at
    # once (nginx); the peer is nginx answering the same POST itself, and for reference nginx proxying it.
    up, upn, upp, upbad = (h.get(k) for k in ("upload_rps", "upload_nginx_rps", "upload_nginx_proxy_rps", "upload_non_2xx"))
    if up:
        secs = h.get("upload_seconds", 0.1)
        rows += [Row(f"HTTP small authenticated upload ({secs:g} s WAV) via an upstream, req/s"
                     + (f" ({upbad} non-2xx)" if upbad else ""), num(up),
                     peer("nginx return 200, same POST", num(upn)), div(up, upn), ">= 1.0x",
                     judge(lambda: up / upn >= 1.0 and not upbad, up, upn)),
                 Row("HTTP small upload vs nginx proxying it to the same upstream", num(up),
                     peer("nginx proxy_pass", num(upp)), div(up, upp))]
    revs = [o for o in objs if o.get("bench") == "revocation"]
    for i, r in enumerate(revs or [{}]):
        mode = r.get("mode") or ("sighup" if i == 0 else "poll")  # run_all.sh runs SIGHUP first, then poll
        ref, clo = r.get("refusal", {}).get("p99_ms"), r.get("close", {}).get("p99_ms")
        label = {"sighup": "write + SIGHUP", "poll": "file poll only"}.get(mode, mode)
        missed = r.get("missed", 0)
        rows.append(Row(f"revocation ({label}): refusal / stream close p99" + (f", {missed} missed" if missed else ""),
                        None if ref is None or clo is None else f"{ref:.0f} / {clo:.0f} ms",
                        target="p99 <= 1 s, none missed", met=judge(lambda: max(ref, clo) <= 1000 and not missed, ref, clo)))
    s = first(objs, "streams")
    err = s.get("error_pct")
    shape = f" ({s['streams']} streams, {s['keys']} keys, {s['duration_s']:.0f} s)" if err is not None else ""
    rows.append(Row(f"tier accounting: charged vs allowance{shape}", None if err is None else
                    f"{s.get('charged_gpu_s', 0):.2f} GPU-s ({err:+.2f}%)",
                    peer("allowance", num(s.get("allowance_gpu_s"), " GPU-s", 2)), None, "within +-1%",
                    judge(lambda: abs(err) <= 1.0, err), no_ratio=True))
    return rows


def tls(inp):
    t = first(inp.objects("tls"), "tls")
    g = t.get
    an, nn, ar, nr, at, nt, ap = (g(k) for k in ("agent_new_per_s", "nginx_new_per_s", "agent_reuse_per_s",
                                                  "nginx_reuse_per_s", "agent_tls_rps", "nginx_tls_rps", "agent_plain_rps"))
    return [
        Row("TLS 1.3 full handshakes/s (ECDSA P-256)", num(an), peer("nginx", num(nn)), div(an, nn), ">= 1.0x",
            judge(lambda: an / nn >= 1.0, an, nn)),
        Row("TLS 1.3 resumed handshakes/s", num(ar), peer("nginx", num(nr)), div(ar, nr)),
        Row("TLS keep-alive authenticated req/s", num(at), peer("nginx TLS return 200", num(nt)), div(at, nt)),
        Row("TLS cost vs the agent's own plaintext", None if not (at and ap) else f"{(1 - at / ap) * 100:.1f}% "
            f"({num(at)} req/s)", peer("agent plaintext", num(ap)), div(at, ap), "cost <= 10%",
            judge(lambda: 1 - at / ap <= 0.10, at, ap)),
    ]


def redis(inp):
    table = first(inp.objects("redis"), "redis").get("ns_per_admission", {})
    pick = lambda sub: next((v for k, v in table.items() if sub in k), None)  # noqa: E731
    lim = pick("limitador redis (AsyncRedisStorage)")
    rows = []
    for label, sub, targeted in (
            ("Redis leased, budget never runs out", "leased (budget never runs out)", True),
            ("Redis leased, one key at half its rate", "leased (one key asking half its rate)", True),
            ("Redis leased, one key at twice its rate", "leased (one key asking twice its rate)", False),
            ("Redis exact (one Lua round trip)", "infergate redis exact", False)):
        ours = pick(sub)
        r = div(lim, ours)
        rows.append(Row(f"{label}, ns per admission", ns(ours), peer("limitador AsyncRedisStorage", ns(lim)), r,
                        "<= 10 us and >= 15x" if targeted else "-",
                        judge(lambda: ours <= 10e3 and r >= 15, ours, r) if targeted else None))
    return rows


def whisper(inp):
    objs = [o for o in inp.objects("whisper") if o.get("file") not in (None, "short_total")]
    get = lambda o, *ks: next((o[k] for k in ks if is_num(o.get(k))), None)  # noqa: E731

    def by_file(pred, words):
        return {o["file"]: (get(o, "audio_seconds", "audio_s"), get(o, "median_seconds", "median_s")) for o in objs
                if pred(o) and bool(o.get("word_timestamps")) == words}

    def rt(d, files):
        total = sum(d[f][1] or 0 for f in files)
        return sum(d[f][0] or 0 for f in files) / total if files and total else None

    rows = []
    for words, ct, targeted in ((False, "float32", True), (True, "float32", True), (False, "int8", False)):
        ours = by_file(lambda o: o.get("engine") == "infergate", words)
        fw = by_file(lambda o: o.get("impl") == "faster-whisper" and o.get("compute_type") == ct, words)
        files = sorted(set(ours) & set(fw))
        a, b = rt(ours, files), rt(fw, files)
        r = div(a, b)
        rows.append(Row(f"Whisper tiny.en, 1 core, word times {'on' if words else 'off'}{'' if targeted else ', vs int8'}"
                        f" (x real time, {len(files)} file{'' if len(files) == 1 else 's'})", num(a, "x", 1), peer(f"faster-whisper {ct}", num(b, "x", 1)), r,
                        ">= 1.0x" if targeted else "-", judge(lambda: r >= 1.0, r) if targeted else None))
    return rows


def speaker(inp):
    """speaker.sh's closing table: | name | ms | <rt>x | ... | (rt per core = audio seconds / compute seconds); its
    headline lines when the table is missing; criterion's embed_5s (one 5 s utterance) when infergate's is."""
    text = inp.log("speaker") or ""
    table = [(m[1], float(m[2])) for m in re.finditer(r"^\| *([^|]+?) *\| *[\d.]+ *\| *([\d.]+)x *\|", text, re.M)]
    pick = lambda want, avoid="^$": next((rt for name, rt in table if re.search(want, name, re.I)  # noqa: E731
                                          and not re.search(avoid, name, re.I)), None)
    line = lambda pat: next((float(m[1]) for m in re.finditer(pat, text)), None)  # noqa: E731
    ours = pick(r"infergate.*criterion") or pick(r"infergate") or line(r"speaker cpu \(wall\):.*?([\d.]+)x real time")
    theirs = pick(r"resemblyzer", r"forward only") or line(r"speaker peer \(.*?([\d.]+)x real time")
    forward = pick(r"resemblyzer.*forward only") or line(r"speaker peer forward only \(.*?([\d.]+)x real time")
    ours_cell = num(ours, "x", 0)
    if ours is None:  # the encoder's criterion bench: one 5 s utterance per iteration
        t = inp.crit("speaker", "speaker_cpu", "embed_5s")
        if t:
            ours = 5e9 / t
            ours_cell = f"{ours:.0f}x (criterion embed_5s, {when(max(inp.crit_used['speaker']))})"
    return [Row("speaker encoder, 5 s utterance, 1 core (x real time)", ours_cell,
                peer("Resemblyzer embed_utterance (PyTorch CPU)", num(theirs, "x", 0)), div(ours, theirs),
                ">= 50x real time", judge(lambda: ours >= 50, ours)),
            Row("speaker encoder vs Resemblyzer's LSTM alone (mel precomputed)", ours_cell,
                peer("Resemblyzer forward only", num(forward, "x", 0)), div(ours, forward))]


def redaction(inp):
    systems = first(inp.objects("redaction"), "redaction").get("systems", {})
    ig, pf = systems.get("infergate-full", {}), systems.get("presidio-full", {})
    ip, pp = systems.get("infergate-patterns", {}), systems.get("presidio-patterns", {})
    f1, pf1 = ig.get("f1"), pf.get("f1")
    cc, ssn = ig.get("credit_card_recall"), ig.get("us_ssn_recall")
    pcc, pssn = pf.get("credit_card_recall"), pf.get("us_ssn_recall")
    both = lambda a, b: None if a is None or b is None else f"{a:.3f} / {b:.3f}"  # noqa: E731
    k, pk = ig.get("kchars_per_s"), pf.get("kchars_per_s")
    kp, ppk = ip.get("kchars_per_s"), pp.get("kchars_per_s")
    return [
        Row("redaction word F1, patterns + NER (held-out half)", num(f1, nd=3), peer("Presidio full", num(pf1, nd=3)),
            div(f1, pf1), "F1 >= 0.92", judge(lambda: f1 >= 0.92, f1)),
        Row("redaction card / SSN recall", both(cc, ssn), peer("Presidio full", both(pcc, pssn)), None, ">= 0.98",
            judge(lambda: min(cc, ssn) >= 0.98, cc, ssn), no_ratio=True),
        Row("redaction speed, patterns + NER, kchars/s (1 core)", num(k, nd=1), peer("Presidio full", num(pk, nd=1)),
            div(k, pk), ">= 5x", judge(lambda: k / pk >= 5, k, pk)),
        Row("redaction speed, patterns only, kchars/s (1 core)", num(kp, nd=1),
            peer("Presidio patterns", num(ppk, nd=1)), div(kp, ppk)),
    ]


def operator(inp):
    runs = {o["policies"]: o for o in inp.objects("operator") if is_num(o.get("policies"))}
    rows = []
    for n in sorted(set(runs) | {10000}):
        o = runs.get(n, {})
        sec, mib = o.get("seconds"), o.get("peak_rss_mib")
        sec_cell = ("did not converge" if o and sec is None else num(sec, " s", 1))
        if n == 10000:
            rows.append(Row("operator cold start, 10,000 policies: seconds to converge", sec_cell, target="<= 30 s",
                            met=False if o and sec is None else judge(lambda: sec <= 30, sec)))
            rows.append(Row("operator cold start, 10,000 policies: peak RSS", num(mib, " MiB", 1), target="<= 64 MiB",
                            met=judge(lambda: mib <= 64, mib)))
        else:
            rows.append(Row(f"operator cold start, {n:,} policies: seconds, peak RSS",
                            None if not o else f"{sec_cell}, {num(mib, ' MiB', 1)}"))
    return rows


def load_rows(inp, section):
    """load.sh's RESULT lines ({"bench": "load"|"soak", ...}, tests/bench/load.py report())."""
    rows = []
    for o in inp.objects(section):
        bench = o.get("bench")
        if bench not in ("load", "soak"):
            continue
        ends = o.get("unintended")
        n = None if ends is None else sum(ends.values())
        rows.append(Row(f"{bench}: unintended stream ends ({o.get('streams', '?')} streams, {o.get('window_s', 0):.0f} s"
                        f", verdict {o.get('verdict', '?')})", num(n), target="= 0", met=judge(lambda: n == 0, n)))
        if bench == "load":
            rev = o.get("revocation") or {}
            close = rev.get("close") or {}
            p99, mx = close.get("p99_ms"), close.get("max_ms")
            rows.append(Row("load: revoked key's open streams closed", None if p99 is None else
                            f"p99 {p99:.0f} ms, max {mx:.0f} ms ({rev.get('closed')}/{rev.get('open_streams')})",
                            target="all, each <= 1 s", met=judge(lambda: bool(rev.get("within_1s")) and not
                                                                  rev.get("not_closed") and rev.get("closed", 0) >=
                                                                  rev.get("open_streams", 0), p99)))
            acks = [(d, (o.get("doors", {}).get(d, {}).get("ack") or {}).get("p99_ms")) for d in ("ws", "grpc")]
            known = [(d, v) for d, v in acks if v is not None]
            doors = f" ({' / '.join(d for d, _ in known)})" if known else ""
            rows.append(Row(f"load: chunk-to-ack p99{doors}",
                            " / ".join(f"{v:,.0f}" for _, v in known) + " ms" if known else None))
        else:
            sk = o.get("soak") or {}
            rss = sk.get("rss_mib") or {}
            slope = sk.get("slope_mib_per_h")
            rows.append(Row(f"soak: agent RSS over the run ({sk.get('reloads', '?')} config reloads)",
                            None if slope is None else f"{slope:+.2f} MiB/h ({rss.get('start')} to {rss.get('end')} MiB)",
                            target="no growth", met=judge(lambda: not sk.get("growth"), slope)))
    if not rows:
        rows = [Row(f"{section}: unintended stream ends", None, target="= 0")]
        if section == "load":
            rows += [Row("load: revoked key's open streams closed", None, target="all, each <= 1 s"),
                     Row("load: chunk-to-ack p99", None)]
        else:
            rows.append(Row("soak: agent RSS over the run", None, target="no growth"))
    return rows


def load(inp):
    return load_rows(inp, "load")


def soak(inp):
    return load_rows(inp, "soak")


SECTION_ROWS = {"admission": admission, "http": http, "tls": tls, "redis": redis, "whisper": whisper,
                "speaker": speaker, "redaction": redaction, "operator": operator, "load": load, "soak": soak}


# ---------------------------------------------------------------------------------------------------------- output


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=ROOT,
                              env={**os.environ, "LC_ALL": "C"}).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model():
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def commit():
    c = sh("git", "rev-parse", "--short=12", "HEAD") or "unknown"
    return c + (" + uncommitted changes" if sh("git", "status", "--porcelain", "--untracked-files=no") else "")


def header(args, sections):
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()
    lines = ["Generated by `bash tests/bench/all.sh --write-docs` (tests/bench/report.py); do not edit between the "
             "`bench:summary` markers. The sections after this block are written by hand.", ""]
    if args.dry_run:
        lines.append(f"**Dry run** rendered {when(now)}: nothing was benchmarked; the numbers are whatever results "
                     "were already on disk (their dates are under the table).")
    else:
        lines.append(f"Run {when(args.started) if args.started else '?'} to {when(now)}.")
    lines.append(f"Machine: `{platform.machine()}`, {cpu_model()}, {ncpu} CPUs (nproc); load average (1/5/15 min) "
                 f"{args.load_start or '?'} at start, {loadavg()} at end; commit `{commit()}`; sections: "
                 f"{', '.join(sections)}" + (f"; knobs: `{args.knobs.strip()}`" if (args.knobs or "").strip() else "") + ".")
    return "\n".join(lines)


def table(rows):
    head = ["benchmark", "infergate", "peer", "ratio", "target", "met?"]
    body = [[r.name, r.ours if r.ours is not None else "n/a", r.peer,
             "-" if r.peer == "-" or r.no_ratio else ratio_cell(r.ratio),
             r.target, "-" if r.target == "-" else "?" if r.met is None else "yes" if r.met else "**no**"]
            for r in rows]
    body = [[c.replace("|", "\\|") for c in row] for row in body]
    width = [max(len(x) for x in col) for col in zip(head, *body)]
    right = {1, 3}
    fmt = lambda cells: "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                                          for i, (c, w) in enumerate(zip(cells, width))) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(width)) + "|"
    return "\n".join([fmt(head), rule] + [fmt(b) for b in body])


def sources(inp, sections):
    out = []
    for s in sections:
        st = inp.status(s) or {}
        crit = inp.crit_used.get(s)
        log = inp.logs / f"{s}.log"
        if st.get("skipped"):
            text = f"skipped: {st['skipped']}"
        elif st:
            text = (f"`{st.get('command', '?')}`: exit {st.get('rc', '?')}, {st.get('seconds', 0):.0f} s, ended "
                    f"{when(st['ended']) if st.get('ended') else '?'}")
        elif log.is_file():
            text = f"log dated {when(log.stat().st_mtime)} (no status file)"
        else:
            text = "no all.sh log"
        if crit:
            text += f"; criterion files dated {when(min(crit))} to {when(max(crit))}"
            if s in inp.stale:
                text += " (**some predate this run**: a bench or scenario it did not run)"
        out.append(f"- `{s}`: {text}")
    return "\n".join(out)


def raw_results(inp, sections):
    out = []
    for s in sections:
        lines = [ln.strip() for ln in (inp.log(s) or "").splitlines() if ln.strip().startswith(("RESULT ", "{"))]
        if lines:
            out += [f"### {s}", "", "```", *lines[:60], "```", ""]
    return "\n".join(out)


def splice(path: Path, block: str):
    text = path.read_text()
    i, j = text.find(START_MARK), text.find(END_MARK)
    if i < 0 or j < i:
        raise SystemExit(f"report.py: {path} has no {START_MARK} ... {END_MARK} block")
    path.write_text(text[:i + len(START_MARK)] + "\n" + block.strip("\n") + "\n" + text[j:])


def render(args):
    sections = [s for s in (args.sections or " ".join(SECTIONS)).split() if s in SECTION_ROWS]
    inp = Inputs(Path(args.logs), Path(args.criterion))
    rows = [row for s in sections for row in SECTION_ROWS[s](inp)]
    summary = "\n\n".join([header(args, sections), table(rows), RATIO_NOTE, "Sources:\n\n" + sources(inp, sections)])
    raw = raw_results(inp, sections)
    report = "# infergate benchmarks: summary\n\n" + summary + "\n" + (
        "\n## Raw results (RESULT and JSON lines of each section's log)\n\n" + raw if raw else "")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
    if args.docs:
        splice(Path(args.docs), summary)
    return summary, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", default=str(ROOT / "target/bench/logs"))
    ap.add_argument("--criterion", default=str(ROOT / "target/criterion"))
    ap.add_argument("--sections", help="space-separated, of: " + " ".join(SECTIONS + ["soak"]))
    ap.add_argument("--out", help="write the report (markdown) here")
    ap.add_argument("--docs", help=f"replace the block between {START_MARK} and {END_MARK} in this file")
    ap.add_argument("--started", type=float, help="run start, seconds since the epoch (for the header)")
    ap.add_argument("--load-start", help="/proc/loadavg's first three fields at the start of the run")
    ap.add_argument("--knobs", help="the BENCH_* settings of the run, for the header")
    ap.add_argument("--dry-run", action="store_true", help="say in the header that nothing was benchmarked now")
    args = ap.parse_args(argv)
    summary, _ = render(args)
    print(summary)
    if args.out:
        print(f"\nreport: {args.out}" + (f"; docs block replaced in {args.docs}" if args.docs else ""))


if __name__ == "__main__":
    sys.exit(main())
