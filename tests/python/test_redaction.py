"""PII redaction in the pipeline (issue 13), through `infergate-agent standalone` with real clients: the openai
SDK, httpx, websockets and grpcio, against the built-in Whisper and an upstream.

Speech: agent/whisper/tests/fixtures (espeak-ng), whose transcripts by the CPU Whisper are known
(reference.json): short_01_card.wav is "My card number is 4111, 22223334444" (a card number ASR got one digit
wrong: Luhn fails, the cue word "card" makes it one), short_02_name.wav names a person and a city. A second card
sentence is synthesised here with espeak-ng.
"""
import base64
import io
import json
import re
import shutil
import subprocess
import wave

import grpc
import httpx
import openai
import pytest
from websockets.sync.client import connect

from gateway_fixtures import ROOT, Agent, upstream  # noqa: F401 - the session fixture
from test_gateway_grpc import pb  # noqa: F401 - the session fixture that generates the gRPC stubs

MODELS = ROOT / ".cache" / "models"
SPEECH = ROOT / "agent" / "whisper" / "tests" / "fixtures"
NER = MODELS / "ner" / "rampart" / "model_q4.onnx"

pytestmark = pytest.mark.skipif(
    not (MODELS / "whisper" / "tiny.en" / "model.bin").exists(),
    reason="whisper weights absent: run `infergate-agent models fetch --model whisper-tiny.en`",
)

# Digits of the cards spoken in the test audio: none may ever reach a client of a redacting endpoint.
CARD_DIGITS = re.compile(r"\d{3,}")


def world(upstream_url: str) -> str:
    return f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: roomy}}
spec: {{gpuSecondsPerMinute: 6000, burstGpuSeconds: 1000, maxConcurrentStreams: 4}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: pci, namespace: default}}
spec:
  model: whisper-pci
  features: [transcribe]
  backend: {{builtin: whisper, size: tiny.en}}
  redaction: {{entities: [pci, ssn]}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: plain, namespace: default}}
spec:
  model: whisper-plain
  features: [transcribe]
  backend: {{builtin: whisper, size: tiny.en}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: removing, namespace: default}}
spec:
  model: whisper-remove
  features: [transcribe]
  backend: {{builtin: whisper, size: tiny.en}}
  redaction: {{entities: [pci], style: remove}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: names, namespace: default}}
spec:
  model: whisper-names
  features: [transcribe]
  backend: {{builtin: whisper, size: tiny.en}}
  redaction: {{entities: [pii], style: marker}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: relay, namespace: default}}
spec:
  model: relay-numbers
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", allowPrivateNetwork: true}}}}
  redaction: {{entities: [numbers]}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: app, namespace: default}}
spec:
  tier: roomy
  environment: test
  secretName: app-key
  scopes: [{{endpoint: pci}}, {{endpoint: plain}}, {{endpoint: removing}}, {{endpoint: names}}, {{endpoint: relay}}]
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: strict, namespace: default}}
spec:
  tier: roomy
  environment: test
  secretName: strict-key
  scopes: [{{endpoint: plain}}]
  redaction: {{entities: [ssn, pci], audio: silence}}
"""


@pytest.fixture(scope="module")
def agent(upstream, tmp_path_factory):  # noqa: F811
    a = Agent(world(upstream), extra_args=("--models-dir", str(MODELS), "--segment-seconds", "5"),
              tmp=tmp_path_factory.mktemp("redaction"))
    yield a
    a.stop()


def sdk(agent, policy="app"):
    return openai.OpenAI(api_key=agent.key(policy), base_url=f"{agent.http}/v1", max_retries=0, timeout=120)


def speech(name: str) -> bytes:
    return (SPEECH / name).read_bytes()


def pcm_of(wav_bytes: bytes) -> bytes:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


def post(agent, data, file="short_01_card.wav", policy="app", audio=None):
    return httpx.post(f"{agent.http}/v1/audio/transcriptions",
                      headers={"Authorization": f"Bearer {agent.key(policy)}"},
                      files={"file": (file, audio if audio is not None else speech(file), "audio/wav")},
                      data=data, timeout=120)


def test_sdk_sees_the_card_redacted_and_the_header_counts_it(agent):
    with sdk(agent) as client:
        raw = client.audio.transcriptions.with_raw_response.create(model="whisper-pci", file=("card.wav", speech("short_01_card.wav")))
        text = raw.parse().text
    assert text.startswith("My card number is [CREDIT_CARD]"), text
    assert not CARD_DIGITS.search(text), text
    assert raw.headers["x-infergate-redactions"] == "CREDIT_CARD=1"
    # The unredacted endpoint, same audio: the digits are there (so the check above means something).
    with sdk(agent) as client:
        assert CARD_DIGITS.search(client.audio.transcriptions.create(model="whisper-plain", file=("card.wav", speech("short_01_card.wav"))).text)


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_every_response_format_is_redacted(agent, fmt):
    data = {"model": "whisper-pci", "response_format": fmt}
    if fmt == "verbose_json":
        data["timestamp_granularities[]"] = ["word", "segment"]
    r = post(agent, data)
    assert r.status_code == 200, r.text
    # Cue times and JSON numbers are digits too: look at the text only.
    shown = "\n".join(line for line in r.text.splitlines() if "-->" not in line)
    if fmt.endswith("json"):
        body = r.json()
        shown = " ".join([body["text"]] + [s["text"] for s in body.get("segments", [])]
                         + [w["word"] for w in body.get("words", [])])
    assert "[CREDIT_CARD]" in shown and not CARD_DIGITS.search(shown), r.text
    if fmt == "verbose_json":
        body = r.json()
        assert "[CREDIT_CARD]" in [w["word"] for w in body["words"]], body["words"]
        assert all("[CREDIT_CARD]" in s["text"] or not CARD_DIGITS.search(s["text"]) for s in body["segments"])
        assert body["redactions"] == {"CREDIT_CARD": 1}


def test_sse_stream_is_redacted(agent):
    with httpx.stream("POST", f"{agent.http}/v1/audio/transcriptions",
                      headers={"Authorization": f"Bearer {agent.key('app')}"},
                      files={"file": ("card.wav", speech("short_01_card.wav"), "audio/wav")},
                      data={"model": "whisper-pci", "stream": "true"}, timeout=120) as r:
        body = r.read().decode()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), body
    assert "transcript.text.done" in body and "[CREDIT_CARD]" in body and not CARD_DIGITS.search(body), body


def test_a_request_may_ask_for_more_never_less(agent):
    # More: the unredacted endpoint redacts what the request asks (the SDK's extra form field).
    with sdk(agent) as client:
        text = client.audio.transcriptions.create(model="whisper-plain", file=("card.wav", speech("short_01_card.wav")),
                                                  extra_body={"redact": "pci"}).text
    assert "[CREDIT_CARD]" in text and not CARD_DIGITS.search(text), text
    # Less: a weaker style than the endpoint's `remove` is ignored.
    r = post(agent, {"model": "whisper-remove", "redact_style": "mask"})
    assert r.status_code == 200, r.text
    assert r.json()["text"].startswith("My card number is") and "*" not in r.text and not CARD_DIGITS.search(r.text), r.text
    # A key's policy adds to an endpoint that redacts nothing.
    r = post(agent, {"model": "whisper-plain"}, policy="strict")
    assert r.status_code == 200 and "[CREDIT_CARD]" in r.json()["text"], r.text


def test_bad_asks_are_refused_with_the_fix(agent):
    r = post(agent, {"model": "whisper-pci", "redact": "FINGERPRINT"})
    assert r.status_code == 400 and "`redact`" in r.json()["error"]["message"], r.text
    r = post(agent, {"model": "whisper-pci", "redact_style": "blur"})
    assert r.status_code == 400 and "entity, marker, mask, hash or remove" in r.json()["error"]["message"], r.text
    r = post(agent, {"model": "whisper-pci", "redact_audio": "silence", "response_format": "srt"})
    assert r.status_code == 400 and "verbose_json" in r.json()["error"]["message"], r.text


def dbfs(samples) -> float:
    import math
    if not samples:
        return -200.0
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    return 20 * math.log10(rms / 32768) if rms > 0 else -200.0


@pytest.mark.parametrize("treatment", ["silence", "beep"])
def test_audio_redaction_mutes_only_the_number(agent, treatment):
    import array
    audio = speech("short_01_card.wav")
    r = post(agent, {"model": "whisper-pci", "response_format": "verbose_json", "timestamp_granularities[]": "word",
                     "redact_audio": treatment})
    assert r.status_code == 200, r.text
    body = r.json()
    card = [w for w in body["words"] if w["word"] == "[CREDIT_CARD]"]
    assert len(card) == 1, body["words"]
    red = body["redacted_audio"]
    assert (red["format"], red["sample_rate"], red["treatment"]) == ("wav", 16000, treatment)
    got = array.array("h", pcm_of(base64.b64decode(red["data"])))
    want = array.array("h", pcm_of(audio))
    assert len(got) == len(want)
    start, end = int(card[0]["start"] * 16000), int(card[0]["end"] * 16000) + 1
    assert end - start > 16000, card  # the number takes well over a second to say
    if treatment == "silence":
        assert dbfs(got[start:end]) < -50, dbfs(got[start:end])
    else:
        assert -16 < dbfs(got[start:end]) < -14, dbfs(got[start:end])  # a sine peaking at -12 dBFS: RMS -15
    assert got[:start - 1] == want[:start - 1] and got[end + 1:] == want[end + 1:], "audio outside the number changed"


def synthesised_card(tmp_path) -> bytes:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are installed by tests/tools/setup.sh")
    raw, wav = tmp_path / "raw.wav", tmp_path / "card.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "My card number is 4 5 3 9, 1 4 8 8, 0 3 4 3, 6 4 6 7. Thank you."], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    return wav.read_bytes()


def test_synthesised_card_speech_is_redacted_in_text_and_audio(agent, tmp_path):
    import array
    audio = synthesised_card(tmp_path)
    r = post(agent, {"model": "whisper-pci", "response_format": "verbose_json", "timestamp_granularities[]": "word",
                     "redact_audio": "silence"}, audio=audio)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "[CREDIT_CARD]" in body["text"] and not CARD_DIGITS.search(body["text"]), body["text"]
    card = [w for w in body["words"] if w["word"] == "[CREDIT_CARD]"][0]
    got = array.array("h", pcm_of(base64.b64decode(body["redacted_audio"]["data"])))
    want = array.array("h", pcm_of(audio))
    start, end = int(card["start"] * 16000), int(card["end"] * 16000) + 1
    assert dbfs(got[start:end]) < -50
    assert got[:start - 1] == want[:start - 1] and got[end + 1:] == want[end + 1:]


def stream_pcm() -> bytes:
    # The card sentence, a pause, then the name sentence: the stream cuts at the pause.
    return pcm_of(speech("short_01_card.wav")) + b"\x00" * 32000 + pcm_of(speech("short_02_name.wav"))


def test_websocket_stream_never_shows_the_number(agent):
    pcm = stream_pcm()
    messages, frames = [], []
    with connect(agent.ws, additional_headers={"Authorization": f"Bearer {agent.key('app')}"}) as ws:
        ws.send(json.dumps({"type": "start", "model": "whisper-plain", "redact": {"entities": ["pci"], "audio": "beep"}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for i in range(0, len(pcm), 3200):  # 100 ms chunks
            ws.send(pcm[i:i + 3200])
        ws.send(json.dumps({"type": "end"}))
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                frames.append(message)
                continue
            messages.append(json.loads(message))
            if messages[-1]["type"] == "final":
                if "audio_bytes" in messages[-1]:  # its audio follows it
                    frames.append(ws.recv(timeout=10))
                break
    for m in messages:
        assert m["type"] in ("partial", "final"), m
        assert not CARD_DIGITS.search(m["text"]), m
        assert not any(CARD_DIGITS.search(w["word"]) for w in m["words"]), m
    final = messages[-1]
    assert "[CREDIT_CARD]" in final["text"] and "Margaret" in final["text"], final["text"]
    assert final["redactions"] == {"CREDIT_CARD": 1}
    # The redacted audio came back whole, in order, as binary frames announced by their events.
    assert sum(len(f) for f in frames) == len(pcm)
    assert [len(f) for f in frames] == [m["audio_bytes"] for m in messages if "audio_bytes" in m]


def test_grpc_stream_and_one_shot_carry_redactions(agent, pb):  # noqa: F811
    messages, services = pb
    pcm = stream_pcm()

    def requests():
        yield messages.StreamRequest(start=messages.StreamStart(model="whisper-pci"))
        for i in range(0, len(pcm), 3200):
            yield messages.StreamRequest(audio=pcm[i:i + 3200])
        yield messages.StreamRequest(end=messages.StreamEnd())

    md = (("authorization", f"Bearer {agent.key('app')}"),)
    with grpc.insecure_channel(agent.grpc) as channel:
        stub = services.InferenceStub(channel)
        responses = list(stub.StreamTranscribe(requests(), metadata=md, timeout=120))
        results = [r.result for r in responses if r.WhichOneof("msg") == "result"]
        assert all(not CARD_DIGITS.search(r.text) for r in results), [r.text for r in results]
        assert results[-1].final and dict(results[-1].redactions) == {"CREDIT_CARD": 1}
        one = stub.Transcribe(messages.TranscribeRequest(model="whisper-plain", audio=speech("short_01_card.wav"),
                                                         redact=messages.Redaction(entities=["pci"], audio="silence")),
                              metadata=md, timeout=120)
    assert "[CREDIT_CARD]" in one.text and dict(one.redactions) == {"CREDIT_CARD": 1}, one.text
    assert one.redacted_audio[:4] == b"RIFF"


def test_upstream_answers_are_redacted_too(agent):
    r = post(agent, {"model": "relay-numbers"})
    assert r.status_code == 200, r.text
    assert r.json()["text"].startswith("heard [NUMBERS] bytes"), r.text
    assert r.headers["x-infergate-redactions"] == "NUMBERS=1"
    r = post(agent, {"model": "relay-numbers", "response_format": "text"})
    assert r.status_code == 200 and r.text.startswith("heard [NUMBERS] bytes"), r.text


@pytest.mark.skipif(not NER.exists(), reason="the pii-ner model is installed by tests/tools/install-ner-weights.sh")
def test_names_and_places_are_redacted_by_the_ner_model(agent):
    r = post(agent, {"model": "whisper-names"}, file="short_02_name.wav")
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    assert "Margaret" not in text and "Thompson" not in text and "[PERSON_1]" in text, text
    assert "Seattle" not in text, text


def test_metrics_count_by_type_and_no_text_reaches_the_log(agent):
    metrics = agent.metrics()
    assert re.search(r'infergate_redactions_total\{entity="CREDIT_CARD"\} [1-9]', metrics), metrics
    logs = agent.logs()
    assert "route=/v1/audio/transcriptions" in logs
    for secret in ["Margaret", "Thompson"]:
        assert secret not in logs, f"{secret} reached the agent log"
    # Digit groups of the spoken numbers, as whole groups: a float such as duration_ms=1567.014539 holds "4539"
    # by chance, a leaked card number holds it between separators.
    for digits in ["4111", "22223334444", "4539"]:
        found = re.search(rf"(?<![0-9.]){digits}(?![0-9])", logs)
        assert not found, f"{digits} reached the agent log: ...{logs[max(0, found.start() - 40):found.end() + 40]}..."
