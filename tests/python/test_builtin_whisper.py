"""Built-in Whisper (`backend: {builtin: whisper, size: tiny.en | base}`) through `infergate-agent standalone`,
driven by real clients: the openai SDK, httpx, websockets and grpcio.

Speech comes from agent/whisper/tests/fixtures (espeak-ng, 16 kHz mono WAV) with the reference transcripts of
faster-whisper in reference.json: the CPU model is deterministic and matches them. `files[f].text` is the reference
with word timestamps on; `files[f].words_off.text` with them off (they differ only on long_meeting.wav, whose seek
positions follow the word ends). Tone files in other containers (agent/audio/tests/fixtures) only show that a
format is accepted. Compressed speech is made at test time with sox (FLAC, and Ogg Vorbis where sox writes it).
"""
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

from gateway_fixtures import ROOT, Agent
from test_gateway_grpc import pb  # noqa: F401 - the session fixture that generates the gRPC stubs

MODELS = ROOT / ".cache" / "models"
SPEECH = ROOT / "agent" / "whisper" / "tests" / "fixtures"
TONES = ROOT / "agent" / "audio" / "tests" / "fixtures"
REFERENCE = json.loads((SPEECH / "reference.json").read_text())["files"]

pytestmark = pytest.mark.skipif(
    not all((MODELS / "whisper" / size / "model.bin").exists() for size in ("tiny.en", "base")),
    reason="whisper weights absent: run `infergate-agent models fetch --model whisper-tiny.en` and `--model whisper-base`",
)

WORLD = """apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: roomy}
spec: {gpuSecondsPerMinute: 6000, burstGpuSeconds: 1000, maxConcurrentStreams: 4}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: transcribe, namespace: default}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {builtin: whisper, size: tiny.en}
  cost: {gpuSecondsPerAudioSecond: 0.1}
  limits: {codecs: [wav, pcm16, flac, mp3, mp4, ogg, webm]}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: wavonly, namespace: default}
spec:
  model: whisper-wavonly
  features: [transcribe]
  backend: {builtin: whisper, size: tiny.en}
  limits: {codecs: [wav, pcm16, flac]}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: multi, namespace: default}
spec:
  model: whisper-base
  features: [transcribe]
  backend: {builtin: whisper, size: base}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: app, namespace: default}
spec:
  tier: roomy
  environment: test
  secretName: app-key
  scopes: [{endpoint: transcribe}, {endpoint: wavonly}, {endpoint: multi}]
"""

# Words of the fixtures (and one prompt) that must never reach the agent's log.
SECRET_WORDS = ["Margaret", "Thompson", "Seattle", "budget", "Denver", "volunteer", "Zanzibar"]


@pytest.fixture(scope="module")
def whisper_agent(tmp_path_factory):
    # Stream segments pinned at 5 s: the stream tests line their sentences up on that boundary.
    a = Agent(WORLD, extra_args=("--models-dir", str(MODELS), "--segment-seconds", "5"),
              tmp=tmp_path_factory.mktemp("whisper"))
    yield a
    a.stop()


@pytest.fixture(scope="module")
def client(whisper_agent):
    sdk = openai.OpenAI(api_key=whisper_agent.key("app"), base_url=f"{whisper_agent.http}/v1", max_retries=0, timeout=120)
    yield sdk
    sdk.close()


def speech(name: str) -> bytes:
    return (SPEECH / name).read_bytes()


def pcm_of(name: str) -> bytes:
    with wave.open(io.BytesIO(speech(name))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def share_of_words(expected: str, got: str) -> float:
    seen = set(words(got))
    want = words(expected)
    return sum(w in seen for w in want) / len(want)


def post(agent, files, data, path="/v1/audio/transcriptions"):
    return httpx.post(f"{agent.http}{path}", headers={"Authorization": f"Bearer {agent.key('app')}"},
                      files=files, data=data, timeout=120)


def usage_of(agent) -> float:
    keys = httpx.get(f"{agent.admin}/usage", timeout=5).json()["keys"]
    return next((k["gpuSeconds"] for k in keys if k["keyId"] == agent.key_id("app")), 0.0)


# --- the openai SDK: response formats and streaming ------------------------------------------------------------


@pytest.mark.parametrize("name", ["short_02_name.wav", "short_04_date.wav"])
def test_json_text_equals_the_reference_and_is_charged_measured_time(client, name):
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=(name, speech(name), "audio/wav"))
    assert raw.http_response.status_code == 200
    assert raw.parse().text == REFERENCE[name]["text"]
    # The charge settles on the measured compute time, not on the endpoint's per-second estimate.
    assert float(raw.headers["x-infergate-gpu-seconds"]) > 0


def test_verbose_json_words_match_the_reference(client):
    name = "short_02_name.wav"
    ref = REFERENCE[name]
    result = client.audio.transcriptions.create(
        model="whisper-1", file=(name, speech(name), "audio/wav"), response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert result.text == ref["text"]
    assert result.language == "english"
    assert result.duration == pytest.approx(ref["duration"], abs=0.01)
    got = result.words
    assert [w.word for w in got] == result.text.split()
    expected = [w for s in ref["segments"] for w in s["words"]]
    assert [w.word for w in got] == [w["word"].strip() for w in expected]
    for mine, theirs in zip(got, expected):
        assert (mine.start, mine.end) == pytest.approx((theirs["start"], theirs["end"]), abs=0.02)
    for before, after in zip(got, got[1:]):
        assert before.start <= before.end <= after.start <= after.end
    assert 0 <= got[0].start and got[-1].end <= result.duration


def test_srt_vtt_and_text_formats(client):
    name = "short_04_date.wav"
    file = (name, speech(name), "audio/wav")
    clock = r"\d\d:\d\d:\d\d{sep}\d\d\d --> \d\d:\d\d:\d\d{sep}\d\d\d"
    # The prompt only steers the decoder; it must not show up in the logs (checked at the end of the module).
    srt = client.audio.transcriptions.create(model="whisper-1", file=file, response_format="srt",
                                             prompt="Zanzibar quarterly glossary")
    assert re.match(r"1\n" + clock.format(sep=",") + r"\n\S", srt), srt
    assert srt.endswith("\n\n")
    vtt = client.audio.transcriptions.create(model="whisper-1", file=file, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n"), vtt
    cue = vtt.split("\n")[2:4]
    assert re.fullmatch(clock.format(sep=r"\."), cue[0]) and cue[1] == REFERENCE[name]["text"], vtt
    text = client.audio.transcriptions.create(model="whisper-1", file=file, response_format="text", language="en",
                                              temperature=0.0)
    assert text.strip() == REFERENCE[name]["text"]


def test_sdk_stream_deltas_add_up_to_the_done_text(client):
    name = "long_meeting.wav"
    events = list(client.audio.transcriptions.create(model="whisper-1", file=(name, speech(name), "audio/wav"),
                                                     stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(done) == 1 and events[-1] is done[0]
    assert len(deltas) > 1, "44 s of speech comes in several segments"
    assert "".join(deltas) == done[0].text
    # Without word timestamps, as the json format runs it.
    assert done[0].text == REFERENCE[name]["words_off"]["text"]


# --- upload formats ---------------------------------------------------------------------------------------------


def sox_writes(fmt: str) -> bool:
    if not shutil.which("sox"):
        return False
    out = subprocess.run(["sox", "-h"], capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("AUDIO FILE FORMATS:")), "")
    return fmt in line.split()


@pytest.mark.parametrize("ext,exact", [("flac", True), ("ogg", False)], ids=["flac", "ogg-vorbis"])
def test_compressed_speech_transcribes_like_the_wav(whisper_agent, tmp_path, ext, exact):
    if not sox_writes(ext):
        pytest.skip(f"this sox does not write {ext}")
    name = "short_02_name.wav"
    out = tmp_path / f"speech.{ext}"
    subprocess.run(["sox", str(SPEECH / name), str(out)], check=True, capture_output=True)
    r = post(whisper_agent, {"file": (out.name, out.read_bytes(), f"audio/{ext}")}, {"model": "whisper-1"})
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    if exact:  # lossless: the same samples, so the same text
        assert text == REFERENCE[name]["text"]
    else:  # lossy: the encoder may move a word on another libvorbis
        assert share_of_words(REFERENCE[name]["text"], text) >= 0.9, text


@pytest.mark.parametrize("tone", [
    "tone_44k.mp3", "tone_48k_aac.m4a", "tone_44k_stereo_vorbis.ogg", "tone_48k_opus.ogg", "tone_48k_opus.webm",
    "tone_48k_stereo_opus.webm", "tone_16k.pcm", "pcm_s24_8k.wav", "adpcm_ima_22k.wav",
])
def test_every_container_is_decoded(whisper_agent, tone):
    # Tones transcribe to little or nothing (the 16 kHz FLAC/WAV tones to ~10 s of "beep beep ..." decoding): the
    # status is what counts. FLAC is covered by the speech test above.
    r = post(whisper_agent, {"file": (tone, (TONES / tone).read_bytes(), "application/octet-stream")},
             {"model": "whisper-1"})
    assert r.status_code == 200, r.text
    assert float(r.headers["x-infergate-gpu-seconds"]) > 0


def test_unknown_format_is_415_listing_formats_and_costs_nothing(whisper_agent):
    before = usage_of(whisper_agent)
    r = post(whisper_agent, {"file": ("notes.bin", b"\x13\x37 certainly not audio " * 64, "application/octet-stream")},
             {"model": "whisper-1"})
    assert r.status_code == 415, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_codec"
    for fmt in ("wav", "flac", "mp3", "m4a", "ogg", "webm"):
        assert fmt in error["message"].lower(), error["message"]
    assert float(r.headers.get("x-infergate-gpu-seconds", "0")) == 0
    assert usage_of(whisper_agent) == pytest.approx(before, abs=1e-9)


def test_endpoint_codecs_limit_refuses_mp3(whisper_agent):
    mp3 = (TONES / "tone_44k.mp3").read_bytes()
    r = post(whisper_agent, {"file": ("a.mp3", mp3, "audio/mpeg")}, {"model": "whisper-wavonly"})
    assert r.status_code == 415, r.text
    message = r.json()["error"]["message"]
    assert "mp3" in message and "wav, pcm16, flac" in message, message


# --- refused fields ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields,needles", [
    ({"response_format": "xml"}, ["xml", "json", "text", "srt", "verbose_json", "vtt"]),
    ({"timestamp_granularities[]": "word"}, ["timestamp_granularities", "verbose_json"]),
    ({"temperature": "hot"}, ["temperature", "hot"]),
    ({"language": "xx"}, ["`xx`", "tiny.en"]),
], ids=["format", "granularity", "temperature", "language"])
def test_bad_fields_are_400_naming_the_fix(whisper_agent, fields, needles):
    before = usage_of(whisper_agent)
    r = post(whisper_agent, {"file": ("a.wav", speech("short_04_date.wav"), "audio/wav")}, {"model": "whisper-1", **fields})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_request"
    for needle in needles:
        assert needle in error["message"], error["message"]
    # Refused by the backend after admission: the pre-charge is returned.
    assert usage_of(whisper_agent) == pytest.approx(before, abs=1e-9)


# --- translations -----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK flags `translations` itself
def test_translation_needs_base_and_base_answers_in_english(client):
    name = "short_04_date.wav"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.translations.create(model="whisper-1", file=(name, speech(name), "audio/wav"))
    assert err.value.status_code == 400
    assert "size: base" in err.value.body["message"]
    result = client.audio.translations.create(model="whisper-base", file=(name, speech(name), "audio/wav"))
    assert result.text.strip()
    assert share_of_words(REFERENCE[name]["text"], result.text) >= 0.7, result.text


# --- streams: WebSocket and gRPC --------------------------------------------------------------------------------

# short_02 (4.97 s) padded with 1 s of silence, then short_04 (4.37 s). With the 5 s segment length the stream cuts
# at the VAD pause between the sentences (not at 5.0 s, which would split the silence arbitrarily), so the first
# partial is the first sentence. tiny.en is touchy about where a segment starts (cut 27 ms of silence off the front of
# short_04 and "review to March 23rd at half" becomes "remuner mark, 23.5", over HTTP just the same), so the second
# sentence is compared by its words (faster-whisper itself turns short_04 after 1 s of silence into "Please move the
# budget remuner to March 23.").
STREAM_CLIPS = ["short_02_name.wav", "short_04_date.wav"]
CHUNK = 8000  # 0.25 s of PCM16; all sent at once, far faster than real time


def stream_audio() -> bytes:
    first, second = (pcm_of(n) for n in STREAM_CLIPS)
    return first + b"\x00" * 32000 + second


def check_stream_results(partials: list[str], final_text: str, words: list[tuple[str, float, float]]):
    first, second = (REFERENCE[n]["text"] for n in STREAM_CLIPS)
    # One partial per completed segment while audio flows; the segment that `end` flushes is folded into the final.
    assert partials and partials[0].strip() == first, partials
    assert final_text.startswith(" ".join(p.strip() for p in partials)), (partials, final_text)
    assert share_of_words(f"{first} {second}", final_text) >= 0.75, final_text
    # The final carries every word with stream times: in order, inside the audio, the second sentence after the
    # first one's pause.
    # (A word without a leading space, like ".5" after "23", joins its neighbour in the text.)
    assert "".join(w for w, _, _ in words) == final_text.replace(" ", ""), (words, final_text)
    starts = [s for _, s, _ in words]
    assert starts == sorted(starts) and all(s <= e for _, s, e in words), words
    first_words = len(first.split())
    assert words[first_words - 1][2] <= 5.5 < words[first_words][1] + 0.3, words


def test_websocket_stream_partials_and_final(whisper_agent):
    pcm = stream_audio()
    with connect(whisper_agent.ws, additional_headers={"Authorization": f"Bearer {whisper_agent.key('app')}"}) as ws:
        ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for i in range(0, len(pcm), CHUNK):
            ws.send(pcm[i:i + CHUNK])
        ws.send(json.dumps({"type": "end"}))
        partials = []
        while True:
            msg = json.loads(ws.recv(timeout=60))
            assert msg["type"] in ("partial", "final"), msg
            if msg["type"] == "final":
                break
            partials.append(msg["text"])
    check_stream_results(partials, msg["text"], [(w["word"], w["start"], w["end"]) for w in msg["words"]])
    assert msg["audio_seconds"] == pytest.approx(len(pcm) / 32000, abs=1e-3)
    assert msg["segments"] == 2
    assert msg["gpu_seconds"] > 0


def test_grpc_stream_partials_and_final(whisper_agent, pb):  # noqa: F811
    messages, services = pb
    pcm = stream_audio()

    def requests():
        yield messages.StreamRequest(start=messages.StreamStart(model="whisper-1"))
        for i in range(0, len(pcm), CHUNK):
            yield messages.StreamRequest(audio=pcm[i:i + CHUNK])
        yield messages.StreamRequest(end=messages.StreamEnd())

    with grpc.insecure_channel(whisper_agent.grpc) as channel:
        stub = services.InferenceStub(channel)
        md = (("authorization", f"Bearer {whisper_agent.key('app')}"),)
        responses = list(stub.StreamTranscribe(requests(), metadata=md, timeout=120))
    assert responses[0].WhichOneof("msg") == "ready"
    results = [r.result for r in responses[1:]]
    assert [r.final for r in results] == [False] * (len(results) - 1) + [True]
    check_stream_results([r.text for r in results[:-1]], results[-1].text,
                         [(w.word, w.start, w.end) for w in results[-1].words])
    assert results[-1].audio_seconds == pytest.approx(len(pcm) / 32000, abs=1e-3)


# --- privacy: runs last in this module --------------------------------------------------------------------------


def test_no_transcript_or_prompt_in_the_agent_log(whisper_agent):
    logs = whisper_agent.logs()
    assert "route=/v1/audio/transcriptions" in logs, "the access log is there, so the check below means something"
    leaked = [w for w in SECRET_WORDS if w.lower() in logs.lower()]
    assert not leaked, f"the agent logged transcript or prompt words: {leaked}"
