"""Fixtures for the gateway tests: the fake upstream, a standalone agent on free loopback ports, audio helpers.

Test files use `from gateway_fixtures import *`. The agent is the debug binary
($INFERGATE_ROOT/target/debug/infergate-agent, built by tests/run.sh) in standalone mode with --keys-out.
"""
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import httpx
import pytest

ROOT = Path(os.environ.get("INFERGATE_ROOT", Path(__file__).resolve().parents[2]))
AGENT_BIN = ROOT / "target" / "debug" / "infergate-agent"
HERE = Path(__file__).resolve().parent

__all__ = [
    "AGENT_BIN", "ROOT", "Agent", "free_port", "manifests", "pcm", "wav", "upstream", "agent", "wait_until",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pcm(seconds: float) -> bytes:
    """Silence as 16 kHz mono PCM16: the size is what matters to the gateway."""
    return b"\x00\x00" * int(16000 * seconds)


def wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm(seconds))
    return buf.getvalue()


def wait_until(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def manifests(upstream_url: str, revoke: dict | None = None, idle_timeout: str = "1s") -> str:
    """The test world. `revoke` maps policy name -> key id to list in spec.revocations."""
    revoke = revoke or {}

    def revocations(policy):
        if policy not in revoke:
            return ""
        return (
            "\n  revocations:\n"
            f"    - keyId: {revoke[policy]}\n      reason: test\n      requestedBy: pytest"
        )

    def policy(name, tier, extra=""):
        return f"""---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  tier: {tier}
  environment: test
  secretName: {name}-key
  scopes: [{{endpoint: transcribe}}]{extra}{revocations(name)}
"""

    return f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: roomy}}
spec: {{gpuSecondsPerMinute: 600, burstGpuSeconds: 100, maxConcurrentStreams: 2}}
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: tiny}}
spec: {{gpuSecondsPerMinute: 6, burstGpuSeconds: 0.2, maxConcurrentStreams: 1}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: transcribe, namespace: default}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", allowPrivateNetwork: true}}}}
  cost: {{gpuSecondsPerAudioSecond: 0.1}}
  limits: {{maxChunkBytes: 8192, maxMessagesPerSecond: 200, idleTimeout: {idle_timeout}, maxAudioSeconds: 30}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: other, namespace: default}}
spec:
  model: whisper-other
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", allowPrivateNetwork: true}}}}
{policy("app", "roomy", chr(10) + "  allowedOrigins: [https://app.example.com]")}{policy("victim", "roomy")}{policy("tiny", "tiny")}{policy("paused", "roomy", chr(10) + "  suspended: true")}{policy("old", "roomy", chr(10) + '  expiresAt: "2020-01-01T00:00:00Z"')}"""


class Agent:
    """A standalone agent on free loopback ports, with its keys read from --keys-out."""

    def __init__(self, manifest_text: str, extra_args=(), tmp: Path | None = None, poll_interval: str = "100ms"):
        self.dir = Path(tmp or tempfile.mkdtemp(prefix="infergate-agent-"))
        self.manifest = self.dir / "world.yaml"
        self.keys_file = self.dir / "keys.json"
        self.manifest.write_text(manifest_text)
        self.http_port, self.grpc_port, self.admin_port = free_port(), free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.ws = f"ws://127.0.0.1:{self.http_port}/v1/stream"
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.log = open(self.dir / "agent.log", "wb")
        if not AGENT_BIN.exists():
            raise RuntimeError(f"{AGENT_BIN} is missing: run `cargo build -p infergate-agent` first")
        self.proc = subprocess.Popen(
            [
                str(AGENT_BIN), "standalone", "-f", str(self.manifest), "--keys-out", str(self.keys_file),
                "--http-addr", f"127.0.0.1:{self.http_port}", "--grpc-addr", self.grpc,
                "--admin-addr", f"127.0.0.1:{self.admin_port}", "--poll-interval", poll_interval, "--log-format", "text",
                *extra_args,
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, what="agent /readyz")

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.logs()[-3000:]}")
        try:
            return httpx.get(f"{self.admin}/readyz", timeout=1).status_code == 200 and self.keys_file.exists()
        except httpx.HTTPError:
            return False

    def keys(self) -> dict:
        return json.loads(self.keys_file.read_text())

    def key(self, policy: str) -> str:
        return self.keys()[f"default/{policy}"]["key"]

    def key_id(self, policy: str) -> str:
        return self.keys()[f"default/{policy}"]["keyId"]

    def rewrite(self, manifest_text: str):
        """Replaces the manifests and waits until the agent has applied them (a new config revision)."""
        before = httpx.get(f"{self.admin}/readyz").text
        self.manifest.write_text(manifest_text)
        wait_until(lambda: httpx.get(f"{self.admin}/readyz").text != before, what="config reload")

    def metrics(self) -> str:
        return httpx.get(f"{self.admin}/metrics").text

    def logs(self) -> str:
        self.log.flush()
        return (self.dir / "agent.log").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def upstream():
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def agent(upstream, tmp_path_factory):
    a = Agent(manifests(upstream), tmp=tmp_path_factory.mktemp("agent"))
    yield a
    a.stop()
