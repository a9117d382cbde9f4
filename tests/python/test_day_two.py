"""Day two at the edges (issue 16 items 2, 3, 7), against the real standalone agent:

- upstream credentials: the upstream receives its own credential (from a labelled Secret) and never the client's
  key; upstream 401/403 -> 502 naming the upstream's answer, 429 -> 503 with its Retry-After, 5xx -> 502;
  OpenAI-style `usage.seconds` settles the charge when no GPU-time header is sent;
- OpenAI-compatible edges: every error carries `type` and `param`; unknown routes, wrong methods and
  non-multipart bodies get the JSON error with x-request-id; GET /v1/models/{id}; a homoglyph in a credential
  header is `malformed_key`, and every door trims the credential alike;
- the access log: one JSON-able line per successful request, without content, sampled by a flag.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403

UPSTREAM_SECRET = "upstream-s3cret-value"


class Recorder(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream whose behaviour is picked by the first path segment."""

    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        mode = self.path.strip("/").split("/")[0]
        Recorder.seen.append({"mode": mode, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        if mode == "unauth":
            return self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        if mode == "forbidden":
            return self._json(403, {"error": {"message": "project is disabled"}})
        if mode == "throttle":
            return self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"})
        if mode == "boom":
            return self._json(500, {"error": {"message": "internal"}})
        if mode == "usage":
            return self._json(200, {"text": "billed", "usage": {"type": "duration", "seconds": 3.0}})
        return self._json(200, {"text": "ok"})

    def _json(self, status, obj, extra=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def world(base: str) -> str:
    def endpoint(name, mode, auth=""):
        return f"""---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: {name}, namespace: default}}
spec:
  model: {name}
  features: [transcribe]
  backend: {{upstream: {{url: "{base}/{mode}/v1", allowPrivateNetwork: true{auth}}}}}
  cost: {{gpuSecondsPerAudioSecond: 0.1, minimumGpuSeconds: 0}}
"""
    bearer = ", auth: {secretName: upstream-cred, key: token}"
    api_key = ", auth: {secretName: upstream-cred, key: token, header: x-api-key}"
    missing = ", auth: {secretName: nowhere, key: token}"
    endpoints = [
        endpoint("plain", "ok"), endpoint("bearer", "ok", bearer), endpoint("apikey", "ok", api_key),
        endpoint("unauth", "unauth", bearer), endpoint("forbidden", "forbidden"), endpoint("throttle", "throttle"),
        endpoint("boom", "boom"), endpoint("usage", "usage"), endpoint("orphan", "ok", missing),
    ]
    scopes = ", ".join(f"{{endpoint: {n}}}" for n in
                       ["plain", "bearer", "apikey", "unauth", "forbidden", "throttle", "boom", "usage", "orphan"])
    return f"""apiVersion: v1
kind: Secret
metadata:
  name: upstream-cred
  namespace: default
  labels: {{infergate.dev/upstream-credential: "true"}}
stringData: {{token: {UPSTREAM_SECRET}}}
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: roomy}}
spec: {{gpuSecondsPerMinute: 600, burstGpuSeconds: 100, maxConcurrentStreams: 2}}
{"".join(endpoints)}---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: default}}
spec: {{tier: roomy, environment: test, secretName: app-key, scopes: [{scopes}]}}
"""


@pytest.fixture(scope="module")
def edge_agent(recorder, tmp_path_factory):
    a = Agent(world(recorder), tmp=tmp_path_factory.mktemp("daytwo"))
    yield a
    a.stop()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def upload(agent, model, key=None, seconds=1.0, headers=None):
    return httpx.post(
        f"{agent.http}/v1/audio/transcriptions", headers=headers or auth(key or agent.key("app")),
        files={"file": ("a.wav", wav(seconds), "audio/wav")}, data={"model": model}, timeout=10,
    )


def test_the_upstream_gets_its_own_credential_and_never_the_clients_key(edge_agent):
    key = edge_agent.key("app")
    Recorder.seen.clear()
    assert upload(edge_agent, "bearer").status_code == 200
    assert upload(edge_agent, "apikey").status_code == 200
    assert upload(edge_agent, "plain").status_code == 200
    bearer, api_key, plain = Recorder.seen[-3:]
    assert bearer["headers"]["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert api_key["headers"]["x-api-key"] == UPSTREAM_SECRET and "authorization" not in api_key["headers"]
    assert "authorization" not in plain["headers"] and "x-api-key" not in plain["headers"]
    for request in Recorder.seen:
        assert key not in json.dumps(request["headers"]) and key.encode() not in request["body"]
    logs = edge_agent.logs()
    assert UPSTREAM_SECRET not in logs and key not in logs


def test_an_endpoint_whose_credential_secret_is_missing_is_not_served(edge_agent):
    r = upload(edge_agent, "orphan")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"
    assert "upstream credential Secret default/nowhere not found" in edge_agent.logs()


@pytest.mark.parametrize("model,status,code", [
    ("unauth", 502, "backend_error"), ("forbidden", 502, "backend_error"), ("boom", 502, "backend_error"),
])
def test_upstream_failures_map_to_gateway_errors(edge_agent, model, status, code):
    r = upload(edge_agent, model)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["type"] == "server_error"
    if model in ("unauth", "forbidden"):
        # The upstream's answer is named, so the endpoint's owner sees what to fix; the client is not blamed.
        assert "HTTP 401: Incorrect API key provided" in error["message"] or "HTTP 403: project is disabled" in error["message"]
        assert "backend.upstream.auth" in error["message"]
    assert r.headers["x-request-id"].startswith("req_")


def test_an_upstream_429_is_a_503_with_its_retry_after(edge_agent):
    r = upload(edge_agent, "throttle")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "backend_unavailable"
    assert r.json()["error"]["retry_after_seconds"] == 7


def test_usage_seconds_settles_the_charge_without_a_gpu_time_header(edge_agent):
    # One second uploaded (pre-charge 0.1 GPU-s), the upstream billed 3 s: charged 3 x 0.1 = 0.3.
    r = upload(edge_agent, "usage", seconds=1.0)
    assert r.status_code == 200
    assert float(r.headers["x-infergate-gpu-seconds"]) == pytest.approx(0.3)


def test_errors_carry_openai_type_and_param(edge_agent):
    r = upload(edge_agent, "no-such-model")
    error = r.json()["error"]
    assert (r.status_code, error["code"], error["type"], error["param"]) == (404, "unknown_model", "not_found_error", "model")
    r = httpx.get(f"{edge_agent.http}/v1/models")
    error = r.json()["error"]
    assert (r.status_code, error["code"], error["type"], error["param"]) == (401, "missing_key", "authentication_error", None)
    # The openai SDK reads them as it reads OpenAI's own.
    client = openai.OpenAI(api_key=edge_agent.key("app"), base_url=f"{edge_agent.http}/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.audio.transcriptions.create(model="no-such-model", file=("a.wav", wav(0.5)))
    assert e.value.code == "unknown_model" and e.value.type == "not_found_error" and e.value.param == "model"


def test_unknown_routes_wrong_methods_and_non_multipart_bodies_get_json_errors(edge_agent):
    key = edge_agent.key("app")
    r = httpx.get(f"{edge_agent.http}/v1/nope", headers=auth(key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert r.headers["content-type"].startswith("application/json") and r.headers["x-request-id"].startswith("req_")
    r = httpx.get(f"{edge_agent.http}/v1/audio/transcriptions", headers=auth(key))
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["x-request-id"].startswith("req_")
    r = httpx.post(f"{edge_agent.http}/v1/audio/transcriptions", headers=auth(key), json={"model": "plain"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    assert r.headers["x-request-id"].startswith("req_")
    # Without a key the missing key is what is said first, whatever the body.
    r = httpx.post(f"{edge_agent.http}/v1/audio/transcriptions", json={"model": "plain"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_key"


def test_get_one_model(edge_agent):
    key = edge_agent.key("app")
    r = httpx.get(f"{edge_agent.http}/v1/models/plain", headers=auth(key))
    assert r.status_code == 200
    assert r.json()["id"] == "plain" and r.json()["object"] == "model"
    r = httpx.get(f"{edge_agent.http}/v1/models/not-mine", headers=auth(key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"
    client = openai.OpenAI(api_key=key, base_url=f"{edge_agent.http}/v1", max_retries=0)
    assert client.models.retrieve("plain").id == "plain"


def test_a_homoglyph_in_a_credential_header_is_a_malformed_key(edge_agent):
    key = edge_agent.key("app")
    homoglyph = key.replace("sk_", "\u0455k_", 1)  # Cyrillic dze for the Latin s
    for header in ("Authorization", "x-api-key"):
        value = ("Bearer " + homoglyph) if header == "Authorization" else homoglyph
        r = httpx.get(f"{edge_agent.http}/v1/models", headers={header: value.encode("utf-8")})
        assert r.status_code == 401 and r.json()["error"]["code"] == "malformed_key", (header, r.text)
    r = httpx.get(f"{edge_agent.http}/v1/models", headers={"x-api-key": b"\xa0" + key.encode()})
    assert r.json()["error"]["code"] == "malformed_key"


def test_every_door_trims_the_credential_alike(edge_agent):
    key = edge_agent.key("app")
    # HTTP clients strip the ends of header values themselves; inside, any run of spaces after Bearer is one.
    assert httpx.get(f"{edge_agent.http}/v1/models", headers={"Authorization": f"Bearer    {key}"}).status_code == 200
    # The WebSocket auth message and the query string carry the key as text: trimmed the same way.
    with connect(edge_agent.ws) as ws:
        ws.send(json.dumps({"type": "auth", "key": f" {key} \n"}))
        ws.send(json.dumps({"type": "start", "model": "plain"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"


def test_the_access_log_has_one_line_per_success_without_content(edge_agent):
    key = edge_agent.key("app")
    r = upload(edge_agent, "plain", seconds=2.0)
    request_id = r.headers["x-request-id"]
    line = wait_until(lambda: next((l for l in edge_agent.logs().splitlines()
                                    if "infergate::access" in l and request_id in l), None), what="access line")
    for field in (f"key_id={edge_agent.key_id('app')}", "endpoint=default/plain", "door=http",
                  "audio_seconds=2", "gpu_seconds=0.2", "outcome=ok", "duration_ms="):
        assert field in line, (field, line)
    assert key not in line and "heard" not in line and "ok\"}" not in line
    # A refusal is not an access line (it has its audit line).
    refused = upload(edge_agent, "no-such-model").headers["x-request-id"]
    assert not any("infergate::access" in l and refused in l for l in edge_agent.logs().splitlines())


def test_the_access_log_can_be_sampled_off(recorder, tmp_path_factory):
    quiet = Agent(world(recorder), extra_args=["--access-log-sample", "0"], tmp=tmp_path_factory.mktemp("quiet"))
    try:
        assert upload(quiet, "plain").status_code == 200
        assert "infergate::access" not in quiet.logs()
    finally:
        quiet.stop()
    bad = subprocess_run([str(AGENT_BIN), "standalone", "--access-log-sample", "2"])
    assert bad.returncode != 0 and "between 0 and 1" in bad.stderr


def subprocess_run(args):
    import subprocess
    return subprocess.run(args, capture_output=True, text=True, timeout=30)
