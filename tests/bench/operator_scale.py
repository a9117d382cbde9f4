"""Operator scale benchmark (not a test): N ApiKeyPolicies from a cold start until every key Secret and every
gateway-config shard is written (and every policy has a status), against the API stand-in.

    cargo build --release -p infergate-operator
    .venv/bin/python tests/bench/operator_scale.py --policies 1000 10000

Reports, per N: seconds from starting the operator to "all written", the operator's peak RSS (VmHWM), CPU seconds
used by the operator and by the stand-in (and the stand-in's kernel share), the stand-in's request count, and the
load average at start and end. Target: 10,000 in <= 60 s, <= 100 MiB. The machine may be shared: compare runs at
similar load. `STANDIN_PROFILE=/tmp/standin.prof` writes the stand-in's cProfile stats there (read them with
`python -m pstats`); `STANDIN_LOOP=asyncio` runs the stand-in on the stdlib event loop instead of uvloop.
The policies are bulk-created straight into the stand-in's store (no validation) before the operator starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(os.environ.get("INFERGATE_ROOT") or Path(__file__).resolve().parents[2])
STANDIN = ROOT / "tests" / "standin" / "standin.py"
NAMESPACES = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def objects(n: int) -> list[dict]:
    out = [{"apiVersion": "infergate.dev/v1alpha1", "kind": "RateTier", "metadata": {"name": "free"},
            "spec": {"gpuSecondsPerMinute": 6, "burstGpuSeconds": 12}},
           {"apiVersion": "infergate.dev/v1alpha1", "kind": "InferenceEndpoint",
            "metadata": {"name": "whisper", "namespace": "speech"},
            "spec": {"model": "whisper-1", "features": ["transcribe"],
                     "backend": {"upstream": {"url": "http://whisper.speech.svc:8000/v1"}},
                     "allowedNamespaces": ["*"]}}]
    for i in range(n):
        out.append({"apiVersion": "infergate.dev/v1alpha1", "kind": "ApiKeyPolicy",
                    "metadata": {"name": f"app-{i}", "namespace": f"team-{i % NAMESPACES}"},
                    "spec": {"tier": "free", "secretName": f"app-{i}-key",
                             "scopes": [{"endpoint": "whisper", "namespace": "speech"}],
                             "rotation": {"every": "720h", "overlap": "24h"}}})
    return out


def run_once(binary: Path, n: int, timeout: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"operator-scale-{n}-"))
    kubeconfig = work / "kubeconfig"
    standin = subprocess.Popen([sys.executable, str(STANDIN), "--port", "0", "--kubeconfig", str(kubeconfig)],
                               stdout=subprocess.PIPE, stderr=open(work / "standin.log", "w"), text=True)
    try:
        line = standin.stdout.readline()
        assert line.startswith("READY "), f"stand-in did not start: {line!r}"
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        objs = objects(n)
        for i in range(0, len(objs), 2000):
            post(url + "/standin/bulk", objs[i:i + 2000])
        base = get(url + "/standin/stats")
        standin_cpu0 = cpu_times(standin.pid)
        load0 = os.getloadavg()[0]

        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "RUST_LOG": "info,kube=warn"}
        log = open(work / "operator.log", "w")
        started = time.monotonic()
        op = subprocess.Popen([str(binary), "run", "--namespace", "infergate-system",
                               "--admin-addr", f"127.0.0.1:{free_port()}", "--pod-name", "bench",
                               "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT, env=env)
        done_at = None
        stats = base
        while time.monotonic() - started < timeout:
            time.sleep(0.25)
            if op.poll() is not None:
                raise RuntimeError(f"operator exited with {op.returncode}; see {work / 'operator.log'}")
            stats = get(url + "/standin/stats")
            keys = stats["labelled"].get("api-key", 0)
            shards = stats["labelled"].get("gateway-config", 0)
            statuses = stats["with_status"].get("apikeypolicies", 0)
            if keys >= n and shards >= n + 1 and statuses >= n:
                done_at = time.monotonic()
                break
        result = {
            "policies": n,
            "seconds": round(done_at - started, 2) if done_at else None,
            "peak_rss_mib": round(peak_rss_mib(op.pid), 1),
            "operator_cpu_s": round(cpu_seconds(op.pid), 1),
            "standin_cpu_s": round(cpu_seconds(standin.pid) - sum(standin_cpu0), 1),
            "standin_sys_s": round(cpu_times(standin.pid)[1] - standin_cpu0[1], 1),
            "requests": stats["requests"] - base["requests"],
            "key_secrets": stats["labelled"].get("api-key", 0),
            "shards": stats["labelled"].get("gateway-config", 0),
            "statuses": stats["with_status"].get("apikeypolicies", 0),
            # The machine is shared: wall time means little without the load it ran under (1-minute average).
            "loadavg_start": round(load0, 2),
            "loadavg_end": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(),
        }
        op.send_signal(signal.SIGTERM)
        try:
            op.wait(30)
        except subprocess.TimeoutExpired:
            op.kill()
        log.close()
        # Every key issued is one audit line: more than N would mean a key was regenerated.
        issued = sum(1 for line in (work / "operator.log").read_text().splitlines()
                     if '"audit":true' in line and '"action":"key_issued"' in line)
        result["keys_issued"] = issued
        result["log"] = str(work / "operator.log")
        return result
    finally:
        standin.send_signal(signal.SIGTERM)
        standin.wait(30)


def main():
    ap = argparse.ArgumentParser(description="infergate operator cold-start scale benchmark")
    ap.add_argument("--policies", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "infergate-operator")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if not args.binary.exists():
        sys.exit(f"{args.binary} is missing: cargo build --release -p infergate-operator")
    for n in args.policies:
        r = run_once(args.binary, n, args.timeout)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
