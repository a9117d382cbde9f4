#!/usr/bin/env python3
"""infergate load and soak benchmarks (issue 15): real-time WebSocket and gRPC streams against one agent.

One command runs everything (fake upstream, standalone agent pinned to half the cores, this generator to the other half):

    bash tests/bench/load.sh         # load: 500 streams (WebSocket + gRPC), 60 s, one revocation at t=30 s
    bash tests/bench/load.sh soak    # soak: 100 streams, 30 min, a config reload every 10 s, RSS every 10 s
    LOAD_STREAMS=40 LOAD_SECONDS=15 LOAD_REVOKE_AT=7 BENCH_NO_BUILD=1 bash tests/bench/load.sh        # trial
    SOAK_SECONDS=60 SOAK_STREAMS=20 BENCH_NO_BUILD=1 bash tests/bench/load.sh soak                   # trial

Subcommands (load.sh calls them): ``manifest`` writes the manifest (3 tiers, 50 keys); ``load`` and ``soak``
drive an agent that is already running (``--agent-pid`` for /proc and SIGHUP, its addresses, its ``--keys-out``).

The key mix (``load``): tier ``generous`` (limits never reached: 31 keys ``gen-*`` and ``victim-0``), tier
``standard`` (4 streams per key: ``std-*`` keys run 3 streams each, ``cap-*`` keys run 6, so 2 per cap key are
refused with ``stream_cap`` on purpose and retry), tier ``budget`` (0.6 GPU-s/min, burst 1 GPU-s against 0.1
GPU-s per audio second: the ``budget-*`` streams run out and get ``rate_limited`` on purpose, and retry). At
``--revoke-at`` the key of ``victim-0`` (streams on both doors) is revoked by a manifest edit + SIGHUP; the time
from the rename to each of its streams' close is measured. Every stream end is classified by its refusal code:
expected (``normal`` end after ``end``; ``key_revoked`` for the victim after the revocation; ``rate_limited`` for
budget keys; ``stream_cap`` for cap keys) or unintended (anything else), and any unintended end, a revoked stream
not closed within 1 s, fails the run (exit 1). ``soak`` uses only keys that are never refused and alternates two
manifest variants (tier rate changed, a tier and a policy added/removed) every ``--reload-every`` s.

Prints human lines and one ``RESULT {json}`` line. Keys are never printed: only key ids (``kid_...``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_clients  # noqa: E402
from load_clients import Hist  # noqa: E402
from loadgen import key_id, load_keys, percentile, scrape_sum  # noqa: E402
from operator_scale import cpu_seconds  # noqa: E402

STREAM_CAP = 4  # tier standard: streams per key
EXPECTED = {
    "generous": {"normal"},
    "standard": {"normal"},
    "capped": {"normal", "stream_cap"},
    "budget": {"normal", "rate_limited"},
    "victim": {"key_revoked"},
}

# ------------------------------------------------------------------------------------------------------ manifest


def policies() -> list[tuple[str, str, str]]:
    """(name, tier, role) of the 50 policies, one key each."""
    out = [("victim-0", "generous", "victim")]
    out += [(f"gen-{i}", "generous", "generous") for i in range(31)]
    out += [(f"std-{i}", "standard", "standard") for i in range(12)]
    out += [(f"cap-{i}", "standard", "capped") for i in range(4)]
    out += [(f"budget-{i}", "budget", "budget") for i in range(2)]
    return out


def build_docs(upstream: str, model: str, variant: str = "a") -> list[dict]:
    def tier(name, rate, burst, streams):
        spec = {"gpuSecondsPerMinute": rate, "burstGpuSeconds": burst, "maxConcurrentStreams": streams,
                "queue": {"maxDepth": 0, "timeout": "1s"}}
        return {"apiVersion": "infergate.dev/v1alpha1", "kind": "RateTier", "metadata": {"name": name}, "spec": spec}

    def policy(name, tier_name):
        return {"apiVersion": "infergate.dev/v1alpha1", "kind": "ApiKeyPolicy",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"tier": tier_name, "environment": "test", "secretName": f"{name}-key",
                         "scopes": [{"endpoint": "transcribe"}]}}

    docs = [
        tier("generous", 1_000_000, 1_000_000, 64),
        # Variant b (soak): another refill rate, so every reload really changes the snapshot.
        tier("standard", 600 if variant == "a" else 540, 60, STREAM_CAP),
        tier("budget", 0.6, 1.0, 8),
        {"apiVersion": "infergate.dev/v1alpha1", "kind": "InferenceEndpoint",
         "metadata": {"name": "transcribe", "namespace": "default"},
         "spec": {"model": model, "features": ["transcribe"],
                  "backend": {"upstream": {"url": upstream, "allowPrivateNetwork": True}},
                  "cost": {"gpuSecondsPerAudioSecond": 0.1}}},
    ]
    docs += [policy(name, t) for name, t, _ in policies()]
    if variant == "b":
        docs += [tier("soak-extra", 60, 10, 2), policy("soak-extra-0", "soak-extra")]
    return docs


def manifest_text(upstream: str, model: str, variant: str = "a", docs: list | None = None) -> str:
    import yaml

    docs = docs if docs is not None else build_docs(upstream, model, variant)
    return "# Generated by tests/bench/load.py; rewritten by the soak (reloads) and the load (revocation).\n" + (
        yaml.safe_dump_all(docs, sort_keys=False)
    )


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_manifest(args) -> None:
    Path(args.out).write_text(manifest_text(args.upstream, args.model))
    print(f"wrote {args.out}: {len(build_docs(args.upstream, args.model))} objects, {len(policies())} keys")


# ---------------------------------------------------------------------------------------------------------- plan


def plan(keys: dict[str, str], n: int, mode: str, ramp: float, duration: float, grpc_share: float) -> list[dict]:
    """Client slots: which key, door, role, and when each starts and stops (seconds after t0)."""
    roles = {name: role for name, _, role in policies()}
    by_role: dict[str, list[str]] = {}
    for name, _, role in policies():
        by_role.setdefault(role, []).append(name)
    counts: list[tuple[str, int]] = []  # (policy, clients)
    if mode == "load":
        counts.append(("victim-0", max(4, min(10, n // 50))))
        counts += [(p, 2) for p in by_role["budget"]]
        counts += [(p, STREAM_CAP + 2) for p in by_role["capped"][: max(1, min(4, n // 125))]]
    counts += [(p, STREAM_CAP - 1) for p in by_role["standard"][: max(1, min(12, n // 40))]]
    rest = n - sum(c for _, c in counts)
    if rest < len(by_role["generous"]) // 4:
        raise SystemExit(f"load: {n} streams is too few for the key mix (need at least {n - rest + 8})")
    gen = by_role["generous"]
    counts += [(p, rest // len(gen) + (1 if i < rest % len(gen) else 0)) for i, p in enumerate(gen)]
    slots, rng = [], random.Random(0x10AD)
    for k, (name, clients) in enumerate(counts):
        key = keys[name]
        for j in range(clients):
            # Doors alternate within a key (the victim has both); the first door alternates between keys.
            door = "grpc" if (j + k) % 2 else "ws"
            slots.append({"policy": name, "role": roles[name], "key": key, "kid": key_id(key), "door": door})
    # --grpc-share other than 0.5: flip doors of generous slots until the share is met.
    want = round(grpc_share * len(slots))
    for s in slots:
        have = sum(1 for x in slots if x["door"] == "grpc")
        if have == want:
            break
        if s["role"] == "generous" and (s["door"] == "ws") == (have < want):
            s["door"] = "grpc" if have < want else "ws"
    rng.shuffle(slots)
    for i, s in enumerate(slots):
        s["slot"] = i
        s["start"] = ramp * i / len(slots)
        # Load: staggered ends, so every stream runs `duration` with all of them open in [ramp, ramp+duration].
        s["stop"] = s["start"] + ramp + duration if mode == "load" else ramp + duration
    return slots


# ------------------------------------------------------------------------------------------------- measurements


def cpu_s(pid: int) -> float:
    return cpu_seconds(pid) if pid else 0.0


def status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def scrape(admin: str) -> str:
    try:
        with urllib.request.urlopen(admin.rstrip("/") + "/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def metric(text: str, name: str, **labels) -> float:
    return scrape_sum(text, name, labels)


def ms(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(percentile(values, 50) * 1e3, 1),
            "p99_ms": round(percentile(values, 99) * 1e3, 1), "max_ms": round(max(values) * 1e3, 1)}


def gen_stubs(out: Path) -> None:
    from grpc_tools import protoc

    proto = Path(__file__).resolve().parents[2] / "agent" / "proto"
    out.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}",
                      str(proto / "infergate" / "v1" / "inference.proto")])
    if rc != 0:
        raise SystemExit("load: grpc_tools.protoc failed")


def wait_keys(path: Path, timeout: float = 30.0) -> dict[str, str]:
    want = {name for name, _, _ in policies()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            keys = {p.split("/")[-1]: k for p, k in load_keys(path) if p}
            if want <= keys.keys():
                return keys
        time.sleep(0.1)
    raise SystemExit(f"load: {path} does not hold keys for all {len(want)} policies")


# ---------------------------------------------------------------------------------------------------------- run


def run(args, mode: str) -> int:
    keys = wait_keys(Path(args.keys))
    stubs = Path(args.stubs_dir or Path(args.keys).parent / "stubs")
    gen_stubs(stubs)
    window = (args.ramp, args.ramp + args.duration)  # every stream open (load: the ramp staggers ends too)
    slots = plan(keys, args.streams, mode, args.ramp, args.duration, args.grpc_share)
    cfg = {
        "ws_url": args.ws_url, "grpc_addr": args.grpc_addr, "model": args.model, "chunk_ms": args.chunk_ms,
        "segment_s": args.segment_seconds, "stubs_dir": str(stubs), "ready_timeout": 10.0, "end_timeout": 15.0,
        "start_json": json.dumps({"type": "start", "model": args.model, "feature": "transcribe"}),
        "window": window, "life": tuple(args.life) if mode == "soak" else None,
        "profile_dir": os.environ.get("LOAD_PROFILE", ""),
    }
    ctx = mp.get_context("spawn")  # grpc does not survive fork
    out, go, t0_value = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=load_clients.worker_main, args=(cfg, slots[w :: args.procs], w, go, t0_value, out),
                         daemon=True) for w in range(args.procs)]
    for p in procs:
        p.start()
    for _ in procs:
        msg = out.get(timeout=120)
        if "crash" in msg:
            raise SystemExit(f"load: worker {msg['wid']} failed to start: {msg['crash']}")
    agent, ups = args.agent_pid, args.upstream_pid
    manifest = Path(args.manifest)
    # Manifests written during the run are prepared now, so the run's clock and CPU see only the rename.
    variants = {v: manifest_text(args.upstream, args.model, v) for v in "ab"} if mode == "soak" else {}
    if mode == "load":
        import yaml

        docs = list(yaml.safe_load_all(manifest.read_text()))
        for d in docs:
            if d and d.get("kind") == "ApiKeyPolicy" and d["metadata"]["name"] == "victim-0":
                d["spec"]["revocations"] = [{"keyId": key_id(keys["victim-0"]), "reason": "load benchmark",
                                             "requestedBy": "tests/bench/load.py"}]
        variants["revoked"] = manifest_text("", "", docs=docs)
    m0 = scrape(args.admin_url)
    st: dict = {"samples": [], "reloads": 0, "before": (status_kib(agent, "VmRSS"), cpu_s(agent))}
    t0 = time.monotonic() + 0.3
    t0_value.value = t0
    go.set()
    own0 = load_clients.cpu_self()

    # The timeline: (offset after t0, what).
    events = [(window[0], "window_start"), (window[1], "window_end")]
    sample_every = args.sample_every if mode == "soak" else 1.0
    events += [(t, "sample") for t in frange(0.0, window[1] + 1e-9, sample_every)]
    if mode == "load" and args.revoke_at is not None:
        events.append((args.ramp + args.revoke_at, "revoke"))
    mid = args.ramp + (args.revoke_at - 0.2 if mode == "load" and args.revoke_at is not None else args.duration / 2)
    events.append((mid, "scrape_mid"))
    if mode == "soak":
        events += [(t, "reload") for t in frange(args.reload_every, window[1] - 1.0, args.reload_every)]
    events.sort()
    for at, what in events:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.monotonic()
        if what == "sample":
            st["samples"].append((now - t0, status_kib(agent, "VmRSS")))
        elif what == "window_start":
            st["a"] = (now, cpu_s(agent), cpu_s(ups), status_kib(agent, "VmRSS"), scrape(args.admin_url))
        elif what == "window_end":
            st["b"] = (now, cpu_s(agent), cpu_s(ups), status_kib(agent, "VmRSS"), scrape(args.admin_url))
        elif what == "scrape_mid":
            st["mid"] = scrape(args.admin_url)
        elif what == "revoke":
            st["revoked_at"] = time.monotonic()  # the rename is the revocation; SIGHUP makes it immediate
            replace_file(manifest, variants["revoked"])
            os.kill(agent, signal.SIGHUP)
        elif what == "reload":
            st["reloads"] += 1
            replace_file(manifest, variants["b" if st["reloads"] % 2 else "a"])
            os.kill(agent, signal.SIGHUP)
    results = []
    for _ in procs:
        results.append(out.get(timeout=args.ramp + 120))
    for p in procs:
        p.join(timeout=10)
    st["after"] = (status_kib(agent, "VmRSS"), cpu_s(agent), status_kib(agent, "VmHWM"))
    crashes = [r["crash"] for r in results if "crash" in r]
    if crashes:
        failures = ["load generator worker crashed: " + "; ".join(crashes)]
        print("FAIL: " + failures[0], flush=True)
        print("RESULT " + json.dumps({"bench": mode, "streams": len(slots), "verdict": "FAIL", "failures": failures}))
        return 1
    return report(args, mode, slots, results, st, m0, load_clients.cpu_self() - own0)


def frange(start: float, stop: float, step: float):
    while start <= stop:
        yield start
        start += step


# ------------------------------------------------------------------------------------------------------- report


def by_reason(text: str, name: str) -> Counter:
    out: Counter = Counter()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in line else ""
            out[reason] += float(line.rsplit(" ", 1)[1])
    return out


def report(args, mode, slots, results, st, m0, own_cpu) -> int:
    streams = [s for r in results for s in r["streams"]]
    revoked_at = st.get("revoked_at")
    classes: Counter = Counter()
    unintended: Counter = Counter()
    revocation: list[float] = []
    not_closed = 0
    for s in streams:
        ok = s["outcome"] in EXPECTED[s["role"]]
        if s["role"] == "victim":
            if revoked_at is None:
                ok = s["outcome"] == "normal"
            elif s["outcome"] == "key_revoked" and (s["ended_at"] or 0) < revoked_at:
                ok = False  # refused before the revocation happened
            open_at_revocation = s["ready_at"] is not None and s["ready_at"] <= (revoked_at or 0)
            if revoked_at is not None and open_at_revocation and s["ended_at"] and s["ended_at"] >= revoked_at:
                if s["outcome"] == "key_revoked":
                    revocation.append(s["ended_at"] - revoked_at)
                else:
                    not_closed += 1
        label = f"{s['role']}:{s['outcome']}"
        (classes if ok else unintended)[label] += 1
    doors = {}
    for d in ("ws", "grpc"):
        acks = [a for r in results for a in r["doors"][d]["acks"]]
        slip = Hist()
        for r in results:
            slip.merge(Hist(r["doors"][d]["slip"]))
        mine = [s for s in streams if s["door"] == d]
        doors[d] = {
            "slots": sum(1 for s in slots if s["door"] == d),
            "attempts": len(mine),
            "admitted": sum(1 for s in mine if s["ready_at"] is not None),
            "chunks": sum(r["doors"][d]["chunks"] for r in results),
            "ack": ms(acks),
            "slip": {"p50_ms": round(slip.quantile(0.5) * 1e3, 1), "p99_ms": round(slip.quantile(0.99) * 1e3, 1),
                     "max_ms": round(slip.max * 1e3, 1), "over_100ms": slip.above(0.1)},
        }
    (ta, ca, ua, rss_a, ma), (tb, cb, ub, rss_b, mb) = st["a"], st["b"]
    wall = tb - ta
    worker_cpu = sum(r["cpu_window_s"] for r in results)
    mid = st.get("mid", "")
    (rss0, cpu0), (end_rss, cpu1, hwm) = st["before"], st["after"]
    closed = by_reason(scrape(args.admin_url), "infergate_streams_closed_total")
    closed.subtract(by_reason(m0, "infergate_streams_closed_total"))

    def delta(name, **labels):
        return round(metric(mb, name, **labels) - metric(ma, name, **labels), 4)

    backend_n = delta("infergate_backend_request_seconds_count")
    result = {
        "bench": mode,
        "streams": len(slots),
        "procs": args.procs,
        "window_s": round(wall, 2),
        "segment_s": args.segment_seconds,
        "chunk_ms": args.chunk_ms,
        "doors": doors,
        "expected": dict(sorted(classes.items())),
        "unintended": dict(sorted(unintended.items())),
        "agent": {
            "cpu_s": round(cb - ca, 2),
            "cpu_s_whole_run": round(cpu1 - cpu0, 2),
            "cpu_pct": round((cb - ca) / wall * 100, 1),
            "rss_mib": {"before": mib(rss0), "window_start": mib(rss_a), "window_end": mib(rss_b),
                        "end": mib(end_rss), "peak_vmhwm": mib(hwm)},
            "open_streams_mid": metric(mid, "infergate_open_streams") if mid else None,
            "config_swaps": delta("infergate_config_swaps_total"),
            "config_errors": round(metric(mb, "infergate_config_errors_total") - metric(m0, "infergate_config_errors_total"), 4),
            "config_keys": [metric(ma, "infergate_config_keys"), metric(mb, "infergate_config_keys")],
            "streams_closed": {k: round(v) for k, v in sorted(closed.items()) if v},
            "backend_calls": backend_n,
            "backend_mean_ms": round(delta("infergate_backend_request_seconds_sum") / backend_n * 1e3, 1) if backend_n else None,
        },
        "client": {"cpu_s": round(worker_cpu, 2), "cpu_pct": round(worker_cpu / wall * 100, 1),
                   "parent_cpu_s": round(own_cpu, 2)},
        "upstream": {"cpu_s": round(ub - ua, 2), "cpu_pct": round((ub - ua) / wall * 100, 1)},
    }
    # The client's core also runs the upstream: when it is nearly full or chunks leave late, the latencies are the
    # client's as much as the agent's (and the agent sees less than the nominal load).
    busy = (worker_cpu + own_cpu + ub - ua) / wall * 100
    worst_slip = max(v["slip"]["p99_ms"] for v in doors.values())
    result["client"]["bound"] = busy > 85 or worst_slip > 50
    failures = []
    if unintended:
        failures.append(f"{sum(unintended.values())} unintended stream ends")
    if mode == "load" and revoked_at is not None:
        n_victim = sum(1 for s in streams if s["role"] == "victim" and s["ready_at"] and s["ready_at"] <= revoked_at)
        result["revocation"] = {"open_streams": n_victim, "closed": len(revocation), "not_closed": not_closed,
                                "close": ms(revocation), "within_1s": bool(revocation) and max(revocation) <= 1.0}
        if not result["revocation"]["within_1s"] or not_closed or len(revocation) < n_victim:
            failures.append("revoked key's streams not all closed within 1 s")
    if mode == "soak":
        failures += soak_verdict(args, st, result)
    result["verdict"] = "FAIL" if failures else "PASS"
    result["failures"] = failures
    human(result, mode)
    print("RESULT " + json.dumps(result), flush=True)
    return 1 if failures else 0


def soak_verdict(args, st, result) -> list[str]:
    samples = st["samples"]
    warm = min(args.warmup, args.duration / 3)
    steady = [(t, k) for t, k in samples if t >= warm] or samples
    xs, ys = [t for t, _ in steady], [k / 1024 for _, k in steady]
    slope = statistics.linear_regression(xs, ys).slope * 3600 if len(steady) >= 3 else 0.0
    quarter = max(1, len(ys) // 4)
    rise = max(ys[-quarter:]) - max(ys[:quarter])
    result["soak"] = {
        "reloads": st["reloads"], "warmup_s": warm, "samples": len(samples),
        "rss_mib": {"start": round(ys[0], 1), "max": round(max(ys), 1), "end": round(ys[-1], 1)},
        "slope_mib_per_h": round(slope, 2), "last_vs_first_quarter_mib": round(rise, 2),
        "rss_series_mib": [[round(t), round(k / 1024, 1)] for t, k in samples],
    }
    growth = slope > args.max_slope and rise > 1.0
    result["soak"]["growth"] = growth
    failures = ["RSS grows" if growth else None]
    if result["agent"]["config_errors"]:
        failures.append("a reload was refused (config_errors_total grew)")
    if result["agent"]["config_swaps"] < st["reloads"] * 0.9 - 1:
        failures.append(f"{st['reloads']} reloads but {result['agent']['config_swaps']} config swaps")
    return [f for f in failures if f]


def human(r: dict, mode: str) -> None:
    a, c, u = r["agent"], r["client"], r["upstream"]
    print(f"\n{mode}: {r['streams']} streams ({r['doors']['ws']['slots']} WebSocket, {r['doors']['grpc']['slots']} gRPC) "
          f"in {r['procs']} client processes, window {r['window_s']} s, {r['chunk_ms']} ms chunks, segment {r['segment_s']} s")
    print(f"{'door':6} {'attempts':>8} {'admitted':>8} {'chunks':>8} {'acks':>6} {'ack p50':>8} {'ack p99':>8} {'ack max':>8}"
          f" {'slip p99':>8} {'slip max':>8} {'>100ms':>6}")
    for d, v in r["doors"].items():
        k, s = v["ack"], v["slip"]
        print(f"{d:6} {v['attempts']:>8} {v['admitted']:>8} {v['chunks']:>8} {k['n']:>6} {k.get('p50_ms', '-'):>8} "
              f"{k.get('p99_ms', '-'):>8} {k.get('max_ms', '-'):>8} {s['p99_ms']:>8} {s['max_ms']:>8} {s['over_100ms']:>6}")
    print(f"agent: {a['cpu_s']} CPU-s ({a['cpu_pct']}% of a core); RSS MiB {a['rss_mib']}; open streams mid-run "
          f"{a['open_streams_mid']}; config swaps {a['config_swaps']}, errors {a['config_errors']}; "
          f"backend calls {a['backend_calls']:.0f}, mean {a['backend_mean_ms']} ms")
    print(f"agent whole run (ramp and teardown too): {a['cpu_s_whole_run']} CPU-s; keys in config (start, end) "
          f"{a['config_keys']}; streams closed by reason (agent's count) {a['streams_closed']}")
    print(f"client: {c['cpu_s']} CPU-s ({c['cpu_pct']}%); upstream: {u['cpu_s']} CPU-s ({u['cpu_pct']}%)")
    if c["bound"]:
        print("WARNING: the client core is saturated or chunks left late (slip): the client, not the agent, limits this run")
    print(f"expected ends: {r['expected']}")
    print(f"UNINTENDED ends: {r['unintended']}" if r["unintended"] else "unintended ends: none")
    if "revocation" in r:
        v = r["revocation"]
        print(f"revocation: {v['closed']}/{v['open_streams']} open streams closed, {v['close']}, within 1 s: {v['within_1s']}")
    if "soak" in r:
        s = r["soak"]
        print(f"soak: {s['reloads']} reloads; RSS MiB {s['rss_mib']}; slope {s['slope_mib_per_h']} MiB/h; "
              f"last vs first quarter {s['last_vs_first_quarter_mib']} MiB; growth: {s['growth']}")
    print(("FAIL: " + "; ".join(r["failures"])) if r["failures"] else "PASS", flush=True)


# ------------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifest", help="write the load manifest (3 tiers, 50 keys)")
    m.add_argument("--out", required=True)
    m.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:18999/v1")
    m.add_argument("--model", default="whisper-load")
    m.set_defaults(func=cmd_manifest)

    def common(sp, streams, duration):
        sp.add_argument("--keys", required=True, help="the agent's --keys-out file")
        sp.add_argument("--manifest", required=True, help="the manifest the agent runs; rewritten in place")
        sp.add_argument("--upstream", required=True, help="the upstream URL in the manifest (soak rewrites it)")
        sp.add_argument("--model", default="whisper-load")
        sp.add_argument("--ws-url", required=True, help="e.g. ws://127.0.0.1:8080/v1/stream")
        sp.add_argument("--grpc-addr", required=True, help="e.g. 127.0.0.1:50051")
        sp.add_argument("--admin-url", required=True, help="e.g. http://127.0.0.1:9090")
        sp.add_argument("--agent-pid", type=int, required=True)
        sp.add_argument("--upstream-pid", type=int, default=0)
        sp.add_argument("--streams", type=int, default=streams)
        sp.add_argument("--duration", type=float, default=duration, help="seconds with every stream open")
        sp.add_argument("--ramp", type=float, default=5.0, help="seconds over which streams open (and end)")
        sp.add_argument("--procs", type=int, default=2, help="client processes (on the client's CPUs)")
        sp.add_argument("--grpc-share", type=float, default=0.5)
        sp.add_argument("--chunk-ms", type=int, default=100)
        sp.add_argument("--segment-seconds", type=float, default=5.0, help="the agent's --segment-seconds")
        sp.add_argument("--stubs-dir", default="", help="where to generate the gRPC stubs (default: next to --keys)")

    lo = sub.add_parser("load", help="N streams with a mix of keys and one revocation in the middle")
    common(lo, 500, 60.0)
    lo.add_argument("--revoke-at", type=float, default=30.0, help="seconds into the window")
    lo.set_defaults(func=lambda a: sys.exit(run(a, "load")))
    so = sub.add_parser("soak", help="N streams with a config reload every few seconds; RSS over time")
    common(so, 100, 1800.0)
    so.add_argument("--reload-every", type=float, default=10.0)
    so.add_argument("--sample-every", type=float, default=10.0)
    so.add_argument("--warmup", type=float, default=60.0, help="RSS samples before this are not judged")
    so.add_argument("--life", type=float, nargs=2, default=[30.0, 120.0], help="stream length range, seconds")
    so.add_argument("--max-slope", type=float, default=5.0, help="MiB/h of RSS slope that counts as growth")
    so.set_defaults(func=lambda a: sys.exit(run(a, "soak")))
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
