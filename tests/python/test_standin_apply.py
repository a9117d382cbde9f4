"""The API stand-in's server-side apply (tests/standin/standin.py), which the operator, the agents, the kubectl plugin
and GitOps-style `kubectl apply --server-side` all rely on in the end-to-end tests: list-maps (what the infergate
CRDs declare `x-kubernetes-list-type: map`) merge per item key and each manager owns its own items; other lists stay
atomic; managedFields say who owns what. No operator runs here, so nothing else writes the objects."""

from __future__ import annotations

import json

import httpx
import pytest

NS = "standin-apply"
PATH = f"/apis/infergate.dev/v1alpha1/namespaces/{NS}/apikeypolicies/app"
KID = {c: f"kid_00000000000000{c}{c}" for c in "abcd"}


def revocation(c: str, reason: str = "leak") -> dict:
    return {"keyId": KID[c], "reason": reason, "requestedBy": "someone"}


def policy(**spec) -> dict:
    return {"apiVersion": "infergate.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": "app", "namespace": NS}, "spec": spec}


FULL = dict(tier="pro", secretName="app-key", scopes=[{"endpoint": "stt"}])


@pytest.fixture(scope="module")
def apply(standin, kubectl):
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))

    def run(manager: str, body: dict, subresource: str = "") -> dict:
        path = PATH + (f"/{subresource}" if subresource else "")
        r = httpx.patch(standin.url + path, params={"fieldManager": manager, "force": "true"},
                        headers={"Content-Type": "application/apply-patch+yaml"}, content=json.dumps(body),
                        timeout=10)
        assert r.status_code in (200, 201), r.text
        return r.json()

    return run


def revocation_ids(obj: dict) -> list[str]:
    return [r["keyId"] for r in obj["spec"].get("revocations") or []]


def owned(obj: dict, manager: str, subresource: str = "") -> dict:
    entries = [e for e in obj["metadata"].get("managedFields") or []
               if e["manager"] == manager and e.get("subresource", "") == subresource]
    assert len(entries) == 1 and entries[0]["operation"] == "Apply", obj["metadata"].get("managedFields")
    return entries[0]["fieldsV1"]


def test_list_map_items_are_merged_by_key_and_owned_per_manager(apply):
    apply("gitops", policy(**FULL, revocations=[revocation("a")]))
    obj = apply("plugin", policy(revocations=[revocation("b")]))
    assert revocation_ids(obj) == [KID["a"], KID["b"]], "an apply of one item adds it, others stay"

    # The plugin's next apply states its whole intent: b and c. Nothing of gitops's is touched.
    obj = apply("plugin", policy(revocations=[revocation("b"), revocation("c")]))
    assert revocation_ids(obj) == [KID["a"], KID["b"], KID["c"]]
    assert set(owned(obj, "plugin")["f:spec"]["f:revocations"]) == {
        f'k:{{"keyId":"{KID["b"]}"}}', f'k:{{"keyId":"{KID["c"]}"}}'}
    assert owned(obj, "gitops")["f:spec"]["f:revocations"] == {
        f'k:{{"keyId":"{KID["a"]}"}}': {".": {}, "f:keyId": {}, "f:reason": {}, "f:requestedBy": {}}}

    # gitops drops its item and re-applies: only its own item goes.
    obj = apply("gitops", policy(**FULL))
    assert revocation_ids(obj) == [KID["b"], KID["c"]]

    # An item two managers applied stays until both drop it; its fields take the latest apply's values.
    apply("gitops", policy(**FULL, revocations=[revocation("c", "gitops says")]))
    obj = apply("plugin", policy(revocations=[revocation("b")]))
    assert revocation_ids(obj) == [KID["b"], KID["c"]]
    assert obj["spec"]["revocations"][1]["reason"] == "gitops says"
    obj = apply("gitops", policy(**FULL))
    assert revocation_ids(obj) == [KID["b"]]

    obj = apply("plugin", policy())
    assert "revocations" not in obj["spec"], "a list-map nobody owns an item of is gone"


def test_other_lists_stay_atomic(apply):
    apply("gitops", policy(**FULL))
    obj = apply("someone-else", policy(scopes=[{"endpoint": "other"}]))
    assert obj["spec"]["scopes"] == [{"endpoint": "other"}], "scopes is not a list-map: replaced whole"


def condition(type_: str, message: str | None = None) -> dict:
    c = {"type": type_, "status": "True", "reason": "Because", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    if message is not None:
        c["message"] = message
    return c


def test_status_conditions_merge_by_type_and_drop_fields_a_manager_stops_applying(apply):
    apply("gitops", policy(**FULL))
    apply("operator", {**policy(), "status": {"conditions": [condition("Ready", "all good")]}}, "status")
    obj = apply("other", {**policy(), "status": {"conditions": [condition("Audited")]}}, "status")
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Ready", "Audited"]

    obj = apply("operator", {**policy(), "status": {"conditions": [condition("Ready")]}}, "status")
    ready = obj["status"]["conditions"][0]
    assert ready["type"] == "Ready" and "message" not in ready, "a field the manager no longer applies is removed"
    assert "f:conditions" in owned(obj, "operator", "status")["f:status"]


def test_a_repeated_identical_apply_writes_nothing(apply):
    first = apply("gitops", policy(**FULL, revocations=[revocation("d")]))
    again = apply("gitops", policy(**FULL, revocations=[revocation("d")]))
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again["metadata"]["managedFields"] == first["metadata"]["managedFields"]
