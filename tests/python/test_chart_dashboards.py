"""The Grafana dashboard and the Prometheus alert rules shipped in charts/infergate (files/dashboards/infergate.json,
files/prometheus/rules.yaml; docs/operations.md):

- promtool checks the rules, both the file and the spec of the PrometheusRule the chart renders, and runs unit tests
  that fire (and do not fire) every alert on made-up series;
- the dashboard is well-formed Grafana JSON;
- every metric name that a dashboard query or a rule uses exists: it is scraped from a real agent
  (`infergate-agent standalone`, TLS on, one admitted and one refused request) and a real operator
  (`infergate-operator run` against the API stand-in, TLS on, the examples applied), histograms with their
  _bucket/_sum/_count suffixes. A few names need a condition these processes cannot reach here (a live GPU, a failed
  reconcile); those are looked up in the Rust source that registers them instead, and only those.

promtool comes from Debian's `prometheus` package; the promtool tests are skipped only when it is missing.

Run: .venv/bin/python -m pytest -q tests/python/test_chart_dashboards.py
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import ROOT, wait_for
from gateway_fixtures import Agent, manifests, upstream, wav  # noqa: F401 (upstream is a fixture)
from test_chart import ALL_ON, CHART, render

RULES_FILE = CHART / "files" / "prometheus" / "rules.yaml"
DASHBOARD_FILE = CHART / "files" / "dashboards" / "infergate.json"
OPERATIONS = ROOT / "docs" / "operations.md"
EXAMPLES = ROOT / "examples"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: install Debian's `prometheus` package (apt-get install -y prometheus)")

# Names a query may use that the scraped processes cannot show here, why, and the Rust file that registers them
# (under the registry prefix). Anything else missing from the scrapes fails.
NEEDS_A_LIVE_GPU = "exported only while NVML telemetry is live (an NVIDIA driver and a GPU)"
SOURCE_FALLBACK = {
    "infergate_gpu_node_utilization_percent": (NEEDS_A_LIVE_GPU, "agent/gpu/src/metrics.rs", "infergate_"),
    "infergate_gpu_device_utilization_percent": (NEEDS_A_LIVE_GPU, "agent/gpu/src/metrics.rs", "infergate_"),
    "infergate_operator_reconcile_errors_total": (
        "a labelled counter with no sample until a reconcile fails, which the API stand-in cannot make happen",
        "operator/src/metrics.rs", "infergate_operator_"),
}


# --- rules ------------------------------------------------------------------------------------------------------


def rules() -> dict:
    return yaml.safe_load(RULES_FILE.read_text())


def alerts() -> list[dict]:
    return [r for g in rules()["groups"] for r in g["rules"] if "alert" in r]


def rendered_rule_groups(values: Path | None = ALL_ON, *extra: str) -> list[dict]:
    [rule] = [o for o in render(values, *extra) if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    return rule["spec"]["groups"]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@needs_promtool
def test_promtool_accepts_the_rules_file():
    proc = promtool("check", "rules", str(RULES_FILE), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
@pytest.mark.parametrize("values,extra", [(ALL_ON, ()), (None, ("--set", "monitoring.rules.enabled=true",
                                                                 "--set", "monitoring.rules.force=true"))],
                         ids=["all-on", "defaults"])
def test_promtool_accepts_the_rendered_prometheus_rule(values, extra, tmp_path):
    """What the chart ships (alert labels and runbook URLs added) is still a valid rules file."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rendered_rule_groups(values, *extra)}, sort_keys=False))
    proc = promtool("check", "rules", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in rules()['groups'])} rules found" in proc.stdout


# Made-up series (one sample a minute from time 0) and when each alert must and must not fire. Annotations are
# left out of the comparison (they are stripped from the rules under test); `promtool check rules` parses them.
NS = {"namespace": "infergate"}
UNIT_TESTS = [
    {"interval": "1m", "input_series": [
        # agent-a keeps failing to read its config for 20 minutes, then recovers; agent-b never fails.
        {"series": 'infergate_config_errors_total{namespace="infergate",pod="agent-a"}', "values": "0+1x20 20x40"},
        {"series": 'infergate_config_errors_total{namespace="infergate",pod="agent-b"}', "values": "0x60"},
    ], "alert_rule_test": [
        {"eval_time": "10m", "alertname": "InfergateAgentConfigStale",
         "exp_alerts": [{"exp_labels": {**NS, "pod": "agent-a", "severity": "warning"}}]},
        {"eval_time": "1m", "alertname": "InfergateAgentConfigStale", "exp_alerts": []},
        {"eval_time": "40m", "alertname": "InfergateAgentConfigStale", "exp_alerts": []},
    ]},
    {"interval": "1m", "input_series": [
        # 10 admissions/s all along; refusals go from 0.1/s to 10/s after an hour.
        {"series": 'infergate_admissions_total{namespace="infergate",pod="a",decision="admit",reason="ok",'
                   'tier="pro",endpoint="default/transcribe"}', "values": "0+600x100"},
        {"series": 'infergate_admissions_total{namespace="infergate",pod="a",decision="refuse",reason="rate_limited",'
                   'tier="pro",endpoint="default/transcribe"}', "values": "0+6x60 960+600x40"},
    ], "alert_rule_test": [
        {"eval_time": "60m", "alertname": "InfergateRefusalRateSpike", "exp_alerts": []},
        {"eval_time": "70m", "alertname": "InfergateRefusalRateSpike", "exp_alerts": []},
        {"eval_time": "85m", "alertname": "InfergateRefusalRateSpike",
         "exp_alerts": [{"exp_labels": {**NS, "severity": "warning"}}]},
    ]},
    {"interval": "1m", "input_series": [
        # free: nominal for an hour, then tightened and held at its floor. pro: never moves from nominal. capped:
        # a tier whose maxFactor is 0.7, flat all along (not throttled). busy: moving under load, never flat.
        {"series": 'infergate_gpu_refill_factor{namespace="infergate",pod="a",tier="free"}',
         "values": "1x60 0.8x10 0.5x60"},
        {"series": 'infergate_gpu_refill_factor{namespace="infergate",pod="a",tier="pro"}', "values": "1x130"},
        {"series": 'infergate_gpu_refill_factor{namespace="infergate",pod="a",tier="capped"}', "values": "0.7x130"},
        {"series": 'infergate_gpu_refill_factor{namespace="infergate",pod="a",tier="busy"}',
         "values": "1x60 " + " ".join(["0.6 0.8"] * 35)},
        # Each tier's floor (gpuUtilization.minFactor), exported beside its factor.
        {"series": 'infergate_gpu_refill_factor_min{namespace="infergate",pod="a",tier="free"}', "values": "0.5x130"},
        {"series": 'infergate_gpu_refill_factor_min{namespace="infergate",pod="a",tier="pro"}', "values": "0.25x130"},
        {"series": 'infergate_gpu_refill_factor_min{namespace="infergate",pod="a",tier="capped"}', "values": "0.25x130"},
        {"series": 'infergate_gpu_refill_factor_min{namespace="infergate",pod="a",tier="busy"}', "values": "0.6x130"},
    ], "alert_rule_test": [
        {"eval_time": "80m", "alertname": "InfergateGpuRefillFactorPinned", "exp_alerts": []},
        {"eval_time": "100m", "alertname": "InfergateGpuRefillFactorPinned",
         "exp_alerts": [{"exp_labels": {**NS, "pod": "a", "tier": "free", "severity": "warning"}}]},
    ]},
    {"interval": "1m", "input_series": [
        # A revocation pending for 30 s (fine), then one that stays unenforced.
        {"series": 'infergate_operator_revocation_oldest_unenforced_seconds{namespace="infergate",pod="op-1"}',
         "values": "0 30 0x3 0 60 120 180 240 300 360 420"},
    ], "alert_rule_test": [
        {"eval_time": "4m", "alertname": "InfergateRevocationNotEnforced", "exp_alerts": []},
        {"eval_time": "10m", "alertname": "InfergateRevocationNotEnforced",
         "exp_alerts": [{"exp_labels": {**NS, "severity": "critical"}}]},
    ]},
    {"interval": "1m", "input_series": [
        {"series": 'infergate_counter_store_up{namespace="infergate",pod="a"}', "values": "1x5 0x10"},
        {"series": 'infergate_counter_store_up{namespace="infergate",pod="b"}', "values": "1x15"},
    ], "alert_rule_test": [
        {"eval_time": "5m", "alertname": "InfergateCounterStoreDown", "exp_alerts": []},
        {"eval_time": "10m", "alertname": "InfergateCounterStoreDown",
         "exp_alerts": [{"exp_labels": {**NS, "pod": "a", "severity": "critical"}}]},
    ]},
    {"interval": "1m", "input_series": [
        {"series": 'infergate_operator_reconcile_errors_total{namespace="infergate",pod="op-1",kind="apikeypolicy",'
                   'category="shard_write"}', "values": "0+1x40"},
        {"series": 'infergate_operator_reconcile_errors_total{namespace="infergate",pod="op-1",kind="ratetier",'
                   'category="status_write"}', "values": "0 1 1 1x40"},
    ], "alert_rule_test": [
        {"eval_time": "10m", "alertname": "InfergateOperatorReconcileErrors", "exp_alerts": []},
        {"eval_time": "30m", "alertname": "InfergateOperatorReconcileErrors",
         "exp_alerts": [{"exp_labels": {**NS, "kind": "apikeypolicy", "category": "shard_write",
                                        "severity": "warning"}}]},
    ]},
    {"interval": "1m", "input_series": [
        {"series": 'infergate_operator_leader{namespace="infergate",pod="op-1"}', "values": "1x5 0x20"},
        {"series": 'infergate_operator_leader{namespace="infergate",pod="op-2"}', "values": "0x25"},
        {"series": 'infergate_operator_leader{namespace="other",pod="op-1"}', "values": "1x25"},
    ], "alert_rule_test": [
        {"eval_time": "5m", "alertname": "InfergateOperatorNoLeader", "exp_alerts": []},
        {"eval_time": "20m", "alertname": "InfergateOperatorNoLeader",
         "exp_alerts": [{"exp_labels": {**NS, "severity": "critical"}}]},
    ]},
    {"interval": "1m", "input_series": [
        # Unix seconds: 3 days after the start for agent a and 100000 s for the operator; 30 days for agent b.
        {"series": 'infergate_tls_certificate_expiry_timestamp_seconds{namespace="infergate",pod="a"}',
         "values": "259200x180"},
        {"series": 'infergate_tls_certificate_expiry_timestamp_seconds{namespace="infergate",pod="b"}',
         "values": "2592000x180"},
        {"series": 'infergate_operator_tls_certificate_expiry_timestamp_seconds{namespace="infergate",pod="op-1"}',
         "values": "100000x180"},
    ], "alert_rule_test": [
        {"eval_time": "30m", "alertname": "InfergateCertificateExpiresSoon", "exp_alerts": []},
        {"eval_time": "2h", "alertname": "InfergateCertificateExpiresSoon",
         "exp_alerts": [{"exp_labels": {**NS, "pod": "a", "severity": "warning"}},
                        {"exp_labels": {**NS, "pod": "op-1", "severity": "warning"}}]},
    ]},
]


def test_every_alert_has_a_unit_test_and_a_runbook_section():
    tested = {t["alertname"] for case in UNIT_TESTS for t in case["alert_rule_test"]}
    names = {a["alert"] for a in alerts()}
    assert tested == names, f"alerts without a promtool unit test: {names - tested}; stale tests: {tested - names}"
    text = OPERATIONS.read_text()
    undocumented = [n for n in sorted(names) if f"### {n}\n" not in text]
    assert not undocumented, f"docs/operations.md has no section for {undocumented}"
    for a in alerts():
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        assert {"summary", "description"} <= set(a["annotations"]), a["alert"]


@needs_promtool
def test_promtool_unit_tests_fire_each_alert_only_when_it_should(tmp_path):
    stripped = rules()
    for group in stripped["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(stripped, sort_keys=False))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": UNIT_TESTS}, sort_keys=False))
    proc = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- dashboard --------------------------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_is_well_formed_grafana_json():
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "namespace", "tier"} <= variables
    ids, cells = set(), set()
    for p in d["panels"]:
        assert p["id"] not in ids, f"panel id {p['id']} is used twice"
        ids.add(p["id"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another at {(x, y)}"
                cells.add((x, y))
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("description"), f"panel {p['title']!r} has no description"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}", p["title"]
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval", "__interval", "__range"}
            assert used <= variables, f"{p['title']}: undefined variables {used - variables}"


def test_dashboard_covers_what_a_platform_team_watches():
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    for metric in ("infergate_gpu_seconds_charged_total", 'infergate_admissions_total{namespace=~"$namespace", '
                   'decision="refuse"', "infergate_open_streams", "infergate_gpu_refill_factor",
                   "infergate_gpu_device_utilization_percent", "infergate_operator_reconcile_errors_total",
                   "infergate_counter_store_up", "infergate_tls_certificate_expiry_timestamp_seconds",
                   "infergate_config_swaps_total"):
        assert metric in exprs, metric


# --- every name a query uses exists -----------------------------------------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana's label_values(metric, label) too): strings, label matchers,
    label lists, ranges and variables removed, then every identifier that is not a function call or a keyword."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)[^)]*\)", r"\1", e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1) not in KEYWORDS:
            names.add(m.group(1))
    return names


def test_metric_name_extraction():
    assert metric_names('sum by (tier, reason) (rate(a_total{decision="refuse", tier=~"$tier"}[$__rate_interval]))'
                        ' / on (instance) group_left () b == 1 and c offset 1h') == {"a_total", "b", "c"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m]))) > 2 * x:y:z") == {
        "h_bucket", "x:y:z"}
    assert metric_names("label_values(m{namespace=~\"$namespace\"}, tier)") == {"m"}
    assert metric_names("(e - time()) < 7 * 86400") == {"e"}


def used_names() -> dict[str, set[str]]:
    """Every metric name the dashboard and the rules use -> where."""
    used: dict[str, set[str]] = {}
    d = dashboard()
    for p in d["panels"]:
        for t in p.get("targets", []):
            for n in metric_names(t["expr"]):
                used.setdefault(n, set()).add(f"dashboard panel {p['title']!r}")
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            for n in metric_names(v["definition"]):
                used.setdefault(n, set()).add(f"dashboard variable ${v['name']}")
    for g in rules()["groups"]:
        for r in g["rules"]:
            for n in metric_names(r["expr"]):
                used.setdefault(n, set()).add(f"rule {r.get('alert') or r.get('record')}")
    return used


def scraped_names(text: str) -> set[str]:
    return {m.group(0) for line in text.splitlines() if line and not line.startswith("#")
            for m in [re.match(r"[a-zA-Z_:][\w:]*", line)] if m}


def openssl_pair(d: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", "tls.key", "-out", "tls.crt", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   cwd=d, check=True, capture_output=True)
    return d / "tls.crt", d / "tls.key"


def https_get(url: str) -> tuple[int, str]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def agent_metrics(upstream, tmp_path_factory):  # noqa: F811
    """/metrics of a standalone agent with TLS (the certificate gauges), after one admitted, charged request and
    one refused one."""
    a = Agent(manifests(upstream), extra_args=["--tls-self-signed"], tmp=tmp_path_factory.mktemp("metrics-agent"))
    try:
        url = f"https://127.0.0.1:{a.http_port}/v1/audio/transcriptions"
        with httpx.Client(verify=False, timeout=30) as client:
            for policy, status in (("app", 200), ("old", 401)):
                r = client.post(url, headers={"authorization": f"Bearer {a.key(policy)}"},
                                files={"file": ("a.wav", wav(1.0), "audio/wav")}, data={"model": "whisper-1"})
                assert r.status_code == status, r.text
        wait_for("the charged request in /metrics", lambda: "infergate_gpu_seconds_charged_total{" in a.metrics(),
                 timeout=10)
        yield a.metrics()
    finally:
        a.stop()


@pytest.fixture(scope="module")
def operator_metrics(kubectl, start_operator, tmp_path_factory):
    """/metrics of `infergate-operator run` with its admin port on TLS, leading, after reconciling the examples."""
    pair = openssl_pair(tmp_path_factory.mktemp("operator-tls"))
    if pair is None:
        pytest.fail("openssl is missing (tests/tools/setup.sh installs it); the operator's TLS gauges need a "
                    "certificate")
    op = start_operator("metrics-op", extra_args=("--tls-cert", str(pair[0]), "--tls-key", str(pair[1])))
    admin = op.admin.replace("http://", "https://")
    wait_for("the operator to lead and sync (/readyz over TLS)", lambda: https_get(admin + "/readyz")[0] == 200,
             timeout=90)
    for f in ("tiers.yaml", "endpoints.yaml", "policies.yaml"):
        kubectl("apply", "-f", str(EXAMPLES / f))
    return wait_for("keys and reconcile durations in the operator's /metrics",
                    lambda: (lambda t: t if "infergate_operator_keys{" in t
                             and "infergate_operator_reconcile_duration_seconds_bucket{" in t else None)(
                        https_get(admin + "/metrics")[1]), timeout=60)


def registered_in_source(name: str) -> bool:
    _, path, prefix = SOURCE_FALLBACK[name]
    return name.startswith(prefix) and f'"{name.removeprefix(prefix)}"' in (ROOT / path).read_text()


def test_every_metric_a_query_uses_is_exported(agent_metrics, operator_metrics):
    used = used_names()
    recorded = {r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r}
    assert not {n for n in used if not n.startswith("infergate")} - recorded, "a query uses a foreign metric"
    live = scraped_names(agent_metrics) | scraped_names(operator_metrics)
    gpu_live = 'infergate_gpu_telemetry_state{state="live"} 1' in agent_metrics
    problems, from_source = [], []
    for name, where in sorted(used.items()):
        if name in live or name in recorded:
            continue
        if name in SOURCE_FALLBACK and not (gpu_live and SOURCE_FALLBACK[name][0] == NEEDS_A_LIVE_GPU):
            if registered_in_source(name):
                from_source.append(name)
                continue
            problems.append(f"{name} ({', '.join(sorted(where))}): not registered in {SOURCE_FALLBACK[name][1]}")
            continue
        problems.append(f"{name} ({', '.join(sorted(where))}): in neither the agent's nor the operator's /metrics")
    assert not problems, "\n".join(problems)
    stale = set(SOURCE_FALLBACK) - set(used)
    assert not stale, f"SOURCE_FALLBACK lists names no query uses: {stale}"
    print(f"\nchecked against the Rust source, not a scrape: {from_source}")
    # Sanity: the scrapes did happen and carry the families the rules lean on.
    for name in ("infergate_admissions_total", "infergate_gpu_seconds_charged_total", "infergate_counter_store_up",
                 "infergate_tls_certificate_expiry_timestamp_seconds", "infergate_operator_leader",
                 "infergate_operator_tls_certificate_expiry_timestamp_seconds",
                 "infergate_operator_reconcile_duration_seconds_bucket"):
        assert name in live, name
