"""Issue 9, least privilege in the chart (item 7): the real helm renders charts/infergate (as test_chart.py does) and
the RBAC is expanded into grants with chart_checks.

What the implementation must match: the operator can delete Secrets only through a Role in the release namespace
(where the gateway-config shards live), never through its ClusterRole; it keeps get/list/watch/create/patch on
Secrets cluster-wide (key Secrets live next to each ApiKeyPolicy). The agent's admin port is not published on the
gateway Service (so /usage and /status are not reachable through the client entry point).

Note for the implementer: test_chart.py's `allowed_grants` lists the cluster-wide delete today and has to change
in the same commit.
"""
from __future__ import annotations

import pytest

import chart_checks as cc
from security_helpers import security_item
from test_chart import NAMESPACE, VALUES, fullname, render

values_params = pytest.mark.parametrize("values", list(VALUES.values()), ids=list(VALUES))


@security_item(7)
@values_params
def test_operator_deletes_secrets_only_in_its_own_namespace(values):
    grants, problems = cc.rbac_grants(list(render(values)))
    assert not problems, problems
    operator = f"{NAMESPACE}/{fullname(values)}-operator"
    secret_deletes = {g for g in grants if g[0] == operator and g[2] == "" and g[3] == "secrets" and g[4] == "delete"}
    assert secret_deletes == {(operator, NAMESPACE, "", "secrets", "delete")}, sorted(secret_deletes)


@values_params
@security_item(7, built=True)
def test_gateway_service_does_not_publish_the_admin_port(values):
    objs = render(values)
    for svc in (o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-gateway")):
        ports = {p.get("port") for p in svc["spec"]["ports"]} | {str(p.get("targetPort")) for p in svc["spec"]["ports"]}
        assert 9090 not in ports and "9090" not in ports and "admin" not in ports, svc["spec"]["ports"]
