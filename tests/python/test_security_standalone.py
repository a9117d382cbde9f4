"""Issue 9, standalone start-up and files (items 7, 17, 18): the real `infergate-agent standalone` binary.

Names the implementation must match (chosen here, from the issue text):
- item 7: `--admin-token-file <path>`: when given, `/usage` and `/status` on the admin listener need
  `Authorization: Bearer <file contents, trimmed>` (401 otherwise); `/metrics`, `/healthz`, `/readyz` stay open.
- item 17: an invalid manifest at start exits non-zero with a message naming the offending field (`suspend`);
  an invalid edit on reload keeps the last good config and `/readyz` (still 200, it serves the last good config)
  has a body that names the problem.
- item 18: `--keys-out` is created with O_EXCL|O_NOFOLLOW (an existing file or a symlink at the path, or at its
  temporary sibling, is refused and left untouched), mode 0600; `--tls-cert` without `--tls-key` (or the reverse)
  exits non-zero naming the missing flag.
"""
from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from gateway_fixtures import *  # noqa: F401,F403
from security_helpers import security_item

VALID = """apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: t}
spec: {gpuSecondsPerMinute: 60, burstGpuSeconds: 60}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: stt, namespace: default}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {upstream: {url: "http://127.0.0.1:9/v1"}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: app, namespace: default}
spec:
  tier: t
  environment: test
  secretName: app-key
  scopes: [{endpoint: stt}]
"""

TYPO = VALID + "  suspend: true\n"  # meant `suspended`
CEL_INVALID = VALID + "  rotation: {every: 2h, overlap: 3h}\n"  # the CRD's CEL rule: overlap < every
SCHEMA_INVALID = VALID.replace("burstGpuSeconds: 60", "burstGpuSeconds: -5")


def start_standalone(tmp: Path, manifest: str, *extra: str, keys_out: Path | None = None, wait: float = 3.0):
    """Runs the agent; returns (returncode, output) when it exits within `wait` seconds, else (None, output)
    after stopping it: a start that should have failed but kept serving."""
    (tmp / "world.yaml").write_text(manifest)
    keys_out = keys_out or tmp / "keys.json"
    args = [str(AGENT_BIN), "standalone", "-f", str(tmp / "world.yaml"), "--keys-out", str(keys_out),
            "--http-addr", f"127.0.0.1:{free_port()}", "--grpc-addr", f"127.0.0.1:{free_port()}",
            "--admin-addr", f"127.0.0.1:{free_port()}", "--log-format", "text", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=wait)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return None, out


# --- item 17 --------------------------------------------------------------------------------------------------


@security_item(17, built=True)
def test_unknown_field_at_start_is_an_error_naming_it(tmp_path):
    rc, out = start_standalone(tmp_path, TYPO)
    assert rc not in (None, 0), f"the agent served a manifest with an unknown field:\n{out[-600:]}"
    assert "suspend" in out, out[-600:]


@security_item(17, built=True)
@pytest.mark.parametrize("manifest,expect", [(CEL_INVALID, "overlap"), (SCHEMA_INVALID, "burstGpuSeconds")],
                         ids=["cel", "schema"])
def test_value_the_crd_rejects_is_an_error_at_start(tmp_path, manifest, expect):
    rc, out = start_standalone(tmp_path, manifest)
    assert rc not in (None, 0), f"the agent served a manifest the API server would reject:\n{out[-600:]}"
    assert expect in out, out[-600:]


@security_item(17, built=True)
def test_invalid_edit_on_reload_keeps_last_good_config_and_readyz_says_why(tmp_path):
    a = Agent(VALID, tmp=tmp_path)
    try:
        key = a.key("app")
        a.manifest.write_text(TYPO)
        seen = []

        def readyz_names_problem():
            r = httpx.get(f"{a.admin}/readyz", timeout=2)
            seen.append((r.status_code, r.text))
            return r.status_code == 200 and "suspend" in r.text

        try:
            wait_until(readyz_names_problem, timeout=5, what="/readyz to name the rejected field")
        except AssertionError:
            raise AssertionError(f"/readyz never named the problem; last answer: {seen[-1] if seen else None}")
        # The last good config still serves the key.
        r = httpx.get(f"{a.http}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=5)
        assert r.status_code == 200
    finally:
        a.stop()


# --- item 18 --------------------------------------------------------------------------------------------------


@security_item(18, built=True)
def test_keys_out_refuses_an_existing_file(tmp_path):
    target = tmp_path / "keys.json"
    target.write_text("precious\n")
    rc, out = start_standalone(tmp_path, VALID, keys_out=target)
    assert rc not in (None, 0), f"--keys-out overwrote an existing file:\n{out[-600:]}"
    assert str(target) in out or "keys-out" in out
    assert target.read_text() == "precious\n"


@security_item(18, built=True)
@pytest.mark.parametrize("where", ["path", "temporary sibling"])
def test_keys_out_does_not_follow_symlinks(tmp_path, where):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    keys = tmp_path / "keys.json"
    link = keys if where == "path" else keys.with_suffix(".tmp")
    link.symlink_to(victim)
    rc, out = start_standalone(tmp_path, VALID, keys_out=keys)
    assert victim.read_text() == "precious\n", f"keys were written through a symlink at the {where}"
    if where == "path":
        assert rc not in (None, 0), f"--keys-out accepted a symlink at its path (and replaced it): {out[-300:]}"


@security_item(18, built=True)
def test_keys_out_is_created_owner_only(tmp_path):
    a = Agent(VALID, tmp=tmp_path)
    try:
        mode = stat.S_IMODE(os.stat(a.keys_file).st_mode)
        assert mode == 0o600, oct(mode)
    finally:
        a.stop()


@security_item(18, built=True)
@pytest.mark.parametrize("flag,missing", [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")])
def test_lone_tls_flag_is_an_error(tmp_path, flag, missing):
    pem = tmp_path / "x.pem"
    pem.write_text("not used\n")
    rc, out = start_standalone(tmp_path, VALID, flag, str(pem))
    assert rc not in (None, 0), f"{flag} alone was accepted and the agent served plaintext:\n{out[-600:]}"
    assert missing in out, out[-600:]


# --- item 7 (admin listener) ----------------------------------------------------------------------------------


@security_item(7, built=True)
def test_admin_usage_and_status_need_the_bearer_token(tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text("s3cr3t-admin-token\n")
    token_file.chmod(0o600)
    a = Agent(VALID, extra_args=["--admin-token-file", str(token_file)], tmp=tmp_path)
    try:
        for path in ("/usage", "/status"):
            r = httpx.get(a.admin + path, timeout=5)
            assert r.status_code == 401, (path, r.status_code)
            assert "kid_" not in r.text
            r = httpx.get(a.admin + path, headers={"authorization": "Bearer wrong"}, timeout=5)
            assert r.status_code == 401, (path, r.status_code)
            r = httpx.get(a.admin + path, headers={"authorization": "Bearer s3cr3t-admin-token"}, timeout=5)
            assert r.status_code == 200, (path, r.status_code)
        for path in ("/metrics", "/healthz", "/readyz"):
            assert httpx.get(a.admin + path, timeout=5).status_code == 200, path
        assert "s3cr3t-admin-token" not in a.logs()
    finally:
        a.stop()


@security_item(18, built=True)
@pytest.mark.parametrize("field,snippet", [
    ("idleTimeout", "limits: {idleTimeout: 99999999999h}"),
    ("maxSessionDuration", "limits: {maxSessionDuration: 99999999999h}"),
    ("timeout", "backend: {upstream: {url: \"http://whisper.speech.svc:8000/v1\", timeout: 99999999999h}}"),
])
def test_absurd_durations_are_rejected_by_the_schema(tmp_path, field, snippet):
    # ~11 million years: a deadline computed from it overflows; the schema must bound it (CEL on the duration).
    backend = "" if snippet.startswith("backend") else "  backend: {upstream: {url: \"http://whisper.speech.svc:8000/v1\"}}\n"
    path = tmp_path / "endpoint.yaml"
    path.write_text("apiVersion: infergate.dev/v1alpha1\nkind: InferenceEndpoint\nmetadata: {name: stt, namespace: speech}\n"
                    "spec:\n  model: whisper-1\n  features: [transcribe]\n" + backend + f"  {snippet}\n")
    proc = subprocess.run([str(ROOT / "target" / "debug" / "infergate-operator"), "validate", "-f", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, f"validate accepted {snippet}: {proc.stdout.strip()}"
    assert field in proc.stdout + proc.stderr
