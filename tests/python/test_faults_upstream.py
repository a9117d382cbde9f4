"""Issue 15, item 10: an upstream that hangs, answers 500, answers garbage, or closes mid-body. Each request ends
with its documented code within its timeout, is charged per the billing rules, and the agent's memory returns to
its baseline after many such failures. The real standalone agent against `fault_upstream.FaultUpstream`.

What the documents say, and so what is asserted here:
- docs/operations.md "Upstream credentials": an upstream `5xx` becomes `502 backend_error`; docs/security.md
  "Upstreams": a 3xx is `502 backend_error` and responses are read with a cap (both tested in
  test_security_upstream.py, not repeated here). Every backend failure (`BackendError::Failed`/`Timeout` in
  agent/src/backend.rs) is `502 backend_error`, OpenAI type `server_error`, `Retry-After: 1`.
- docs/security.md (billing): "a timeout or backend failure after dispatch ... is charged the time it held the
  backend"; "an unreachable upstream ... is refunded"; "every endpoint charges at least `cost.minimumGpuSeconds`
  (default 0.01)" and crds/src/endpoint.rs "a request never bills as free". So a request that failed after
  dispatch is charged max(time held, minimum); one that never reached an upstream is charged nothing.
- The endpoint's `backend.upstream.timeout` bounds the request: a hung upstream ends in `backend_error` ("did not
  answer within <timeout>") after about that long, not later.

Already covered elsewhere (not repeated): a redirect (test_security_upstream.py), a 64 MiB body (same), a slow
upstream past its timeout is charged something (test_security_billing.py::test_backend_timeout_after_dispatch_is_
charged: this file pins the charge to the time held and adds the other faults).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fault_upstream import FaultUpstream
from gateway_fixtures import *  # noqa: F401,F403
from gateway_fixtures import free_port
from security_helpers import rss_bytes

TIMEOUT_S = 1.0
# cost.minimumGpuSeconds, far above the milliseconds a fast failure holds the upstream, so "at least the minimum"
# is decided by the rule, never by the machine's speed (the default, 0.01 s, is the same rule and code path).
MINIMUM = 0.5
COST = 0.1  # gpuSecondsPerAudioSecond


def world(upstream_url: str, timeout: str = "1s") -> str:
    # A tier that never limits these tests: 50 hung requests at 1 GPU-s each must all be admitted.
    return f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: roomy}}
spec: {{gpuSecondsPerMinute: 60000, burstGpuSeconds: 10000, maxConcurrentStreams: 64}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: stt, namespace: default}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", timeout: {timeout}, allowPrivateNetwork: true}}}}
  cost: {{gpuSecondsPerAudioSecond: {COST}, minimumGpuSeconds: {MINIMUM}}}
  limits: {{maxAudioSeconds: 30, idleTimeout: 10s}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: default}}
spec:
  tier: roomy
  environment: test
  secretName: app-key
  scopes: [{{endpoint: stt}}]
"""


# mode -> a phrase the error message must contain (lower case)
FAULTS = {
    "hang": "did not answer within 1s",
    "500": "upstream answered http 500",
    "garbage": "upstream request failed",
    "garbage_json": "json",
    "close_mid_body": "upstream body unreadable",
    "close_before_answer": "upstream request failed",
}


@pytest.fixture(scope="module", params=list(FAULTS))
def faulty(request, tmp_path_factory):
    """(mode, upstream, agent): one agent per fault, shared by the tests of that fault."""
    up = FaultUpstream(request.param)
    a = Agent(world(up.url), tmp=tmp_path_factory.mktemp(f"fault-{request.param}"))
    yield request.param, up, a
    a.stop()
    up.stop()


def upload(a, seconds=0.5, timeout=30):
    return httpx.post(f"{a.http}/v1/audio/transcriptions", headers={"authorization": f"Bearer {a.key('app')}"},
                      files={"file": ("a.wav", wav(seconds))}, data={"model": "whisper-1"}, timeout=timeout)


def usage(a) -> float:
    keys = httpx.get(f"{a.admin}/usage", timeout=5).json()["keys"]
    return next((k["gpuSeconds"] for k in keys if k["keyId"] == a.key_id("app")), 0.0)


def refusals(a, code: str) -> float:
    """All refusals with `code` in the agent's metrics (any door, tier, endpoint)."""
    total = 0.0
    for line in a.metrics().splitlines():
        if line.startswith("infergate_admissions_total{") and 'decision="refuse"' in line and f'"{code}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_backend_error(r, phrase: str):
    assert r.status_code == 502, (r.status_code, r.headers.get("content-type"), r.content[:200])
    error = r.json()["error"]
    assert error["code"] == "backend_error", error
    assert error["type"] == "server_error", error
    assert phrase in error["message"].lower(), error["message"]
    assert r.headers.get("retry-after") == "1" and error.get("retry_after_seconds") == 1, (r.headers, error)
    assert r.headers.get("x-request-id"), "an error without a request id cannot be traced"


def test_fault_ends_with_its_documented_code_within_the_timeout(faulty):
    mode, up, a = faulty
    before_usage, before_refusals = usage(a), refusals(a, "backend_error")
    started = time.monotonic()
    r = upload(a)
    elapsed = time.monotonic() - started
    assert up.requests >= 1, "the request never reached the upstream"
    assert elapsed < TIMEOUT_S + 1.0, f"{mode}: the request took {elapsed:.2f}s with a {TIMEOUT_S}s upstream timeout"
    assert_backend_error(r, FAULTS[mode])
    # Nothing the broken upstream sent is relayed.
    assert b"illegal memory access" not in r.content and b"not http" not in r.content and b"<html>" not in r.content
    assert refusals(a, "backend_error") == before_refusals + 1
    spent = usage(a) - before_usage
    if mode == "hang":
        # It held the backend for the whole timeout: charged that (above the minimum), whatever the audio's length.
        assert TIMEOUT_S - 0.05 <= spent <= TIMEOUT_S + 0.5, f"a hung request was charged {spent} GPU-s"
    else:
        # It failed after dispatch, in milliseconds: charged the time held, but never below the minimum.
        assert spent >= MINIMUM - 1e-9, (
            f"{mode}: a request that reached the upstream was charged {spent:.6f} GPU-s, below the endpoint's "
            f"minimum of {MINIMUM} (docs/security.md: every endpoint charges at least cost.minimumGpuSeconds)")
        assert spent <= MINIMUM + 0.5, f"{mode}: charged {spent} GPU-s for a request that held the upstream briefly"


def test_hung_upstream_connections_are_let_go(tmp_path):
    up = FaultUpstream("hang")
    a = Agent(world(up.url), tmp=tmp_path)
    try:
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: upload(a).status_code, range(8)))
        assert codes == [502] * 8
        assert up.max_open_connections >= 8, "the requests did not run at once"
        assert up.wait_released(3.0), f"the agent still holds {up.open_connections} connections to a hung upstream"
    finally:
        a.stop()
        up.stop()


def test_memory_returns_to_baseline_after_50_failures(faulty):
    mode, up, a = faulty
    pid = a.proc.pid

    def burst(n):
        with ThreadPoolExecutor(10) as pool:
            return [r.status_code for r in pool.map(lambda _: upload(a, seconds=1.0), range(n))]

    burst(10)  # warm-up: allocator arenas, connection pool, metric series
    time.sleep(0.3)
    baseline = rss_bytes(pid)
    before = usage(a)
    codes = burst(50)
    # (Whether garbage_json is a 502 is the first test's business; here it only has to be answered.)
    assert all(c == 502 or (mode == "garbage_json" and c == 200) for c in codes), codes
    spent = usage(a) - before
    if mode == "hang":
        assert spent == pytest.approx(50 * TIMEOUT_S, rel=0.2), spent
    assert up.wait_released(3.0), f"{up.open_connections} upstream connections still open"
    time.sleep(0.5)
    grown = rss_bytes(pid) - baseline
    # Measured: under 1 MiB for every fault (debug build, ~36 MiB resident); 8 MiB is slack, a leak of the
    # request bodies (50 x 32 KiB uploads, upstream buffers) or of hung connections would still show.
    assert grown < 8 << 20, f"{mode}: RSS grew {grown >> 20} MiB over 50 failed requests (baseline {baseline >> 20} MiB)"
    # And the agent still answers.
    assert httpx.get(f"{a.admin}/readyz", timeout=5).status_code == 200


def test_unreachable_upstream_is_refunded(tmp_path):
    # Nothing listens on the port: the request never reached a backend, so the pre-charge goes back in full.
    a = Agent(world(f"http://127.0.0.1:{free_port()}/v1"), tmp=tmp_path)
    try:
        before = usage(a)
        r = upload(a)
        assert_backend_error(r, "unreachable")
        assert usage(a) - before == pytest.approx(0.0, abs=1e-9), "a request that reached no upstream was charged"
    finally:
        a.stop()


# --- the upstream timeout bounds the whole request ------------------------------------------------------------


def test_timeout_covers_the_body_as_well_as_the_headers(tmp_path):
    # Headers at 0.8 x timeout, then the body stalls: the request must still end at about one timeout, not two.
    up = FaultUpstream("stall_body", header_delay=0.8 * TIMEOUT_S)
    a = Agent(world(up.url), tmp=tmp_path)
    try:
        started = time.monotonic()
        r = upload(a)
        elapsed = time.monotonic() - started
        assert_backend_error(r, "did not answer within 1s")
        assert elapsed < TIMEOUT_S + 0.5, (
            f"an upstream that sent headers after {0.8 * TIMEOUT_S}s and then stalled held the request "
            f"{elapsed:.2f}s with a {TIMEOUT_S}s timeout (the timeout restarts for the body)")
    finally:
        a.stop()
        up.stop()


# --- the stream doors ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    import importlib
    import sys

    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    proto_dir = ROOT / "agent" / "proto"
    assert protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                        str(proto_dir / "infergate" / "v1" / "inference.proto")]) == 0
    sys.path.insert(0, str(out))
    return importlib.import_module("infergate.v1.inference_pb2"), importlib.import_module("infergate.v1.inference_pb2_grpc")


@pytest.mark.parametrize("mode", ["500", "hang", "close_mid_body"])
def test_stream_doors_end_with_backend_error(tmp_path, pb, mode):
    """A stream whose segment fails upstream: WebSocket error + close 4502, gRPC UNAVAILABLE with
    `x-infergate-code: backend_error`, within the timeout; the audio sent is charged (stream chunks are charged as
    they arrive), and nothing beyond the time the backend was held."""
    up = FaultUpstream(mode)
    a = Agent(world(up.url), tmp=tmp_path)
    messages, services = pb
    try:
        before = usage(a)
        started = time.monotonic()
        with connect(a.ws, additional_headers={"authorization": f"Bearer {a.key('app')}"}) as ws:
            ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            ws.send(pcm(0.5))
            ws.send(json.dumps({"type": "end"}))
            error = None
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    msg = ws.recv(timeout=TIMEOUT_S + 5)
                    if isinstance(msg, str) and json.loads(msg).get("type") == "error":
                        error = json.loads(msg)["error"]
        assert time.monotonic() - started < TIMEOUT_S + 1.5
        assert closed.value.rcvd is not None, "closed without a close frame"
        assert closed.value.rcvd.code == 4502 and closed.value.rcvd.reason.startswith("backend_error"), closed.value.rcvd
        assert error and error["code"] == "backend_error", error

        channel = grpc.insecure_channel(a.grpc)
        try:
            stub = services.InferenceStub(channel)

            def requests():
                yield messages.StreamRequest(start=messages.StreamStart(model="whisper-1"))
                yield messages.StreamRequest(audio=pcm(0.5))
                yield messages.StreamRequest(end=messages.StreamEnd())

            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                list(stub.StreamTranscribe(requests(), metadata=(("authorization", f"Bearer {a.key('app')}"),),
                                           timeout=TIMEOUT_S + 10))
            assert time.monotonic() - started < TIMEOUT_S + 1.5
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
            assert dict(err.value.trailing_metadata() or ()).get("x-infergate-code") == "backend_error"
            with pytest.raises(grpc.RpcError) as err:
                stub.Transcribe(messages.TranscribeRequest(model="whisper-1", audio=wav(0.5), filename="a.wav"),
                                metadata=(("authorization", f"Bearer {a.key('app')}"),), timeout=TIMEOUT_S + 10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
            assert dict(err.value.trailing_metadata() or ()).get("x-infergate-code") == "backend_error"
        finally:
            channel.close()
        spent = usage(a) - before
        # Two streams of 0.5 s (0.05 GPU-s each, charged as the audio arrived) and one unary request
        # (max(time held, minimum)); a hung backend adds at most the time it was held.
        held = 3 * TIMEOUT_S if mode == "hang" else 0.5
        assert 2 * 0.5 * COST + MINIMUM - 1e-6 <= spent <= 2 * 0.5 * COST + held + 0.5, spent
    finally:
        a.stop()
        up.stop()
