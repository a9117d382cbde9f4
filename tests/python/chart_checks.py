"""Pure checks over rendered Kubernetes manifests, used by test_chart.py.

Each check takes the list of rendered objects and returns a list of human-readable problems (empty = fine), so a
failing test prints every problem at once and the checks themselves can be tested on hand-made bad manifests.
"""

from __future__ import annotations

from typing import Iterable

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def _dig(obj: dict, path: Iterable[str]):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    """(object name, pod spec) for every object that runs pods."""
    found = []
    for obj in objects:
        path = POD_SPEC_PATHS.get(obj.get("kind"))
        if path is not None:
            found.append((name_of(obj), _dig(obj, path) or {}))
    return found


def hardening_problems(objects: list[dict], token_holders: set[str]) -> list[str]:
    """Every container (init and ephemeral included) must be non-root, read-only, unprivileged, with all
    capabilities dropped, seccomp RuntimeDefault (pod or container level), and requests and limits. Pods may mount a
    service-account token only when their ServiceAccount is in `token_holders`, and must say so explicitly."""
    problems = []
    for owner, spec in pod_specs(objects):
        pod_sc = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{owner}: {flag} is set")
        for volume in spec.get("volumes") or []:
            if "hostPath" in volume:
                problems.append(f"{owner}: volume {volume.get('name')} is a hostPath")
        sa = spec.get("serviceAccountName") or "default"
        automount = spec.get("automountServiceAccountToken")
        if sa in token_holders:
            if automount is not True:
                problems.append(f"{owner}: ServiceAccount {sa} needs its token; set automountServiceAccountToken: true")
        elif automount is not False:
            problems.append(f"{owner}: talks to no API but automountServiceAccountToken is not false")

        containers = []
        for field in ("initContainers", "containers", "ephemeralContainers"):
            containers += [(field, c) for c in spec.get(field) or []]
        if not containers:
            problems.append(f"{owner}: no containers found")
        for field, container in containers:
            where = f"{owner} {field}/{container.get('name')}"
            sc = container.get("securityContext") or {}

            def effective(key):
                return sc[key] if key in sc else pod_sc.get(key)

            if effective("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if effective("runAsUser") == 0:
                problems.append(f"{where}: runAsUser is 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{where}: capabilities.drop lacks ALL")
            if caps.get("add"):
                problems.append(f"{where}: capabilities.add {caps['add']}")
            seccomp = (effective("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault")
            resources = container.get("resources") or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(section) or {}):
                        problems.append(f"{where}: no {section}.{resource}")
    return problems


# A grant: (ServiceAccount "namespace/name", scope, apiGroup, resource, verb). scope is "cluster" or a namespace.
Grant = tuple[str, str, str, str, str]


def rbac_grants(objects: list[dict]) -> tuple[set[Grant], list[str]]:
    """Expands every binding into the grants it gives, and lists what cannot be expressed as such a grant: wildcards,
    resourceNames, nonResourceURLs, aggregation, bindings to roles the chart does not render, or to non-SA
    subjects."""
    problems = []
    roles = {}
    for obj in objects:
        kind = obj.get("kind")
        if kind in ("Role", "ClusterRole"):
            meta = obj.get("metadata") or {}
            roles[(kind, meta.get("namespace"), meta.get("name"))] = obj
            if obj.get("aggregationRule"):
                problems.append(f"{name_of(obj)}: aggregationRule pulls in rules from elsewhere")
            for rule in obj.get("rules") or []:
                for field in ("apiGroups", "resources", "verbs"):
                    if "*" in (rule.get(field) or []) or any("*" in str(x) for x in rule.get(field) or []):
                        problems.append(f"{name_of(obj)}: wildcard in {field}: {rule.get(field)}")
                if rule.get("nonResourceURLs"):
                    problems.append(f"{name_of(obj)}: nonResourceURLs {rule['nonResourceURLs']}")
                if rule.get("resourceNames"):
                    # The allow-list is per resource type; a name restriction would be narrower, but say so
                    # explicitly rather than let the comparison quietly treat it as the whole type.
                    problems.append(f"{name_of(obj)}: resourceNames {rule['resourceNames']} not in the allow-list")

    grants: set[Grant] = set()
    for obj in objects:
        kind = obj.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        meta = obj.get("metadata") or {}
        ref = obj.get("roleRef") or {}
        role_ns = meta.get("namespace") if ref.get("kind") == "Role" else None
        role = roles.get((ref.get("kind"), role_ns, ref.get("name")))
        if role is None:
            problems.append(f"{name_of(obj)}: binds {ref.get('kind')}/{ref.get('name')}, which the chart does not render")
            continue
        scope = "cluster" if kind == "ClusterRoleBinding" else meta.get("namespace")
        for subject in obj.get("subjects") or []:
            if subject.get("kind") != "ServiceAccount":
                problems.append(f"{name_of(obj)}: subject {subject} is not a ServiceAccount")
                continue
            who = f"{subject.get('namespace')}/{subject.get('name')}"
            for rule in role.get("rules") or []:
                for group in rule.get("apiGroups") or []:
                    for resource in rule.get("resources") or []:
                        for verb in rule.get("verbs") or []:
                            grants.add((who, scope, group, resource, verb))
    return grants, problems


def diff_grants(actual: set[Grant], allowed: set[Grant]) -> list[str]:
    problems = [f"grant beyond the allow-list: {g}" for g in sorted(actual - allowed)]
    problems += [f"allow-listed grant missing (the binary needs it): {g}" for g in sorted(allowed - actual)]
    return problems


def pod_template_labels(objects: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for obj in objects:
        path = POD_SPEC_PATHS.get(obj.get("kind"))
        if path is None:
            continue
        meta_path = path[:-1] + ("metadata",) if obj["kind"] != "Pod" else ("metadata",)
        out.append((name_of(obj), (_dig(obj, meta_path) or {}).get("labels") or {}))
    return out


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

