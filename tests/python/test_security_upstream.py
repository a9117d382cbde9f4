"""Issue 9, server-side request forgery through upstreams (item 16): a hostile upstream that redirects to another
loopback service, and upstream URLs that carry a query or fragment. (A redirect to 169.254.169.254 is not tested
live: on code that follows redirects the agent would leave loopback. The loopback canary proves the same thing.)

Names the implementation must match: a redirect from an upstream is never followed and answers `502 backend_error`
whose message contains `redirect`; `infergate-operator validate` (and so `kubectl apply`, which the API stand-in
validates with the same binary) rejects an upstream `url` with a query or fragment, naming `upstream.url`.
"""
from __future__ import annotations

import subprocess

import httpx
import pytest

from conftest import binary
from gateway_fixtures import *  # noqa: F401,F403
from security_helpers import Canary, HugeUpstream, RedirectUpstream, security_item
from test_security_billing import world


@pytest.fixture()
def canary():
    c = Canary()
    yield c
    c.stop()


def transcribe(a):
    return httpx.post(f"{a.http}/v1/audio/transcriptions", headers={"authorization": f"Bearer {a.key('app')}"},
                      files={"file": ("a.wav", wav(0.5))}, data={"model": "whisper-1"}, timeout=30)


@security_item(16, built=True)
@pytest.mark.parametrize("status", [302, 307])
def test_upstream_redirect_to_loopback_is_not_followed(tmp_path, canary, status):
    hostile = RedirectUpstream(canary.url + "/v1/audio/transcriptions", status=status)
    a = Agent(world(hostile.url, timeout="3s"), tmp=tmp_path)
    try:
        r = transcribe(a)
        assert hostile.requests == 1
        assert canary.hits == 0, "the agent followed the upstream's redirect to another loopback service"
        assert "canary" not in r.text
        assert (r.status_code, r.json()["error"]["code"]) == (502, "backend_error")
        assert "redirect" in r.json()["error"]["message"].lower()
    finally:
        a.stop()
        hostile.stop()


@security_item(16, built=True)
@pytest.mark.parametrize("url", [
    "http://whisper.speech.svc:8000/v1?api-version=1",
    "http://whisper.speech.svc:8000/v1#frag",
], ids=["query", "fragment"])
def test_upstream_url_with_query_or_fragment_is_rejected(tmp_path, url):
    path = tmp_path / "endpoint.yaml"
    path.write_text(f"""apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: stt, namespace: speech}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{url}"}}}}
""")
    proc = subprocess.run([str(binary("infergate-operator")), "validate", "-f", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, f"validate accepted {url}:\n{proc.stdout}{proc.stderr}"
    assert "upstream.url" in proc.stdout + proc.stderr


@security_item(16, built=True)
def test_upstream_response_size_is_capped(tmp_path):
    # Item 16 (and 13): "the response size is capped". A transcript is kilobytes; 64 MiB is an attack.
    huge = HugeUpstream(64)
    a = Agent(world(huge.url, timeout="20s"), tmp=tmp_path)
    try:
        r = transcribe(a)
        assert len(r.content) < 1 << 20, f"the agent relayed a {len(r.content) >> 20} MiB upstream body"
        assert (r.status_code, r.json()["error"]["code"]) == (502, "backend_error")
    finally:
        a.stop()
        huge.stop()


@security_item(16, built=True)
def test_loopback_upstream_needs_the_opt_in(tmp_path, canary):
    # The same endpoint with and without allowPrivateNetwork: without it the agent never connects to loopback.
    # (Host names that resolve to private addresses are refused by the agent's resolver: a Rust test in egress.rs.)
    url = canary.url
    text = world(url, timeout="3s").replace(", allowPrivateNetwork: true", "")
    assert "allowPrivateNetwork" not in text
    a = Agent(text, tmp=tmp_path)
    try:
        r = transcribe(a)
        assert canary.hits == 0, "the agent connected to a loopback upstream the endpoint did not opt in to"
        assert (r.status_code, r.json()["error"]["code"]) == (502, "backend_error"), r.text
        assert "allowPrivateNetwork" in r.json()["error"]["message"]
    finally:
        a.stop()
    (tmp_path / "opted-in").mkdir()
    a = Agent(world(url, timeout="3s"), tmp=tmp_path / "opted-in")
    try:
        assert transcribe(a).status_code == 200
        assert canary.hits == 1
    finally:
        a.stop()
