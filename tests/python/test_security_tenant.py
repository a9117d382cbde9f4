"""Issue 9, tenant isolation (items 1, 2, 5): what a tenant who can write ApiKeyPolicies and Secrets in its own
namespace can make the operator do. The real `infergate-operator run` against the API stand-in, driven with kubectl.

Names the implementation must match (chosen here, from the issue text):
- item 1: condition `Ready=False` with reason `SecretConflict` whose message names `<namespace>/<secretName>`, and an
  Event (events.k8s.io/v1) with reason `SecretConflict` regarding the ApiKeyPolicy. A policy in the operator's own
  namespace is `Ready=False` (any reason; the message names the namespace) and gets no Secret.
- item 5: `RateTier.spec.allowedNamespaces: [ns, ...]` (absent: every namespace); a policy in a namespace not listed
  is `Ready=False`, reason `TierNotAllowed`, message naming the tier.

Each test sets up its own namespaces and objects, so order does not matter; one stand-in and one operator serve the
module.
"""
from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from conftest import wait_for
from security_helpers import security_item
from test_operator_e2e import condition, key_id, policy, policy_shard, secret_data, shard_key_ids

OPERATOR_NS = "infergate-system"


def ns_yaml(*names: str) -> str:
    return "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n" for n in names)


WORLD = ns_yaml(OPERATOR_NS, "speech") + """---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: sec-free}
spec: {gpuSecondsPerMinute: 60, burstGpuSeconds: 60}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: stt, namespace: speech}
spec:
  model: whisper-sec
  features: [transcribe]
  backend: {upstream: {url: "http://whisper.speech.svc:8000/v1"}}
  allowedNamespaces: ["*"]
"""


def policy_yaml(ns: str, name: str, secret: str, tier: str = "sec-free", extra: str = "") -> str:
    return f"""---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  tier: {tier}
  secretName: {secret}
  scopes: [{{endpoint: stt, namespace: speech}}]{extra}
"""


@pytest.fixture(scope="module")
def world(kubectl, start_operator):
    kubectl("apply", "-f", "-", input=WORLD)
    op = start_operator("op-sec", namespace=OPERATOR_NS)
    wait_for("the operator to lead and sync (/readyz)", op.ready, timeout=90)
    return op


def wait_condition(kubectl, ns, name, status: str, timeout=20):
    """Waits for the policy's first Ready condition (either value), then asserts its status: today's code reaches
    Ready=True within a second, so a wrong outcome fails fast instead of running out a timeout."""
    cond = wait_for(f"{ns}/{name} to get a Ready condition", lambda: condition(policy(kubectl, ns, name)),
                    timeout=timeout)
    assert cond["status"] == status, f"{ns}/{name}: expected Ready={status}, got {cond}"
    return cond


def wait_api_key(kubectl, ns, secret, timeout=30):
    return wait_for(f"a key in {ns}/{secret}", lambda: (secret_data(kubectl, ns, secret) or {}).get("api-key"),
                    timeout=timeout)


# --- item 1 ---------------------------------------------------------------------------------------------------


@security_item(1, built=True)
def test_existing_unlabelled_secret_is_a_conflict_not_overwritten(kubectl, world):
    kubectl("apply", "-f", "-", input=ns_yaml("team-c1") + """---
apiVersion: v1
kind: Secret
metadata: {name: payments-db, namespace: team-c1}
data: {api-key: aHVudGVyMi1ub3QtYW4taW5mZXJnYXRlLWtleQ==, password: ZGItcGFzc3dvcmQ=}  # hunter2-not-an-infergate-key, db-password
""")
    before = kubectl.get_json("secret", "-n", "team-c1", "payments-db")
    kubectl("apply", "-f", "-", input=policy_yaml("team-c1", "grabby", "payments-db"))
    wait_for("team-c1/grabby to get a Ready condition", lambda: condition(policy(kubectl, "team-c1", "grabby")),
             timeout=20)

    after = kubectl.get_json("secret", "-n", "team-c1", "payments-db")
    assert after["data"] == before["data"], "the operator overwrote a Secret it does not own"
    assert not after["metadata"].get("ownerReferences"), "the operator claimed a Secret it does not own"
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    cond = wait_condition(kubectl, "team-c1", "grabby", "False")
    assert cond["reason"] == "SecretConflict", cond
    assert "payments-db" in cond["message"], cond

    def conflict_event():
        events = (kubectl.get_json("events.v1.events.k8s.io", "-n", "team-c1") or {}).get("items", [])
        return next((e for e in events if e.get("reason") == "SecretConflict"
                     and (e.get("regarding") or {}).get("name") == "grabby"), None)

    wait_for("a SecretConflict Event on the policy", conflict_event, timeout=15)
    assert policy_shard(kubectl, "team-c1", "grabby") is None, "a conflicting policy publishes no key"

    # Deleting the policy must not garbage-collect the Secret it never owned.
    kubectl("delete", "-n", "team-c1", "apikeypolicy", "grabby")
    time.sleep(1.0)
    assert kubectl.get_json("secret", "-n", "team-c1", "payments-db") is not None


@security_item(1, built=True)
def test_policy_in_the_operator_namespace_is_refused(kubectl, world):
    # Its Secret would live next to the gateway-config shards (and, in a real install, the Helm release and TLS
    # Secrets): an ApiKeyPolicy there must not make the operator write anything.
    kubectl("apply", "-f", "-", input=policy_yaml(OPERATOR_NS, "inside", "inside-key"))
    wait_for("the policy to get a Ready condition", lambda: condition(policy(kubectl, OPERATOR_NS, "inside")),
             timeout=20)
    assert kubectl.get_json("secret", "-n", OPERATOR_NS, "inside-key") is None, (
        "the operator wrote a key Secret into its own namespace")
    cond = wait_condition(kubectl, OPERATOR_NS, "inside", "False")
    assert OPERATOR_NS in cond["message"], cond


# --- item 2 ---------------------------------------------------------------------------------------------------


def _victim_and_attacker(kubectl, suffix: str):
    # The attacker's namespace sorts after the victim's: the agent builds its key index in policy order, and the later
    # record with the same key-id bits wins.
    victim_ns, attacker_ns = f"victim-{suffix}", f"zz-mallory-{suffix}"
    kubectl("apply", "-f", "-", input=ns_yaml(victim_ns, attacker_ns)
            + policy_yaml(victim_ns, "app", "app-key") + policy_yaml(attacker_ns, "app", "app-key"))
    victim_key = wait_api_key(kubectl, victim_ns, "app-key")
    attacker_key = wait_api_key(kubectl, attacker_ns, "app-key")
    wait_for("both shards", lambda: policy_shard(kubectl, victim_ns, "app") and policy_shard(kubectl, attacker_ns, "app"))
    return victim_ns, attacker_ns, victim_key, attacker_key


def _poke(kubectl, ns, name, value):
    """A metadata change on the policy, so the operator reconciles it now (re-reading the edited Secret)."""
    kubectl("annotate", "-n", ns, "apikeypolicy", name, "--overwrite", f"security-test/poke={value}")


def _all_ids(shard: dict | None) -> set[str]:
    return shard_key_ids(shard) | {r["keyId"] for r in (shard or {}).get("revoked", [])}


@security_item(2, built=True)
def test_hand_edited_revoked_digests_cannot_revoke_another_tenants_key(kubectl, world):
    victim_ns, attacker_ns, victim_key, _ = _victim_and_attacker(kubectl, "r")
    victim_kid = key_id(victim_key)
    # The attacker knows only the victim's key id (it appears in status, audit lines, dashboards): a digest that
    # shares its 16-hex prefix is enough to collide in an index keyed by key id.
    forged_digest = victim_kid.removeprefix("kid_") + "0" * 48
    patch = {"spec": {"revocations": [{"keyId": victim_kid, "reason": "x", "requestedBy": "mallory"}]}}
    kubectl("patch", "-n", attacker_ns, "apikeypolicy", "app", "--type", "merge", "-p", json.dumps(patch))
    wait_for("the attacker's unmatched revocation in status", lambda: any(
        r["keyId"] == victim_kid for r in (policy(kubectl, attacker_ns, "app").get("status") or {}).get("revocations") or []))
    kubectl("annotate", "-n", attacker_ns, "secret", "app-key", "--overwrite",
            f"infergate.dev/revoked-key-digests={forged_digest}")
    _poke(kubectl, attacker_ns, "app", "1")
    time.sleep(3.0)  # several reconciles' worth; the assertion is that nothing appears, so a wait is unavoidable
    assert victim_kid not in _all_ids(policy_shard(kubectl, attacker_ns, "app")), (
        "the attacker's shard now revokes the victim's key id")


@security_item(2, built=True)
def test_hand_edited_previous_digest_cannot_add_a_key_or_shadow_another(kubectl, world):
    victim_ns, attacker_ns, victim_key, _ = _victim_and_attacker(kubectl, "p")
    victim_kid = key_id(victim_key)
    invented = "sk_live_" + "A" * 49  # never issued; its digest is all the Secret needs
    invented_digest = hashlib.sha256(invented.encode()).hexdigest()
    retires = "2099-01-01T00:00:00Z"
    for digest in (invented_digest, victim_kid.removeprefix("kid_") + "f" * 48):
        kubectl("annotate", "-n", attacker_ns, "secret", "app-key", "--overwrite",
                f"infergate.dev/previous-key-digest={digest}", f"infergate.dev/previous-key-id=kid_{digest[:16]}",
                f"infergate.dev/previous-retires-at={retires}", f"infergate.dev/previous-issued-at={retires}")
        _poke(kubectl, attacker_ns, "app", digest[:8])
        time.sleep(3.0)
        ids = _all_ids(policy_shard(kubectl, attacker_ns, "app"))
        assert f"kid_{digest[:16]}" not in ids, f"a hand-written previous-key-digest was published: {ids}"
    # The victim's own shard is untouched either way.
    assert shard_key_ids(policy_shard(kubectl, victim_ns, "app")) == {victim_kid}


# --- item 5 (tiers) -------------------------------------------------------------------------------------------


@security_item(5, built=True)
def test_tier_allowed_namespaces_is_enforced(kubectl, world):
    kubectl("apply", "-f", "-", input=ns_yaml("gold-team", "other-team") + """---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: sec-gold}
spec: {gpuSecondsPerMinute: 6000, burstGpuSeconds: 6000, allowedNamespaces: [gold-team]}
""" + policy_yaml("gold-team", "ok", "ok-key", tier="sec-gold") + policy_yaml("other-team", "sneaky", "sneaky-key",
                                                                            tier="sec-gold"))
    wait_condition(kubectl, "gold-team", "ok", "True")
    cond = wait_condition(kubectl, "other-team", "sneaky", "False")
    assert cond["reason"] == "TierNotAllowed", cond
    assert "sec-gold" in cond["message"]
    assert policy_shard(kubectl, "other-team", "sneaky") is None


@security_item(2, built=True)
def test_victim_key_keeps_working_at_the_gateway_after_the_attackers_edit(kubectl, world, standin, tmp_path):
    # The consequence at a real cluster-mode agent: today the forged revoked digest (same key-id prefix) makes the
    # agent answer `key_revoked` for the victim's key.
    from test_whole_loop import ClusterAgent

    victim_ns, attacker_ns, victim_key, _ = _victim_and_attacker(kubectl, "g")
    victim_kid = key_id(victim_key)
    agent = ClusterAgent(standin.kubeconfig, tmp_path, node="node-sec")
    try:
        def models(key):
            return httpx.get(f"{agent.http}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=5)

        wait_for("the agent to accept the victim's key", lambda: models(victim_key).status_code == 200, timeout=30)
        patch = {"spec": {"revocations": [{"keyId": victim_kid, "reason": "x", "requestedBy": "mallory"}]}}
        kubectl("patch", "-n", attacker_ns, "apikeypolicy", "app", "--type", "merge", "-p", json.dumps(patch))
        wait_for("the attacker's unmatched revocation in status", lambda: any(
            r["keyId"] == victim_kid
            for r in (policy(kubectl, attacker_ns, "app").get("status") or {}).get("revocations") or []))
        kubectl("annotate", "-n", attacker_ns, "secret", "app-key", "--overwrite",
                f"infergate.dev/revoked-key-digests={victim_kid.removeprefix('kid_') + '0' * 48}")
        _poke(kubectl, attacker_ns, "app", "g")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = models(victim_key)
            assert r.status_code == 200, f"another tenant's Secret edit knocked out the victim's key: {r.text}"
            time.sleep(0.25)
        assert victim_key not in agent.logs()
    finally:
        agent.stop()
