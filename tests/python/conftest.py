"""Shared fixtures for the end-to-end tests: where the built binaries are, free ports, the Kubernetes API stand-in,
kubectl bound to its kubeconfig, and the operator process.

Add fixtures for other components below the operator's; keep each one small and documented.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from toolpaths import find_kubectl

ROOT = Path(os.environ.get("INFERGATE_ROOT") or Path(__file__).resolve().parents[2])
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
STANDIN = ROOT / "tests" / "standin" / "standin.py"


def pytest_configure(config):
    config.addinivalue_line("markers", "security_item(n): covers item n of issue 9 (safe to expose)")


def binary(name: str) -> Path:
    """A workspace binary from the debug build that `tests/run.sh` makes (`cargo build --workspace --all-targets`)."""
    path = TARGET_DIR / "debug" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build it first with `cargo build --workspace --all-targets` (tests/run.sh does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe, timeout: float = 60.0, interval: float = 0.2):
    """Polls `probe()` until it returns a truthy value and returns it; fails naming `what` after `timeout`.
    Timeouts are generous on purpose: they bound a hang, they are not a speed assertion."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the probe may race object creation; keep polling
            last_error = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class StandIn:
    """The Kubernetes API stand-in (tests/standin/standin.py) as a child process."""

    def __init__(self, workdir: Path, validator: Path | None):
        self.kubeconfig = workdir / "kubeconfig"
        self.log = open(workdir / "standin.log", "w")
        cmd = [sys.executable, str(STANDIN), "--port", "0", "--kubeconfig", str(self.kubeconfig)]
        if validator:
            cmd += ["--operator", str(validator)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            pytest.fail(f"the API stand-in did not start: {line!r}; see {workdir / 'standin.log'}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str):
        status, body = http_get(self.url + path)
        return status, (json.loads(body) if body else None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    found = find_kubectl(ROOT)
    if not found:
        pytest.fail("kubectl is missing: run tests/tools/install-kubectl.sh")
    return found


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A fresh API stand-in per test module, validating infergate CRs with the built operator binary."""
    workdir = tmp_path_factory.mktemp("standin")
    server = StandIn(workdir, binary("infergate-operator"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kubectl(standin, kubectl_bin):
    """`kubectl(*args, input=None, check=True)` against the stand-in; returns the CompletedProcess."""

    def run(*args, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(standin.kubeconfig)}
        proc = subprocess.run([kubectl_bin, *args], input=input, capture_output=True, text=True, env=env, timeout=60)
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get_json(*args):
        proc = run("get", *args, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    run.get_json = get_json
    return run


class Operator:
    """`infergate-operator run` as a child process against the stand-in; logs go to a file."""

    def __init__(self, standin: StandIn, workdir: Path, pod_name: str, namespace: str = "infergate-system",
                 extra_args: tuple[str, ...] = ()):
        self.admin_port = free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.log_path = workdir / f"operator-{pod_name}-{int(time.time() * 1000)}.log"
        self.log = open(self.log_path, "w")
        env = {**os.environ, "KUBECONFIG": str(standin.kubeconfig), "RUST_BACKTRACE": "1"}
        env.pop("RUST_LOG", None)
        cmd = [str(binary("infergate-operator")), "run", "--namespace", namespace,
               "--admin-addr", f"127.0.0.1:{self.admin_port}", "--pod-name", pod_name,
               "--log-format", "json", *extra_args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def metrics(self) -> str:
        return http_get(self.admin + "/metrics")[1]

    def metric(self, name: str) -> float:
        """Sum of every sample of `name` (any labels)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def ready(self) -> bool:
        try:
            return http_get(self.admin + "/readyz", timeout=1)[0] == 200
        except OSError:
            return False

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"raw": line})
        return out

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def start_operator(standin, tmp_path_factory):
    """`start_operator(pod_name="op-1", ...)` starts an operator; every one started is stopped at module end."""
    workdir = tmp_path_factory.mktemp("operator")
    started: list[Operator] = []

    def start(pod_name: str = "op-1", **kwargs) -> Operator:
        op = Operator(standin, workdir, pod_name, **kwargs)
        started.append(op)
        return op

    start.started = started
    yield start
    for op in started:
        op.stop()
