"""Session tokens on open streams (issue 14): in-stream refresh and expiry, with real clients.

- A `websockets` client and a `grpcio` client, each on 10 s tokens (`expires_in=10` at the token endpoint, which
  may only shorten a tier's lifetime), stream audio at real-time pace for 40 s and refresh before every expiry:
  neither stream drops, and each refreshes at least twice.
- A stream whose token is not refreshed gets its final result, then a `token_expired` close, once the grace the
  `ready` message announced has passed after `exp`.
- A refused refresh (wider scope, another key, not a token) is answered and the stream goes on.

The upstream is tests/python/fake_upstream.py (no model runs), so the long streams cost little CPU."""
import json
import threading
import time

import grpc
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403
from test_gateway_grpc import pb  # noqa: F401
from test_gateway_ws import auth, closed_with

CHUNK_SECONDS = 0.1
TOKEN_SECONDS = 10
GRACE_SECONDS = 5


def world(upstream):
    return f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: streams}}
spec: {{gpuSecondsPerMinute: 600, burstGpuSeconds: 100, maxConcurrentStreams: 4}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: transcribe, namespace: default}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream}", allowPrivateNetwork: true}}}}
  cost: {{gpuSecondsPerAudioSecond: 0.1}}
  limits: {{maxChunkBytes: 8192, maxMessagesPerSecond: 200, idleTimeout: 30s, maxAudioSeconds: 300}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: other, namespace: default}}
spec:
  model: whisper-other
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream}", allowPrivateNetwork: true}}}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: default}}
spec: {{tier: streams, environment: test, secretName: app-key, scopes: [{{endpoint: transcribe}}, {{endpoint: other}}]}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: second, namespace: default}}
spec: {{tier: streams, environment: test, secretName: second-key, scopes: [{{endpoint: transcribe}}]}}
"""


@pytest.fixture(scope="module")
def sagent(upstream, tmp_path_factory):
    a = Agent(world(upstream), tmp=tmp_path_factory.mktemp("token-streams"))
    yield a
    a.stop()


def mint(a, policy="app", expires_in=TOKEN_SECONDS, scope=None):
    data = {"grant_type": "client_credentials", "expires_in": str(expires_in)}
    if scope:
        data["scope"] = scope
    r = httpx.post(f"{a.http}/v1/oauth/token", data=data, auth=(a.key_id(policy), a.key(policy)), timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["access_token"], time.time() + body["expires_in"]


def test_expires_in_only_shortens_the_lifetime(sagent):
    _, expires_at = mint(sagent, expires_in=TOKEN_SECONDS)
    assert expires_at - time.time() == pytest.approx(TOKEN_SECONDS, abs=2)
    r = httpx.post(f"{sagent.http}/v1/oauth/token", data={"grant_type": "client_credentials", "expires_in": "86400"},
                   auth=(sagent.key_id("app"), sagent.key("app")), timeout=10)
    assert r.status_code == 200 and r.json()["expires_in"] <= 900, r.text
    r = httpx.post(f"{sagent.http}/v1/oauth/token", data={"grant_type": "client_credentials", "expires_in": "4"},
                   auth=(sagent.key_id("app"), sagent.key("app")), timeout=10)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), r.text


def paced(seconds):
    """Yields once per chunk, at real-time pace, for `seconds` of audio."""
    start = time.monotonic()
    for i in range(int(seconds / CHUNK_SECONDS)):
        delay = start + i * CHUNK_SECONDS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i


def test_websocket_stream_refreshes_its_token_and_runs_40_s(sagent):
    token, expires_at = mint(sagent)
    ws = connect(sagent.ws, additional_headers=auth(token), open_timeout=10)
    ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
    ready = json.loads(ws.recv(timeout=10))
    assert ready["type"] == "ready" and ready["token_grace_seconds"] == GRACE_SECONDS
    assert abs(ready["token_expires_at"] - expires_at) <= 2
    messages, refreshing = [], False
    for _ in paced(40):
        ws.send(pcm(CHUNK_SECONDS))
        while True:
            try:
                messages.append(json.loads(ws.recv(timeout=0)))
            except TimeoutError:
                break
            if messages[-1]["type"] == "refreshed":
                refreshing = False
        if not refreshing and expires_at - time.time() < 4:
            token, expires_at = mint(sagent)
            ws.send(json.dumps({"type": "refresh", "token": token}))
            refreshing = True
    ws.send(json.dumps({"type": "end"}))
    code, _, error = closed_with_messages(ws, messages)
    assert error is None and code == 1000, (code, error)
    kinds = [m["type"] for m in messages]
    assert kinds.count("refreshed") >= 2, kinds
    assert "refresh_refused" not in kinds
    final = [m for m in messages if m["type"] == "final"]
    assert final and final[0]["audio_seconds"] == pytest.approx(40, abs=0.2)


def closed_with_messages(ws, messages):
    """Reads until the close, keeping every message; returns (close code, reason, error or None)."""
    error = None
    try:
        while True:
            msg = ws.recv(timeout=15)
            if isinstance(msg, str):
                messages.append(json.loads(msg))
                if messages[-1]["type"] == "error":
                    error = messages[-1]["error"]
    except ConnectionClosed as closed:
        return closed.rcvd.code, closed.rcvd.reason, error


def test_grpc_stream_refreshes_its_token_and_runs_40_s(sagent, pb):  # noqa: F811
    messages = pb[0]
    token, expires_at = mint(sagent)
    state = {"expires_at": expires_at, "sent_refreshes": 0}

    def requests():
        yield messages.StreamRequest(start=messages.StreamStart(model="whisper-1"))
        refreshed_at = 0.0
        for _ in paced(40):
            yield messages.StreamRequest(audio=pcm(CHUNK_SECONDS))
            if state["expires_at"] - time.time() < 4 and time.monotonic() - refreshed_at > 2:
                new, state["expires_at"] = mint(sagent)
                refreshed_at = time.monotonic()
                state["sent_refreshes"] += 1
                yield messages.StreamRequest(refresh=messages.StreamRefresh(token=new))
        yield messages.StreamRequest(end=messages.StreamEnd())

    with grpc.insecure_channel(sagent.grpc) as channel:
        stub = pb[1].InferenceStub(channel)
        responses = list(stub.StreamTranscribe(requests(), metadata=(("authorization", f"Bearer {token}"),)))
    ready = responses[0].ready
    assert ready.token_grace_seconds == GRACE_SECONDS and abs(ready.token_expires_at - expires_at) <= 2
    refreshed = [r.refreshed for r in responses if r.WhichOneof("msg") == "refreshed"]
    assert len(refreshed) >= 2 and all(r.accepted for r in refreshed), refreshed
    assert len(refreshed) == state["sent_refreshes"]
    assert refreshed[-1].token_expires_at == pytest.approx(state["expires_at"], abs=2)
    assert responses[-1].result.final and responses[-1].result.audio_seconds == pytest.approx(40, abs=0.2)


def test_websocket_stream_without_refresh_gets_its_final_then_token_expired(sagent):
    token, expires_at = mint(sagent, expires_in=5)
    ws = connect(sagent.ws, additional_headers=auth(token), open_timeout=10)
    ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
    assert json.loads(ws.recv(timeout=10))["type"] == "ready"
    stop = threading.Event()

    def feed():
        try:
            while not stop.is_set():
                ws.send(pcm(CHUNK_SECONDS))
                time.sleep(CHUNK_SECONDS)
        except ConnectionClosed:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    messages = []
    code, reason, error = closed_with_messages(ws, messages)
    closed_at = time.time()
    stop.set()
    assert code == 4010 and reason.startswith("token_expired"), (code, reason)
    assert error["code"] == "token_expired"
    kinds = [m["type"] for m in messages]
    assert kinds[-2:] == ["final", "error"], kinds
    assert messages[-2]["audio_seconds"] > 5
    # Closed once the grace after exp had passed, not before (and promptly after).
    assert expires_at + GRACE_SECONDS - 1.5 <= closed_at <= expires_at + GRACE_SECONDS + 3, closed_at - expires_at


def test_grpc_stream_without_refresh_gets_its_final_then_token_expired(sagent, pb):  # noqa: F811
    messages = pb[0]
    token, expires_at = mint(sagent, expires_in=5)

    def requests():
        yield messages.StreamRequest(start=messages.StreamStart(model="whisper-1"))
        for _ in paced(30):
            yield messages.StreamRequest(audio=pcm(CHUNK_SECONDS))

    received = []
    with grpc.insecure_channel(sagent.grpc) as channel:
        stub = pb[1].InferenceStub(channel)
        call = stub.StreamTranscribe(requests(), metadata=(("authorization", f"Bearer {token}"),))
        with pytest.raises(grpc.RpcError) as refused:
            for response in call:
                received.append(response)
    closed_at = time.time()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(refused.value.trailing_metadata())["x-infergate-code"] == "token_expired"
    assert received[-1].result.final and received[-1].result.audio_seconds > 5
    assert expires_at + GRACE_SECONDS - 1.5 <= closed_at <= expires_at + GRACE_SECONDS + 3, closed_at - expires_at


@pytest.mark.parametrize("case", ["wider_scope", "another_key", "not_a_token"])
def test_a_refused_refresh_is_answered_and_the_stream_goes_on(sagent, case):
    token, _ = mint(sagent, expires_in=60, scope="model:whisper-1")
    replacement, expected = {
        "wider_scope": (lambda: mint(sagent, expires_in=60)[0], "out_of_scope"),
        "another_key": (lambda: mint(sagent, policy="second", expires_in=60)[0], "bad_token"),
        "not_a_token": (lambda: sagent.key("app"), "bad_token"),
    }[case]
    ws = connect(sagent.ws, additional_headers=auth(token), open_timeout=10)
    ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
    assert json.loads(ws.recv(timeout=10))["type"] == "ready"
    ws.send(pcm(0.2))
    secret = replacement()
    ws.send(json.dumps({"type": "refresh", "token": secret}))
    answer = json.loads(ws.recv(timeout=10))
    assert answer["type"] == "refresh_refused" and answer["error"]["code"] == expected, answer
    assert secret not in json.dumps(answer)
    ws.send(pcm(0.2))
    ws.send(json.dumps({"type": "end"}))
    messages = []
    code, _, error = closed_with_messages(ws, messages)
    assert (code, error) == (1000, None)
    assert messages[-1]["type"] == "final" and messages[-1]["audio_seconds"] == pytest.approx(0.4)
    assert secret not in sagent.logs()
