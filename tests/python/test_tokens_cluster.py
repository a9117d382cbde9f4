"""Session tokens in cluster mode (issue 14): the operator generates the signing-key ring into its Secret, keeps it
across restarts, and publishes it to agents through the gateway-config watch; a cluster-mode agent mints tokens
with it; and a `kubectl` revocation of the key closes a stream opened with a token minted from it within 1 s.

The shipped binaries against the Kubernetes API stand-in (tests/standin), as in test_whole_loop.py."""
from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from websockets.sync.client import connect

from conftest import wait_for
from gateway_fixtures import upstream, wav  # noqa: F401 - fixture
from test_gateway_ws import auth, closed_with, start
from test_whole_loop import NS, TEAM, ClusterAgent, manifest

SIGNING_SECRET = "infergate-cfg-signing-keys"


def signing_shard(kubectl):
    secret = kubectl.get_json("secret", SIGNING_SECRET, "-n", NS)
    if not secret:
        return None
    return secret, json.loads(base64.b64decode(secret["data"]["shard.json"]))


@pytest.fixture(scope="module")
def cluster(standin, kubectl, start_operator, upstream, tmp_path_factory):  # noqa: F811
    kubectl("apply", "-f", "-", input=manifest(upstream))
    operator = start_operator("op-tokens", namespace=NS)
    secret = wait_for("the key Secret", lambda: kubectl.get_json("secret", "app-infergate-key", "-n", TEAM))
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    key_id = base64.b64decode(secret["data"]["key-id"]).decode()
    wait_for("the signing-key Secret", lambda: signing_shard(kubectl))
    agent = ClusterAgent(standin.kubeconfig, tmp_path_factory.mktemp("tokens-cluster"))
    wait_for("the agent to load the config", lambda: httpx.get(
        f"{agent.http}/v1/models", headers=auth(key), timeout=5).status_code == 200, timeout=90)
    yield {"operator": operator, "agent": agent, "key": key, "key_id": key_id}
    agent.stop()


def mint(agent, key_id, key):
    r = httpx.post(f"{agent.http}/v1/oauth/token", data={"grant_type": "client_credentials"},
                   auth=(key_id, key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def kid_of(token):
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def test_operator_publishes_the_ring_and_the_agent_serves_and_signs_with_it(cluster, kubectl):
    secret, shard = signing_shard(kubectl)
    assert shard["kind"] == "signing" and secret["metadata"]["labels"]["infergate.dev/shard-kind"] == "signing"
    kids = [k["kid"] for k in shard["ring"]["keys"]]
    assert len(kids) == 1
    agent = cluster["agent"]
    jwks = httpx.get(f"{agent.http}/.well-known/jwks.json", timeout=5).json()
    assert [k["kid"] for k in jwks["keys"]] == kids
    assert all("d" not in k for k in jwks["keys"]), "the JWKS carries public keys only"
    assert kid_of(mint(agent, cluster["key_id"], cluster["key"])) == kids[0]
    # No private key in any log: not the operator's, not the agent's.
    for text in (agent.logs(), cluster["operator"].log_text()):
        for k in shard["ring"]["keys"]:
            assert k["pkcs8"] not in text


def test_a_restarted_operator_reads_the_ring_back_and_never_regenerates_it(cluster, kubectl, start_operator):
    before, _ = signing_shard(kubectl)
    cluster["operator"].stop()
    successor = start_operator("op-tokens-2", namespace=NS)
    wait_for("the new operator to lead and sync", successor.ready, timeout=60)
    # Its signing task runs as soon as the caches sync; give it a few rounds to (not) write.
    wait_for("the successor's first signing reconcile", lambda: any(
        "signingkeys" in line for line in successor.metrics().splitlines()
        if line.startswith("infergate_operator_reconciles_total")), timeout=30)
    time.sleep(1)
    after, _ = signing_shard(kubectl)
    assert after["data"] == before["data"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not any(line.get("event") == "signing_keys_generated" for line in successor.log_lines())
    cluster["operator"] = successor


def test_kubectl_revocation_closes_a_token_stream_within_a_second(cluster, kubectl):
    agent = cluster["agent"]
    token = mint(agent, cluster["key_id"], cluster["key"])
    r = httpx.post(f"{agent.http}/v1/audio/transcriptions", headers=auth(token),
                   files={"file": ("a.wav", wav(0.1))}, data={"model": "whisper-1"}, timeout=10)
    assert r.status_code == 200, r.text
    ws = connect(agent.ws, additional_headers=auth(token))
    assert start(ws)["type"] == "ready"
    ws.send(wav(0.2)[44:])

    patch = {"spec": {"revocations": [{"keyId": cluster["key_id"], "reason": "token test",
                                       "requestedBy": "e2e@infergate.dev"}]}}
    revoked_at = time.monotonic()
    kubectl("patch", "apikeypolicy", "app", "-n", TEAM, "--type", "merge", "-p", json.dumps(patch))
    code, reason, error = closed_with(ws, timeout=30)
    elapsed = time.monotonic() - revoked_at
    assert code == 4005 and reason.startswith("key_revoked"), (code, reason)
    assert error and error["code"] == "key_revoked"
    assert elapsed < 1.0, f"the stream closed {elapsed:.2f} s after kubectl patch was run"

    r = httpx.post(f"{agent.http}/v1/audio/transcriptions", headers=auth(token),
                   files={"file": ("a.wav", wav(0.1))}, data={"model": "whisper-1"}, timeout=10)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "key_revoked")
    r = httpx.post(f"{agent.http}/v1/oauth/token", data={"grant_type": "client_credentials"},
                   auth=(cluster["key_id"], cluster["key"]), timeout=10)
    assert (r.status_code, r.json()["code"]) == (401, "key_revoked")
