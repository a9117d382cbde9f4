"""The WebSocket door with the `websockets` client: auth three ways, streaming, refusals as close codes,
ingress hardening (oversized chunk, idle stream, message flood, wrong Origin, stream cap, connection flood,
slow senders)."""
import json
import socket
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403
from test_gateway_http import bad_checksum, well_formed_unknown_key


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def start(ws, model="whisper-1"):
    ws.send(json.dumps({"type": "start", "model": model}))
    return json.loads(ws.recv(timeout=10))


def closed_with(ws, timeout=15):
    """Reads until the server closes; returns (close code, reason, last error message)."""
    error = None
    try:
        while True:
            msg = ws.recv(timeout=timeout)
            if isinstance(msg, str) and json.loads(msg).get("type") == "error":
                error = json.loads(msg)["error"]
    except ConnectionClosed as closed:
        return closed.rcvd.code, closed.rcvd.reason, error


def test_stream_with_header_auth(agent):
    with connect(agent.ws, additional_headers=auth(agent.key("app"))) as ws:
        ready = start(ws)
        assert ready["type"] == "ready" and ready["key_id"] == agent.key_id("app")
        for _ in range(4):
            ws.send(pcm(0.25))
        ws.send(json.dumps({"type": "end"}))
        final = json.loads(ws.recv(timeout=10))
        assert final["type"] == "final"
        assert final["text"] == "heard 32044 bytes for whisper-1"
        assert final["audio_seconds"] == pytest.approx(1.0)
        assert final["gpu_seconds"] == pytest.approx(0.1)
        code, _, _ = closed_with(ws)
        assert code == 1000


def test_auth_message_and_ticket(agent):
    with connect(agent.ws) as ws:
        ws.send(json.dumps({"type": "auth", "key": agent.key("app")}))
        assert start(ws)["type"] == "ready"
    r = httpx.post(f"{agent.http}/v1/tickets", headers=auth(agent.key("app")))
    assert r.status_code == 201
    ticket = r.json()["ticket"]
    with connect(f"{agent.ws}?ticket={ticket}") as ws:
        assert start(ws)["type"] == "ready"
    # Single use.
    with connect(f"{agent.ws}?ticket={ticket}") as ws:
        assert closed_with(ws)[0] == 4009


def test_query_string_keys_are_refused(agent):
    with pytest.raises(InvalidStatus) as err:
        connect(f"{agent.ws}?api_key={agent.key('app')}")
    assert err.value.response.status_code == 400
    assert agent.key("app") not in agent.logs()


@pytest.mark.parametrize(
    "which,close_code",
    [("missing", 4001), ("bad_checksum", 4003), ("unknown", 4004), ("expired", 4006), ("suspended", 4007)],
)
def test_identity_refusals_are_distinct_close_codes(agent, which, close_code):
    key = {
        "missing": None,
        "bad_checksum": bad_checksum(agent.key("app")),
        "unknown": well_formed_unknown_key(),
        "expired": agent.key("old"),
        "suspended": agent.key("paused"),
    }[which]
    with connect(agent.ws, additional_headers=auth(key) if key else {}) as ws:
        if key is None:
            # Without a key the server waits for an auth message; a start without one is refused.
            ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
        code, reason, error = closed_with(ws)
        assert code == close_code
        assert reason.startswith(error["code"])


def test_out_of_scope_and_wrong_origin(agent):
    with connect(agent.ws, additional_headers=auth(agent.key("app"))) as ws:
        ws.send(json.dumps({"type": "start", "model": "whisper-other"}))
        code, _, error = closed_with(ws)
        assert (code, error["code"]) == (4030, "out_of_scope")
        assert "default/other" in error["message"]
    with connect(agent.ws, additional_headers=auth(agent.key("app")), origin="https://evil.example.com") as ws:
        ws.send(json.dumps({"type": "start", "model": "whisper-1"}))
        assert closed_with(ws)[0] == 4032
    with connect(agent.ws, additional_headers=auth(agent.key("app")), origin="https://app.example.com") as ws:
        assert start(ws)["type"] == "ready"


def test_oversized_chunk_closes_only_that_stream(agent):
    with connect(agent.ws, additional_headers=auth(agent.key("app"))) as good, \
         connect(agent.ws, additional_headers=auth(agent.key("app"))) as bad:
        start(good)
        start(bad)
        bad.send(b"\x00" * 8194)
        assert closed_with(bad)[0] == 4130
        good.send(pcm(0.1))
        good.send(json.dumps({"type": "end"}))
        assert json.loads(good.recv(timeout=10))["type"] == "final"


def test_idle_stream_is_closed(agent):
    with connect(agent.ws, additional_headers=auth(agent.key("app"))) as ws:
        start(ws)
        # The endpoint's idleTimeout is 1s.
        code, _, error = closed_with(ws)
        assert (code, error["code"]) == (4080, "idle_timeout")


def test_message_flood_is_closed(agent):
    with connect(agent.ws, additional_headers=auth(agent.key("app"))) as ws:
        start(ws)
        try:
            for _ in range(400):  # the endpoint allows 200 messages per second
                ws.send(b"\x00\x00")
        except ConnectionClosed:
            pass
        assert closed_with(ws)[0] == 4296


def test_stream_cap(agent):
    # Tier "tiny" allows one open stream per key.
    with connect(agent.ws, additional_headers=auth(agent.key("tiny"))) as first:
        assert start(first)["type"] == "ready"
        with connect(agent.ws, additional_headers=auth(agent.key("tiny"))) as second:
            second.send(json.dumps({"type": "start", "model": "whisper-1"}))
            code, _, error = closed_with(second)
            assert (code, error["code"]) == (4291, "stream_cap")
            assert error["retry_after_seconds"] >= 1
    # Once the first stream is gone a new one is admitted.
    with connect(agent.ws, additional_headers=auth(agent.key("tiny"))) as third:
        assert wait_until(lambda: start(third)["type"] == "ready", what="stream slot")


@pytest.fixture(scope="module")
def tight_agent(upstream, tmp_path_factory):
    a = Agent(
        manifests(upstream),
        extra_args=["--max-connections", "3", "--max-connections-per-key", "1", "--auth-timeout", "1s", "--body-timeout", "1s"],
        tmp=tmp_path_factory.mktemp("tight"),
    )
    yield a
    a.stop()


def test_connection_flood_is_capped(tight_agent):
    a = tight_agent
    held = [connect(a.ws) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as err:
            connect(a.ws)
        assert err.value.response.status_code == 503
        assert json.loads(err.value.response.body)["error"]["code"] == "server_busy"
        # Unauthenticated connections are closed at the auth deadline, freeing their slots.
        for ws in held:
            assert closed_with(ws)[0] == 4082
    finally:
        for ws in held:
            ws.close()
    with connect(a.ws, additional_headers=auth(a.key("app"))) as ws:
        assert wait_until(lambda: start(ws)["type"] == "ready", what="a free slot")


def test_slow_sender_is_cut_off(tight_agent):
    a = tight_agent
    with socket.create_connection(("127.0.0.1", a.http_port)) as s:
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {a.key('app')}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n--B\r\n"
        )
        s.settimeout(15)
        response = b""
        # Trickle a byte at a time; the body timeout (1s) ends the request.
        try:
            for _ in range(100):
                s.sendall(b"x")
                time.sleep(0.1)
                s.setblocking(False)
                try:
                    response += s.recv(65536)
                except BlockingIOError:
                    pass
                s.setblocking(True)
                if response:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert response.startswith(b"HTTP/1.1 408"), response[:200]
        assert b"request_timeout" in response


def test_per_key_connection_cap(tight_agent):
    a = tight_agent
    with connect(a.ws, additional_headers=auth(a.key("app"))) as first:
        assert wait_until(lambda: start(first)["type"] == "ready", what="first stream")
        with connect(a.ws, additional_headers=auth(a.key("app"))) as second:
            second.send(json.dumps({"type": "start", "model": "whisper-1"}))
            code, _, error = closed_with(second)
            assert (code, error["code"]) == (4294, "connection_cap")
        # Another key is not affected.
        with connect(a.ws, additional_headers=auth(a.key("victim"))) as other:
            assert start(other)["type"] == "ready"
