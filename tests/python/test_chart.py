"""Helm chart tests: the real helm 3.17 (tests/tools/install-helm.sh) lints and renders charts/infergate for the
default values and for ci/all-on-values.yaml; the rendered objects are validated against the Kubernetes OpenAPI
schemas (kubernetes-validate, offline, strict) and walked for hardening and least-privilege RBAC.

Run: bash tests/tools/install-helm.sh && .venv/bin/python -m pytest -q tests/python/test_chart.py
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import celpy
import kubernetes_validate
import pytest
import yaml

import chart_checks as cc
from conftest import binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "infergate"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RELEASE = "infergate"
NAMESPACE = "infergate"
# The same minor as the k8s-openapi feature (v1_33) the crates build against.
K8S_VERSION = "1.33.0"
VALUES = {"default": None, "all-on": ALL_ON}

# Objects whose types are themselves CRDs, so the upstream OpenAPI schemas do not cover them.
NO_UPSTREAM_SCHEMA = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "Prometheus Operator CRD; its schema ships with that operator",
    ("cert-manager.io/v1", "Certificate"): "cert-manager CRD; its schema ships with cert-manager",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "Prometheus Operator CRD; its rules are checked by promtool "
                                                    "in test_chart_dashboards.py",
}

CRD_GROUP = "infergate.dev"
CRD_PLURALS = ("inferenceendpoints", "apikeypolicies", "ratetiers")


def config_namespace(values: Path | None) -> str:
    """Where the gateway-config shards live: the all-on file names it, the default is <release namespace>-config."""
    return "infergate-gateway-config" if values == ALL_ON else f"{NAMESPACE}-config"


def allowed_grants(fullname: str, config_ns: str = f"{NAMESPACE}-config") -> set[cc.Grant]:
    """The least privilege each binary needs; anything rendered beyond this, or missing from it, fails."""
    operator = f"{NAMESPACE}/{fullname}-operator"
    agent = f"{NAMESPACE}/{fullname}-agent"
    g: set[cc.Grant] = set()

    def grant(who, scope, group, resources, verbs):
        g.update((who, scope, group, r, v) for r in resources for v in verbs)

    # Operator, cluster-wide: watch the CRs in every namespace (no finalizer, never writes spec); status by SSA.
    grant(operator, "cluster", CRD_GROUP, CRD_PLURALS, ("get", "list", "watch"))
    grant(operator, "cluster", CRD_GROUP, [f"{p}/status" for p in CRD_PLURALS], ("patch",))
    # One key Secret per ApiKeyPolicy in the policy's namespace: server-side apply (patch + create), never delete.
    grant(operator, "cluster", "", ["secrets"], ("get", "list", "watch", "create", "patch"))
    # Gateway-config shards, in the config namespace only: watch, apply, and delete orphans.
    grant(operator, config_ns, "", ["secrets"], ("get", "list", "watch", "create", "patch", "delete"))
    grant(operator, "cluster", "events.k8s.io", ["events"], ("create",))
    # Node labels, matched against endpoints' nodeSelectors: each endpoint shard names the nodes that serve it.
    grant(operator, "cluster", "", ["nodes"], ("get", "list", "watch"))
    # Operator, own namespace: leader election (create, then replace) and reading the agents' Leases.
    grant(operator, NAMESPACE, "coordination.k8s.io", ["leases"], ("get", "list", "watch", "create", "update"))
    # Operator, own namespace: one selector-less Service per endpoint with a nodeSelector, and its EndpointSlices.
    grant(operator, NAMESPACE, "", ["services"], ("get", "list", "create", "patch", "delete"))
    grant(operator, NAMESPACE, "discovery.k8s.io", ["endpointslices"], ("get", "list", "create", "patch", "delete"))
    # Agent: read gateway-config Secrets in the config namespace only; write its own Lease (name pinned by the
    # policy) in the release namespace, where it reads no Secret.
    grant(agent, config_ns, "", ["secrets"], ("get", "list", "watch"))
    grant(agent, NAMESPACE, "coordination.k8s.io", ["leases"], ("create", "get", "update", "patch"))
    return g


# --- helm -----------------------------------------------------------------------------------------------------


@functools.cache
def helm() -> str:
    local = ROOT / ".tools" / "bin" / "helm"
    path = str(local) if local.exists() else shutil.which("helm")
    if not path:
        pytest.fail("helm not found: run `bash tests/tools/install-helm.sh` (puts helm 3.17 in .tools/bin)")
    return path


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HELM_CACHE_HOME": str(ROOT / ".cache" / "helm-home"),
                               "HELM_CONFIG_HOME": str(ROOT / ".cache" / "helm-home"),
                               "HELM_DATA_HOME": str(ROOT / ".cache" / "helm-home")})
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def template_args(values: Path | None, *extra: str) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", K8S_VERSION,
            "--include-crds"]
    if values is not None:
        args += ["--values", str(values)]
    return args + list(extra)


@functools.cache
def render(values: Path | None, *extra: str) -> tuple[dict, ...]:
    out = run_helm(*template_args(values, *extra)).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def fullname(values: Path | None) -> str:
    return "infergate-all-on" if values == ALL_ON else "infergate"


def one(objects, kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, rendered {[cc.name_of(o) for o in objects]}"
    return found[0]


def container(objects, kind: str, name: str) -> dict:
    return one(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]


values_params = pytest.mark.parametrize("values", list(VALUES.values()), ids=list(VALUES))


# --- version ----------------------------------------------------------------------------------------------------


def test_chart_version_and_app_version_follow_the_workspace_version():
    crate = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == crate, f"Chart.yaml version {chart['version']} != Cargo.toml workspace version {crate}"
    assert str(chart["appVersion"]) == crate, (
        f"Chart.yaml appVersion {chart['appVersion']} != Cargo.toml workspace version {crate}")


def test_images_default_to_the_app_version():
    objs = render(None)
    assert container(objs, "Deployment", "infergate-operator")["image"] == "ghcr.io/infergate/operator:0.1.0"
    assert container(objs, "DaemonSet", "infergate-agent")["image"] == "ghcr.io/infergate/agent:0.1.0"


# --- lint, render, validate -------------------------------------------------------------------------------------


@values_params
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--kube-version", K8S_VERSION]
    if values is not None:
        args += ["--values", str(values)]
    out = run_helm(*args).stdout
    assert "0 chart(s) failed" in out, out


@values_params
def test_rendered_objects_validate_against_kubernetes_schemas(values):
    objs = render(values)
    problems, skipped = [], set()
    for obj in objs:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in NO_UPSTREAM_SCHEMA:
            skipped.add(key)
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{cc.name_of(obj)}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{cc.name_of(obj)}: {e.message}")
    assert not problems, "\n".join(problems)
    if values == ALL_ON:
        # The all-on file must actually exercise the skipped kinds, or the skip list is stale.
        assert skipped == set(NO_UPSTREAM_SCHEMA), skipped


def test_clusters_older_than_1_30_are_refused_up_front():
    # ValidatingAdmissionPolicy v1 and the node name in bound tokens arrive in 1.30; older clusters would accept the
    # install and leave the agent Lease unguarded.
    proc = run_helm("template", RELEASE, str(CHART), "--kube-version", "1.29.9", check=False)
    assert proc.returncode != 0 and "incompatible with Kubernetes v1.29.9" in proc.stderr, proc.stderr


CONFIG_NAMESPACE_OBJECTS = {("Role", "operator-config"), ("RoleBinding", "operator-config"),
                            ("Role", "agent-config"), ("RoleBinding", "agent-config")}


def in_config_namespace(obj: dict, values: Path | None) -> bool:
    suffix = obj["metadata"]["name"].removeprefix(fullname(values) + "-")
    return (obj["kind"], suffix) in CONFIG_NAMESPACE_OBJECTS


def dashboard_namespace(values: Path | None) -> str:
    """Where the Grafana dashboard ConfigMap goes: monitoring.dashboard.namespace, else the release namespace."""
    given = yaml.safe_load(values.read_text()) if values else {}
    return given.get("monitoring", {}).get("dashboard", {}).get("namespace") or NAMESPACE


@values_params
def test_namespaced_objects_land_in_the_release_namespace(values):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ValidatingAdmissionPolicy",
                      "ValidatingAdmissionPolicyBinding", "Namespace"}
    dashboard = ("ConfigMap", f"{fullname(values)}-dashboard")
    wrong = [cc.name_of(o) for o in render(values)
             if o["kind"] not in cluster_scoped and not in_config_namespace(o, values)
             and (o["kind"], o["metadata"]["name"]) != dashboard
             and o["metadata"].get("namespace") != NAMESPACE]
    assert not wrong, f"not in namespace {NAMESPACE}: {wrong}"
    for o in render(values):
        if (o["kind"], o["metadata"]["name"]) == dashboard:
            assert o["metadata"]["namespace"] == dashboard_namespace(values)


@values_params
def test_the_config_namespace_holds_only_the_shard_roles(values):
    # The agents' token reads every Secret there, so the chart puts nothing else in it: no TLS Secret mount source,
    # no workload, no Service. (Helm keeps its release Secrets in the release namespace.)
    objs = render(values)
    config_ns = config_namespace(values)
    there = sorted(cc.name_of(o) for o in objs if o["metadata"].get("namespace") == config_ns)
    expected = sorted(f"{kind}/{fullname(values)}-{suffix}" for kind, suffix in CONFIG_NAMESPACE_OBJECTS)
    assert there == expected, there
    namespace = one(objs, "Namespace", config_ns)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_config_namespace_defaults_to_the_release_namespace_plus_config_and_is_passed_to_both_binaries():
    objs = render(None)
    for kind, name in (("Deployment", "infergate-operator"), ("DaemonSet", "infergate-agent")):
        assert "--config-namespace=infergate-config" in container(objs, kind, name)["args"], name
    long_ns = "n" * 60
    objs = render(None, "--namespace", long_ns)
    names = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    assert names == {"n" * 56 + "-config"}, "the derived name must stay a 63-character DNS label"


def test_grants_that_can_delete_secrets_are_confined_to_the_config_namespace():
    for values in VALUES.values():
        grants, _ = cc.rbac_grants(list(render(values)))
        deleters = {(who, scope) for who, scope, group, resource, verb in grants
                    if group == "" and resource == "secrets" and verb == "delete"}
        assert deleters == {(f"{NAMESPACE}/{fullname(values)}-operator", config_namespace(values))}, deleters
        agent_secret_scopes = {scope for who, scope, group, resource, _ in grants
                               if who.endswith("-agent") and resource == "secrets"}
        assert agent_secret_scopes == {config_namespace(values)}, "agents read Secrets in the config namespace only"


def test_config_in_the_release_namespace_when_the_dedicated_namespace_is_off():
    objs = render(None, "--set", "gatewayConfig.dedicatedNamespace=false")
    assert not [o for o in objs if o["kind"] == "Namespace"]
    for kind, name in (("Deployment", "infergate-operator"), ("DaemonSet", "infergate-agent")):
        assert not [a for a in container(objs, kind, name)["args"] if a.startswith("--config-namespace")], name
    grants, problems = cc.rbac_grants(list(objs))
    problems += cc.diff_grants(grants, allowed_grants("infergate", config_ns=NAMESPACE))
    assert not problems, "\n".join(problems)


def test_an_existing_config_namespace_is_used_without_rendering_it():
    objs = render(None, "--set", "gatewayConfig.createNamespace=false", "--set", "gatewayConfig.namespace=shards")
    assert not [o for o in objs if o["kind"] == "Namespace"]
    assert "--config-namespace=shards" in container(objs, "DaemonSet", "infergate-agent")["args"]
    grants, problems = cc.rbac_grants(list(objs))
    problems += cc.diff_grants(grants, allowed_grants("infergate", config_ns="shards"))
    assert not problems, "\n".join(problems)


def test_crds_are_shipped_for_every_resource_the_operator_is_granted():
    crds = [o for o in render(None) if o["kind"] == "CustomResourceDefinition"]
    assert crds, ("charts/infergate/crds/ holds no CustomResourceDefinition: it is generated from the Rust types "
                  "(crds crate) and committed there")
    plurals = {c["spec"]["names"]["plural"] for c in crds if c["spec"]["group"] == CRD_GROUP}
    assert plurals == set(CRD_PLURALS), f"CRDs in the chart cover {sorted(plurals)}, RBAC expects {CRD_PLURALS}"


# --- hardening --------------------------------------------------------------------------------------------------


@values_params
def test_every_container_is_hardened(values):
    objs = render(values)
    holders = {f"{fullname(values)}-operator", f"{fullname(values)}-agent"}
    assert len(cc.pod_specs(objs)) >= 3, "expected the operator, the agent and the helm test pod"
    problems = cc.hardening_problems(list(objs), holders)
    assert not problems, "\n".join(problems)


@values_params
def test_service_accounts_do_not_mount_tokens_by_default(values):
    sas = [o for o in render(values) if o["kind"] == "ServiceAccount"]
    assert {s["metadata"]["name"] for s in sas} == {f"{fullname(values)}-operator", f"{fullname(values)}-agent"}
    loose = [cc.name_of(s) for s in sas if s.get("automountServiceAccountToken") is not False]
    assert not loose, f"pods opt in to tokens themselves; these ServiceAccounts hand them out: {loose}"


def test_hardening_walker_reports_each_weakness():
    weak = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "weak"},
        "spec": {"template": {"spec": {
            "hostNetwork": True,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "initContainers": [{"name": "init", "securityContext": {"runAsNonRoot": True}}],
            "containers": [{"name": "main", "securityContext": {
                "runAsNonRoot": True, "runAsUser": 0, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
                "seccompProfile": {"type": "Unconfined"}}}],
        }}},
    }
    problems = "\n".join(cc.hardening_problems([weak], token_holders=set()))
    for expected in ("hostNetwork", "hostPath", "automountServiceAccountToken is not false",
                     "initContainers/init: readOnlyRootFilesystem", "initContainers/init: allowPrivilegeEscalation",
                     "initContainers/init: capabilities.drop lacks ALL", "initContainers/init: seccompProfile",
                     "containers/main: runAsUser is 0", "capabilities.add", "containers/main: seccompProfile is "
                     "'Unconfined'", "containers/main: no requests.cpu", "containers/main: no limits.memory"):
        assert expected in problems, f"walker missed {expected!r}:\n{problems}"


# --- RBAC -------------------------------------------------------------------------------------------------------


@values_params
def test_rbac_is_exactly_the_allow_list(values):
    grants, problems = cc.rbac_grants(list(render(values)))
    problems += cc.diff_grants(grants, allowed_grants(fullname(values), config_namespace(values)))
    assert not problems, "\n".join(problems)


def test_rbac_check_reports_wildcards_and_extra_verbs():
    objs = [
        {"kind": "ClusterRole", "metadata": {"name": "r"},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "escalate"]},
                   {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]},
                   {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
         "roleRef": {"kind": "ClusterRole", "name": "r"},
         "subjects": [{"kind": "ServiceAccount", "namespace": "ns", "name": "sa"}, {"kind": "Group", "name": "x"}]},
        {"kind": "RoleBinding", "metadata": {"name": "c", "namespace": "ns"},
         "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "namespace": "ns", "name": "sa"}]},
    ]
    grants, problems = cc.rbac_grants(objs)
    problems += cc.diff_grants(grants, {("ns/sa", "cluster", "", "secrets", "get")})
    text = "\n".join(problems)
    for expected in ("wildcard in apiGroups", "nonResourceURLs", "is not a ServiceAccount",
                     "ClusterRole/cluster-admin, which the chart does not render",
                     "('ns/sa', 'cluster', '', 'secrets', 'escalate')"):
        assert expected in text, f"RBAC check missed {expected!r}:\n{text}"


def test_agent_has_no_cluster_wide_binding():
    bindings = [o for o in render(ALL_ON) if o["kind"] == "ClusterRoleBinding"]
    subjects = {s["name"] for b in bindings for s in b["subjects"]}
    assert subjects == {"infergate-all-on-operator"}, subjects


# --- the binaries' contract -------------------------------------------------------------------------------------


def env_sources(c: dict) -> dict:
    return {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", e.get("value")) for e in c["env"]}


def test_operator_runs_with_the_contract_flags_two_replicas_and_a_pdb():
    objs = render(None)
    deploy = one(objs, "Deployment", "infergate-operator")
    c = container(objs, "Deployment", "infergate-operator")
    assert deploy["spec"]["replicas"] == 2
    assert c["args"] == ["run", "--namespace=$(POD_NAMESPACE)", "--admin-addr=0.0.0.0:8080", "--log-format=json",
                         "--config-namespace=infergate-config"]
    env = env_sources(c)
    assert env["POD_NAMESPACE"] == "metadata.namespace" and env["POD_NAME"] == "metadata.name"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"admin": 8080}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pdb = one(objs, "PodDisruptionBudget", "infergate-operator")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]


def test_agent_runs_with_the_contract_flags_on_gpu_nodes():
    objs = render(None)
    ds = one(objs, "DaemonSet", "infergate-agent")
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"] == ["cluster", "--namespace=$(POD_NAMESPACE)", "--node-name=$(NODE_NAME)",
                         "--grpc-addr=0.0.0.0:50051", "--http-addr=0.0.0.0:8080", "--admin-addr=0.0.0.0:9090",
                         "--models-dir=/var/lib/infergate/models", "--config-namespace=infergate-config"]
    env = env_sources(c)
    assert env["POD_NAMESPACE"] == "metadata.namespace" and env["NODE_NAME"] == "spec.nodeName"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Default way to the GPU: the NVIDIA runtime class, all GPUs visible, none taken from the device plugin.
    assert pod["runtimeClassName"] == "nvidia"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    # Read-only root: the only writable paths are emptyDirs.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/var/lib/infergate/models", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], f"{path} must be an emptyDir"


def test_all_on_agent_gets_tls_and_device_plugin_gpus():
    objs = render(ALL_ON)
    pod = one(objs, "DaemonSet", "infergate-all-on-agent")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "--tls-cert=/etc/infergate/tls/tls.crt" in c["args"] and "--tls-key=/etc/infergate/tls/tls.key" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "tls")
    assert mount == {"name": "tls", "mountPath": "/etc/infergate/tls", "readOnly": True}
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]
    assert tls["secretName"] == "infergate-gateway-tls" and tls["defaultMode"] == 0o440
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
    # With device-plugin GPUs the plugin picks the devices; the chart must not widen that to all.
    assert "NVIDIA_VISIBLE_DEVICES" not in env_sources(c)
    assert c["image"] == "registry.example.com/mirror/infergate-agent:0.1.0-cuda"
    op = container(objs, "Deployment", "infergate-all-on-operator")
    assert op["image"].startswith("ghcr.io/infergate/operator@sha256:")


def test_admin_token_is_mounted_and_passed_only_when_named():
    c = container(render(None), "DaemonSet", "infergate-agent")
    assert not [a for a in c["args"] if a.startswith("--admin-token-file")]
    assert "admin-token" not in {m["name"] for m in c["volumeMounts"]}

    pod = one(render(ALL_ON), "DaemonSet", "infergate-all-on-agent")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "--admin-token-file=/etc/infergate/admin-token/token" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "admin-token")
    assert mount == {"name": "admin-token", "mountPath": "/etc/infergate/admin-token", "readOnly": True}
    secret = next(v for v in pod["volumes"] if v["name"] == "admin-token")["secret"]
    assert secret == {"secretName": "infergate-admin-token", "defaultMode": 0o440,
                      "items": [{"key": "bearer", "path": "token"}]}
    # Probes and scrapes stay tokenless: they use /healthz, /readyz and /metrics only.
    assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} <= {"/healthz",
                                                                                                       "/readyz"}


def test_redaction_hash_key_is_mounted_and_passed_only_when_named():
    c = container(render(None), "DaemonSet", "infergate-agent")
    assert not [a for a in c["args"] if a.startswith("--redaction-hash-key-file")]
    pod = one(render(None, "--set", "agent.redaction.hashKey.secretName=infergate-redaction"),
              "DaemonSet", "infergate-agent")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "--redaction-hash-key-file=/etc/infergate/redaction-hash-key/key" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "redaction-hash-key")
    assert mount == {"name": "redaction-hash-key", "mountPath": "/etc/infergate/redaction-hash-key", "readOnly": True}
    secret = next(v for v in pod["volumes"] if v["name"] == "redaction-hash-key")["secret"]
    assert secret == {"secretName": "infergate-redaction", "defaultMode": 0o440,
                      "items": [{"key": "hash-key", "path": "key"}]}


def test_agent_without_a_runtime_class_uses_only_device_plugin_gpus():
    objs = render(None, "--set", "agent.gpu.runtimeClassName=", "--set", "agent.gpu.count=1")
    pod = one(objs, "DaemonSet", "infergate-agent")["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_lease_policy_pins_the_agent_to_its_own_node_lease():
    objs = render(None)
    vap = one(objs, "ValidatingAdmissionPolicy", "infergate-agent-lease")
    binding = one(objs, "ValidatingAdmissionPolicyBinding", "infergate-agent-lease")
    assert binding["spec"]["policyName"] == "infergate-agent-lease"
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert vap["spec"]["failurePolicy"] == "Fail"
    rule = vap["spec"]["matchConstraints"]["resourceRules"][0]
    assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    condition = vap["spec"]["matchConditions"][0]["expression"]
    assert condition == "request.userInfo.username == 'system:serviceaccount:infergate:infergate-agent'"
    node = vap["spec"]["variables"][0]["expression"]
    assert "request.userInfo.extra['authentication.kubernetes.io/node-name']" in node
    assert vap["spec"]["validations"][0]["expression"] == (
        "variables.nodeName != '' && object.metadata.name == 'infergate-agent-' + variables.nodeName")

    off = render(None, "--set", "agent.leasePolicy.enabled=false")
    assert not [o for o in off if o["kind"].startswith("ValidatingAdmissionPolicy")]


def evaluate_lease_policy(username: str, node_names: list[str] | None, lease: str) -> tuple[bool, bool, str]:
    """Runs the rendered policy's CEL the way the API server does: matchConditions, then variables, then
    validations. Returns (matched, allowed, message)."""
    vap = one(render(None), "ValidatingAdmissionPolicy", "infergate-agent-lease")["spec"]
    env = celpy.Environment()

    def cel(expression: str, activation: dict):
        return env.program(env.compile(expression)).evaluate(celpy.json_to_cel(activation))

    extra = {} if node_names is None else {"authentication.kubernetes.io/node-name": node_names}
    activation = {"request": {"userInfo": {"username": username, "extra": extra}},
                  "object": {"metadata": {"name": lease}}}
    if not all(cel(c["expression"], activation) for c in vap["matchConditions"]):
        return False, True, ""
    activation["variables"] = {v["name"]: str(cel(v["expression"], activation)) for v in vap["variables"]}
    for validation in vap["validations"]:
        if not cel(validation["expression"], activation):
            return True, False, str(cel(validation["messageExpression"], activation))
    return True, True, ""


AGENT_USER = "system:serviceaccount:infergate:infergate-agent"


@pytest.mark.parametrize("username,node_names,lease,matched,allowed,message", [
    (AGENT_USER, ["gpu-node-1"], "infergate-agent-gpu-node-1", True, True, ""),
    (AGENT_USER, ["gpu-node-1"], "infergate-agent-gpu-node-2", True, False,
     "the infergate agent on node gpu-node-1 may only write the Lease infergate-agent-gpu-node-1"),
    (AGENT_USER, ["gpu-node-1"], "infergate-operator", True, False, "may only write the Lease"),
    (AGENT_USER, None, "infergate-agent-", True, False, "token carries no node name"),
    (AGENT_USER, ["a", "b"], "infergate-agent-a", True, False, "token carries no node name"),
    ("system:serviceaccount:infergate:infergate-operator", None, "infergate-operator", False, True, ""),
    ("system:serviceaccount:other:infergate-agent", ["gpu-node-1"], "infergate-agent-gpu-node-2", False, True, ""),
], ids=["own-lease", "other-node", "operator-lease", "no-node-claim", "two-node-claims", "operator-user",
        "other-namespace-sa"])
def test_lease_policy_cel_allows_only_the_agents_own_lease(username, node_names, lease, matched, allowed, message):
    got = evaluate_lease_policy(username, node_names, lease)
    assert got[:2] == (matched, allowed), got
    assert message in got[2], got


# --- services, monitoring, network policy ----------------------------------------------------------------------


@values_params
def test_selectors_point_at_rendered_pods_and_services(values):
    objs = render(values)
    pods = cc.pod_template_labels(list(objs))
    problems = []
    for obj in objs:
        kind = obj["kind"]
        if kind == "Service":
            selector = obj["spec"]["selector"]
        elif kind in ("PodDisruptionBudget", "Deployment", "DaemonSet"):
            selector = obj["spec"]["selector"]["matchLabels"]
        elif kind == "NetworkPolicy":
            selector = obj["spec"]["podSelector"]["matchLabels"]
        else:
            continue
        if not any(cc.selects(selector, labels) for _, labels in pods):
            problems.append(f"{cc.name_of(obj)} selects no rendered pod: {selector}")
    services = [o for o in objs if o["kind"] == "Service"]
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        matched = [s for s in services if cc.selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        ports = {p["name"] for s in matched for p in s["spec"]["ports"]}
        if not matched or any(e["port"] not in ports for e in sm["spec"]["endpoints"]):
            problems.append(f"{cc.name_of(sm)} matches services {[cc.name_of(s) for s in matched]} "
                            f"without its port {[e['port'] for e in sm['spec']['endpoints']]}")
        # Each ServiceMonitor must pick exactly one metrics Service, never the gateway.
        if [s["metadata"]["name"] for s in matched if not s["metadata"]["name"].endswith("-metrics")]:
            problems.append(f"{cc.name_of(sm)} also scrapes a non-metrics Service")
    assert not problems, "\n".join(problems)


def test_service_monitors_only_when_enabled():
    assert not [o for o in render(None) if o["kind"] == "ServiceMonitor"]
    sms = [o for o in render(ALL_ON) if o["kind"] == "ServiceMonitor"]
    assert {s["metadata"]["name"] for s in sms} == {"infergate-all-on-operator", "infergate-all-on-agent"}
    assert all(s["metadata"]["labels"]["release"] == "prometheus" for s in sms)


def test_network_policy_admits_gateway_clients_and_metrics_scrapers_only():
    objs = render(None)
    agent = one(objs, "NetworkPolicy", "infergate-agent")["spec"]
    assert agent["policyTypes"] == ["Ingress"]
    gateway_rule, metrics_rule = agent["ingress"]
    assert {p["port"] for p in gateway_rule["ports"]} == {"grpc", "http"} and "from" not in gateway_rule
    assert [p["port"] for p in metrics_rule["ports"]] == ["admin"]
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    operator = one(objs, "NetworkPolicy", "infergate-operator")["spec"]
    assert [p["port"] for p in operator["ingress"][0]["ports"]] == ["admin"]

    all_on = one(render(ALL_ON), "NetworkPolicy", "infergate-all-on-agent")["spec"]["ingress"]
    assert all_on[0]["from"] == [{"namespaceSelector": {"matchLabels": {"infergate.dev/clients": "true"}}},
                                 {"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}} in all_on[1]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}} in all_on[1]["from"]

    off = render(None, "--set", "networkPolicy.enabled=false")
    assert not [o for o in off if o["kind"] == "NetworkPolicy"]


# --- images -----------------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            instruction, _, args = current.strip().partition(" ")
            lines.append((instruction.upper(), args.strip()))
            current = ""
    return lines


@pytest.mark.parametrize("component", ["operator", "agent"])
def test_dockerfile_is_multistage_locked_and_nonroot(component):
    """No container engine runs here, so the images are not built in CI; this pins what can be read statically."""
    instructions = dockerfile_instructions(ROOT / component / "Dockerfile")
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert len(froms) >= 2 and " AS builder" in froms[0], f"expected a builder stage then a runtime stage: {froms}"
    runs = " ".join(args for ins, args in instructions if ins == "RUN")
    assert f"cargo build --release --locked -p infergate-{component} --bin infergate-{component}" in runs
    final = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM"):]
    assert ("USER", "65532:65532") in final, "the runtime stage must run as the nonroot UID the chart pins"
    entrypoint = [args for ins, args in final if ins == "ENTRYPOINT"]
    assert entrypoint == [f'["/usr/local/bin/infergate-{component}"]'], entrypoint
    assert not [args for ins, args in final if ins in ("RUN", "ADD")], "the runtime stage only copies the binary in"
    secretish = [f"{ins} {args}" for ins, args in instructions if ins in ("ARG", "ENV")
                 and any(word in args.upper() for word in ("SECRET", "TOKEN", "PASSWORD", "API_KEY", "CREDENTIAL"))]
    assert not secretish, f"nothing secret may be baked into an image: {secretish}"


# --- bad values -------------------------------------------------------------------------------------------------


BAD_VALUES = {
    "negative-replicas": ({"operator": {"replicas": -1}}, "operator.replicas: Must be greater than or equal to 1"),
    "unknown-key": ({"operator": {"replica": 2}}, "operator: Additional property replica is not allowed"),
    "unknown-top-level-key": ({"agnet": {"gpu": {"count": 1}}}, "Additional property agnet is not allowed"),
    "bad-service-type": ({"gateway": {"service": {"type": "Public"}}}, "gateway.service.type must be one of"),
    "port-out-of-range": ({"agent": {"ports": {"grpc": 70000}}}, "agent.ports.grpc: Must be less than or equal to"),
    "negative-gpus": ({"agent": {"gpu": {"count": -1}}}, "agent.gpu.count: Must be greater than or equal to 0"),
    "bad-quantity": ({"agent": {"resources": {"limits": {"memory": "lots"}}}}, "agent.resources.limits.memory"),
    "unquoted-tag": ({"helmTest": {"image": {"tag": 1.36}}}, "helmTest.image.tag: Invalid type. Expected: string"),
    "bad-digest": ({"operator": {"image": {"digest": "latest"}}}, "operator.image.digest: Does not match pattern"),
    "tls-without-secret": ({"agent": {"tls": {"enabled": True}}},
                           "agent.tls.enabled is true but agent.tls.secretName is empty"),
    "config-namespace-not-a-dns-label": ({"gatewayConfig": {"namespace": "Gateway_Config"}},
                                         "gatewayConfig.namespace: Does not match pattern"),
    "config-namespace-is-the-release-namespace": ({"gatewayConfig": {"namespace": NAMESPACE}},
                                                  "gatewayConfig.namespace is the release namespace"),
    "config-unknown-key": ({"gatewayConfig": {"dedicated": True}},
                           "gatewayConfig: Additional property dedicated is not allowed"),
    "config-flag-not-a-boolean": ({"gatewayConfig": {"dedicatedNamespace": "yes"}},
                                  "gatewayConfig.dedicatedNamespace: Invalid type. Expected: boolean"),
    "admin-token-bad-secret-name": ({"agent": {"admin": {"token": {"secretName": "Admin Token"}}}},
                                    "agent.admin.token.secretName: Does not match pattern"),
    "admin-token-empty-key": ({"agent": {"admin": {"token": {"secretName": "t", "key": ""}}}},
                              "agent.admin.token.key"),
    "counter-store-url-and-existing-secret": (
        {"agent": {"counterStore": {"redis": {"url": "redis://valkey.redis:6379/0",
                                              "existingSecret": {"name": "redis-url"}}}}},
        "agent.counterStore.redis.url and agent.counterStore.redis.existingSecret.name are both set"),
    "counter-store-url-with-a-password": (
        {"agent": {"counterStore": {"redis": {"url": "redis://default:hunter2@valkey.redis:6379/0"}}}},
        "agent.counterStore.redis.url carries a password"),
    "counter-store-auth-without-a-store": ({"agent": {"counterStore": {"redis": {"auth": {"secretName": "pw"}}}}},
                                           "agent.counterStore.redis.auth.secretName is set but no Redis store"),
    "counter-store-ca-without-a-store": ({"agent": {"counterStore": {"redis": {"tls": {"caSecretName": "ca"}}}}},
                                         "agent.counterStore.redis.tls.caSecretName is set but no Redis store"),
    "counter-store-ca-without-tls": (
        {"agent": {"counterStore": {"redis": {"url": "redis://valkey.redis:6379/0", "tls": {"caSecretName": "ca"}}}}},
        "agent.counterStore.redis.tls.caSecretName is set but agent.counterStore.redis.url is redis:// (no TLS)"),
    "counter-store-not-a-redis-url": ({"agent": {"counterStore": {"redis": {"url": "valkey.redis:6379"}}}},
                                      "agent.counterStore.redis.url: Does not match pattern"),
    "counter-store-bad-mode": ({"agent": {"counterStore": {"mode": "eventual"}}},
                               "agent.counterStore.mode must be one of the following"),
    "counter-store-zero-timeout": ({"agent": {"counterStore": {"timeoutMs": 0}}},
                                   "agent.counterStore.timeoutMs: Must be greater than or equal to 1"),
    "counter-store-zero-slot-ttl": ({"agent": {"counterStore": {"streamSlotTtlSeconds": 0}}},
                                    "agent.counterStore.streamSlotTtlSeconds: Must be greater than or equal to 1"),
    "counter-store-password-value": ({"agent": {"counterStore": {"redis": {"password": "hunter2"}}}},
                                     "agent.counterStore.redis: Additional property password is not allowed"),
    "counter-store-bad-secret-name": ({"agent": {"counterStore": {"redis": {"existingSecret": {"name": "Redis URL"}}}}},
                                      "agent.counterStore.redis.existingSecret.name: Does not match pattern"),
    "counter-store-port-out-of-range": ({"agent": {"counterStore": {"redis": {"port": 70000}}}},
                                        "agent.counterStore.redis.port: Must be less than or equal to 65535"),
    "agent-egress-without-network-policy": ({"networkPolicy": {"enabled": False, "agentEgress": {"enabled": True}}},
                                            "networkPolicy.agentEgress.enabled is true but networkPolicy.enabled is "
                                            "false"),
    "agent-egress-unknown-key": ({"networkPolicy": {"agentEgress": {"redisPort": 6379}}},
                                 "networkPolicy.agentEgress: Additional property redisPort is not allowed"),
    "agent-egress-bad-cidr": ({"networkPolicy": {"agentEgress": {"apiServer": {"cidrs": ["api.example.com"]}}}},
                              "networkPolicy.agentEgress.apiServer.cidrs.0: Does not match pattern"),
    "extra-args-repeat-a-value-flag": ({"agent": {"extraArgs": ["--max-connections=5"]}},
                                       "agent.extraArgs passes --max-connections, which the chart already controls "
                                       "(agent.limits.maxConnections)"),
    "extra-args-repeat-a-fixed-flag": ({"agent": {"extraArgs": ["--grpc-addr", "0.0.0.0:1"]}},
                                       "agent.extraArgs passes --grpc-addr, which the chart already controls "
                                       "(agent.ports.grpc)"),
    "operator-extra-args-repeat-a-flag": ({"operator": {"extraArgs": ["--log-format", "text"]}},
                                          "operator.extraArgs passes --log-format, which the chart already controls "
                                          "(operator.logFormat)"),
    "extra-env-repeats-log-level": ({"agent": {"logLevel": "debug", "extraEnv": [{"name": "RUST_LOG", "value": "x"}]}},
                                    "agent.extraEnv sets RUST_LOG, which the chart already sets (agent.logLevel)"),
    "operator-extra-env-repeats-otlp": ({"operator": {"otlpEndpoint": "http://otel:4317",
                                                      "extraEnv": [{"name": "INFERGATE_OTLP_ENDPOINT", "value": "x"}]}},
                                        "operator.extraEnv sets INFERGATE_OTLP_ENDPOINT"),
    "extra-env-counter-store": ({"agent": {"extraEnv": [{"name": "INFERGATE_COUNTER_STORE", "value": "redis://r:6379"}]}},
                                "agent.extraEnv sets INFERGATE_COUNTER_STORE, which the chart already sets "
                                "(agent.counterStore.redis)"),
    "extra-volume-name-clash": ({"agent": {"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}},
                                "agent.extraVolumes has a volume named tmp, a name the chart uses itself"),
    "extra-mount-without-path": ({"operator": {"extraVolumeMounts": [{"name": "x"}]}},
                                 "operator.extraVolumeMounts.0: mountPath is required"),
    "two-operator-writers": ({"operator": {"leaderElection": False}},
                             "operator.leaderElection is false with operator.replicas 2"),
    "bad-duration": ({"agent": {"timeouts": {"auth": "5"}}}, "agent.timeouts.auth: Does not match pattern"),
    "zero-cap": ({"agent": {"limits": {"maxConnections": 0}}},
                 "agent.limits.maxConnections: Must be greater than or equal to 1"),
    "fractional-cap": ({"agent": {"limits": {"maxInFlight": 1.5}}}, "agent.limits.maxInFlight: Invalid type"),
    "unknown-limit": ({"agent": {"limits": {"maxStreams": 5}}},
                      "agent.limits: Additional property maxStreams is not allowed"),
    "bad-environment": ({"agent": {"environment": "prod"}}, "agent.environment must be one of the following"),
    "bad-log-format": ({"agent": {"logFormat": "logfmt"}}, "agent.logFormat must be one of the following"),
    "bad-otlp-endpoint": ({"agent": {"otlpEndpoint": "otel:4317"}}, "agent.otlpEndpoint: Does not match pattern"),
    "bad-lease-name": ({"operator": {"leaseName": "Leader Lease"}}, "operator.leaseName: Does not match pattern"),
    "crds-unknown-key": ({"crds": {"upgrade": True}}, "crds: Additional property upgrade is not allowed"),
    "rules-unknown-key": ({"monitoring": {"rules": {"severity": "page"}}},
                          "monitoring.rules: Additional property severity is not allowed"),
    "dashboard-bad-namespace": ({"monitoring": {"dashboard": {"namespace": "Grafana"}}},
                                "monitoring.dashboard.namespace: Does not match pattern"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_fail_with_a_clear_message(case, tmp_path):
    values, message = BAD_VALUES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = run_helm(*template_args(path), check=False)
    assert proc.returncode != 0, f"helm template accepted bad values {values}"
    assert message in proc.stderr, f"expected {message!r} in:\n{proc.stderr}"


def test_tls_values_reach_the_agent():
    objs = render(ALL_ON)
    c = container(objs, "DaemonSet", "infergate-all-on-agent")
    for arg in ("--tls-cert=/etc/infergate/tls/tls.crt", "--tls-key=/etc/infergate/tls/tls.key",
                "--tls-min-version=1.2", "--tls-client-ca=/etc/infergate/tls-client-ca/ca.crt",
                "--tls-client-auth=optional"):
        assert arg in c["args"], (arg, c["args"])
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tls-client-ca"]["readOnly"] is True
    cert = one(objs, "Certificate", "infergate-all-on-gateway")
    assert cert["spec"]["secretName"] == "infergate-gateway-tls"
    assert cert["spec"]["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert cert["spec"]["dnsNames"][0] == "infergate-all-on-gateway.infergate.svc"
    # Off by default: no Certificate, TLS 1.3 only when enabled without a minVersion.
    default = render(None, "--set", "agent.tls.enabled=true", "--set", "agent.tls.secretName=gw-tls")
    assert not [o for o in default if o["kind"] == "Certificate"]
    assert "--tls-min-version=1.3" in container(default, "DaemonSet", "infergate-agent")["args"]


def test_operator_tls_switches_probes_and_the_test_to_https():
    objs = render(ALL_ON)
    c = container(objs, "Deployment", "infergate-all-on-operator")
    assert "--tls-cert=/etc/infergate/tls/tls.crt" in c["args"] and "--tls-key=/etc/infergate/tls/tls.key" in c["args"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS" and c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert any(m["mountPath"] == "/etc/infergate/tls" and m["readOnly"] for m in c["volumeMounts"])
    pod = next(o for o in objs if o["kind"] == "Pod")
    assert any(a.startswith("https://") for a in pod["spec"]["containers"][0]["command"])
    monitor = one(objs, "ServiceMonitor", "infergate-all-on-operator")
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"


# --- counter store (docs/redis.md) ------------------------------------------------------------------------------


COUNTER_STORE_FLAGS = ("--counter-store", "--stream-slot-ttl-seconds")
COUNTER_STORE_VOLUMES = {"counter-store-auth", "counter-store-ca"}


def render_with(tmp_path: Path, values: dict) -> tuple[dict, ...]:
    """Renders with a values file built from `values` (one file per distinct content, since render is cached)."""
    text = yaml.safe_dump(values)
    path = tmp_path / f"values-{abs(hash(text))}.yaml"
    path.write_text(text)
    return render(path)


def agent_pod(objs, values: Path | None = None) -> dict:
    name = f"{fullname(values)}-agent"
    return one(objs, "DaemonSet", name)["spec"]["template"]["spec"]


def counter_store_args(c: dict) -> list[str]:
    return [a for a in c["args"] if a.startswith(COUNTER_STORE_FLAGS)]


def store_env(c: dict) -> list[dict]:
    return [e for e in c["env"] if e["name"] == "INFERGATE_COUNTER_STORE"]


def agent_egress(objs, values: Path | None = None) -> list[dict]:
    spec = one(objs, "NetworkPolicy", f"{fullname(values)}-agent")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"], spec["policyTypes"]
    return spec["egress"]


def rule_ports(rule: dict) -> set[tuple]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}


def test_default_agent_counts_in_memory_with_no_counter_store_flags():
    objs = render(None)
    pod = agent_pod(objs)
    c = pod["containers"][0]
    assert counter_store_args(c) == [], c["args"]
    assert store_env(c) == []
    assert not COUNTER_STORE_VOLUMES & {v["name"] for v in pod["volumes"]}
    assert not COUNTER_STORE_VOLUMES & {m["name"] for m in c["volumeMounts"]}
    # Egress unrestricted by default: the agent NetworkPolicy has no egress section at all.
    spec = one(objs, "NetworkPolicy", "infergate-agent")["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec


def test_counter_store_tuning_alone_does_not_switch_the_store_on(tmp_path):
    objs = render_with(tmp_path, {"agent": {"counterStore": {"mode": "exact", "timeoutMs": 500,
                                                             "streamSlotTtlSeconds": 60}}})
    c = agent_pod(objs)["containers"][0]
    assert counter_store_args(c) == [] and store_env(c) == []


def test_a_plain_redis_url_is_passed_in_the_environment_with_the_default_tuning(tmp_path):
    url = "redis://infergate@valkey.redis.svc:6379/2"
    pod = agent_pod(render_with(tmp_path, {"agent": {"counterStore": {"redis": {"url": url}}}}))
    c = pod["containers"][0]
    assert counter_store_args(c) == ["--counter-store-mode=leased", "--counter-store-timeout-ms=100",
                                     "--stream-slot-ttl-seconds=15"]
    assert store_env(c) == [{"name": "INFERGATE_COUNTER_STORE", "value": url}]
    assert not [a for a in c["args"] if url in a], "the URL travels in the environment only"
    assert not COUNTER_STORE_VOLUMES & {v["name"] for v in pod["volumes"]}


def test_all_on_agent_reads_the_url_password_and_ca_from_secrets():
    values = yaml.safe_load(ALL_ON.read_text())["agent"]["counterStore"]
    pod = agent_pod(render(ALL_ON), ALL_ON)
    c = pod["containers"][0]
    assert counter_store_args(c) == [
        f"--counter-store-mode={values['mode']}", f"--counter-store-timeout-ms={values['timeoutMs']}",
        f"--stream-slot-ttl-seconds={values['streamSlotTtlSeconds']}",
        "--counter-store-password-file=/etc/infergate/counter-store-auth/password",
        "--counter-store-ca-file=/etc/infergate/counter-store-ca/ca.crt"]
    secret = values["redis"]["existingSecret"]
    assert store_env(c) == [{"name": "INFERGATE_COUNTER_STORE", "valueFrom": {
        "secretKeyRef": {"name": secret["name"], "key": secret["key"]}}}]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name, source, flag in (("counter-store-auth", values["redis"]["auth"], "--counter-store-password-file="),
                               ("counter-store-ca", values["redis"]["tls"], "--counter-store-ca-file=")):
        assert mounts[name]["readOnly"] is True
        secret = volumes[name]["secret"]
        assert secret["secretName"] == source.get("secretName", source.get("caSecretName"))
        assert secret["defaultMode"] == 0o440
        [item] = secret["items"]
        assert item["key"] == source["key"]
        # The flag names exactly the file the mount puts there.
        path = next(a.removeprefix(flag) for a in c["args"] if a.startswith(flag))
        assert path == f"{mounts[name]['mountPath']}/{item['path']}", (path, mounts[name], item)


@pytest.mark.parametrize("redis,flags,volumes", [
    ({"existingSecret": {"name": "redis-url"}}, [], set()),
    ({"existingSecret": {"name": "redis-url"}, "auth": {"secretName": "redis-pw"}},
     ["--counter-store-password-file=/etc/infergate/counter-store-auth/password"], {"counter-store-auth"}),
    ({"url": "rediss://redis.example.com:6380/0", "tls": {"caSecretName": "redis-ca"}},
     ["--counter-store-ca-file=/etc/infergate/counter-store-ca/ca.crt"], {"counter-store-ca"}),
], ids=["secret-url", "secret-url-and-password", "rediss-with-private-ca"])
def test_password_and_ca_files_are_mounted_only_when_named(tmp_path, redis, flags, volumes):
    pod = agent_pod(render_with(tmp_path, {"agent": {"counterStore": {"mode": "exact", "redis": redis}}}))
    c = pod["containers"][0]
    assert counter_store_args(c) == ["--counter-store-mode=exact", "--counter-store-timeout-ms=100",
                                     "--stream-slot-ttl-seconds=15", *flags]
    assert COUNTER_STORE_VOLUMES & {v["name"] for v in pod["volumes"]} == volumes
    assert COUNTER_STORE_VOLUMES & {m["name"] for m in c["volumeMounts"]} == volumes
    [env] = store_env(c)
    if "existingSecret" in redis:
        assert env["valueFrom"]["secretKeyRef"] == {"name": "redis-url", "key": "url"}
    else:
        assert env["value"] == redis["url"]


def test_a_url_with_a_password_is_refused_without_echoing_it(tmp_path):
    path = tmp_path / "password.yaml"
    path.write_text(yaml.safe_dump({"agent": {"counterStore": {"redis": {
        "url": "rediss://default:n0t-in-logs@redis.example.com:6380/0"}}}}))
    proc = run_helm(*template_args(path), check=False)
    assert proc.returncode != 0 and "carries a password" in proc.stderr, proc.stderr
    assert "n0t-in-logs" not in proc.stderr + proc.stdout


def test_all_on_agent_egress_allows_dns_the_api_server_upstreams_and_the_redis_peers():
    given = yaml.safe_load(ALL_ON.read_text())
    eg, redis = given["networkPolicy"]["agentEgress"], given["agent"]["counterStore"]["redis"]
    rules = agent_egress(render(ALL_ON), ALL_ON)
    dns, api, store, *rest = rules
    assert rule_ports(dns) == {(53, "UDP"), (53, "TCP")} and dns["to"] == eg["dnsPeers"]
    assert rule_ports(api) == {(eg["apiServer"]["port"], "TCP"), (6443, "TCP")}
    assert api["to"] == [{"ipBlock": {"cidr": cidr}} for cidr in eg["apiServer"]["cidrs"]]
    assert rule_ports(store) == {(redis["port"], "TCP")} and store["to"] == redis["networkPolicyPeers"]
    assert rest == eg["upstreams"] + eg["extraRules"]
    # Egress rules only on the agent: the operator's policy stays ingress-only.
    operator = one(render(ALL_ON), "NetworkPolicy", "infergate-all-on-operator")["spec"]
    assert operator["policyTypes"] == ["Ingress"] and "egress" not in operator


def test_agent_egress_defaults_open_the_ports_to_any_destination_and_redis_only_with_a_store(tmp_path):
    memory = agent_egress(render_with(tmp_path, {"networkPolicy": {"agentEgress": {"enabled": True}}}))
    assert [rule_ports(r) for r in memory] == [{(53, "UDP"), (53, "TCP")}, {(443, "TCP"), (6443, "TCP")}]
    assert not [r for r in memory if "to" in r], "empty peer lists mean any destination on the port"

    objs = render_with(tmp_path, {"networkPolicy": {"agentEgress": {"enabled": True, "apiServer": {"port": 6443}}},
                                  "agent": {"counterStore": {"redis": {"existingSecret": {"name": "redis-url"}}}}})
    rules = agent_egress(objs)
    assert [rule_ports(r) for r in rules] == [{(53, "UDP"), (53, "TCP")}, {(6443, "TCP")}, {(6379, "TCP")}]
    assert "to" not in rules[2]
    policy = one(objs, "NetworkPolicy", "infergate-agent")
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


def test_redis_peers_are_ignored_while_egress_is_open(tmp_path):
    objs = render_with(tmp_path, {"agent": {"counterStore": {"redis": {
        "url": "redis://valkey.redis:6379/0",
        "networkPolicyPeers": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "redis"}}}]}}}})
    spec = one(objs, "NetworkPolicy", "infergate-agent")["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec


def test_new_values_are_documented_in_install_md():
    """Each key of the counter-store and agent-egress blocks has a row in docs/install.md's values table."""
    table = (ROOT / "docs" / "install.md").read_text()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(prefix: str, node) -> list[str]:
        if isinstance(node, dict) and node:
            return [leaf for key, value in node.items() for leaf in leaves(f"{prefix}.{key}", value)]
        return [prefix]

    keys = (leaves("agent.counterStore", defaults["agent"]["counterStore"])
            + leaves("networkPolicy.agentEgress", defaults["networkPolicy"]["agentEgress"])
            + leaves("agent.limits", defaults["agent"]["limits"])
            + leaves("agent.timeouts", defaults["agent"]["timeouts"])
            + leaves("crds", defaults["crds"]) + leaves("monitoring", defaults["monitoring"])
            + [f"agent.{k}" for k in AGENT_SETTINGS] + [f"operator.{k}" for k in OPERATOR_SETTINGS]
            + [f"{c}.{k}" for c in ("agent", "operator") for k in ("extraArgs", "extraVolumes", "extraVolumeMounts")])
    missing = [k for k in keys if f"`{k}`" not in table]
    assert not missing, f"docs/install.md has no row for {missing}"


def values_rows(path: Path) -> list[str]:
    """The rows of the values table: from its header to the first line that is not a table row."""
    lines = path.read_text().splitlines()
    start = lines.index("| value | default | what it does |")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_readme_values_table_is_the_one_in_install_md():
    rows = values_rows(ROOT / "docs" / "install.md")
    assert rows, "docs/install.md has no values table"
    readme = values_rows(ROOT / "README.md")
    assert readme == rows, "README.md's values table differs from docs/install.md's; keep them identical"


# --- every binary setting from values (docs/install.md) -------------------------------------------------------


# value under agent. / operator. -> the flag it is passed as (only when set).
AGENT_SETTINGS = {
    "logFormat": "--log-format", "otlpEndpoint": "--otlp-endpoint", "environment": "--environment",
    "allowQueryKeys": "--allow-query-keys", "segmentSeconds": "--segment-seconds", "logLevel": "RUST_LOG",
    "tokenIssuer": "--token-issuer", "tokenAudience": "--token-audience",
}
AGENT_LIMITS = {
    "maxConnections": "--max-connections", "maxConnectionsPerKey": "--max-connections-per-key",
    "maxUnauthenticatedPerIp": "--max-unauthenticated-per-ip", "maxHttpConnections": "--max-http-connections",
    "maxHttpConnectionsPerIp": "--max-http-connections-per-ip", "maxInFlight": "--max-in-flight",
    "maxInFlightPerKey": "--max-in-flight-per-key", "maxUploadBytes": "--max-upload-bytes",
    "maxLiveTicketsPerKey": "--max-live-tickets-per-key",
}
AGENT_TIMEOUTS = {"auth": "--auth-timeout", "body": "--body-timeout", "headerRead": "--header-read-timeout",
                  "keepAlive": "--keep-alive-timeout", "ticketTtl": "--ticket-ttl",
                  "shutdownGrace": "--shutdown-grace", "configStaleAfter": "--config-stale-after",
                  "tokenGrace": "--token-grace"}
OPERATOR_SETTINGS = {"otlpEndpoint": "--otlp-endpoint", "leaderElection": "--leader-election",
                     "leaseName": "--lease-name", "logLevel": "RUST_LOG"}
# Flags of the binaries that no value sets, and why. Every other flag `--help` lists must be rendered by all-on.
NOT_FROM_VALUES = {
    "--help": "clap", "--version": "clap",
    "--pod-ip": "POD_IP from the pod's status, as an environment variable",
    "--pod-name": "POD_NAME from the pod's name, as an environment variable",
    "--counter-store": "INFERGATE_COUNTER_STORE from agent.counterStore.redis, as an environment variable (the URL "
                       "may carry a password)",
}


def flag_names(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def help_flags(binary_name: str, subcommand: str) -> set[str]:
    out = subprocess.run([str(binary(binary_name)), subcommand, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", out.stdout, re.M))


def expected_flag(flag: str, value) -> str:
    if isinstance(value, bool):
        return flag if flag == "--allow-query-keys" else f"{flag}={str(value).lower()}"
    return f"{flag}={value}"


def test_binary_settings_are_not_passed_unless_set():
    objs = render(None)
    agent = container(objs, "DaemonSet", "infergate-agent")
    operator = container(objs, "Deployment", "infergate-operator")
    agent_flags = set(AGENT_LIMITS.values()) | set(AGENT_TIMEOUTS.values()) | set(AGENT_SETTINGS.values())
    assert not flag_names(agent["args"]) & agent_flags, agent["args"]
    assert not flag_names(operator["args"]) & (set(OPERATOR_SETTINGS.values()) | {"--tls-min-version"})
    for c in (agent, operator):
        assert "RUST_LOG" not in env_sources(c)
        assert not [v for v in c.get("volumeMounts", []) if v["name"].startswith("extra")]


def test_all_on_passes_every_binary_setting_as_its_flag():
    given = yaml.safe_load(ALL_ON.read_text())
    objs = render(ALL_ON)
    for kind, component, settings in (("DaemonSet", "agent", AGENT_SETTINGS), ("Deployment", "operator",
                                                                                 OPERATOR_SETTINGS)):
        c = container(objs, kind, f"infergate-all-on-{component}")
        values = given[component]
        expected = {flag: values[key] for key, flag in settings.items() if flag != "RUST_LOG"}
        if component == "agent":
            expected |= {flag: values["limits"][key] for key, flag in AGENT_LIMITS.items()}
            expected |= {flag: values["timeouts"][key] for key, flag in AGENT_TIMEOUTS.items()}
        else:
            expected["--tls-min-version"] = values["tls"]["minVersion"]
        for flag, value in expected.items():
            assert expected_flag(flag, value) in c["args"], (flag, value, c["args"])
        assert env_sources(c)["RUST_LOG"] == values["logLevel"]
        # The escape hatches: extraArgs come last, as given; extra volumes are mounted as given.
        assert c["args"][-len(values["extraArgs"]):] == values["extraArgs"]
        pod = one(objs, kind, f"infergate-all-on-{component}")["spec"]["template"]["spec"]
        for volume in values["extraVolumes"]:
            assert volume in pod["volumes"]
        for mount in values["extraVolumeMounts"]:
            assert mount in c["volumeMounts"]


def test_set_values_are_rendered_as_integers_and_plain_flags():
    objs = render(None, "--set", "agent.limits.maxUploadBytes=104857600", "--set", "agent.segmentSeconds=3",
                  "--set", "agent.allowQueryKeys=false", "--set", "operator.replicas=1",
                  "--set", "operator.leaderElection=false")
    args = container(objs, "DaemonSet", "infergate-agent")["args"]
    assert "--max-upload-bytes=104857600" in args and "--segment-seconds=3" in args
    assert "--allow-query-keys" not in args
    assert "--leader-election=false" in container(objs, "Deployment", "infergate-operator")["args"]
    # RUST_LOG through extraEnv stays possible while logLevel is unset.
    objs = render(None, "--set", "agent.extraEnv[0].name=RUST_LOG", "--set", "agent.extraEnv[0].value=debug")
    assert env_sources(container(objs, "DaemonSet", "infergate-agent"))["RUST_LOG"] == "debug"


@pytest.mark.parametrize("kind,component,binary_name,subcommand", [
    ("DaemonSet", "agent", "infergate-agent", "cluster"),
    ("Deployment", "operator", "infergate-operator", "run"),
])
def test_every_flag_of_the_binaries_is_reachable_from_values(kind, component, binary_name, subcommand):
    """A flag added to the binary without a chart value fails here: add the value (or list it in NOT_FROM_VALUES)."""
    flags = help_flags(binary_name, subcommand)
    assert len(flags) > 5, flags
    rendered = flag_names(container(render(ALL_ON), kind, f"infergate-all-on-{component}")["args"])
    missing = flags - rendered - set(NOT_FROM_VALUES)
    assert not missing, f"{binary_name} {subcommand} takes {sorted(missing)}, which no chart value sets"


@pytest.mark.parametrize("kind,component,binary_name", [
    ("DaemonSet", "agent", "infergate-agent"),
    ("Deployment", "operator", "infergate-operator"),
])
def test_rendered_flags_are_accepted_by_the_binaries(kind, component, binary_name, tmp_path):
    """The all-on args (less extraArgs, which name a made-up flag) parse: the binaries get past argument parsing
    and fail later for want of a cluster, instead of exiting with clap's usage error (exit code 2)."""
    given = yaml.safe_load(ALL_ON.read_text())[component]
    c = container(render(ALL_ON), kind, f"infergate-all-on-{component}")
    args = c["args"][:-len(given["extraArgs"])]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"),
           "POD_NAMESPACE": NAMESPACE, "NODE_NAME": "gpu-node-1", "POD_NAME": "op-1", "POD_IP": "10.0.0.1"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]
    proc = subprocess.Popen([str(binary(binary_name)), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode != 2 and "try '--help'" not in out, f"{binary_name} refused the rendered args:\n{out}"


# --- CRDs -------------------------------------------------------------------------------------------------------


def generated_crds() -> dict[str, dict]:
    crds = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["metadata"]["name"]] = crd
    return crds


def test_crds_are_release_templates_kept_on_uninstall_and_equal_to_the_generated_files():
    rendered = [o for o in render(None) if o["kind"] == "CustomResourceDefinition"]
    # --include-crds adds nothing: Helm's install-only crds/ directory is hidden by .helmignore, or every CRD would
    # come twice (and a plain `helm install` would fail on the second, unmanaged copy).
    assert sorted(c["metadata"]["name"] for c in rendered) == sorted(generated_crds())
    for crd in rendered:
        meta = crd["metadata"]
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}, meta
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        stripped = {**crd, "metadata": {"name": meta["name"]}}
        assert stripped == generated_crds()[meta["name"]], f"{meta['name']} differs from charts/infergate/crds/"


def test_crds_can_be_left_to_someone_else_or_left_unkept():
    assert not [o for o in render(None, "--set", "crds.install=false") if o["kind"] == "CustomResourceDefinition"]
    unkept = [o for o in render(None, "--set", "crds.keep=false") if o["kind"] == "CustomResourceDefinition"]
    assert len(unkept) == 3 and not [c for c in unkept if "annotations" in c["metadata"]]


def test_the_packaged_chart_carries_the_crds_as_templates_only(tmp_path):
    run_helm("package", str(CHART), "--destination", str(tmp_path))
    [package] = tmp_path.glob("infergate-*.tgz")
    with tarfile.open(package) as tar:
        names = tar.getnames()
        linked = {n for n in names if n.startswith("infergate/files/crds/")}
        assert {n.rsplit("/", 1)[1] for n in linked} == {p.name for p in (CHART / "crds").glob("*.yaml")}
        assert all(tar.getmember(n).isfile() for n in linked), "helm package must resolve the files/crds link"
    assert not [n for n in names if n.startswith("infergate/crds/")], names
    out = run_helm("template", RELEASE, str(package), "--namespace", NAMESPACE, "--kube-version", K8S_VERSION,
                   "--include-crds").stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert kinds.count("CustomResourceDefinition") == 3


# --- dashboard and alert rules (their contents: test_chart_dashboards.py) ---------------------------------------


def test_monitoring_objects_are_off_by_default():
    objs = render(None)
    assert not [o for o in objs if o["kind"] == "PrometheusRule"]
    assert not [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]


def test_prometheus_rule_needs_the_api_or_force():
    enabled = ("--set", "monitoring.rules.enabled=true")
    assert not [o for o in render(None, *enabled) if o["kind"] == "PrometheusRule"]
    served = render(None, *enabled, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
    assert [o["metadata"]["name"] for o in served if o["kind"] == "PrometheusRule"] == ["infergate"]
    forced = render(None, *enabled, "--set", "monitoring.rules.force=true")
    assert [o["metadata"]["name"] for o in forced if o["kind"] == "PrometheusRule"] == ["infergate"]
    # Off wins over an API that is there.
    assert not [o for o in render(None, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
                if o["kind"] == "PrometheusRule"]


def test_all_on_dashboard_configmap_and_prometheus_rule():
    given = yaml.safe_load(ALL_ON.read_text())["monitoring"]
    objs = render(ALL_ON)
    cm = one(objs, "ConfigMap", "infergate-all-on-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == given["dashboard"]["annotations"]
    assert json.loads(cm["data"]["infergate.json"]) == json.loads(
        (CHART / "files" / "dashboards" / "infergate.json").read_text())
    rule = one(objs, "PrometheusRule", "infergate-all-on")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    source = yaml.safe_load((CHART / "files" / "prometheus" / "rules.yaml").read_text())["groups"]
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in source]
    for group, source_group in zip(rule["spec"]["groups"], source):
        for r, s in zip(group["rules"], source_group["rules"], strict=True):
            assert r["expr"] == s["expr"]
            if "alert" in r:
                assert r["labels"] == {**s["labels"], **given["rules"]["alertLabels"]}
                assert r["annotations"]["runbook_url"] == f"{given['rules']['runbookBaseUrl']}#{r['alert'].lower()}"
