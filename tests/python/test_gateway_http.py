"""The HTTP door with real clients: the openai SDK unchanged, and httpx for the refusal contract."""
import binascii
import os
import time
import zlib

import httpx
import openai
import pytest

from gateway_fixtures import *  # noqa: F401,F403

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def well_formed_unknown_key() -> str:
    """A key with a valid checksum that no policy issued."""
    body = base62(int(binascii.hexlify(os.urandom(32)), 16), 43)
    signed = "sk_test_" + body
    return signed + base62(zlib.crc32(signed.encode()), 6)


def bad_checksum(key: str) -> str:
    i = 20
    return key[:i] + ("a" if key[i] != "a" else "b") + key[i + 1:]


def post(agent, key, seconds=1.0, model="whisper-1", headers=None):
    h = {"authorization": f"Bearer {key}"} if key else {}
    h.update(headers or {})
    return httpx.post(
        f"{agent.http}/v1/audio/transcriptions", headers=h,
        files={"file": ("a.wav", wav(seconds), "audio/wav")}, data={"model": model}, timeout=30,
    )


def test_openai_sdk_works_unchanged(agent):
    client = openai.OpenAI(base_url=f"{agent.http}/v1", api_key=agent.key("app"), max_retries=0)
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=("a.wav", wav(1.0)))
    assert raw.headers["x-request-id"].startswith("req_")
    # The text is what the upstream said about this very upload: 44-byte header + 32000 bytes of audio.
    assert raw.parse().text == "heard 32044 bytes for whisper-1"
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.5)), response_format="text")
    assert text.strip() == "heard 16044 bytes for whisper-1"


def test_models_lists_only_what_the_key_may_use(agent):
    r = httpx.get(f"{agent.http}/v1/models", headers={"authorization": f"Bearer {agent.key('app')}"})
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["whisper-1"]
    assert r.headers["content-type"] == "application/json"
    model = r.json()["data"][0]
    assert (model["object"], model["owned_by"], model["features"]) == ("model", "infergate", ["transcribe"])
    client = openai.OpenAI(base_url=f"{agent.http}/v1", api_key=agent.key("app"), max_retries=0)
    assert [m.id for m in client.models.list()] == ["whisper-1"]
    assert client.models.retrieve("whisper-1").id == "whisper-1"


def test_public_listener_answers_liveness_without_a_key(agent):
    r = httpx.get(f"{agent.http}/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    # Only liveness: readiness and metrics stay on the admin listener.
    assert httpx.get(f"{agent.http}/readyz").status_code == 404


@pytest.mark.parametrize(
    "which,status,code",
    [
        ("missing", 401, "missing_key"),
        ("malformed", 401, "malformed_key"),
        ("bad_checksum", 401, "bad_checksum"),
        ("unknown", 401, "unknown_key"),
        ("expired", 401, "key_expired"),
        ("suspended", 403, "key_suspended"),
    ],
)
def test_each_identity_refusal_has_its_own_code(agent, which, status, code):
    key = {
        "missing": None,
        "malformed": "sk_test_tooshort",
        "bad_checksum": bad_checksum(agent.key("app")),
        "unknown": well_formed_unknown_key(),
        "expired": agent.key("old"),
        "suspended": agent.key("paused"),
    }[which]
    r = post(agent, key)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert r.headers["x-request-id"].startswith("req_")
    # The openai SDK surfaces the same code.
    if key:
        client = openai.OpenAI(base_url=f"{agent.http}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(0.1)))
        assert err.value.status_code == status
        assert err.value.body["code"] == code


def test_out_of_scope_names_the_missing_scope(agent):
    r = post(agent, agent.key("app"), model="whisper-other")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "out_of_scope"
    assert "default/other" in r.json()["error"]["message"]
    r = post(agent, agent.key("app"), model="no-such-model")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_model")


def test_bad_input_is_400_with_what_to_fix(agent):
    h = {"authorization": f"Bearer {agent.key('app')}"}
    r = httpx.post(f"{agent.http}/v1/audio/transcriptions", headers=h, files={"file": ("a.txt", b"hello")}, data={"model": "whisper-1"})
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_codec")
    r = httpx.post(f"{agent.http}/v1/audio/transcriptions", headers=h, files={"file": ("a.wav", wav(0.1))})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request")
    assert "model" in r.json()["error"]["message"]
    r = post(agent, agent.key("app"), seconds=31)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "audio_too_long")


def test_retry_after_is_honest(agent):
    # Tier "tiny": 6 GPU-s/min (0.1/s), burst 0.2. Two seconds of audio at 0.1 GPU-s per second = 0.2 GPU-s.
    key = agent.key("tiny")
    assert post(agent, key, seconds=2.0).status_code == 200
    refused = post(agent, key, seconds=2.0)
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert refused.json()["error"] == {
        "code": "rate_limited",
        "message": refused.json()["error"]["message"],
        "type": "rate_limit_error",
        "param": None,
        "retry_after_seconds": retry_after,
    }
    assert retry_after >= 1
    # Retrying before the advertised time fails ...
    again = post(agent, key, seconds=2.0)
    assert again.status_code == 429
    # ... and retrying after it succeeds.
    time.sleep(int(again.headers["retry-after"]))
    assert post(agent, key, seconds=2.0).status_code == 200


def test_metrics_have_bounded_labels_and_no_secrets(agent):
    post(agent, agent.key("old"))
    text = agent.metrics()
    assert 'infergate_admissions_total{decision="refuse",endpoint="",reason="key_expired",tier=""}' in text
    assert 'infergate_admissions_total{decision="admit",endpoint="default/transcribe",reason="ok",tier="roomy"}' in text
    assert "infergate_gpu_seconds_charged_total" in text
    assert "infergate_open_streams" in text and "infergate_queue_depth" in text
    assert "kid_" not in text and "sk_test_" not in text
    for policy in ("app", "old", "paused", "tiny"):
        assert agent.key(policy) not in agent.logs()
    assert '"event":"refusal"' in agent.logs()


def test_live_only_agent_refuses_test_keys(upstream, tmp_path):
    a = Agent(manifests(upstream), extra_args=["--environment", "live"], tmp=tmp_path)
    try:
        r = post(a, a.key("app"))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "wrong_environment")
        assert "sk_live_" in r.json()["error"]["message"]
    finally:
        a.stop()


def test_the_model_list_follows_each_config_change_per_policy(upstream, tmp_path):
    """GET /v1/models is answered from a memo per snapshot and policy: a scope added to one policy shows up in that
    policy's list as soon as the change applies (and leaves as soon as it is taken back), never in another's."""
    a = Agent(manifests(upstream), tmp=tmp_path)
    try:
        app, victim = a.key("app"), a.key("victim")

        def ids(key):
            r = httpx.get(f"{a.http}/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
            assert r.headers["x-request-id"].startswith("req_")
            body = r.json()
            assert body["object"] == "list"
            return sorted(m["id"] for m in body["data"])

        assert ids(app) == ids(app) == ["whisper-1"]
        assert ids(victim) == ["whisper-1"]
        one = "secretName: app-key\n  scopes: [{endpoint: transcribe}]"
        assert one in a.manifest.read_text()
        both = "secretName: app-key\n  scopes: [{endpoint: transcribe}, {endpoint: other}]"
        a.manifest.write_text(a.manifest.read_text().replace(one, both))
        wait_until(lambda: ids(app) == ["whisper-1", "whisper-other"], timeout=10, what="the new scope listed")
        assert ids(victim) == ["whisper-1"], "another policy's list is its own"
        a.manifest.write_text(a.manifest.read_text().replace(both, one))
        wait_until(lambda: ids(app) == ["whisper-1"], timeout=10, what="the scope taken back")
    finally:
        a.stop()
