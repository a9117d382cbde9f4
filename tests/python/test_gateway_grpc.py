"""The gRPC door with grpcio, stubs generated from agent/proto by grpcio-tools at test time."""
import importlib
import sys

import grpc
import pytest

from gateway_fixtures import *  # noqa: F401,F403
from test_gateway_http import bad_checksum, well_formed_unknown_key

PROTO_DIR = ROOT / "agent" / "proto"


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    rc = protoc.main([
        "protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
        str(PROTO_DIR / "infergate" / "v1" / "inference.proto"),
    ])
    assert rc == 0
    sys.path.insert(0, str(out))
    messages = importlib.import_module("infergate.v1.inference_pb2")
    services = importlib.import_module("infergate.v1.inference_pb2_grpc")
    return messages, services


@pytest.fixture()
def stub(agent, pb):
    channel = grpc.insecure_channel(agent.grpc)
    yield pb[1].InferenceStub(channel)
    channel.close()


def md(key):
    return (("authorization", f"Bearer {key}"),)


def code_of(err):
    return dict(err.trailing_metadata() or ()).get("x-infergate-code")


def test_unary_transcribe_and_models(agent, pb, stub):
    messages = pb[0]
    response, call = stub.Transcribe.with_call(
        messages.TranscribeRequest(model="whisper-1", audio=wav(1.0), filename="a.wav"), metadata=md(agent.key("app"))
    )
    assert response.text == "heard 32044 bytes for whisper-1"
    assert response.audio_seconds == pytest.approx(1.0)
    assert response.gpu_seconds == pytest.approx(0.1)
    assert dict(call.initial_metadata())["x-request-id"] == response.request_id
    models = stub.ListModels(messages.ListModelsRequest(), metadata=(("x-api-key", agent.key("app")),))
    assert [(m.id, list(m.features)) for m in models.models] == [("whisper-1", ["transcribe"])]


@pytest.mark.parametrize(
    "which,status,code",
    [
        ("missing", grpc.StatusCode.UNAUTHENTICATED, "missing_key"),
        ("bad_checksum", grpc.StatusCode.UNAUTHENTICATED, "bad_checksum"),
        ("unknown", grpc.StatusCode.UNAUTHENTICATED, "unknown_key"),
        ("expired", grpc.StatusCode.UNAUTHENTICATED, "key_expired"),
        ("suspended", grpc.StatusCode.PERMISSION_DENIED, "key_suspended"),
        ("out_of_scope", grpc.StatusCode.PERMISSION_DENIED, "out_of_scope"),
    ],
)
def test_refusals_map_to_grpc_codes(agent, pb, stub, which, status, code):
    key = {
        "missing": None,
        "bad_checksum": bad_checksum(agent.key("app")),
        "unknown": well_formed_unknown_key(),
        "expired": agent.key("old"),
        "suspended": agent.key("paused"),
        "out_of_scope": agent.key("app"),
    }[which]
    model = "whisper-other" if which == "out_of_scope" else "whisper-1"
    with pytest.raises(grpc.RpcError) as err:
        stub.Transcribe(pb[0].TranscribeRequest(model=model, audio=wav(0.1)), metadata=md(key) if key else ())
    assert err.value.code() == status
    assert code_of(err.value) == code


def test_rate_limit_carries_retry_after(agent, pb, stub):
    key = agent.key("tiny")
    request = pb[0].TranscribeRequest(model="whisper-1", audio=wav(2.0))
    # The HTTP tests may have drained this bucket already; either way a second call in a row is refused.
    try:
        stub.Transcribe(request, metadata=md(key))
    except grpc.RpcError:
        pass
    with pytest.raises(grpc.RpcError) as err:
        stub.Transcribe(request, metadata=md(key))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(err.value.trailing_metadata())
    assert trailers["x-infergate-code"] == "rate_limited"
    assert int(trailers["retry-after"]) >= 1


def stream_requests(pb, chunks, model="whisper-1", end=True):
    messages = pb[0]
    yield messages.StreamRequest(start=messages.StreamStart(model=model))
    for c in chunks:
        yield messages.StreamRequest(audio=c)
    if end:
        yield messages.StreamRequest(end=messages.StreamEnd())


def test_bidirectional_stream(agent, pb, stub):
    responses = list(stub.StreamTranscribe(stream_requests(pb, [pcm(0.25)] * 4), metadata=md(agent.key("app"))))
    assert responses[0].WhichOneof("msg") == "ready"
    assert responses[0].ready.key_id == agent.key_id("app")
    final = responses[-1].result
    assert final.final and final.text == "heard 32044 bytes for whisper-1"
    assert final.audio_seconds == pytest.approx(1.0)


def test_oversized_chunk_in_stream(agent, pb, stub):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamTranscribe(stream_requests(pb, [b"\x00" * 8194]), metadata=md(agent.key("app"))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(err.value) == "oversized_chunk"


def test_stream_refused_at_open(agent, pb, stub):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamTranscribe(stream_requests(pb, []), metadata=md(agent.key("paused"))))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(err.value) == "key_suspended"


def grpcurl(agent, key, body, method="Transcribe"):
    import base64
    import json
    import shutil
    import subprocess

    exe = shutil.which("grpcurl") or str(ROOT / ".venv" / "bin" / "grpcurl")
    return subprocess.run(
        [
            exe, "-plaintext", "-import-path", str(PROTO_DIR), "-proto", "infergate/v1/inference.proto",
            "-H", f"authorization: Bearer {key}", "-d", json.dumps(body), agent.grpc, f"infergate.v1.Inference/{method}",
        ],
        capture_output=True, text=True, timeout=30,
    )


def test_grpcurl_against_the_grpc_door(agent):
    import base64
    import json

    ok = grpcurl(agent, agent.key("app"), {"model": "whisper-1", "audio": base64.b64encode(wav(1.0)).decode(), "filename": "a.wav"})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["text"] == "heard 32044 bytes for whisper-1"
    refused = grpcurl(agent, agent.key("paused"), {"model": "whisper-1", "audio": ""})
    assert refused.returncode != 0
    assert "PermissionDenied" in refused.stderr and "key_suspended" in refused.stderr
