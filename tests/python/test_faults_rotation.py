"""Issue 15, item 8: the operator is killed in the middle of a key rotation.

A rotation writes two objects: the key Secret (the new plaintext key, in the policy's namespace), then the policy's
gateway-config shard (the new key current, the old one retiring until the end of the overlap), then the status.
The stand-in holds one kind of write unanswered (`/standin/hold`); the operator is SIGKILLed while it waits, so
the write never happens; a new operator starts. After it:
- no key is regenerated: the key Secret holds the key the killed operator generated, and the shard names it;
- the overlap is honoured: the old key stays in the shard as retiring, until the rotation's time + overlap;
- the status converges (Ready, both keys listed, the rotation recorded as handled so it does not run again).
"""
from __future__ import annotations

import json
import signal
import time

import pytest

from conftest import http_get, wait_for
from test_operator_e2e import key_id, policy, policy_shard, secret_data, shard_key_ids, shard_name

NS = "infergate-system"
TEAM = "team-r"
OVERLAP_S = 600

WORLD = f"""
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
metadata: {{name: rot}}
spec: {{gpuSecondsPerMinute: 60, burstGpuSeconds: 60, maxConcurrentStreams: 2}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: stt, namespace: {TEAM}}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "http://127.0.0.1:9/v1", allowPrivateNetwork: true}}}}
"""


def policy_yaml(name: str) -> str:
    return f"""---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: {name}, namespace: {TEAM}}}
spec:
  tier: rot
  secretName: {name}-key
  scopes: [{{endpoint: stt}}]
  rotation: {{every: 720h, overlap: {OVERLAP_S}s}}
"""


def post(standin, path, body=None):
    import urllib.request
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(standin.url + path, data=data, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def held(standin) -> int:
    return json.loads(http_get(standin.url + "/standin/held")[1])["held"]


def current_key(kubectl, name):
    return (secret_data(kubectl, TEAM, f"{name}-key") or {}).get("api-key")


def kill(op):
    op.proc.send_signal(signal.SIGKILL)
    op.proc.wait(10)


@pytest.fixture(scope="module")
def world(kubectl, start_operator):
    kubectl("apply", "-f", "-", input=WORLD)
    return start_operator


def rotate_with_a_kill(kubectl, standin, start, name, method, contains, *, after=None):
    """Starts an operator, lets it issue `name`'s first key, holds the writes matching (method, contains), asks
    for a rotation, kills the operator once a write is held (and `after(old)` holds, if given), then starts a
    second operator with the hold released. Returns (old key, the key the Secret had at the kill, rotated at)."""
    first = start(f"{name}-a")
    kubectl("apply", "-f", "-", input=policy_yaml(name))
    old = wait_for("the first key", lambda: current_key(kubectl, name), timeout=90)
    wait_for("the first key in the shard", lambda: shard_key_ids(policy_shard(kubectl, TEAM, name)) == {key_id(old)})
    post(standin, "/standin/hold", {"method": method, "contains": contains})
    asked = time.time()
    kubectl("annotate", "-n", TEAM, "apikeypolicy", name, f"infergate.dev/rotate-requested-at={time.time()}")
    wait_for(f"a held {method} ({contains})", lambda: held(standin) > 0, timeout=60)
    if after:
        wait_for("the state to kill in", lambda: after(old), timeout=60)
    at_kill = current_key(kubectl, name)
    kill(first)
    post(standin, "/standin/release")
    second = start(f"{name}-b")
    wait_for("the second operator to lead", second.ready, timeout=90)
    return old, at_kill, asked, second


def converged(kubectl, name, old, new):
    shard = policy_shard(kubectl, TEAM, name)
    if shard_key_ids(shard) != {key_id(old), key_id(new)}:
        return None
    status = (policy(kubectl, TEAM, name) or {}).get("status") or {}
    listed = {k["keyId"] for k in status.get("keys") or []}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
    return shard if listed == {key_id(old), key_id(new)} and ready.get("status") == "True" else None


def check_after(kubectl, name, old, at_kill, asked):
    new = wait_for("the new key", lambda: (lambda k: k if k and k != old else None)(current_key(kubectl, name)),
                   timeout=60)
    if at_kill and at_kill != old:
        assert new == at_kill, "the key generated before the kill was regenerated"
    shard = wait_for("the shard and status to converge", lambda: converged(kubectl, name, old, new), timeout=60)
    states = {k["keyId"]: k for k in shard["keys"]}
    assert states[key_id(new)]["state"] == "current"
    retiring = states[key_id(old)]
    assert retiring["state"] == "retiring", "the old key must keep working through the overlap"
    until = retiring["validUntil"]
    end = time.mktime(time.strptime(until[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert asked - 5 + OVERLAP_S <= end <= time.time() + OVERLAP_S + 5, (until, asked)
    # Nothing rotates again on its own: the same key a while later.
    time.sleep(3)
    assert current_key(kubectl, name) == new
    return new


def test_killed_between_the_key_secret_and_the_shard(kubectl, standin, world):
    name = "between-secret-and-shard"
    old, at_kill, asked, _ = rotate_with_a_kill(
        kubectl, standin, world, name, "PATCH", f"/namespaces/{NS}/secrets/{shard_name('policy', TEAM, name)}",
        after=lambda old: current_key(kubectl, name) not in (None, old))
    assert at_kill != old, "the kill came after the key Secret was written"
    check_after(kubectl, name, old, at_kill, asked)


def test_killed_before_the_status(kubectl, standin, world):
    name = "before-status"
    old, at_kill, asked, _ = rotate_with_a_kill(
        kubectl, standin, world, name, "PATCH", f"/namespaces/{TEAM}/apikeypolicies/{name}/status",
        after=lambda old: key_id(old) in shard_key_ids(policy_shard(kubectl, TEAM, name))
        and len(shard_key_ids(policy_shard(kubectl, TEAM, name))) == 2)
    check_after(kubectl, name, old, at_kill, asked)


def test_killed_before_the_key_secret(kubectl, standin, world):
    name = "before-secret"
    old, at_kill, asked, _ = rotate_with_a_kill(
        kubectl, standin, world, name, "PATCH", f"/namespaces/{TEAM}/secrets/{name}-key")
    assert at_kill == old, "nothing was written before the kill"
    check_after(kubectl, name, old, at_kill, asked)
