"""Session tokens (issue 14) against the real agent: the client-credentials flow with authlib, the token on every
door (openai SDK, grpcio, websockets, tickets), scope narrowing, forged and foreign tokens, PyJWT verification
against the published JWKS, and revocation of the key reaching its tokens and their streams."""
import base64
import hashlib
import hmac
import json
import time

import grpc
import httpx
import jwt
import openai
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403
from test_gateway_grpc import pb, stream_requests  # noqa: F401
from test_gateway_ws import auth, closed_with, start

WIDE = """
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: wide, namespace: default}
spec:
  tier: roomy
  environment: test
  secretName: wide-key
  scopes: [{endpoint: transcribe}, {endpoint: other}]
"""


def world(upstream, revoke=None):
    return manifests(upstream, revoke=revoke, idle_timeout="60s") + WIDE


@pytest.fixture(scope="module")
def tagent(upstream, tmp_path_factory):
    a = Agent(world(upstream), tmp=tmp_path_factory.mktemp("tokens"))
    yield a
    a.stop()


def token_url(a):
    return f"{a.http}/v1/oauth/token"


def mint(a, policy="app", scope=None):
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    r = httpx.post(token_url(a), data=data, auth=(a.key_id(policy), a.key(policy)))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def transcribe(a, credential, model="whisper-1"):
    return httpx.post(
        f"{a.http}/v1/audio/transcriptions", headers=auth(credential),
        files={"file": ("a.wav", wav(0.1))}, data={"model": model},
    )


def refused_with(r, status, code):
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    return r.json()["error"]["message"]


def test_authlib_client_credentials_basic_and_post(tagent):
    for method in ("client_secret_basic", "client_secret_post"):
        with OAuth2Client(tagent.key_id("app"), tagent.key("app"), token_endpoint_auth_method=method) as client:
            token = client.fetch_token(token_url(tagent), grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert 590 <= token["expires_in"] <= 600
        assert token["scope"] == "model:whisper-1"
        assert token["access_token"].startswith("eyJ")
        assert transcribe(tagent, token["access_token"]).status_code == 200


def test_token_response_is_not_cached(tagent):
    r = httpx.post(
        token_url(tagent), data={"grant_type": "client_credentials"}, auth=(tagent.key_id("app"), tagent.key("app"))
    )
    assert r.headers["cache-control"] == "no-store"


def test_openai_sdk_transcribes_with_the_token(tagent):
    client = openai.OpenAI(base_url=f"{tagent.http}/v1", api_key=mint(tagent), max_retries=0)
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(1.0)))
    assert result.text == "heard 32044 bytes for whisper-1"


def test_grpc_streams_with_the_token(tagent, pb):  # noqa: F811
    token = mint(tagent)
    with grpc.insecure_channel(tagent.grpc) as channel:
        stub = pb[1].InferenceStub(channel)
        responses = list(
            stub.StreamTranscribe(stream_requests(pb, [pcm(0.25)] * 4), metadata=(("authorization", f"Bearer {token}"),))
        )
    assert responses[0].WhichOneof("msg") == "ready"
    assert responses[0].ready.key_id == tagent.key_id("app")
    assert responses[-1].result.final


def test_websocket_header_auth_message_and_ticket_take_the_token(tagent):
    token = mint(tagent)
    with connect(tagent.ws, additional_headers=auth(token)) as ws:
        assert start(ws)["type"] == "ready"
    with connect(tagent.ws) as ws:
        ws.send(json.dumps({"type": "auth", "key": token}))
        assert start(ws)["type"] == "ready"
    r = httpx.post(f"{tagent.http}/v1/tickets", headers=auth(token))
    assert r.status_code == 201, r.text
    with connect(f"{tagent.ws}?ticket={r.json()['ticket']}") as ws:
        assert start(ws)["type"] == "ready"


def test_scope_narrows_the_token(tagent):
    token = mint(tagent, "wide", scope="model:whisper-other")
    assert transcribe(tagent, token, model="whisper-other").status_code == 200
    message = refused_with(transcribe(tagent, token, model="whisper-1"), 403, "out_of_scope")
    assert message.startswith("the token's scope (model:whisper-other) does not include")
    # A ticket minted with a narrowed token keeps the narrowing.
    ticket = httpx.post(f"{tagent.http}/v1/tickets", headers=auth(token)).json()["ticket"]
    with connect(f"{tagent.ws}?ticket={ticket}") as ws:
        ready = start(ws, model="whisper-1")
        assert ready["type"] == "error" and ready["error"]["code"] == "out_of_scope"


@pytest.mark.parametrize(
    "data,basic,status,error",
    [
        ({"grant_type": "password"}, True, 400, "unsupported_grant_type"),
        ({}, True, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "model:whisper-other"}, True, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "bogus"}, True, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "audience": "someone-else"}, True, 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, False, 401, "invalid_client"),
    ],
)
def test_token_request_errors(tagent, data, basic, status, error):
    credentials = (tagent.key_id("app"), tagent.key("app")) if basic else None
    r = httpx.post(token_url(tagent), data=data, auth=credentials)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.headers["cache-control"] == "no-store"


def test_wrong_client_id_or_secret_is_invalid_client(tagent):
    data = {"grant_type": "client_credentials"}
    for credentials in [(tagent.key_id("victim"), tagent.key("app")), (tagent.key_id("app"), tagent.key("app") + "x")]:
        r = httpx.post(token_url(tagent), data=data, auth=credentials)
        assert (r.status_code, r.json()["error"]) == (401, "invalid_client"), r.text
        assert r.headers["www-authenticate"].startswith("Basic")
    # A refused key keeps its own code next to the RFC's error.
    r = httpx.post(token_url(tagent), data=data, auth=(tagent.key_id("old"), tagent.key("old")))
    assert (r.status_code, r.json()["error"], r.json()["code"]) == (401, "invalid_client", "key_expired")
    r = httpx.post(token_url(tagent), data=data, auth=(tagent.key_id("paused"), tagent.key("paused")))
    assert (r.status_code, r.json()["error"], r.json()["code"]) == (400, "invalid_grant", "key_suspended")


def forged(tagent, header_changes, sign):
    """A token with the real token's payload, a changed header and a signature from `sign(signing_input)`."""
    _, payload, _ = mint(tagent).split(".")
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": jwks(tagent)["keys"][0]["kid"], **header_changes}
    head = b64(json.dumps(header, separators=(",", ":")).encode())
    return f"{head}.{payload}.{sign(f'{head}.{payload}'.encode())}"


def jwks(a):
    return httpx.get(f"{a.http}/.well-known/jwks.json").json()


def bad_token(r, category):
    message = refused_with(r, 401, "bad_token")
    assert message.startswith(f"token refused ({category})"), message
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_tampered_token_is_refused(tagent):
    head, payload, signature = mint(tagent).split(".")
    claims = json.loads(unb64(payload))
    claims["mdl"] = ["whisper-1", "whisper-other"]
    tampered = f"{head}.{b64(json.dumps(claims).encode())}.{signature}"
    bad_token(transcribe(tagent, tampered), "bad_signature")


def test_alg_none_is_refused(tagent):
    bad_token(transcribe(tagent, forged(tagent, {"alg": "none"}, lambda _: "")), "alg_not_allowed")


def test_hs256_signed_with_the_public_key_is_refused(tagent):
    public = unb64(jwks(tagent)["keys"][0]["x"])
    token = forged(tagent, {"alg": "HS256"}, lambda data: b64(hmac.new(public, data, hashlib.sha256).digest()))
    bad_token(transcribe(tagent, token), "alg_not_allowed")


def test_token_signed_by_an_unknown_key_is_refused(tagent):
    stranger = Ed25519PrivateKey.generate()
    claims = jwt.decode(mint(tagent), options={"verify_signature": False})
    token = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "stranger", "typ": "at+jwt"})
    bad_token(transcribe(tagent, token), "unknown_kid")
    # Same kid as the gateway's key, wrong private key: the signature does not verify.
    token = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": jwks(tagent)["keys"][0]["kid"], "typ": "at+jwt"})
    bad_token(transcribe(tagent, token), "bad_signature")


def test_pyjwt_verifies_a_minted_token_against_the_jwks(tagent):
    discovery = httpx.get(f"{tagent.http}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == tagent.http
    assert discovery["token_endpoint"] == token_url(tagent)
    token = mint(tagent, "wide", scope="model:whisper-1 feature:transcribe")
    signing_key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["EdDSA"], audience="infergate", issuer=tagent.http)
    assert claims["sub"] == "default/wide"
    assert claims["client_id"] == tagent.key_id("wide")
    assert claims["mdl"] == ["whisper-1"] and claims["ftr"] == ["transcribe"]
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"


def test_tokens_never_reach_logs_and_are_counted(tagent):
    token = mint(tagent)
    transcribe(tagent, token)
    transcribe(tagent, token[:-4] + "AAAA")
    logs = tagent.logs()
    assert token not in logs and token.split(".")[2] not in logs
    assert jwt.decode(token, options={"verify_signature": False})["jti"] in logs
    metrics = tagent.metrics()
    assert 'infergate_tokens_minted_total{tier="roomy"}' in metrics
    assert 'infergate_tokens_refused_total{reason="bad_signature"}' in metrics


def test_revoking_the_key_refuses_its_tokens_and_closes_their_streams(upstream, tmp_path):
    a = Agent(world(upstream), tmp=tmp_path)
    try:
        token, key, key_id = mint(a, "victim"), a.key("victim"), a.key_id("victim")
        ws = connect(a.ws, additional_headers=auth(token))
        assert start(ws)["type"] == "ready"
        wait_until(lambda: "infergate_open_streams 1" in a.metrics(), what="an open stream")
        a.rewrite(world(upstream, revoke={"victim": key_id}))
        applied = time.monotonic()
        code, reason, error = closed_with(ws, timeout=15)
        assert time.monotonic() - applied <= 1.0
        assert code == 4005 and reason.startswith("key_revoked") and error["code"] == "key_revoked"
        refused_with(transcribe(a, token), 401, "key_revoked")
        r = httpx.post(token_url(a), data={"grant_type": "client_credentials"}, auth=(key_id, key))
        assert (r.status_code, r.json()["code"]) == (401, "key_revoked")
    finally:
        a.stop()
