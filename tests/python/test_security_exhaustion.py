"""Issue 9, resource exhaustion with and without a key (items 11, 12, 13, 14): the abuse suite against the real
standalone agent with real clients (raw sockets, websockets, grpcio, a hand-rolled HTTP/2 client for stalled gRPC
calls). Abusers connect from 127.0.0.2 (Linux routes all of 127.0.0.0/8 to loopback), keyed clients from 127.0.0.1,
so per-IP caps can be tested without leaving loopback.

Flags the implementation must match (chosen here, from the issue text; defaults are the implementer's choice):
- item 11: `--header-read-timeout <dur>` (request head must arrive within it, else the socket is closed),
  `--keep-alive-timeout <dur>` (an idle HTTP/1.1 keep-alive socket is closed after it),
  `--max-unauthenticated-per-ip <n>` (WebSocket upgrades not yet authenticated, per client IP; the next one is
  refused at the upgrade with 429 or 503). Before authentication a WebSocket message over a small limit (a 64 KiB
  text frame here) closes the socket with 1009 (message too big).
- item 12: no flag: a gRPC call without a key is refused from its headers (trailers-only UNAUTHENTICATED) before its
  message arrives; stalled calls hold no memory and do not starve a keyed call.
- item 13: `--max-in-flight-per-key <n>`: one-shot requests a key may have in flight on this agent; the next is
  `429` with `Retry-After`. A JSON body is refused from its Content-Length (`413`) before it is read.
- item 14: `--max-live-tickets-per-key <n>`: `POST /v1/tickets` beyond it is `429` with `Retry-After`.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import grpc
import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from gateway_fixtures import *  # noqa: F401,F403
from security_helpers import H2Raw, SlowUpstream, connect_from, peer_closed, rss_bytes, security_item
from test_gateway_grpc import pb  # noqa: F401 - fixture
from test_gateway_ws import auth, start

ABUSER = "127.0.0.2"


def keyed_models(a, timeout=5.0):
    transport = httpx.HTTPTransport(local_address="127.0.0.1")
    with httpx.Client(transport=transport, timeout=timeout) as c:
        t0 = time.monotonic()
        r = c.get(f"{a.http}/v1/models", headers={"authorization": f"Bearer {a.key('app')}"})
        return r, time.monotonic() - t0


# --- item 11 --------------------------------------------------------------------------------------------------


@security_item(11, built=True)
def test_slow_header_sockets_do_not_starve_keyed_clients_and_are_closed(upstream, tmp_path):
    a = Agent(manifests(upstream), extra_args=["--header-read-timeout", "2s"], tmp=tmp_path)
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            s = connect_from(ABUSER, a.http_port)
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finishes the head
            slow.append(s)
        r, elapsed = keyed_models(a)
        assert r.status_code == 200 and elapsed < 1.0, f"keyed request took {elapsed:.2f}s behind 300 slow sockets"
        # Every slow socket is closed by the header-read timeout (2 s), with slack for a loaded machine.
        deadline = time.monotonic() + 6
        open_ = [s for s in slow if not peer_closed(s, max(0.01, deadline - time.monotonic()))]
        assert not open_, f"{len(open_)} of 300 slow-header sockets still open after the header-read timeout"
    finally:
        for s in slow:
            s.close()
        a.stop()


@security_item(11, built=True)
def test_idle_keep_alive_socket_is_closed(upstream, tmp_path):
    a = Agent(manifests(upstream), extra_args=["--keep-alive-timeout", "1s"], tmp=tmp_path)
    try:
        with connect_from(ABUSER, a.http_port) as s:
            s.sendall(f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.key('app')}\r\n\r\n".encode())
            s.settimeout(5)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            assert peer_closed(s, 4), "an idle keep-alive socket was kept open past the keep-alive timeout"
    finally:
        a.stop()


def ws_from(source_ip: str, url: str, port: int, **kwargs):
    return connect(url, sock=connect_from(source_ip, port), **kwargs)


@security_item(11, built=True)
def test_unauthenticated_websocket_flood_is_capped_per_ip(upstream, tmp_path):
    a = Agent(manifests(upstream), extra_args=["--max-unauthenticated-per-ip", "4", "--auth-timeout", "10s"],
              tmp=tmp_path)
    held = []
    try:
        for _ in range(4):
            held.append(ws_from(ABUSER, a.ws, a.http_port))
        refused = None
        extra = []
        try:
            for _ in range(16):  # bounded: the cap is 4, so the first of these must already be refused
                extra.append(ws_from(ABUSER, a.ws, a.http_port))
        except InvalidStatus as err:
            refused = err.response.status_code
        finally:
            for ws in extra:
                ws.close()
        assert refused in (429, 503), f"{4 + len(extra)} unauthenticated upgrades from one IP were all accepted"
        # Another IP, and a keyed client, are unaffected.
        with ws_from("127.0.0.3", a.ws, a.http_port) as other:
            other.send(json.dumps({"type": "auth", "key": a.key("victim")}))
            assert start(other)["type"] == "ready"
        with ws_from("127.0.0.1", a.ws, a.http_port, additional_headers=auth(a.key("app"))) as keyed:
            assert start(keyed)["type"] == "ready"
    finally:
        for ws in held:
            ws.close()
        a.stop()


@security_item(11, built=True)
def test_large_message_before_authentication_is_refused(agent):
    with ws_from(ABUSER, agent.ws, agent.http_port) as ws:
        try:
            ws.send("{" + " " * (64 * 1024) + "}")
            answer = ws.recv(timeout=5)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009, (
                f"closed with {closed.rcvd and closed.rcvd.code} {closed.rcvd and closed.rcvd.reason!r}, not 1009")
            return
        pytest.fail(f"a 64 KiB message before authentication was read and answered: {answer[:200]!r}")


# --- item 12 --------------------------------------------------------------------------------------------------

UNARY = "/infergate.v1.Inference/Transcribe"


@security_item(12, built=True)
def test_grpc_unary_without_key_is_refused_before_its_message_arrives(agent):
    h2 = H2Raw(agent.grpc_port, ABUSER)
    try:
        sid = h2.open_grpc(UNARY, agent.grpc, declared_len=1 << 20, sent=b"\x00" * 100)
        h2.pump(2.0)
        assert sid in h2.ended, "a keyless unary call was held open waiting for a 1 MiB message"
    finally:
        h2.close()


@security_item(12, built=True)
def test_thousands_of_stalled_keyless_grpc_calls_are_bounded(agent, pb):  # noqa: F811
    rss_before = rss_bytes(agent.proc.pid)
    conns = [H2Raw(agent.grpc_port, ABUSER) for _ in range(8)]
    opened = []
    try:
        for c in conns:
            for _ in range(250):  # 2,000 calls, each declaring a 16 MiB message and sending 100 bytes of it
                opened.append((c, c.open_grpc(UNARY, agent.grpc, declared_len=16 << 20, sent=b"\x00" * 100)))
        for c in conns:
            c.pump(0.5)
        # A keyed call is still served promptly.
        with grpc.insecure_channel(agent.grpc) as channel:
            stub = pb[1].InferenceStub(channel)
            t0 = time.monotonic()
            stub.ListModels(pb[0].ListModelsRequest(), metadata=(("authorization", f"Bearer {agent.key('app')}"),),
                            timeout=5)
            assert time.monotonic() - t0 < 1.0
        for c in conns:
            c.pump(1.0)
        growth = rss_bytes(agent.proc.pid) - rss_before
        still_open = sum(1 for c, sid in opened if sid not in c.ended and not c.closed and not c.goaway)
        assert still_open == 0, f"{still_open} of {len(opened)} keyless stalled gRPC calls still held"
        assert growth < 64 << 20, f"agent RSS grew {growth >> 20} MiB for stalled keyless calls"
    finally:
        for c in conns:
            c.close()


# --- item 13 --------------------------------------------------------------------------------------------------


@security_item(13, built=True)
def test_per_key_in_flight_cap_on_one_shot_routes(tmp_path):
    slow = SlowUpstream(delay=2.0)
    a = Agent(manifests(slow.url), extra_args=["--max-in-flight-per-key", "2"], tmp=tmp_path)
    results = []
    try:
        def one():
            r = httpx.post(f"{a.http}/v1/audio/transcriptions", headers={"authorization": f"Bearer {a.key('app')}"},
                           files={"file": ("a.wav", wav(0.2))}, data={"model": "whisper-1"}, timeout=30)
            results.append(r)

        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        refused = [r for r in results if r.status_code == 429]
        assert slow.max_in_flight <= 2, f"{slow.max_in_flight} requests of one key in flight at once"
        assert len(refused) >= 3, [r.status_code for r in results]
        assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    finally:
        a.stop()
        slow.stop()


EMBED_WORLD = """---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: speaker, namespace: default}
spec:
  model: speaker-encoder-v1
  features: [embed, verify]
  backend: {builtin: speaker-encoder}
"""


@security_item(13, built=True)
def test_oversized_json_body_is_refused_from_its_length(upstream, tmp_path):
    text = manifests(upstream) + EMBED_WORLD
    text = text.replace("scopes: [{endpoint: transcribe}]\n  allowedOrigins",
                        "scopes: [{endpoint: transcribe}, {endpoint: speaker}]\n  allowedOrigins")
    a = Agent(text, tmp=tmp_path)
    try:
        declared = 20 * 1024 * 1024  # under the 25 MiB upload limit, far over any sane embedding request
        with connect_from("127.0.0.1", a.http_port) as s:
            s.sendall(b"POST /v1/audio/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Authorization: Bearer {a.key('app')}\r\nContent-Length: {declared}\r\n\r\n".encode()
                      + b'{"model": "speaker-encoder-v1", "embedding": [' + b"0.0," * 16000)
            s.settimeout(3)
            try:
                head = s.recv(65536)
            except socket.timeout:
                head = b""
        assert head.startswith(b"HTTP/1.1 413"), f"a 20 MiB JSON body was being read: {head[:120]!r}"
    finally:
        a.stop()


# --- item 14 --------------------------------------------------------------------------------------------------


@security_item(14, built=True)
def test_ticket_minting_is_capped_per_key(upstream, tmp_path):
    a = Agent(manifests(upstream), extra_args=["--max-live-tickets-per-key", "5"], tmp=tmp_path)
    try:
        codes = []
        for _ in range(20):  # bounded flood
            r = httpx.post(f"{a.http}/v1/tickets", headers={"authorization": f"Bearer {a.key('app')}"}, timeout=5)
            codes.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                break
        assert codes[:5] == [201] * 5 and codes[-1] == 429, codes
        # Another key is not affected.
        r = httpx.post(f"{a.http}/v1/tickets", headers={"authorization": f"Bearer {a.key('victim')}"}, timeout=5)
        assert r.status_code == 201
    finally:
        a.stop()


@security_item(14, built=True)
def test_ticket_mint_flood_with_default_settings_is_limited(agent):
    codes = set()
    headers = {"authorization": f"Bearer {agent.key('tiny')}"}
    with httpx.Client(timeout=5) as client:
        for _ in range(300):  # bounded; the default cap or rate must stop this well before 300 live tickets
            r = client.post(f"{agent.http}/v1/tickets", headers=headers)
            codes.add(r.status_code)
            if r.status_code == 429:
                break
    assert 429 in codes, f"300 tickets minted for one key in a burst ({codes})"
