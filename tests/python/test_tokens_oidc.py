"""A policy that trusts an external OpenID Connect issuer (issue 14, item 6): a small local issuer serves its JWKS
over loopback and signs access tokens with PyJWT (RS256 and ES256, as identity providers do); the agent fetches
the JWKS itself and verifies those tokens locally, charges them to the policy, narrows them by their `scope`
claim and limits each end user (`sub`) by the tier's per-user budget.
"""
import http.server
import json
import threading
import time

import httpx
import jwt
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403
from test_gateway_ws import auth, start
from test_tokens import WIDE, refused_with, transcribe
from test_tokens_end_users import USERS, hashed


class Issuer:
    """An identity provider reduced to what a resource server needs: a JWKS document and signed tokens."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published = {"rsa-1": (self.rsa, "RS256"), "ec-1": (self.ec, "ES256")}
        self.fetches = 0
        self.up = True
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path != "/jwks.json" or not issuer.up:
                    self.send_response(503 if not issuer.up else 404)
                    self.end_headers()
                    return
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self):
        keys = [{"kty": "oct", "kid": "not-for-signatures", "k": "c2VjcmV0"}]
        for kid, (key, alg) in self.published.items():
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    def token(self, kid="rsa-1", key=None, alg=None, **claims):
        now = int(time.time())
        payload = {"iss": self.url, "aud": "voice-app", "sub": "user-1", "iat": now, "exp": now + 300,
                   "scope": "openid profile", **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        signing, default_alg = self.published.get(kid, (key, alg))
        return jwt.encode(payload, key or signing, algorithm=alg or default_alg, headers={"kid": kid})

    def stop(self):
        self.server.shutdown()


FEDERATED = """
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: federated, namespace: default}}
spec:
  tier: per-user
  environment: test
  secretName: federated-key
  scopes: [{{endpoint: transcribe}}, {{endpoint: other}}]
  trustedIssuers:
    - issuer: "{issuer}"
      audience: voice-app
      jwksUri: "{issuer}/jwks.json"
      allowInsecureHttp: true
"""


@pytest.fixture(scope="module")
def issuer():
    i = Issuer()
    yield i
    i.stop()


@pytest.fixture(scope="module")
def oagent(upstream, issuer, tmp_path_factory):
    world = manifests(upstream, idle_timeout="60s") + WIDE + USERS + FEDERATED.format(issuer=issuer.url)
    a = Agent(world, tmp=tmp_path_factory.mktemp("oidc"))
    wait_until(lambda: transcribe(a, issuer.token()).status_code == 200, what="the issuer's JWKS fetched")
    yield a
    a.stop()


def test_the_openai_sdk_transcribes_with_an_identity_providers_token(oagent, issuer):
    for kid in ("rsa-1", "ec-1"):
        client = openai.OpenAI(base_url=f"{oagent.http}/v1", api_key=issuer.token(kid=kid, sub=f"sdk-{kid}"),
                               max_retries=0)
        result = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(1.0)))
        assert result.text == "heard 32044 bytes for whisper-1"
    usage = httpx.get(f"{oagent.admin}/usage", timeout=5).json()
    users = {row["user"]: row for row in usage["endUsers"]}
    row = users[hashed("default/federated", "sdk-rsa-1")]
    assert row["keyId"] == oagent.key_id("federated"), "charged to the policy's current key"
    assert "sdk-rsa-1" not in json.dumps(usage)


def test_streams_take_the_token_too(oagent, issuer):
    with connect(oagent.ws, additional_headers=auth(issuer.token(sub="streamer"))) as ws:
        ready = start(ws)
        assert ready["type"] == "ready" and ready["key_id"] == oagent.key_id("federated"), ready


def test_the_scope_claim_narrows_the_policy(oagent, issuer):
    token = issuer.token(scope="openid model:whisper-other")
    assert transcribe(oagent, token, model="whisper-other").status_code == 200
    refused_with(transcribe(oagent, token, model="whisper-1"), 403, "out_of_scope")
    wider = issuer.token(scope="model:not-in-the-policy")
    refused_with(transcribe(oagent, wider), 403, "out_of_scope")


def test_each_end_user_has_the_tiers_per_user_budget(oagent, issuer):
    # The per-user tier's end users may spend a burst of 0.25 GPU-s: two 1 s uploads, then 429.
    token = issuer.token(sub="heavy-user")
    for _ in range(2):
        assert transcribe_seconds(oagent, token, 1.0).status_code == 200
    message = refused_with(transcribe_seconds(oagent, token, 1.0), 429, "rate_limited")
    assert hashed("default/federated", "heavy-user") in message
    assert transcribe_seconds(oagent, issuer.token(sub="light-user"), 1.0).status_code == 200


def transcribe_seconds(a, credential, seconds):
    return httpx.post(f"{a.http}/v1/audio/transcriptions", headers=auth(credential),
                      files={"file": ("a.wav", wav(seconds))}, data={"model": "whisper-1"})


def bad_token(r, category):
    message = refused_with(r, 401, "bad_token")
    assert message.startswith(f"token refused ({category})"), message


def test_every_check_refuses_with_its_own_reason(oagent, issuer):
    bad_token(transcribe(oagent, issuer.token(aud="someone-else")), "wrong_audience")
    refused_with(transcribe(oagent, issuer.token(exp=int(time.time()) - 120)), 401, "token_expired")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad_token(transcribe(oagent, issuer.token(kid="rsa-1", key=stranger, alg="RS256")), "bad_signature")
    bad_token(transcribe(oagent, issuer.token(kid="nobody", key=stranger, alg="RS256")), "unknown_kid")
    # The JWKS's HMAC entry is not a signing key for anyone: HS256 with it is not accepted.
    forged = jwt.encode({"iss": issuer.url, "aud": "voice-app", "exp": int(time.time()) + 60}, "secret",
                        algorithm="HS256", headers={"kid": "not-for-signatures"})
    bad_token(transcribe(oagent, forged), "alg_not_allowed")
    unsigned = jwt.encode({"iss": issuer.url, "aud": "voice-app", "exp": int(time.time()) + 60}, None,
                          algorithm="none")
    bad_token(transcribe(oagent, unsigned), "alg_not_allowed")


def test_a_new_signing_key_is_fetched_and_an_outage_keeps_the_last_keys(oagent, issuer):
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.published["rsa-2"] = (new_key, "RS256")
    token = issuer.token(kid="rsa-2")
    # A token naming a kid the agent has not seen makes it fetch the JWKS again (at most every 10 s).
    wait_until(lambda: transcribe(oagent, token).status_code == 200, timeout=20, what="the new kid fetched")
    issuer.up = False
    try:
        time.sleep(1.5)
        assert transcribe(oagent, issuer.token(kid="rsa-1")).status_code == 200
    finally:
        issuer.up = True


def test_suspending_the_policy_refuses_its_external_tokens(upstream, issuer, tmp_path_factory):
    suspended = FEDERATED.format(issuer=issuer.url).replace("  tier: per-user", "  tier: per-user\n  suspended: true")
    a = Agent(manifests(upstream, idle_timeout="60s") + WIDE + USERS + suspended, tmp=tmp_path_factory.mktemp("s"))
    try:
        def refused():
            r = transcribe(a, issuer.token())
            return r.status_code != 401 or r.json()["error"]["code"] != "bad_token"
        wait_until(refused, what="the JWKS fetched")
        refused_with(transcribe(a, issuer.token()), 403, "key_suspended")
    finally:
        a.stop()
