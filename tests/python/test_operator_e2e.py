"""End to end: the real `infergate-operator run` binary, unchanged, against the Kubernetes API stand-in
(tests/standin/standin.py), driven with real `kubectl`.

The tests in this module run in order and share one stand-in and one operator: each step builds on the cluster
state the previous one left, as a user would. Every wait is a poll with a generous timeout; nothing asserts speed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib

import pytest

from conftest import ROOT, http_get, wait_for

OPERATOR_NS = "infergate-system"
EXAMPLES = ROOT / "examples"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62_fixed(value: int, length: int) -> str:
    digits = []
    for _ in range(length):
        value, rem = divmod(value, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def check_key(key: str, prefix: str = "sk_live_"):
    """The documented key format: prefix, 43 base62 characters, 6 base62 characters of CRC32(prefix + body)."""
    assert key.startswith(prefix), f"key has the wrong prefix: {key[:8]}"
    assert len(key) == len(prefix) + 43 + 6
    assert all(c in ALPHABET for c in key[len(prefix):])
    signed, checksum = key[:-6], key[-6:]
    assert checksum == base62_fixed(zlib.crc32(signed.encode()), 6), "key checksum does not verify"


def key_id(key: str) -> str:
    return "kid_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def shard_name(kind: str, namespace: str, name: str) -> str:
    return f"infergate-cfg-{kind}-" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:16]


def secret_data(kubectl, namespace: str, name: str) -> dict[str, str] | None:
    obj = kubectl.get_json("secret", "-n", namespace, name)
    if not obj:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def policy_shard(kubectl, namespace: str, name: str) -> dict | None:
    data = secret_data(kubectl, OPERATOR_NS, shard_name("policy", namespace, name))
    return json.loads(data["shard.json"]) if data else None


def shard_key_ids(shard: dict | None) -> set[str]:
    return {k["keyId"] for k in (shard or {}).get("keys", [])}


def condition(obj: dict | None, type_: str = "Ready") -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def policy(kubectl, namespace: str, name: str) -> dict | None:
    return kubectl.get_json("apikeypolicy", "-n", namespace, name)


@pytest.fixture(scope="module")
def operator(start_operator):
    op = start_operator("op-1")
    wait_for("the operator to lead and sync its caches (/readyz)", op.ready, timeout=90)
    return op


@pytest.fixture(scope="module")
def examples_applied(kubectl, operator):
    for f in ("tiers.yaml", "endpoints.yaml", "policies.yaml"):
        kubectl("apply", "-f", str(EXAMPLES / f))
    return True


def wait_key(kubectl, namespace, secret, prefix="sk_live_", not_equal=None):
    def probe():
        data = secret_data(kubectl, namespace, secret)
        key = (data or {}).get("api-key")
        return key if key and key != not_equal else None

    key = wait_for(f"an API key in Secret {namespace}/{secret}", probe, timeout=60)
    check_key(key, prefix)
    return key


def test_policy_gets_a_valid_key_and_the_shard_holds_only_its_digest(kubectl, examples_applied):
    key = wait_key(kubectl, "checkout", "checkout-infergate-key")
    data = secret_data(kubectl, "checkout", "checkout-infergate-key")
    assert data["key-id"] == key_id(key)

    shard = wait_for("the policy's gateway-config shard", lambda: policy_shard(kubectl, "checkout", "checkout-voice"))
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert [(k["keyId"], k["digest"], k["state"]) for k in shard["keys"]] == [(key_id(key), digest, "current")]
    raw = json.dumps(kubectl.get_json("secret", "-n", OPERATOR_NS, shard_name("policy", "checkout", "checkout-voice")))
    decoded = json.dumps(shard)
    assert key not in raw and key not in decoded, "the shard must never hold the plaintext key"

    # The owner reference lets garbage collection delete the key Secret with its policy.
    secret = kubectl.get_json("secret", "-n", "checkout", "checkout-infergate-key")
    pol = policy(kubectl, "checkout", "checkout-voice")
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [pol["metadata"]["uid"]]

    ready = wait_for("checkout-voice Ready=True", lambda: (lambda c: c if c and c["status"] == "True" else None)(
        condition(policy(kubectl, "checkout", "checkout-voice"))))
    assert ready["reason"]
    # The example's revocation names a key id this policy never issued: recorded as unmatched, nothing breaks.
    revs = policy(kubectl, "checkout", "checkout-voice")["status"].get("revocations") or []
    assert [(r["keyId"], r["matched"]) for r in revs] == [("kid_0123456789abcdef", False)]

    # The test-environment policy gets an sk_test_ key.
    wait_key(kubectl, "checkout", "checkout-infergate-test-key", prefix="sk_test_")


def test_endpoint_shards_and_tier_status(kubectl, examples_applied):
    data = wait_for("the whisper-large endpoint shard",
                    lambda: secret_data(kubectl, OPERATOR_NS, shard_name("endpoint", "speech", "whisper-large")))
    shard = json.loads(data["shard.json"])
    assert shard["kind"] == "endpoint" and shard["model"] == "whisper-large-v3"
    wait_for("RateTier pro to count its policy", lambda: (
        (kubectl.get_json("ratetier", "pro") or {}).get("status", {}).get("policies") == 1))


def test_rotation_annotation_keeps_both_keys_during_overlap(kubectl, examples_applied):
    old = wait_key(kubectl, "checkout", "checkout-infergate-key")
    kubectl("annotate", "-n", "checkout", "apikeypolicy", "checkout-voice",
            "infergate.dev/rotate-requested-at=2026-11-22T23:00:00Z")
    new = wait_key(kubectl, "checkout", "checkout-infergate-key", not_equal=old)
    shard = wait_for("both keys in the shard", lambda: (
        lambda s: s if shard_key_ids(s) == {key_id(old), key_id(new)} else None)(
        policy_shard(kubectl, "checkout", "checkout-voice")))
    states = {k["keyId"]: k["state"] for k in shard["keys"]}
    assert states == {key_id(old): "retiring", key_id(new): "current"}
    retiring = next(k for k in shard["keys"] if k["keyId"] == key_id(old))
    assert retiring.get("validUntil"), "a retiring key carries the end of its overlap"
    # The same annotation value does not rotate twice.
    kubectl("annotate", "-n", "checkout", "apikeypolicy", "checkout-voice", "--overwrite",
            "infergate.dev/rotate-requested-at=2026-11-22T23:00:00Z")
    assert secret_data(kubectl, "checkout", "checkout-infergate-key")["api-key"] == new


SHORT_OVERLAP = """
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: short-overlap, namespace: checkout}
spec:
  tier: free
  secretName: short-overlap-key
  scopes: [{endpoint: whisper-small, namespace: speech}]
  rotation: {every: 1h, overlap: 2s}
"""


def test_after_the_overlap_only_the_new_key_remains(kubectl, examples_applied):
    kubectl("apply", "-f", "-", input=SHORT_OVERLAP)
    old = wait_key(kubectl, "checkout", "short-overlap-key")
    wait_for("the first key in the shard",
             lambda: shard_key_ids(policy_shard(kubectl, "checkout", "short-overlap")) == {key_id(old)})
    kubectl("annotate", "-n", "checkout", "apikeypolicy", "short-overlap",
            "infergate.dev/rotate-requested-at=2026-11-22T23:30:00Z")
    new = wait_key(kubectl, "checkout", "short-overlap-key", not_equal=old)
    # The operator requeues itself at the end of the overlap; no further change is needed to retire the key.
    wait_for("only the new key after the overlap",
             lambda: shard_key_ids(policy_shard(kubectl, "checkout", "short-overlap")) == {key_id(new)})
    keys = policy(kubectl, "checkout", "short-overlap")["status"]["keys"]
    wait_for("status to list only the new key", lambda: [k["keyId"] for k in policy(
        kubectl, "checkout", "short-overlap")["status"]["keys"]] == [key_id(new)])
    assert keys is not None


def test_revocation_removes_the_key_and_names_who_and_why(kubectl, operator, examples_applied):
    key = wait_key(kubectl, "checkout", "checkout-infergate-key")
    kid = key_id(key)
    assert kid in shard_key_ids(policy_shard(kubectl, "checkout", "checkout-voice"))
    patch = [{"op": "add", "path": "/spec/revocations/-",
              "value": {"keyId": kid, "reason": "leaked in a CI log", "requestedBy": "carol@example.com"}}]
    kubectl("patch", "-n", "checkout", "apikeypolicy", "checkout-voice", "--type", "json", "-p", json.dumps(patch))

    shard = wait_for("the revoked key to leave the shard's keys", lambda: (
        lambda s: s if s and kid not in shard_key_ids(s) else None)(policy_shard(kubectl, "checkout", "checkout-voice")))
    assert kid in {r["keyId"] for r in shard.get("revoked", [])}, "the gateway keeps answering 'revoked'"
    # A revoked current key is replaced at once.
    replacement = wait_key(kubectl, "checkout", "checkout-infergate-key", not_equal=key)
    assert key_id(replacement) in shard_key_ids(policy_shard(kubectl, "checkout", "checkout-voice")) or wait_for(
        "the replacement key in the shard",
        lambda: key_id(replacement) in shard_key_ids(policy_shard(kubectl, "checkout", "checkout-voice")))

    status = wait_for("status.revocations to record it", lambda: next(
        (r for r in policy(kubectl, "checkout", "checkout-voice")["status"].get("revocations") or []
         if r["keyId"] == kid), None))
    assert status["matched"] is True
    assert status["requestedBy"] == "carol@example.com" and status["reason"] == "leaked in a CI log"

    def revoked_event():
        events = (kubectl.get_json("events.v1.events.k8s.io", "-n", "checkout") or {}).get("items", [])
        return next((e for e in events if e.get("reason") == "KeyRevoked" and kid in (e.get("note") or "")), None)

    event = wait_for("a KeyRevoked Event", revoked_event)
    assert "carol@example.com" in event["note"] and "leaked in a CI log" in event["note"]
    assert event["regarding"]["name"] == "checkout-voice" and event["regarding"]["kind"] == "ApiKeyPolicy"

    def audit_line():
        return next((l for l in operator.log_lines() if l.get("audit") is True and l.get("action") == "key_revoked"
                     and l.get("key_id") == kid), None)

    line = wait_for("a JSON audit log line for the revocation", audit_line)
    assert line["requested_by"] == "carol@example.com"


def test_a_missing_tier_is_named_and_the_policy_recovers_when_it_appears(kubectl, examples_applied):
    kubectl("apply", "-f", "-", input="""
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: gold-app, namespace: checkout}
spec:
  tier: gold
  secretName: gold-app-key
  scopes: [{endpoint: whisper-small, namespace: speech}]
""")
    cond = wait_for("gold-app Ready=False", lambda: (lambda c: c if c and c["status"] == "False" else None)(
        condition(policy(kubectl, "checkout", "gold-app"))))
    assert "gold" in cond["message"], f"the condition must name the missing tier: {cond}"
    assert policy_shard(kubectl, "checkout", "gold-app") is None, "a policy that is not Ready publishes no keys"

    kubectl("apply", "-f", "-", input="""
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: gold}
spec: {gpuSecondsPerMinute: 120, burstGpuSeconds: 240}
""")
    wait_for("gold-app Ready=True", lambda: (condition(policy(kubectl, "checkout", "gold-app")) or {}).get(
        "status") == "True")
    key = wait_key(kubectl, "checkout", "gold-app-key")
    wait_for("gold-app's shard", lambda: key_id(key) in shard_key_ids(policy_shard(kubectl, "checkout", "gold-app")))


def test_wrong_manifests_are_rejected_with_the_schema_message(kubectl):
    for path in sorted((ROOT / "tests" / "manifests" / "invalid").glob("*.yaml")):
        expect = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
        proc = kubectl("apply", "-f", str(path), check=False)
        assert proc.returncode != 0, f"{path.name} was accepted"
        assert expect in proc.stderr, f"{path.name}: kubectl should print '{expect}', got:\n{proc.stderr}"
        assert "is invalid" in proc.stderr


def test_key_secrets_are_watched_as_metadata_and_a_deleted_one_is_reissued(kubectl, standin, operator,
                                                                          examples_applied):
    """The operator caches no key Secret and no shard: it watches key Secrets' metadata only (the API server
    strips the data, so no key material is held) and reads the two a policy needs when it reconciles. A key
    Secret deleted by hand still reaches its policy through that watch, and a new key is issued."""
    reads = standin.get("/standin/stats")[1]["secret_reads"]
    key_reads = [r for r in reads if "api-key" in r[1]]
    assert key_reads and all(metadata_only for _, _, metadata_only in key_reads), key_reads
    assert not [r for r in reads if r[0] == "watch" and "gateway-config" in r[1]], f"a shard watch: {reads}"
    old = wait_key(kubectl, "checkout", "checkout-infergate-test-key", prefix="sk_test_")
    kubectl("delete", "secret", "-n", "checkout", "checkout-infergate-test-key")
    new = wait_key(kubectl, "checkout", "checkout-infergate-test-key", prefix="sk_test_", not_equal=old)
    wait_for("the shard to publish the new key and drop the lost one",
             lambda: shard_key_ids(policy_shard(kubectl, "checkout", "checkout-staging")) == {key_id(new)})


def test_restart_regenerates_nothing(kubectl, operator, start_operator, examples_applied):
    def snapshot():
        out = {}
        for ns, name in [("checkout", "checkout-infergate-key"), ("checkout", "checkout-infergate-test-key"),
                         ("checkout", "gold-app-key")]:
            obj = kubectl.get_json("secret", "-n", ns, name)
            out[name] = (obj["metadata"]["resourceVersion"], obj["data"])
        return out

    before = snapshot()
    assert operator.stop() == 0, "SIGTERM ends the operator cleanly"
    restarted = start_operator("op-2")
    wait_for("the restarted operator to lead", restarted.ready, timeout=90)
    wait_for("the restarted operator to reconcile every policy",
             lambda: restarted.metric('infergate_operator_reconciles_total{kind="apikeypolicy"}') >= 4)
    assert snapshot() == before, "a restart must not touch (let alone regenerate) any key Secret"
    assert restarted.metric("infergate_operator_leader") == 1


def test_standby_is_ready_and_takes_over(kubectl, start_operator, examples_applied):
    current = next(op for op in start_operator.started if op.proc.poll() is None)
    standby = start_operator("op-3")
    wait_for("the standby to report ready", standby.ready, timeout=60)
    assert standby.metric("infergate_operator_leader") == 0
    assert http_get(standby.admin + "/healthz")[0] == 200
    lease = kubectl.get_json("lease", "-n", OPERATOR_NS, "infergate-operator")
    assert lease["spec"]["holderIdentity"] == "op-2"

    # The leader releases the Lease on SIGTERM, so the standby takes over without waiting for it to expire.
    assert current.stop() == 0
    wait_for("the standby to take the lease", lambda: standby.metric("infergate_operator_leader") == 1)
    wait_for("the new leader to sync", standby.ready)
    lease = kubectl.get_json("lease", "-n", OPERATOR_NS, "infergate-operator")
    assert lease["spec"].get("holderIdentity") == "op-3", lease


def test_deleting_a_policy_removes_its_secret_and_shard(kubectl, examples_applied):
    wait_for("gold-app's shard", lambda: policy_shard(kubectl, "checkout", "gold-app"))
    kubectl("delete", "-n", "checkout", "apikeypolicy", "gold-app")
    wait_for("the key Secret to be garbage-collected", lambda: secret_data(kubectl, "checkout", "gold-app-key") is None)
    wait_for("the shard to be deleted", lambda: policy_shard(kubectl, "checkout", "gold-app") is None)


def test_shards_orphaned_while_no_operator_ran_are_swept_at_start(kubectl, start_operator, examples_applied):
    wait_for("short-overlap's shard", lambda: policy_shard(kubectl, "checkout", "short-overlap"))
    for op in start_operator.started:
        assert op.stop() == 0
    kubectl("delete", "-n", "checkout", "apikeypolicy", "short-overlap")
    assert policy_shard(kubectl, "checkout", "short-overlap") is not None, "nobody removed it yet"
    fresh = start_operator("op-4")
    wait_for("the orphaned shard to be swept", lambda: policy_shard(kubectl, "checkout", "short-overlap") is None)
    # Shards of live policies stay.
    assert policy_shard(kubectl, "checkout", "checkout-voice") is not None
    assert fresh.ready()


def test_no_key_material_in_logs(start_operator):
    for op in start_operator.started:
        text = op.log_text()
        assert text, f"{op.log_path} is empty"
        assert "sk_live_" not in text and "sk_test_" not in text, f"key material in {op.log_path}"
