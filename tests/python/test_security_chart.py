"""Issue 9, least privilege in the chart (item 7): the real helm renders charts/infergate (as test_chart.py does) and
the RBAC is expanded into grants with chart_checks.

What the implementation must match: the operator can delete Secrets only through a Role in the namespace where the
gateway-config shards live (the dedicated config namespace, `<release namespace>-config` by default), never through
its ClusterRole; it keeps get/list/watch/create/patch on
Secrets cluster-wide (key Secrets live next to each ApiKeyPolicy). The agent's admin port is not published on the
gateway Service (so /usage and /status are not reachable through the client entry point).

Note for the implementer: test_chart.py's `allowed_grants` lists the cluster-wide delete today and has to change
in the same commit.
"""
from __future__ import annotations

import pytest
import yaml

import chart_checks as cc
from security_helpers import security_item
from test_chart import NAMESPACE, VALUES, fullname, render

def config_namespace(values) -> str:
    """Where the chart puts the gateway-config shards for these values (the default: `<namespace>-config`)."""
    given = yaml.safe_load(values.read_text()) if values else {}
    return ((given or {}).get("gatewayConfig") or {}).get("namespace") or f"{NAMESPACE}-config"


values_params = pytest.mark.parametrize("values", list(VALUES.values()), ids=list(VALUES))


@security_item(7, built=True)
@values_params
def test_operator_deletes_secrets_only_in_the_config_namespace(values):
    objs = list(render(values))
    grants, problems = cc.rbac_grants(objs)
    assert not problems, problems
    operator = f"{NAMESPACE}/{fullname(values)}-operator"
    config_ns = config_namespace(values)
    secret_deletes = {g for g in grants if g[0] == operator and g[2] == "" and g[3] == "secrets" and g[4] == "delete"}
    assert secret_deletes == {(operator, config_ns, "", "secrets", "delete")}, sorted(secret_deletes)


@security_item(7, built=True)
@values_params
def test_the_agent_reads_secrets_only_in_the_dedicated_config_namespace(values):
    # The internet-facing agent can read the gateway config, and nothing else: not the release namespace, where the
    # TLS key and Helm's release Secrets live.
    objs = list(render(values))
    grants, problems = cc.rbac_grants(objs)
    assert not problems, problems
    agent = f"{NAMESPACE}/{fullname(values)}-agent"
    config_ns = config_namespace(values)
    secret_namespaces = {g[1] for g in grants if g[0] == agent and g[2] == "" and g[3] == "secrets"}
    assert secret_namespaces == {config_ns}, sorted(secret_namespaces)
    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    assert config_ns in namespaces, "the dedicated config namespace is rendered (Pod Security restricted)"


@values_params
@security_item(7, built=True)
def test_gateway_service_does_not_publish_the_admin_port(values):
    objs = render(values)
    for svc in (o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-gateway")):
        ports = {p.get("port") for p in svc["spec"]["ports"]} | {str(p.get("targetPort")) for p in svc["spec"]["ports"]}
        assert 9090 not in ports and "9090" not in ports and "admin" not in ports, svc["spec"]["ports"]
