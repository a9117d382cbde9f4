"""Operator scale benchmark (not a test): N ApiKeyPolicies from a cold start until every key Secret and every
gateway-config shard is written (and every policy has a status), against the API stand-in.

    cargo build --release -p infergate-operator
    .venv/bin/python tests/bench/operator_scale.py --policies 1000 10000

Reports, per N: seconds from starting the operator to "all written", the operator's peak RSS (VmHWM), CPU seconds
used by the operator and by the stand-in (and the stand-in's kernel share), the stand-in's request count, and the
load average at start and end.

`--revocations K` then measures revocation at that scale, end to end in cluster mode (issue 15 item 3): an agent
(`target/release/infergate-agent cluster`) watches the N policies' shards; K times, a WebSocket client opens a
stream with one policy's key, `kubectl patch` adds a revocation of that key to the ApiKeyPolicy, and the time from
starting the patch to the client receiving the close frame (4005 key_revoked) is recorded: p50, p99 and max. Target: 10,000 in <= 60 s, <= 100 MiB. The machine may be shared: compare runs at
similar load. `STANDIN_PROFILE=/tmp/standin.prof` writes the stand-in's cProfile stats there (read them with
`python -m pstats`); `STANDIN_LOOP=asyncio` runs the stand-in on the stdlib event loop instead of uvloop.
The policies are bulk-created straight into the stand-in's store (no validation) before the operator starts.
"""

from __future__ import annotations

import argparse
import base64
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
sys.path.insert(0, str(ROOT / "tests" / "python"))
from toolpaths import find_kubectl  # noqa: E402  (tests/python is not a package)
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


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def kubectl_bin() -> str:
    found = find_kubectl(ROOT)
    if not found:
        sys.exit("kubectl is missing: run tests/tools/install-kubectl.sh")
    return found


def revocation_trials(url: str, kubeconfig: Path, work: Path, n: int, trials: int) -> dict:
    """Cluster-mode revocation at scale: kubectl patch -> operator -> shard -> agent -> the client's close frame."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    agent_bin = ROOT / "target" / "release" / "infergate-agent"
    http_port, grpc_port, admin_port = free_port(), free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "RUST_LOG": "info,kube=warn"}
    log = open(work / "agent.log", "w")
    agent = subprocess.Popen([str(agent_bin), "cluster", "--namespace", "infergate-system", "--node-name", "bench",
                              "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                              "--admin-addr", f"127.0.0.1:{admin_port}"],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
    kubectl = [kubectl_bin(), "--kubeconfig", str(kubeconfig)]
    # Policies spread over the namespaces, none revoked before.
    picks = [(i * 7919) % n for i in range(trials)]

    def key_of(i: int) -> tuple[str, str]:
        secret = get(f"{url}/api/v1/namespaces/team-{i % NAMESPACES}/secrets/app-{i}-key")
        data = secret["data"]
        return base64.b64decode(data["api-key"]).decode(), base64.b64decode(data["key-id"]).decode()

    try:
        first_key, _ = key_of(picks[0])
        started = time.monotonic()
        while True:
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.returncode}; see {work / 'agent.log'}")
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/models",
                                             headers={"Authorization": f"Bearer {first_key}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > 300:
                raise RuntimeError("the agent did not load the config in 300 s")
            time.sleep(0.2)
        agent_ready_s = time.monotonic() - started
        samples, patch_ms = [], []
        for i in picks:
            key, key_id = key_of(i)
            ws = connect(f"ws://127.0.0.1:{http_port}/v1/stream", additional_headers={"Authorization": f"Bearer {key}"})
            ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
            ready = json.loads(ws.recv(timeout=10))
            assert ready.get("type") == "ready", ready
            patch = {"spec": {"revocations": [{"keyId": key_id, "reason": "scale bench", "requestedBy": "bench"}]}}
            t0 = time.monotonic()
            subprocess.run([*kubectl, "patch", "apikeypolicy", f"app-{i}", "-n", f"team-{i % NAMESPACES}",
                            "--type", "merge", "-p", json.dumps(patch)], check=True, capture_output=True)
            patch_ms.append((time.monotonic() - t0) * 1000)
            code = None
            try:
                while True:
                    ws.recv(timeout=30)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            samples.append((time.monotonic() - t0) * 1000)
            assert code == 4005, f"stream of app-{i} closed with {code}, not 4005 key_revoked"
        ordered = sorted(samples)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return {"revocation_trials": len(samples), "revocation_p50_ms": round(pick(0.5), 1),
                "revocation_p99_ms": round(pick(0.99), 1), "revocation_max_ms": round(ordered[-1], 1),
                "kubectl_patch_p50_ms": round(sorted(patch_ms)[len(patch_ms) // 2], 1),
                "agent_ready_s": round(agent_ready_s, 1), "agent_peak_rss_mib": round(peak_rss_mib(agent.pid), 1)}
    finally:
        stop(agent)
        log.close()


def run_once(binary: Path, n: int, timeout: float, revocations: int = 0) -> dict:
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
        if revocations and done_at:
            result.update(revocation_trials(url, kubeconfig, work, n, revocations))
        stop(op)
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
    ap.add_argument("--revocations", type=int, default=0,
                    help="then revoke this many keys end to end in cluster mode (needs target/release/infergate-agent)")
    args = ap.parse_args()
    if not args.binary.exists():
        sys.exit(f"{args.binary} is missing: cargo build --release -p infergate-operator")
    for n in args.policies:
        r = run_once(args.binary, n, args.timeout, args.revocations)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
