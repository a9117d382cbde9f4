"""Session tokens for the end users of an app (issue 14, item 6) and the token's ML claims, against the real agent:

- a token minted with `end_user` spends from that user's budget inside the key's (`RateTier.spec.endUser`): one
  user runs out (429, the message names the hashed user), another user and the key itself go on;
- a user's stream cap (`endUser.maxConcurrentStreams`) holds per user, not per key;
- `oneStreamPerToken` binds a token to one open stream; a refresh moves the binding to the new token;
- a refresh to a token for another end user is refused and the stream goes on;
- usage per end user is in `/usage` and in `infergate_end_user_gpu_seconds_total`, by hashed id only;
- `max_audio_seconds` and `codecs` narrow what a token may send; `/v1/models` lists only what a token allows.
"""
import hashlib
import json

import httpx
import pytest
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403
from test_gateway_ws import auth, closed_with, start
from test_tokens import WIDE, refused_with, token_url, transcribe

USERS = """
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: per-user}
spec:
  gpuSecondsPerMinute: 600
  burstGpuSeconds: 100
  maxConcurrentStreams: 4
  endUser: {gpuSecondsPerMinute: 0.6, burstGpuSeconds: 0.25, maxConcurrentStreams: 1}
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: bound}
spec: {gpuSecondsPerMinute: 600, burstGpuSeconds: 100, maxConcurrentStreams: 4, oneStreamPerToken: true}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: users, namespace: default}
spec: {tier: per-user, environment: test, secretName: users-key, scopes: [{endpoint: transcribe}]}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: bound, namespace: default}
spec: {tier: bound, environment: test, secretName: bound-key, scopes: [{endpoint: transcribe}]}
"""


@pytest.fixture(scope="module")
def uagent(upstream, tmp_path_factory):
    a = Agent(manifests(upstream, idle_timeout="60s") + WIDE + USERS, tmp=tmp_path_factory.mktemp("end-users"))
    yield a
    a.stop()


def mint(a, policy, **fields):
    r = httpx.post(
        token_url(a), data={"grant_type": "client_credentials", **fields}, auth=(a.key_id(policy), a.key(policy))
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def hashed(policy, user):
    """The agent's public form of an end-user id (docs/tokens.md): SHA-256 over the policy and the user id."""
    data = b"infergate-end-user\0" + str(len(policy)).encode() + b"\0" + policy.encode() + user.encode()
    return "u_" + hashlib.sha256(data).hexdigest()[:16]


def upload(a, credential, seconds=1.0, filename="a.wav", body=None):
    return httpx.post(
        f"{a.http}/v1/audio/transcriptions", headers=auth(credential),
        files={"file": (filename, body if body is not None else wav(seconds))}, data={"model": "whisper-1"},
    )


def test_one_end_user_runs_out_and_the_others_do_not(uagent):
    alice = mint(uagent, "users", end_user="alice@example.com")
    bob = mint(uagent, "users", end_user="bob")
    # 1 s of audio is 0.1 GPU-s; alice's bucket holds 0.25.
    for _ in range(2):
        assert upload(uagent, alice).status_code == 200
    r = upload(uagent, alice)
    message = refused_with(r, 429, "rate_limited")
    assert f"end user {hashed('default/users', 'alice@example.com')}'s GPU-second budget" in message, message
    assert "alice" not in message
    assert float(r.headers["retry-after"]) >= 1
    # Bob has a budget of his own, and the key itself is limited by the tier's key budget only.
    assert upload(uagent, bob).status_code == 200
    assert upload(uagent, uagent.key("users")).status_code == 200
    # A token without end_user is the key's.
    assert upload(uagent, mint(uagent, "users")).status_code == 200


def test_usage_per_end_user_is_reported_by_hashed_id(uagent):
    carol = mint(uagent, "users", end_user="carol")
    assert upload(uagent, carol).status_code == 200
    body = httpx.get(f"{uagent.admin}/usage", timeout=5).json()
    rows = {row["user"]: row for row in body["endUsers"]}
    mine = rows[hashed("default/users", "carol")]
    assert mine["keyId"] == uagent.key_id("users")
    assert mine["agentGpuSeconds"] == pytest.approx(0.1, abs=0.02)
    metrics = httpx.get(f"{uagent.admin}/metrics", timeout=5).text
    assert f'infergate_end_user_gpu_seconds_total{{user="{hashed("default/users", "carol")}"}}' in metrics
    assert "carol" not in metrics and "carol" not in json.dumps(body)
    uagent.log.flush()
    assert "carol" not in (uagent.dir / "agent.log").read_text(errors="replace")


def test_end_user_stream_cap_is_per_user(uagent):
    dave = mint(uagent, "users", end_user="dave")
    erin = mint(uagent, "users", end_user="erin")
    with connect(uagent.ws, additional_headers=auth(dave)) as first:
        assert start(first)["type"] == "ready"
        with connect(uagent.ws, additional_headers=auth(mint(uagent, "users", end_user="dave"))) as second:
            second.send(json.dumps({"type": "start", "model": "whisper-1"}))
            code, _, error = closed_with(second)
            assert (code, error["code"]) == (4291, "stream_cap")
            assert f"end user {hashed('default/users', 'dave')} already holds 1 open stream" in error["message"]
        with connect(uagent.ws, additional_headers=auth(erin)) as other_user:
            assert start(other_user)["type"] == "ready"


def test_refresh_to_another_end_user_is_refused(uagent):
    with connect(uagent.ws, additional_headers=auth(mint(uagent, "users", end_user="frank"))) as ws:
        assert start(ws)["type"] == "ready"
        ws.send(json.dumps({"type": "refresh", "token": mint(uagent, "users", end_user="grace")}))
        answer = json.loads(ws.recv(timeout=10))
        assert answer["type"] == "refresh_refused", answer
        assert answer["error"]["code"] == "bad_token"
        assert "another end user" in answer["error"]["message"]
        ws.send(json.dumps({"type": "refresh", "token": mint(uagent, "users", end_user="frank")}))
        assert json.loads(ws.recv(timeout=10))["type"] == "refreshed"


def test_one_stream_per_token(uagent):
    token = mint(uagent, "bound")
    with connect(uagent.ws, additional_headers=auth(token)) as first:
        assert start(first)["type"] == "ready"
        with connect(uagent.ws, additional_headers=auth(token)) as second:
            second.send(json.dumps({"type": "start", "model": "whisper-1"}))
            code, _, error = closed_with(second)
            assert (code, error["code"]) == (4291, "stream_cap"), error
            assert "already holds an open stream" in error["message"]
        # Another token of the same key streams alongside.
        with connect(uagent.ws, additional_headers=auth(mint(uagent, "bound"))) as other:
            assert start(other)["type"] == "ready"
        # A refresh binds the new token and frees the old one.
        fresh = mint(uagent, "bound")
        first.send(json.dumps({"type": "refresh", "token": fresh}))
        assert json.loads(first.recv(timeout=10))["type"] == "refreshed"
        with connect(uagent.ws, additional_headers=auth(token)) as reuse:
            assert start(reuse)["type"] == "ready"
        with connect(uagent.ws, additional_headers=auth(fresh)) as taken:
            taken.send(json.dumps({"type": "start", "model": "whisper-1"}))
            assert closed_with(taken)[2]["code"] == "stream_cap"
    # Closed streams give their tokens back.
    with connect(uagent.ws, additional_headers=auth(token)) as again:
        assert wait_until(lambda: start(again)["type"] == "ready", what="token slot")


def test_max_audio_seconds_caps_uploads_and_streams(uagent):
    token = mint(uagent, "app", max_audio_seconds="1")
    assert upload(uagent, token, seconds=0.9).status_code == 200
    message = refused_with(upload(uagent, token, seconds=2.0), 413, "audio_too_long")
    assert "session token's maximum of 1 s" in message, message
    with connect(uagent.ws, additional_headers=auth(token)) as ws:
        assert start(ws)["type"] == "ready"
        for _ in range(6):  # 0.25 s chunks (the endpoint's chunk limit is 8 KiB)
            ws.send(pcm(0.25))
        code, _, error = closed_with(ws)
        assert error["code"] == "audio_too_long" and "session token's" in error["message"], error


def test_codecs_narrow_what_a_token_may_send(uagent):
    token = mint(uagent, "app", codecs="pcm16")
    message = refused_with(upload(uagent, token), 415, "unsupported_codec")
    assert "allows only pcm16 audio, not wav" in message, message
    wav_only = mint(uagent, "app", codecs="wav")
    assert upload(uagent, wav_only).status_code == 200
    with connect(uagent.ws, additional_headers=auth(wav_only)) as ws:
        ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
        code, _, error = closed_with(ws)
        assert error["code"] == "unsupported_codec", error


@pytest.mark.parametrize(
    "field,value",
    [("end_user", ""), ("end_user", "x" * 129), ("max_audio_seconds", "0"), ("codecs", "aac")],
)
def test_bad_ml_claims_are_invalid_request(uagent, field, value):
    r = httpx.post(
        token_url(uagent), data={"grant_type": "client_credentials", field: value},
        auth=(uagent.key_id("app"), uagent.key("app")),
    )
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), r.text
    assert field in r.json()["error_description"]


def test_models_lists_what_the_token_allows(uagent):
    def listed(credential):
        r = httpx.get(f"{uagent.http}/v1/models", headers=auth(credential))
        assert r.status_code == 200, r.text
        return sorted(m["id"] for m in r.json()["data"])

    assert listed(uagent.key("wide")) == ["whisper-1", "whisper-other"]
    assert listed(mint(uagent, "wide")) == ["whisper-1", "whisper-other"]
    assert listed(mint(uagent, "wide", scope="model:whisper-other")) == ["whisper-other"]
