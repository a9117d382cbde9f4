"""Issue 15, item 9: the agent gets SIGTERM with 100 open streams (50 WebSocket, 50 gRPC). Each gets its pending
result and a going-away close within the pod's grace period, the process exits 0, and no charge is lost: the
fleet's usage after the agent is gone adds up to what its clients were told they were charged.

The setup: a victim agent and an observer agent share one `redis-server` (`--counter-store`) and one
`--state-file` (the same keys), as in test_global_limits.py, so usage outlives the victim: the observer's admin
`/usage` (scope `global`) reads it after the victim has exited. Every stream sends 0.3 s of audio (less than a
segment, so all of it is pending, unsent to the backend) and waits; then the victim gets SIGTERM.

What "going away" means here (docs/install.md `agent.terminationGracePeriodSeconds`: "time for in-flight streams to
finish after SIGTERM"; infergate-runtime/src/shutdown.rs: "listeners stop accepting, streams get going-away"):
- WebSocket: the pending segment's `{"type": "final", ...}` (its text from the backend, its audio seconds and
  GPU-seconds), then close 1001 (Going Away);
- gRPC: the pending `TranscriptResult` with `final: true`, then status UNAVAILABLE carrying an
  `x-infergate-code` trailer like every other refusal (not a reset connection: "Socket closed");
- all within the chart's default grace period (30 s), then exit status 0.

One scenario runs once (module fixture); each test below checks one aspect of it, so a failure names what broke.
"""
from __future__ import annotations

import importlib
import json
import signal
import sys
import threading
import time

import grpc
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fault_upstream import FaultUpstream
from gateway_fixtures import *  # noqa: F401,F403
from test_global_limits import RedisServer

N_WS = 50
N_GRPC = 50
GRACE_S = 30.0  # charts/infergate/values.yaml agent.terminationGracePeriodSeconds
CHUNKS = 3  # 0.1 s each
AUDIO_S = CHUNKS * 0.1  # per stream: under one segment (5 s), so all of it is pending at SIGTERM
COST = 0.1
PENDING_FILE_BYTES = 44 + int(AUDIO_S * 16000) * 2  # the segment the agent sends upstream: a WAV of the audio


def world(upstream_url: str) -> str:
    return f"""apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {{name: roomy}}
spec: {{gpuSecondsPerMinute: 60000, burstGpuSeconds: 10000, maxConcurrentStreams: 500}}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {{name: stt, namespace: default}}
spec:
  model: whisper-1
  features: [transcribe]
  backend: {{upstream: {{url: "{upstream_url}", timeout: 5s, allowPrivateNetwork: true}}}}
  cost: {{gpuSecondsPerAudioSecond: {COST}}}
  limits: {{maxAudioSeconds: 60, idleTimeout: 60s}}
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


def stubs(tmp):
    from grpc_tools import protoc

    proto_dir = ROOT / "agent" / "proto"
    assert protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                        str(proto_dir / "infergate" / "v1" / "inference.proto")]) == 0
    sys.path.insert(0, str(tmp))
    return importlib.import_module("infergate.v1.inference_pb2"), importlib.import_module("infergate.v1.inference_pb2_grpc")


def usage(a) -> tuple[str, float, int]:
    """(scope, GPU-seconds, open streams) of the `app` key on agent `a`."""
    body = httpx.get(f"{a.admin}/usage", timeout=5).json()
    entry = next((k for k in body["keys"] if k["keyId"] == a.key_id("app")), {})
    return body["scope"], entry.get("gpuSeconds", 0.0), entry.get("openStreams", 0)


class WsClient:
    """One WebSocket stream: start, 0.3 s of audio, then read until the server closes."""

    def __init__(self, a):
        self.ws = connect(a.ws, additional_headers={"authorization": f"Bearer {a.key('app')}"}, open_timeout=20)
        self.ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
        assert json.loads(self.ws.recv(timeout=20))["type"] == "ready"
        for _ in range(CHUNKS):
            self.ws.send(pcm(0.1))
        self.messages: list[dict] = []
        self.close_code = None
        self.close_reason = None
        self.closed_at = None
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self):
        try:
            while True:
                msg = self.ws.recv(timeout=GRACE_S + 10)
                if isinstance(msg, str):
                    self.messages.append(json.loads(msg))
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None  # None: no close frame (1006)
            self.close_reason = closed.rcvd.reason if closed.rcvd else None
        except TimeoutError:
            self.close_code = "timeout"
        self.closed_at = time.monotonic()

    def final(self):
        return next((m for m in self.messages if m.get("type") == "final"), None)


class GrpcClient:
    """One gRPC stream: start, 0.3 s of audio, then the request side stays open (no `end`) until released."""

    def __init__(self, a, pb, channel):
        messages, services = pb
        self.release = threading.Event()
        self.responses = []
        self.status = None
        self.details = None
        self.trailers = {}
        self.closed_at = None
        self.ready = threading.Event()
        stub = services.InferenceStub(channel)
        release = self.release

        def requests():
            yield messages.StreamRequest(start=messages.StreamStart(model="whisper-1"))
            for _ in range(CHUNKS):
                yield messages.StreamRequest(audio=pcm(0.1))
            release.wait(GRACE_S + 20)

        self.call = stub.StreamTranscribe(requests(), metadata=(("authorization", f"Bearer {a.key('app')}"),),
                                          timeout=GRACE_S + 20)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for r in self.call:
                self.responses.append(r)
                if r.WhichOneof("msg") == "ready":
                    self.ready.set()
            self.status = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.status, self.details = e.code(), e.details()
            self.trailers = dict(e.trailing_metadata() or ())
        self.closed_at = time.monotonic()
        self.release.set()

    def final(self):
        return next((r.result for r in self.responses if r.WhichOneof("msg") == "result" and r.result.final), None)


@pytest.fixture(scope="module")
def sigterm(tmp_path_factory):
    """Runs the scenario once; returns what every client and the agents saw."""
    pb = stubs(tmp_path_factory.mktemp("stubs"))
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    # The pending segments take a moment upstream, as a real model would.
    up = FaultUpstream("ok", answer_delay=0.2)
    state = tmp_path_factory.mktemp("state") / "state.json"
    common = ["--counter-store", redis.url, "--state-file", str(state)]
    victim = Agent(world(up.url), extra_args=common, tmp=tmp_path_factory.mktemp("victim"))
    observer = Agent(world(up.url), extra_args=common, tmp=tmp_path_factory.mktemp("observer"))
    channel = grpc.insecure_channel(victim.grpc)
    ws_clients, grpc_clients = [], []
    try:
        assert victim.keys() == observer.keys()
        scope, start_usage, _ = usage(observer)
        assert scope == "global", "the observer does not read the shared store's usage"
        for _ in range(N_WS):
            ws_clients.append(WsClient(victim))
        for _ in range(N_GRPC):
            grpc_clients.append(GrpcClient(victim, pb, channel))
        for c in grpc_clients:
            assert c.ready.wait(20), f"a gRPC stream did not start: {c.status} {c.details}"
        expected_charged = start_usage + (N_WS + N_GRPC) * AUDIO_S * COST
        try:
            wait_until(lambda: usage(victim)[2] == N_WS + N_GRPC and usage(victim)[1] >= expected_charged - 1e-6,
                       timeout=30, what="every stream open and its audio charged")
        except AssertionError:
            raise AssertionError(f"streams not all open and charged: {usage(victim)}, expected {N_WS + N_GRPC} "
                                 f"streams and {expected_charged} GPU-s")
        requests_before = up.requests
        _, before_usage, _ = usage(victim)
        for c in ws_clients:
            c.thread.start()
        sent_at = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        try:
            exit_code = victim.proc.wait(GRACE_S + 5)
        except Exception:  # noqa: BLE001 - recorded as "did not exit"
            exit_code = "did not exit"
        exited_at = time.monotonic()
        for c in ws_clients:
            c.thread.join(GRACE_S + 15)
        for c in grpc_clients:
            c.thread.join(GRACE_S + 25)
        time.sleep(0.5)  # the observer reads the store; nothing of the victim's is still in flight
        _, after_usage, _ = usage(observer)
        yield {
            "ws": ws_clients, "grpc": grpc_clients, "sent_at": sent_at, "exited_at": exited_at,
            "exit_code": exit_code, "start_usage": start_usage, "before_usage": before_usage,
            "after_usage": after_usage, "upstream_requests": up.requests - requests_before,
            "victim_log": victim.logs(),
        }
    finally:
        for c in grpc_clients:
            c.release.set()
        for c in ws_clients:
            try:
                c.ws.close()
            except Exception:  # noqa: BLE001
                pass
        channel.close()
        victim.stop()
        observer.stop()
        up.stop()
        redis.stop()


def test_agent_exits_zero_within_the_grace_period(sigterm):
    assert sigterm["exit_code"] == 0, sigterm["victim_log"][-2000:]
    assert sigterm["exited_at"] - sigterm["sent_at"] <= GRACE_S


def test_every_websocket_stream_gets_its_pending_result_then_going_away(sigterm):
    problems = []
    for i, c in enumerate(sigterm["ws"]):
        final = c.final()
        if final is None:
            problems.append(f"ws {i}: no final result (messages {c.messages}, close {c.close_code} {c.close_reason!r})")
            continue
        if final["text"] != f"heard {PENDING_FILE_BYTES} bytes" or final["audio_seconds"] != pytest.approx(AUDIO_S):
            problems.append(f"ws {i}: final {final} is not the pending segment's result")
        if c.close_code != 1001:
            problems.append(f"ws {i}: closed with {c.close_code} {c.close_reason!r}, expected 1001 (going away)")
        if c.closed_at is None or c.closed_at - sigterm["sent_at"] > GRACE_S:
            problems.append(f"ws {i}: not closed within {GRACE_S}s of SIGTERM")
    assert not problems, f"{len(problems)} problems, first: " + "\n".join(problems[:5])


def test_every_grpc_stream_gets_its_pending_result_then_unavailable(sigterm):
    problems = []
    for i, c in enumerate(sigterm["grpc"]):
        final = c.final()
        if final is None:
            problems.append(f"grpc {i}: no final result (status {c.status} {c.details!r}, trailers {c.trailers})")
            continue
        if final.text != f"heard {PENDING_FILE_BYTES} bytes" or final.audio_seconds != pytest.approx(AUDIO_S):
            problems.append(f"grpc {i}: final {final} is not the pending segment's result")
        if c.status != grpc.StatusCode.UNAVAILABLE or not c.trailers.get("x-infergate-code"):
            problems.append(f"grpc {i}: ended with {c.status} {c.details!r} trailers {c.trailers}, expected "
                            "UNAVAILABLE with an x-infergate-code trailer")
        if c.closed_at is None or c.closed_at - sigterm["sent_at"] > GRACE_S:
            problems.append(f"grpc {i}: not ended within {GRACE_S}s of SIGTERM")
    assert not problems, f"{len(problems)} problems, first: " + "\n".join(problems[:5])


def test_every_pending_segment_reached_the_backend(sigterm):
    assert sigterm["upstream_requests"] == N_WS + N_GRPC, (
        f"{sigterm['upstream_requests']} of {N_WS + N_GRPC} pending segments were sent to the backend")


def test_no_charge_is_lost(sigterm):
    # What the store holds for the key after the victim is gone: at least what the victim had charged before
    # SIGTERM (every chunk is charged as it arrives), and exactly what the clients were told they were charged.
    start, before, after = sigterm["start_usage"], sigterm["before_usage"], sigterm["after_usage"]
    n = N_WS + N_GRPC
    assert before - start == pytest.approx(n * AUDIO_S * COST, abs=1e-6)
    assert after >= before - 1e-6, f"usage fell from {before} to {after} across the shutdown"
    finals = [c.final() for c in sigterm["ws"] + sigterm["grpc"]]
    told = [f["gpu_seconds"] if isinstance(f, dict) else f.gpu_seconds for f in finals if f is not None]
    assert len(told) == n, (
        f"only {len(told)} of {n} clients were told their charge (the store holds {after - start:.3f} GPU-s for "
        f"them: audio charged, never transcribed, never reported to its client)")
    assert after - start == pytest.approx(sum(told), abs=1e-6)


# --- the sum rule the shutdown test relies on, without a shutdown -----------------------------------------------


def test_stream_usage_matches_its_final_result(tmp_path):
    """A stream whose backend measures less GPU time than the audio's estimate: the final result says what was
    charged after settlement, and the key's usage grows by that much, not by the estimate."""
    up = FaultUpstream("ok", gpu_seconds=0.02)
    a = Agent(world(up.url), tmp=tmp_path)
    try:
        _, before, _ = usage(a)
        with connect(a.ws, additional_headers={"authorization": f"Bearer {a.key('app')}"}) as ws:
            ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            ws.send(pcm(0.5))
            ws.send(json.dumps({"type": "end"}))
            final = json.loads(ws.recv(timeout=10))
        assert final["type"] == "final" and final["gpu_seconds"] == pytest.approx(0.02), final
        _, after, _ = usage(a)
        assert after - before == pytest.approx(final["gpu_seconds"], abs=1e-6), (
            f"the client was told {final['gpu_seconds']} GPU-s, /usage grew by {after - before}")
    finally:
        a.stop()
        up.stop()
