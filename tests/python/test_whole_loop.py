"""The product's proof, kept as one test: `kubectl apply` -> operator -> gateway-config Secrets -> agent (cluster
mode, watching them) -> a real WebSocket client; then a revocation made with `kubectl` closes that client's open
stream, the agent reports it on its Lease, and the operator records on the ApiKeyPolicy that it reached the agent.

Everything is the shipped binaries, unchanged: the API server is the stand-in (tests/standin), the only piece
that cannot run here."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess

import httpx
import pytest
from websockets.sync.client import connect

from conftest import binary, free_port, http_get, wait_for
from gateway_fixtures import upstream, wav  # noqa: F401 - fixture
from test_gateway_ws import auth, closed_with, start

NS = "infergate-system"
TEAM = "team-a"


def manifest(upstream_url: str) -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {TEAM}}}
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: loop}}
spec: {{gpuSecondsPerMinute: 60, burstGpuSeconds: 60, maxConcurrentStreams: 2}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: stt, namespace: {TEAM}}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", allowPrivateNetwork: true}}}}
  limits: {{idleTimeout: 60s}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: {TEAM}}}
spec:
  tier: loop
  environment: live
  secretName: app-infergate-key
  scopes: [{{endpoint: stt}}]
"""


class ClusterAgent:
    """`infergate-agent cluster` against the stand-in, as a DaemonSet pod would run it."""

    def __init__(self, kubeconfig, workdir, node="node-a", extra_args=()):
        self.http_port, self.grpc_port, self.admin_port = free_port(), free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.ws = f"ws://127.0.0.1:{self.http_port}/v1/stream"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.log_path = workdir / f"agent-{node}.log"
        self.log = open(self.log_path, "w")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "RUST_BACKTRACE": "1"}
        env.pop("RUST_LOG", None)
        self.proc = subprocess.Popen(
            [str(binary("infergate-agent")), "cluster", "--namespace", NS, "--node-name", node,
             "--http-addr", f"127.0.0.1:{self.http_port}", "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
             "--admin-addr", f"127.0.0.1:{self.admin_port}", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def test_kubectl_to_client_and_revocation_closes_the_stream(standin, kubectl, start_operator, upstream, tmp_path):  # noqa: F811
    kubectl("apply", "-f", "-", input=manifest(upstream))
    operator = start_operator("op-loop", namespace=NS)

    # The operator issues the key into the team's Secret and publishes a shard holding only its digest.
    secret = wait_for("the key Secret", lambda: kubectl.get_json("secret", "app-infergate-key", "-n", TEAM))
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    key_id = base64.b64decode(secret["data"]["key-id"]).decode()
    assert key.startswith("sk_live_")
    digest = hashlib.sha256(key.encode()).hexdigest()

    def policy_shard():
        shards = kubectl.get_json("secret", "-n", NS, "-l", "infergate.dev/component=gateway-config")
        for item in (shards or {}).get("items", []):
            doc = base64.b64decode(item["data"]["shard.json"]).decode()
            if '"kind":"policy"' in doc and digest in doc:
                return doc
        return None

    shard = wait_for("the policy's gateway-config shard", policy_shard)
    assert key not in shard

    agent = ClusterAgent(standin.kubeconfig, tmp_path)
    try:
        # The agent, watching the shards, accepts the key on a real WebSocket stream.
        def models():
            r = httpx.get(f"{agent.http}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=5)
            return r.status_code == 200 and "whisper-1" in r.text

        wait_for("the agent to load the config", models, timeout=90)
        ws = connect(agent.ws, additional_headers=auth(key))
        assert start(ws)["type"] == "ready"

        # Revocation by kubectl: the open stream is closed by the gateway with "key revoked".
        patch = {"spec": {"revocations": [{"keyId": key_id, "reason": "leaked in CI logs", "requestedBy": "e2e@infergate.dev"}]}}
        kubectl("patch", "apikeypolicy", "app", "-n", TEAM, "--type", "merge", "-p", json.dumps(patch))
        code, reason, _ = closed_with(ws, timeout=60)
        assert code == 4005 and reason.startswith("key_revoked"), (code, reason)

        r = httpx.post(f"{agent.http}/v1/audio/transcriptions", headers={"authorization": f"Bearer {key}"},
                       files={"file": ("a.wav", wav(0.1))}, data={"model": "whisper-1"}, timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "key_revoked")

        # The agent reports the revocation it enforces; the operator counts it on the policy's status.
        def reached():
            policy = kubectl.get_json("apikeypolicy", "app", "-n", TEAM)
            revs = ((policy or {}).get("status") or {}).get("revocations") or []
            return any(r.get("keyId") == key_id and r.get("agentsEnforcing") == 1 for r in revs) and revs

        revs = wait_for("status.revocations to count the agent", reached, timeout=90)
        assert revs[0]["requestedBy"] == "e2e@infergate.dev"
        # ... and exports it for the dashboard and the InfergateRevocationNotEnforced alert.
        wait_for("the revocation gauges", lambda: operator.metric("infergate_operator_revocation_agents_total") == 1
                 and operator.metric("infergate_operator_revocation_agents_enforcing") == 1
                 and operator.metric("infergate_operator_revocations_unenforced") == 0
                 and operator.metric("infergate_operator_revocation_oldest_unenforced_seconds") == 0, timeout=30)

        # The replacement key works through the same agent, and no key appears in any log.
        new_secret = wait_for("the replacement key", lambda: (
            s := kubectl.get_json("secret", "app-infergate-key", "-n", TEAM)) and
            base64.b64decode(s["data"]["api-key"]).decode() != key and s)
        new_key = base64.b64decode(new_secret["data"]["api-key"]).decode()
        wait_for("the replacement key to be accepted", lambda: httpx.get(
            f"{agent.http}/v1/models", headers={"authorization": f"Bearer {new_key}"}, timeout=5).status_code == 200)
        for text in (agent.logs(), operator.log_text()):
            assert key not in text and new_key not in text
    finally:
        agent.stop()
