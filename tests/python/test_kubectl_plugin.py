"""`kubectl infergate`: the kubectl plugin (operator/plugin), run by the real `kubectl`, which finds
`kubectl-infergate` on PATH, against the API stand-in with the real operator running.

The tests run in order on one cluster state, as a platform team would: list the keys, rotate, revoke next to a
GitOps-owned revocation, read usage from agents, check which agents run the latest config. The agents' admin
`/usage` is a small HTTP server in this file (the agent's own `/usage` is tested with the agent); the agents'
Leases are written here with the annotations the agent publishes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import os
import subprocess
import threading

import pytest

from conftest import TARGET_DIR, binary, free_port, wait_for

OPERATOR_NS = "infergate-system"
TEAM = "plugin-a"
KEY_SECRET = "app-key"
GITOPS_REVOCATION = "kid_0123456789abcdef"

CLUSTER = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {OPERATOR_NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {TEAM}}}
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: plugin-tier}}
spec: {{gpuSecondsPerMinute: 60, burstGpuSeconds: 60}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: vad, namespace: {TEAM}}}
spec:
  model: plugin-vad
  features: [vad]
  backend: {{builtin: vad}}
"""

# What a GitOps tool applies (server-side, its own field manager): the policy with one revocation of its own.
POLICY = f"""
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: {TEAM}}}
spec:
  tier: plugin-tier
  environment: live
  secretName: {KEY_SECRET}
  scopes: [{{endpoint: vad}}]
  rotation: {{every: 720h, overlap: 24h}}
  revocations:
    - keyId: {GITOPS_REVOCATION}
      reason: pasted into a public issue
      requestedBy: gitops@example.com
"""


@pytest.fixture(scope="module")
def plugin(standin, kubectl_bin):
    """`plugin(*args, check=True, kubeconfig=None)`: `kubectl infergate ARGS` with the debug build on PATH."""
    binary("kubectl-infergate")  # fails with a build hint when missing

    def run(*args, check: bool = True, kubeconfig=None):
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or standin.kubeconfig),
               "PATH": f"{TARGET_DIR / 'debug'}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("INFERGATE_NAMESPACE", None)
        proc = subprocess.run([kubectl_bin, "infergate", *args], capture_output=True, text=True, env=env, timeout=60)
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl infergate {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json_of(*args):
        return json.loads(run(*args, "-o", "json").stdout)

    run.json = json_of
    return run


@pytest.fixture(scope="module")
def cluster(kubectl, start_operator):
    kubectl("apply", "-f", "-", input=CLUSTER)
    kubectl("apply", "--server-side", "--field-manager", "gitops", "-f", "-", input=POLICY)
    operator = start_operator("op-plugin", namespace=OPERATOR_NS)
    wait_for("the operator to lead and sync its caches (/readyz)", operator.ready, timeout=90)
    return operator


def secret_key(kubectl) -> tuple[str, str]:
    """(key, key id) in the policy's Secret; the key is read only to prove the plugin never shows it."""
    def probe():
        data = (kubectl.get_json("secret", "-n", TEAM, KEY_SECRET) or {}).get("data") or {}
        return data.get("api-key") and (base64.b64decode(data["api-key"]).decode(),
                                        base64.b64decode(data["key-id"]).decode())

    return wait_for(f"the key in Secret {TEAM}/{KEY_SECRET}", probe)


def key_rows(plugin) -> dict[str, dict]:
    return {r["keyId"]: r for r in plugin.json("keys", "list", "-n", TEAM) if r["keyId"]}


def wait_state(plugin, key_id: str, state: str) -> dict:
    return wait_for(f"`keys list` to show {key_id} {state}",
                    lambda: (row := key_rows(plugin).get(key_id)) and row["state"] == state and row)


def spec_revocations(kubectl) -> dict[str, dict]:
    policy = kubectl.get_json("apikeypolicy", "-n", TEAM, "app")
    return {r["keyId"]: r for r in policy["spec"].get("revocations") or []}


def owned_revocations(kubectl, manager: str) -> set[str]:
    """Key ids of the revocations `manager` owns by server-side apply, from managedFields."""
    proc = kubectl("get", "apikeypolicy", "-n", TEAM, "app", "-o", "json", "--show-managed-fields")
    out = set()
    for entry in json.loads(proc.stdout)["metadata"].get("managedFields") or []:
        if entry["manager"] == manager and entry["operation"] == "Apply" and not entry.get("subresource"):
            for item in entry["fieldsV1"].get("f:spec", {}).get("f:revocations", {}):
                out.add(json.loads(item.removeprefix("k:"))["keyId"])
    return out


def test_help_is_there_for_every_command(plugin):
    for args in (["--help"], ["keys", "--help"], ["keys", "list", "--help"], ["keys", "rotate", "--help"],
                 ["keys", "revoke", "--help"], ["usage", "--help"], ["status", "--help"]):
        proc = plugin(*args)
        assert "Usage: kubectl infergate" in proc.stdout, (args, proc.stdout)
    assert "--reason" in plugin("keys", "revoke", "--help").stdout
    assert "--agent" in plugin("usage", "--help").stdout


def test_keys_list_shows_the_issued_key_id_and_never_the_key(plugin, kubectl, cluster):
    key, key_id = secret_key(kubectl)
    row = wait_state(plugin, key_id, "active")
    assert row["policy"] == "app" and row["namespace"] == TEAM and row["issuedAt"]
    assert row["retiringUntil"] is None and row["revokedAt"] is None

    table = plugin("keys", "list", "-n", TEAM)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["POLICY", "KEY", "ID", "STATE", "ISSUED", "RETIRING", "UNTIL", "REVOKED"]
    assert [line.split()[:3] for line in lines[1:]] == [["app", key_id, "active"]]
    everywhere = plugin("keys", "list", "-A")
    assert everywhere.stdout.splitlines()[0].startswith("NAMESPACE")
    assert any(line.split()[:4] == [TEAM, "app", key_id, "active"] for line in everywhere.stdout.splitlines())
    for proc in (table, everywhere, plugin("keys", "list", "-A", "-o", "json")):
        output = proc.stdout + proc.stderr
        assert key not in output and "sk_live_" not in output, "key material in the plugin's output"


def test_rotate_sets_the_annotation_and_the_old_key_retires(plugin, kubectl, cluster):
    old_key, old_id = secret_key(kubectl)
    proc = plugin("keys", "rotate", "app", "-n", TEAM)
    assert proc.stdout.startswith(f"apikeypolicy {TEAM}/app: rotation requested (infergate.dev/rotate-requested-at=")
    annotations = kubectl.get_json("apikeypolicy", "-n", TEAM, "app")["metadata"]["annotations"]
    assert annotations["infergate.dev/rotate-requested-at"] in proc.stdout

    new_key, new_id = wait_for("a new key in the Secret", lambda: (k := secret_key(kubectl))[0] != old_key and k)
    assert new_id != old_id
    retiring = wait_state(plugin, old_id, "retiring")
    assert retiring["retiringUntil"], "a retiring key shows until when it still works"
    assert key_rows(plugin)[new_id]["state"] == "active"
    output = plugin("keys", "list", "-n", TEAM).stdout
    assert old_key not in output and new_key not in output


def test_revoke_adds_one_item_under_its_own_field_manager_next_to_gitops(plugin, kubectl, cluster):
    _, current_id = secret_key(kubectl)
    retiring_id = next(k for k, r in key_rows(plugin).items() if r["state"] == "retiring")

    proc = plugin("keys", "revoke", "app", retiring_id, "--reason", "leaked in CI logs", "-n", TEAM)
    assert f"key {retiring_id} revoked" in proc.stdout
    revs = spec_revocations(kubectl)
    assert set(revs) == {GITOPS_REVOCATION, retiring_id}, "the GitOps item stays, one item is added"
    # No SelfSubjectReview on the stand-in: the kubeconfig's user names who asked.
    assert revs[retiring_id] == {"keyId": retiring_id, "reason": "leaked in CI logs", "requestedBy": "standin"}
    assert owned_revocations(kubectl, "kubectl-infergate") == {retiring_id}
    assert owned_revocations(kubectl, "gitops") == {GITOPS_REVOCATION}

    row = wait_state(plugin, retiring_id, "revoked")
    assert row["revokedAt"]
    status = kubectl.get_json("apikeypolicy", "-n", TEAM, "app")["status"]["revocations"]
    assert next(r for r in status if r["keyId"] == retiring_id)["matched"] is True

    # A second revocation by the plugin keeps its first one: the apply carries every item the plugin owns.
    plugin("keys", "revoke", "app", current_id, "--reason", "rotating after the leak", "--requested-by",
           "carol@example.com", "-n", TEAM)
    assert set(spec_revocations(kubectl)) == {GITOPS_REVOCATION, retiring_id, current_id}
    assert owned_revocations(kubectl, "kubectl-infergate") == {retiring_id, current_id}
    assert spec_revocations(kubectl)[current_id]["requestedBy"] == "carol@example.com"

    # GitOps re-applies its manifest, which does not know these revocations: they stay.
    kubectl("apply", "--server-side", "--field-manager", "gitops", "-f", "-", input=POLICY)
    assert set(spec_revocations(kubectl)) == {GITOPS_REVOCATION, retiring_id, current_id}

    # The revoked current key is replaced; the list shows both revoked and the new one active.
    wait_state(plugin, current_id, "revoked")
    _, replacement = wait_for("a replacement key", lambda: (k := secret_key(kubectl))[1] != current_id and k)
    wait_state(plugin, replacement, "active")

    again = plugin("keys", "revoke", "app", retiring_id, "--reason", "again", "-n", TEAM)
    assert "already listed in spec.revocations" in again.stdout


def test_mistakes_are_named_and_fail(plugin, kubectl, cluster, tmp_path):
    key, key_id = secret_key(kubectl)
    missing = plugin("keys", "rotate", "nope", "-n", TEAM, check=False)
    assert missing.returncode == 1
    assert f"ApiKeyPolicy {TEAM}/nope not found" in missing.stderr

    unknown = plugin("keys", "revoke", "app", "kid_ffffffffffffffff", "--reason", "x", "-n", TEAM, check=False)
    assert unknown.returncode == 1
    assert f"key kid_ffffffffffffffff is not a key of ApiKeyPolicy {TEAM}/app (its keys: {key_id}" in unknown.stderr

    pasted = plugin("keys", "revoke", "app", key, "--reason", "x", "-n", TEAM, check=False)
    assert pasted.returncode == 1 and "not a key id" in pasted.stderr
    assert key not in pasted.stdout + pasted.stderr, "a pasted key is never echoed"

    no_reason = plugin("keys", "revoke", "app", key_id, "-n", TEAM, check=False)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr

    # An API server that cannot be reached: the failing call is named.
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "dead", "user": {"token": "x"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "dead", "namespace": TEAM}}]}))
    down = plugin("keys", "list", check=False, kubeconfig=dead)
    assert down.returncode == 1
    assert down.stderr.startswith(f"error: listing ApiKeyPolicies in namespace {TEAM}:"), down.stderr


class FakeAgent:
    """An agent's admin listener reduced to `GET /usage` behind a bearer token."""

    def __init__(self, token: str, answer: dict):
        self.token, self.answer = token, answer
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self._send(401, b"send Authorization: Bearer <the token in --admin-token-file>\n", "text/plain")
                elif self.path == "/usage":
                    self._send(200, json.dumps(outer.answer).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture
def agents():
    started: list[FakeAgent] = []

    def start(answer: dict) -> FakeAgent:
        agent = FakeAgent(TOKEN, answer)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def usage(scope, *keys):
    return {"revision": "r1", "scope": scope,
            "keys": [{"keyId": k, "gpuSeconds": g, "agentGpuSeconds": g, "openStreams": s} for k, g, s in keys]}


def test_usage_sums_gpu_seconds_per_key_over_agents(plugin, kubectl, cluster, agents, tmp_path):
    _, current = secret_key(kubectl)
    revoked = sorted(k for k, r in key_rows(plugin).items() if r["state"] == "revoked")
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    a = agents(usage("agent", (current, 1.5, 1), (revoked[0], 2.0, 0), ("kid_00000000000000ff", 99.0, 5)))
    b = agents(usage("agent", (current, 0.25, 2)))

    out = plugin.json("usage", "app", "-n", TEAM, "--agent", a.url, "--agent", b.url, "--admin-token-file", str(token))
    assert out["scope"] == "agent" and out["policy"] == f"{TEAM}/app"
    by_key = {r["keyId"]: r for r in out["keys"]}
    assert (by_key[current]["gpuSeconds"], by_key[current]["openStreams"]) == (1.75, 3)
    assert (by_key[revoked[0]]["gpuSeconds"], by_key[revoked[0]]["state"]) == (2.0, "revoked")
    assert "kid_00000000000000ff" not in by_key, "keys of other policies are not shown"

    table = plugin("usage", "app", "-n", TEAM, "--agent", a.url, "--agent", b.url, "--admin-token-file", str(token))
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ID", "STATE", "GPU-SECONDS", "OPEN", "STREAMS"]
    assert [current, "active", "1.750", "3"] in [line.split() for line in lines[1:]]
    assert lines[-1] == "2 of 2 agent(s) answered (scope agent: summed over the agents)"


def test_usage_takes_a_shared_store_total_once(plugin, kubectl, cluster, agents, tmp_path):
    _, current = secret_key(kubectl)
    token = tmp_path / "admin-token"
    token.write_text(TOKEN)
    a = agents(usage("global", (current, 10.0, 1)))
    b = agents(usage("global", (current, 10.0, 1)))
    out = plugin.json("usage", "app", "-n", TEAM, "--agent", a.url, "--agent", b.url, "--admin-token-file", str(token))
    row = next(r for r in out["keys"] if r["keyId"] == current)
    assert (out["scope"], row["gpuSeconds"], row["openStreams"]) == ("global", 10.0, 2)


def test_usage_names_agents_that_did_not_answer_and_fails(plugin, kubectl, cluster, agents, tmp_path):
    _, current = secret_key(kubectl)
    good = agents(usage("agent", (current, 1.0, 0)))
    dead = f"http://127.0.0.1:{free_port()}"
    proc = plugin("usage", "app", "-n", TEAM, "--agent", good.url, "--agent", dead, check=False)
    assert proc.returncode == 1
    # Without the token the good agent refuses too: both are named, with what to do about the 401.
    assert f"agent {good.url}: {good.url}/usage answered 401" in proc.stderr
    assert "--admin-token-file" in proc.stderr and f"agent {dead}: cannot reach" in proc.stderr
    assert "2 of 2 agent(s) did not answer" in proc.stderr


def now_micro(delta_seconds: float = 0) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delta_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def agent_lease(node: str, revision: str, renewed: str, address: dict | None = None) -> str:
    annotations = {"infergate.dev/config-revision": revision, "infergate.dev/config-applied-at": renewed,
                   "infergate.dev/enforced-revocations": ""}
    if address:
        annotations["infergate.dev/address"] = json.dumps(address)
    return json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": f"infergate-agent-{node}", "namespace": OPERATOR_NS,
                     "labels": {"infergate.dev/component": "agent"}, "annotations": annotations},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 30, "renewTime": renewed}})


def published_revision(kubectl) -> str:
    """The whole-config revision an agent holding every published shard reports: the first 16 hex characters of
    SHA-256 over the sorted shard revisions joined by commas (agent/gate's Snapshot::build)."""
    shards = kubectl.get_json("secret", "-n", OPERATOR_NS, "-l", "infergate.dev/component=gateway-config")["items"]
    revisions = sorted(s["metadata"]["annotations"]["infergate.dev/shard-revision"] for s in shards)
    return hashlib.sha256(",".join(revisions).encode()).hexdigest()[:16]


def test_usage_finds_agents_through_their_leases(plugin, kubectl, cluster, agents, tmp_path):
    _, current = secret_key(kubectl)
    agent = agents(usage("agent", (current, 4.0, 1)))
    kubectl("apply", "-f", "-", input=agent_lease("node-usage", "r", now_micro(),
                                                  {"ip": "127.0.0.1", "http": 8080, "grpc": 50051}))
    token = tmp_path / "admin-token"
    token.write_text(TOKEN)
    try:
        out = plugin.json("usage", "app", "-n", TEAM, "--admin-port", str(agent.port), "--admin-token-file", str(token),
                          "--operator-namespace", OPERATOR_NS)
        assert [a["url"] for a in out["agents"]] == [agent.url]
        assert next(r for r in out["keys"] if r["keyId"] == current)["gpuSeconds"] == 4.0
    finally:
        kubectl("delete", "lease", "-n", OPERATOR_NS, "infergate-agent-node-usage")


def test_status_shows_which_agents_run_the_latest_config(plugin, kubectl, cluster):
    def settled():
        """The plugin's view, once the shards did not change while it looked."""
        latest = published_revision(kubectl)
        for lease in (agent_lease("node-a", latest, now_micro()),
                      agent_lease("node-b", "0000000000000000", now_micro(-5)),
                      agent_lease("node-c", latest, now_micro(-600))):
            kubectl("apply", "-f", "-", input=lease)
        out = plugin.json("status", "-n", OPERATOR_NS)
        return published_revision(kubectl) == latest and (latest, out)

    latest, out = wait_for("a status taken while the published shards stood still", settled)
    assert out["latestRevision"] == latest, "the plugin computes the revision exactly as the agents do"
    rows = {r["node"]: (r["revision"], r["upToDate"], r["live"]) for r in out["agents"]}
    assert rows == {"node-a": (latest, True, True), "node-b": ("0000000000000000", False, True),
                    "node-c": (latest, True, False)}
    assert out["summary"] == {"latestRevision": latest, "enforcing": 1, "live": 2, "stale": 1}

    table = plugin("status", "-n", OPERATOR_NS).stdout.splitlines()
    assert table[0].split() == ["NODE", "REVISION", "UP-TO-DATE", "STATE", "RENEWED", "APPLIED"]
    assert [line.split()[:4] for line in table[1:4]] == [
        ["node-a", latest, "yes", "live"], ["node-b", "0000000000000000", "no", "live"],
        ["node-c", latest, "yes", "stale"]]
    assert table[4] == (f"1/2 live agent(s) enforce the latest config (revision {latest}); "
                        "1 stale agent(s) (Lease not renewed for 120s) not counted")


def test_no_key_material_in_the_operator_log(cluster, kubectl):
    key, _ = secret_key(kubectl)
    assert key not in cluster.log_text()
