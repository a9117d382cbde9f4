"""Issue 9, billing honesty (items 9, 10): audio length is measured, not declared; refunds only for work not done.
The real standalone agent, httpx, and uploads whose headers lie.

Names the implementation must match: a forged WAV header is `400 bad_request` whose message names the field that
disagrees (`byte rate` / `block align`, any case); a compressed file's declared length counts against
`maxAudioSeconds` (`413 audio_too_long`) and sets the charge; an endpoint without `cost.minimumGpuSeconds` still
charges at least 0.001 GPU-seconds per request. The charge is read from the `x-infergate-gpu-seconds` response
header and, after a failure, from the admin `/usage` entry of the key.
"""
from __future__ import annotations

import subprocess
import httpx
import pytest

from gateway_fixtures import *  # noqa: F401,F403
from security_helpers import SlowUpstream, flac_declaring, forged_wav, security_item


def world(upstream_url: str, timeout: str = "120s") -> str:
    return f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: roomy}}
spec: {{gpuSecondsPerMinute: 600, burstGpuSeconds: 100, maxConcurrentStreams: 4}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: stt, namespace: default}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", timeout: {timeout}, allowPrivateNetwork: true}}}}
  cost: {{gpuSecondsPerAudioSecond: 0.1}}
  limits: {{maxAudioSeconds: 30, codecs: [pcm16, wav, flac, mp3, ogg, webm]}}
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


@pytest.fixture(scope="module")
def billing_agent(upstream, tmp_path_factory):
    a = Agent(world(upstream), tmp=tmp_path_factory.mktemp("billing"))
    yield a
    a.stop()


def upload(a, body: bytes, name: str):
    return httpx.post(f"{a.http}/v1/audio/transcriptions", headers={"authorization": f"Bearer {a.key('app')}"},
                      files={"file": (name, body)}, data={"model": "whisper-1"}, timeout=30)


def charged(r) -> float:
    return float(r.headers["x-infergate-gpu-seconds"])


@security_item(9, built=True)
def test_honest_wav_is_charged_by_its_length(billing_agent):
    # The baseline the forgeries are measured against: 2 s at 0.1 GPU-s per second.
    r = upload(billing_agent, forged_wav(64000), "a.wav")
    assert r.status_code == 200, r.text
    assert charged(r) == pytest.approx(0.2, abs=1e-6)


@security_item(9, built=True)
@pytest.mark.parametrize("field,kwargs", [
    ("byte rate", {"byte_rate": 32000 * 1000}),  # claims 1000x the honest rate: 2 s billed as 2 ms
    ("block align", {"block_align": 200}),
], ids=["byteRate", "blockAlign"])
def test_wav_header_disagreeing_with_its_format_is_refused(billing_agent, field, kwargs):
    r = upload(billing_agent, forged_wav(64000, **kwargs), "a.wav")
    assert r.status_code == 400, f"a forged WAV header was accepted and charged {r.headers.get('x-infergate-gpu-seconds')}"
    error = r.json()["error"]
    assert error["code"] == "bad_request"
    assert field in error["message"].lower().replace("byterate", "byte rate").replace("blockalign", "block align")


@security_item(9, built=True)
def test_compressed_upload_declaring_more_than_the_limit_is_refused(billing_agent):
    # 2 KiB that declare 60 s: a flat 4,000 bytes/s estimate calls it half a second.
    r = upload(billing_agent, flac_declaring(60.0), "a.flac")
    assert (r.status_code, r.json().get("error", {}).get("code")) == (413, "audio_too_long"), (
        r.status_code, r.headers.get("x-infergate-gpu-seconds"))


@security_item(9, built=True)
def test_compressed_upload_is_charged_its_declared_length(billing_agent):
    r = upload(billing_agent, flac_declaring(20.0), "a.flac")
    assert r.status_code == 200, r.text
    assert charged(r) >= 2.0 - 1e-6, f"20 s of FLAC charged {charged(r)} GPU-s (expected 20 x 0.1)"


@security_item(9, built=True)
def test_every_request_pays_a_minimum(billing_agent):
    # One sample of audio; the endpoint sets no minimumGpuSeconds.
    r = upload(billing_agent, forged_wav(2), "a.wav")
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert charged(r) >= 0.001, f"a one-sample request cost {charged(r)} GPU-s"


# --- item 10 --------------------------------------------------------------------------------------------------


def usage_of(a, key_id: str) -> float:
    keys = httpx.get(f"{a.admin}/usage", timeout=5).json()["keys"]
    return next((k["gpuSeconds"] for k in keys if k["keyId"] == key_id), 0.0)


@security_item(10, built=True)
def test_backend_timeout_after_dispatch_is_charged(tmp_path):
    slow = SlowUpstream(delay=4.0)
    a = Agent(world(slow.url, timeout="1s"), tmp=tmp_path)
    try:
        before = usage_of(a, a.key_id("app"))
        r = upload(a, forged_wav(64000), "a.wav")
        assert r.status_code in (502, 503, 504), r.text
        assert slow.max_in_flight == 1, "the request reached the backend"
        spent = usage_of(a, a.key_id("app")) - before
        assert spent > 0, "a request that ran on the backend until its timeout was refunded in full"
    finally:
        a.stop()
        slow.stop()


@security_item(9, built=True)
@pytest.mark.parametrize("suffix", ["ogg", "flac"])
def test_real_compressed_audio_is_charged_its_length(billing_agent, tmp_path, suffix):
    # Made by sox, as a client would send it: 3 s of 16 kHz audio at 0.1 GPU-s per second of audio.
    path = tmp_path / f"three-seconds.{suffix}"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(path), "synth", "3", "sine", "440"], check=True)
    r = upload(billing_agent, path.read_bytes(), path.name)
    assert r.status_code == 200, r.text
    assert charged(r) == pytest.approx(0.3, abs=0.01)


@security_item(9, built=True)
def test_hostile_containers_are_answered_and_the_agent_lives_on(billing_agent):
    # Every input that once crashed or aborted the audio readers (fuzz/artifacts: panics in symphonia's demuxers, a
    # 130-byte Matroska file that declared a 284 TB element, a stream at a few Hz that asked the resampler for
    # 57 GB), sent through the real door: each gets an answer, and the agent still serves the next request.
    artifacts = sorted(p for d in ("audio_inspect", "audio_decode") for p in (ROOT / "fuzz/artifacts" / d).iterdir())
    assert any(p.name.startswith("mkv-ebml-size") for p in artifacts)
    for path in artifacts:
        r = upload(billing_agent, path.read_bytes(), path.name)
        assert r.status_code < 500 or r.status_code in (502, 503), (path.name, r.status_code, r.text)
        assert billing_agent.proc.poll() is None, f"the agent exited on {path.name}"
    r = upload(billing_agent, forged_wav(64000), "a.wav")
    assert r.status_code == 200, r.text
