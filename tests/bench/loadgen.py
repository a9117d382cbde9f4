#!/usr/bin/env python3
"""infergate load generator and benchmark helpers (not a test: nothing here asserts a timing).

Subcommands:

- ``manifest``: writes a standalone manifest for the benches: one tier ``bench`` (the tier under load), one tier
  ``unmetered`` (limits so high they never refuse: the HTTP bench measures the cost of *checking* limits), an
  endpoint per model, and ``--policies`` policies per tier.
- ``upstream``: a tiny OpenAI-compatible transcription server (answers ``{"text": ""}``), so the agent has a
  backend to forward to. It never invents a transcript.
- ``streams``: N concurrent WebSocket streams against one tier for ``--duration`` seconds, each sending real-time
  PCM16 noise in fixed chunks; reconnects after a rate-limit close. Reports the GPU-seconds the agent charged
  (``infergate_gpu_seconds_charged_total`` for the tier, admin ``/metrics``) against the tier's allowance
  ``keys x (rate x duration + burst)``.
- ``revocation``: many trials of "revoke a key in the manifest -> (a) first refused request, (b) open WebSocket
  stream closed"; reports p50/p99 of both.

Every subcommand prints human lines and one final ``RESULT {json}`` line that ``run_all.sh`` collects. Keys are
never printed: only key ids (``kid_...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

KEY_RE = re.compile(r"sk_(?:live|test)_[A-Za-z0-9]{49}")
SAMPLE_RATE = 16_000
SEED = 0x1F6EA7E5

# ---------------------------------------------------------------------------------------------------------- keys


def key_id(key: str) -> str:
    """The non-secret id the agent logs: ``kid_`` + the first 8 bytes of SHA-256 in hex."""
    return "kid_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def load_keys(path: Path) -> list[tuple[str | None, str]]:
    """(policy, key) pairs from a ``--keys-out`` file.

    The agent writes JSON ``{"namespace/name": {"keyId": ..., "key": ...}, ...}``. Any other layout falls back
    to text: each key with the last ``namespace/name`` (or bare name) before it on its line, if any.
    """
    text = path.read_text()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        out = []
        for policy, entry in doc.items():
            key = entry.get("key") if isinstance(entry, dict) else entry
            if isinstance(key, str) and KEY_RE.fullmatch(key):
                out.append((policy, key))
        return out
    out = []
    for line in text.splitlines():
        for k in KEY_RE.findall(line):
            names = re.findall(r"[a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*", line[: line.index(k)])
            out.append((names[-1] if names else None, k))
    return out


def keys_for(path: Path, prefix: str) -> list[tuple[str | None, str]]:
    """Keys of policies whose name starts with ``prefix`` (all keys if the file names no policies)."""
    pairs = load_keys(path)
    named = [(p, k) for p, k in pairs if p is not None and p.split("/")[-1].startswith(prefix)]
    return named if named else [(p, k) for p, k in pairs if p is None]


async def wait_for_keys(path: Path, prefix: str, want: int, timeout: float = 30.0) -> list[tuple[str | None, str]]:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            pairs = keys_for(path, prefix)
            if len(pairs) >= want:
                return pairs
        if time.monotonic() > deadline:
            raise SystemExit(f"loadgen: {path} has no {want} keys for policies '{prefix}*' after {timeout:.0f} s")
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------------------------------------ manifest


def endpoint(name: str, model: str, upstream: str, cost: float) -> dict:
    """A transcription endpoint in namespace `default` that forwards to `upstream` (on loopback, so private)."""
    return {
        "apiVersion": "infergate.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": model,
            "features": ["transcribe"],
            "backend": {"upstream": {"url": upstream, "allowPrivateNetwork": True}},
            "cost": {"gpuSecondsPerAudioSecond": cost},
        },
    }


def cmd_manifest(args) -> None:
    docs = [
        {
            "apiVersion": "infergate.dev/v1alpha1",
            "kind": "RateTier",
            "metadata": {"name": "bench"},
            "spec": {
                "gpuSecondsPerMinute": args.rate_per_minute,
                "burstGpuSeconds": args.burst,
                "maxConcurrentStreams": args.max_streams,
                "queue": {"maxDepth": 0, "timeout": "1s"},
            },
        },
        {
            "apiVersion": "infergate.dev/v1alpha1",
            "kind": "RateTier",
            "metadata": {"name": "unmetered"},
            "spec": {
                "gpuSecondsPerMinute": 1_000_000,
                "burstGpuSeconds": 1_000_000,
                "maxConcurrentStreams": 100,
                "queue": {"maxDepth": 0, "timeout": "1s"},
            },
        },
        endpoint("transcribe", args.model, args.upstream, args.cost),
    ]
    groups = [("bench", "load", "transcribe"), ("unmetered", "http", "transcribe"), ("unmetered", "revoke", "transcribe")]
    if args.upload_upstream:
        # The upload bench's own endpoint and key: its upstream is a server that answers at once (nginx), so the
        # bench measures the agent's door, not a backend; its own model keeps the other keys' model lists as they were.
        docs.append(endpoint("upload", args.upload_model, args.upload_upstream, args.cost))
        groups.append(("unmetered", "upload", "upload"))
    for tier, prefix, scope in groups:
        count = args.revoke_policies if prefix == "revoke" else args.policies if prefix == "load" else 1
        for i in range(count):
            docs.append(
                {
                    "apiVersion": "infergate.dev/v1alpha1",
                    "kind": "ApiKeyPolicy",
                    "metadata": {"name": f"{prefix}-{i}", "namespace": "default"},
                    "spec": {
                        "tier": tier,
                        "environment": "test",
                        "secretName": f"{prefix}-{i}-key",
                        "scopes": [{"endpoint": scope}],
                    },
                }
            )
    import yaml

    text = "# Generated by tests/bench/loadgen.py manifest; edited by the revocation bench.\n" + yaml.safe_dump_all(
        docs, sort_keys=False
    )
    Path(args.out).write_text(text)
    print(f"wrote {args.out}: {len(docs)} objects")


# ------------------------------------------------------------------------------------------------------ upstream


async def serve_upstream(host: str, port: int) -> None:
    """Minimal HTTP/1.1 keep-alive server: enough for an OpenAI-compatible client posting multipart audio."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    await reader.readexactly(int(headers.get("content-length", "0")))
                if path.startswith("/v1/models"):
                    body = json.dumps({"object": "list", "data": []}).encode()
                else:
                    body = json.dumps({"text": ""}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def cmd_upstream(args) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_upstream(args.host, args.port))


# ------------------------------------------------------------------------------------------------------- metrics


def scrape_sum(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        sample = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(sample.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


async def metric(admin: str, name: str, labels: dict[str, str]) -> float:
    import httpx

    async with httpx.AsyncClient(timeout=5.0) as client:
        r = await client.get(admin.rstrip("/") + "/metrics")
        r.raise_for_status()
        return scrape_sum(r.text, name, labels)


# ------------------------------------------------------------------------------------------------------- streams


def noise_chunk(ms: int, rng: random.Random) -> bytes:
    """PCM16 little-endian mono 16 kHz, low-level noise (speech-free, but not digital silence)."""
    n = SAMPLE_RATE * ms // 1000
    return b"".join(int(rng.gauss(0, 300)).to_bytes(2, "little", signed=True) for _ in range(n))


@dataclass
class StreamStats:
    connects: int = 0
    audio_seconds_sent: float = 0.0
    closes: dict[str, int] = field(default_factory=dict)
    refused_connects: int = 0


def start_message(template: str, model: str) -> str | None:
    if not template:
        return None
    return template.replace("{model}", model)


async def wait_ready(ws) -> None:
    """Waits for the agent's ``ready`` after ``start``; a refusal arrives as an error message and a close."""
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout=10)
        if isinstance(message, str):
            kind = json.loads(message).get("type")
            if kind == "ready":
                return
            if kind == "error":
                await ws.wait_closed()
                await ws.recv()  # raises ConnectionClosed with the close code


async def stream_worker(args, key: str, chunk: bytes, deadline: float, stats: StreamStats) -> None:
    import websockets

    chunk_seconds = len(chunk) / 2 / SAMPLE_RATE
    headers = {"Authorization": f"Bearer {key}"}

    def closed_with(code: str) -> None:
        stats.closes[code] = stats.closes.get(code, 0) + 1

    while time.monotonic() < deadline:
        try:
            async with websockets.connect(args.ws_url, additional_headers=headers, max_size=None, open_timeout=5) as ws:
                stats.connects += 1
                first = start_message(args.start_json, args.model)
                if first:
                    await ws.send(first)
                    await wait_ready(ws)

                async def drain() -> None:
                    with contextlib.suppress(Exception):
                        async for _ in ws:
                            pass

                reader = asyncio.create_task(drain())
                try:
                    # Real time: chunk k leaves at start + k x chunk length, whatever the send latency was.
                    start = time.monotonic()
                    k = 0
                    while time.monotonic() < deadline:
                        await ws.send(chunk)
                        stats.audio_seconds_sent += chunk_seconds
                        k += 1
                        delay = start + k * chunk_seconds - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    await ws.send(json.dumps({"type": "end"}))
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(reader), timeout=5.0)
                    closed_with(str(ws.close_code) if ws.close_code is not None else "open_at_end")
                finally:
                    reader.cancel()
        except websockets.ConnectionClosed as closed:
            # Rate-limit and stream-cap closes: come back shortly, like a well-behaved client.
            closed_with(str(closed.rcvd.code) if closed.rcvd else "1006")
            await asyncio.sleep(args.reconnect_delay)
        except websockets.InvalidStatus as refused:
            stats.refused_connects += 1
            closed_with("http_" + str(refused.response.status_code))
            await asyncio.sleep(args.reconnect_delay)
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as err:
            closed_with(type(err).__name__)
            await asyncio.sleep(args.reconnect_delay)


async def run_streams(args) -> dict:
    keys = await wait_for_keys(Path(args.keys), args.policy_prefix, args.keys_used)
    keys = keys[: args.keys_used]
    rng = random.Random(SEED)
    chunk = noise_chunk(args.chunk_ms, rng)
    labels = {"tier": args.tier}
    before = await metric(args.admin_url, "infergate_gpu_seconds_charged_total", labels)
    stats = StreamStats()
    start = time.monotonic()
    deadline = start + args.duration
    workers = [
        asyncio.create_task(stream_worker(args, keys[i % len(keys)][1], chunk, deadline, stats))
        for i in range(args.streams)
    ]
    await asyncio.gather(*workers)
    # Charges happen only while audio is sent: the window is start..deadline, not the teardown after it.
    elapsed = deadline - start
    await asyncio.sleep(args.settle_seconds)  # let the agent settle the last charges of closing streams
    after = await metric(args.admin_url, "infergate_gpu_seconds_charged_total", labels)
    charged = after - before
    per_key = args.rate_per_minute / 60.0 * elapsed + args.burst
    allowance = per_key * len(keys)
    demand = stats.audio_seconds_sent * args.cost
    result = {
        "bench": "streams",
        "streams": args.streams,
        "keys": len(keys),
        "tier": args.tier,
        "duration_s": round(elapsed, 3),
        "rate_gpu_s_per_min": args.rate_per_minute,
        "burst_gpu_s": args.burst,
        "charged_gpu_s": round(charged, 4),
        "allowance_gpu_s": round(allowance, 4),
        "ratio": round(charged / allowance, 5) if allowance else None,
        "error_pct": round((charged / allowance - 1) * 100, 3) if allowance else None,
        "offered_gpu_s": round(demand, 3),
        "connects": stats.connects,
        "refused_connects": stats.refused_connects,
        "closes": stats.closes,
    }
    print(
        f"streams: {args.streams} streams over {len(keys)} keys for {elapsed:.1f} s: charged {charged:.3f} GPU-s, "
        f"allowance {allowance:.3f} GPU-s (ratio {result['ratio']}), offered {demand:.2f} GPU-s, "
        f"{stats.connects} connects, closes {stats.closes}"
    )
    return result


def cmd_streams(args) -> None:
    result = asyncio.run(run_streams(args))
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------- revocation


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: with few trials p99 is the worst observed)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def revoked_manifest(path: Path, policy: str, kid: str) -> Path:
    """Writes the manifest with a revocation of ``kid`` added to ``policy`` next to it and returns that file; the
    caller moves it into place (one atomic change event) when its clock starts. At 10k policies parsing and
    dumping the YAML takes seconds, which are the benchmark's own cost, not the agent's."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    docs = list(yaml.load_all(path.read_text(), Loader=loader))
    name = policy.split("/")[-1]
    for d in docs:
        if d and d.get("kind") == "ApiKeyPolicy" and d["metadata"]["name"] == name:
            d["spec"].setdefault("revocations", []).append(
                {"keyId": kid, "reason": "revocation benchmark", "requestedBy": "tests/bench/loadgen.py"}
            )
            break
    else:
        raise SystemExit(f"loadgen: policy {policy} is not in {path}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.dump_all(docs, Dumper=dumper, sort_keys=False))
    return tmp


async def one_trial(args, policy: str, key: str, client) -> tuple[float | None, float | None]:
    import websockets

    headers = {"Authorization": f"Bearer {key}"}
    # The stream to be closed: open, and keep sending real-time audio so it is a live stream.
    ws = await websockets.connect(args.ws_url, additional_headers=headers, max_size=None, open_timeout=5)
    first = start_message(args.start_json, args.model)
    if first:
        await ws.send(first)
        await wait_ready(ws)
    chunk = noise_chunk(20, random.Random(SEED))
    closed_at: list[float] = []

    async def keep_streaming() -> None:
        try:
            while True:
                await ws.send(chunk)
                await asyncio.sleep(0.02)
        except websockets.ConnectionClosed:
            pass

    async def watch_close() -> None:
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
        closed_at.append(time.monotonic())

    sender = asyncio.create_task(keep_streaming())
    watcher = asyncio.create_task(watch_close())
    # The key must work before the change, or the trial measures nothing.
    r = await client.get(args.http_url.rstrip("/") + args.probe_path, headers=headers)
    if r.status_code >= 400:
        sender.cancel()
        watcher.cancel()
        await ws.close()
        raise SystemExit(f"loadgen: probe {args.probe_path} answered {r.status_code} before revocation: {r.text[:200]}")
    await asyncio.sleep(0.05)

    changed = revoked_manifest(Path(args.manifest), policy, key_id(key))
    t0 = time.monotonic()
    os.replace(changed, args.manifest)
    if args.agent_pid:
        os.kill(args.agent_pid, signal.SIGHUP)
    refused_at = None
    deadline = t0 + args.trial_timeout
    while time.monotonic() < deadline:
        r = await client.get(args.http_url.rstrip("/") + args.probe_path, headers=headers)
        if r.status_code in (401, 403):
            refused_at = time.monotonic()
            break
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(watcher), timeout=max(0.0, deadline - time.monotonic()))
    sender.cancel()
    watcher.cancel()
    with contextlib.suppress(Exception):
        await ws.close()
    refusal = refused_at - t0 if refused_at else None
    close = closed_at[0] - t0 if closed_at and closed_at[0] >= t0 else None
    return refusal, close


async def run_revocation(args) -> dict:
    import httpx

    pairs = await wait_for_keys(Path(args.keys), args.policy_prefix, 1)
    pairs = [(p, k) for p, k in pairs if p is not None]
    # Keys revoked by an earlier run are replaced in the file: skip by policy position, not by key.
    pairs = sorted(pairs, key=lambda pk: int(re.sub(r"\D", "", pk[0].split("-")[-1]) or 0))[args.skip : args.skip + args.trials]
    if not pairs:
        raise SystemExit(f"loadgen: {args.keys} does not say which policy each key belongs to; cannot revoke")
    refusals, closes, missed = [], [], 0
    async with httpx.AsyncClient(timeout=5.0, limits=httpx.Limits(max_keepalive_connections=4)) as client:
        for i, (policy, key) in enumerate(pairs):
            refusal, close = await one_trial(args, policy, key, client)
            if refusal is None or close is None:
                missed += 1
            if refusal is not None:
                refusals.append(refusal)
            if close is not None:
                closes.append(close)
            print(
                f"trial {i + 1:3d} {key_id(key)}: refusal "
                f"{'%.1f ms' % (refusal * 1e3) if refusal is not None else 'MISSED'}, close "
                f"{'%.1f ms' % (close * 1e3) if close is not None else 'MISSED'}",
                flush=True,
            )
            await asyncio.sleep(args.gap)

    def summary(values: list[float]) -> dict:
        if not values:
            return {"n": 0}
        return {
            "n": len(values),
            "p50_ms": round(percentile(values, 50) * 1e3, 2),
            "p99_ms": round(percentile(values, 99) * 1e3, 2),
            "max_ms": round(max(values) * 1e3, 2),
            "mean_ms": round(statistics.fmean(values) * 1e3, 2),
        }

    result = {"bench": "revocation", "mode": "sighup" if args.agent_pid else "poll", "trials": len(pairs), "missed": missed,
              "refusal": summary(refusals), "close": summary(closes)}
    print(f"revocation: {len(pairs)} trials, {missed} missed; refusal {result['refusal']}; stream close {result['close']}")
    return result


def cmd_revocation(args) -> None:
    result = asyncio.run(run_revocation(args))
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def tier_args(sp):
        sp.add_argument("--rate-per-minute", type=float, default=3.0, help="tier bench: GPU-seconds per minute")
        sp.add_argument("--burst", type=float, default=2.0, help="tier bench: burst GPU-seconds")
        sp.add_argument("--cost", type=float, default=0.1, help="endpoint cost: GPU-seconds per audio second")
        sp.add_argument("--model", default="whisper-bench")

    m = sub.add_parser("manifest", help="write the bench manifest")
    tier_args(m)
    m.add_argument("--out", required=True)
    m.add_argument("--upstream", default="http://127.0.0.1:18999/v1")
    m.add_argument("--policies", type=int, default=4, help="policies (one key each) on tier bench")
    m.add_argument("--revoke-policies", type=int, default=50, help="policies whose keys the revocation bench revokes")
    m.add_argument("--max-streams", type=int, default=2)
    m.add_argument("--upload-upstream", default="", help="adds endpoint `upload` (this upstream) and policy upload-0")
    m.add_argument("--upload-model", default="whisper-upload")
    m.set_defaults(func=cmd_manifest)

    u = sub.add_parser("upstream", help="serve a fake OpenAI-compatible transcription upstream")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=0)
    u.set_defaults(func=cmd_upstream)

    def client_args(sp):
        sp.add_argument("--keys", required=True, help="the agent's --keys-out file")
        sp.add_argument("--ws-url", required=True, help="e.g. ws://127.0.0.1:8080/v1/stream")
        sp.add_argument(
            "--start-json",
            default='{"type":"start","model":"{model}","feature":"transcribe"}',
            help="first text message of a stream ({model} is replaced); empty for none",
        )

    s = sub.add_parser("streams", help="N concurrent real-time streams against one tier")
    tier_args(s)
    client_args(s)
    s.add_argument("--admin-url", required=True, help="e.g. http://127.0.0.1:9090")
    s.add_argument("--tier", default="bench")
    s.add_argument("--policy-prefix", default="load-")
    s.add_argument("--streams", type=int, default=8)
    s.add_argument("--keys-used", type=int, default=4)
    s.add_argument("--duration", type=float, default=60.0)
    s.add_argument("--chunk-ms", type=int, default=100)
    s.add_argument("--reconnect-delay", type=float, default=0.05)
    s.add_argument("--settle-seconds", type=float, default=1.0)
    s.set_defaults(func=cmd_streams)

    r = sub.add_parser("revocation", help="config change -> refusal and stream close, many trials")
    client_args(r)
    r.add_argument("--model", default="whisper-bench")
    r.add_argument("--http-url", required=True, help="e.g. http://127.0.0.1:8080")
    r.add_argument("--probe-path", default="/v1/models", help="a cheap authenticated GET")
    r.add_argument("--manifest", required=True, help="the manifest the agent runs; edited in place")
    r.add_argument("--agent-pid", type=int, default=0, help="send SIGHUP after each change (0: rely on the watcher)")
    r.add_argument("--policy-prefix", default="revoke-")
    r.add_argument("--trials", type=int, default=50)
    r.add_argument("--skip", type=int, default=0, help="start at this policy (revoke-N), past those already revoked")
    r.add_argument("--trial-timeout", type=float, default=5.0)
    r.add_argument("--gap", type=float, default=0.2, help="pause between trials")
    r.set_defaults(func=cmd_revocation)

    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
