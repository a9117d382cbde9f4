"""Hostile peers and forged inputs for the security tests (tests/python/test_security_*.py, issue 9).

Everything here is standard library plus what the venv already has; every server binds 127.0.0.1 on a free port
and runs in a daemon thread that the fixture shuts down. Nothing here talks to anything but loopback.

- `security_item(n)`: marks a test as covering item n of issue 9 and, until that item is built, as a strict xfail
  (so the suite stays green today and an item that starts passing must have its marker removed).
- `RedirectUpstream` / `Canary`: an "OpenAI-compatible" upstream that answers every POST with a redirect, and a
  server that only counts the requests that reach it (the redirect target).
- `SlowUpstream`: answers transcriptions after a delay, to hold requests in flight.
- `forged_wav`, `flac_declaring`: audio whose headers lie about its length.
- `connect_from(source_ip, port)`: a TCP socket from another loopback address (127.0.0.2, ...), so per-IP caps can
  be exercised without leaving loopback.
- `H2Raw`: a minimal HTTP/2 client (no HPACK decoding) that can send gRPC headers and a partial message, then stall.
- `rss_bytes(pid)`: resident set size of a process, from /proc.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

__all__ = [
    "security_item", "RedirectUpstream", "Canary", "SlowUpstream", "forged_wav", "flac_declaring",
    "connect_from", "H2Raw", "rss_bytes", "read_http_response",
]




def security_item(n: int, built: bool = False):
    """`@security_item(9)`: the test covers issue 9 item 9. Until the item is built the test is a strict xfail;
    the implementer passes `built=True` (or drops the xfail) in the commit that fixes it."""
    marks = [pytest.mark.security_item(n)]
    if not built:
        marks.append(pytest.mark.xfail(strict=True, reason=f"issue 9 item {n}: not built yet"))

    def apply(f):
        for m in marks:
            f = m(f)
        return f

    return apply


# --- hostile HTTP peers ---------------------------------------------------------------------------------------


class _Server:
    """A ThreadingHTTPServer on a free loopback port, in a daemon thread."""

    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Canary(_Server):
    """Counts every request that reaches it; answers 200 with a body that must never reach a client."""

    BODY = b'{"text": "canary: the gateway followed a redirect"}'

    def __init__(self):
        self.hits = 0
        canary = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _any(self):
                canary.hits += 1
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(Canary.BODY)))
                self.end_headers()
                self.wfile.write(Canary.BODY)

            do_GET = do_POST = _any

        super().__init__(H)
        self.url = f"http://127.0.0.1:{self.port}"


class RedirectUpstream(_Server):
    """Answers every POST with `status` and `Location: <location>` (a 302 to the metadata service, say)."""

    def __init__(self, location: str, status: int = 302):
        self.requests = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                outer.requests += 1
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

        super().__init__(H)
        self.url = f"http://127.0.0.1:{self.port}/v1"


class SlowUpstream(_Server):
    """An OpenAI-compatible transcription stand-in that waits `delay` seconds before answering; counts the
    requests it holds at once (`max_in_flight`)."""

    def __init__(self, delay: float):
        self.in_flight = 0
        self.max_in_flight = 0
        lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                with lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                time.sleep(delay)
                with lock:
                    outer.in_flight -= 1
                body = json.dumps({"text": "slow"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(H)
        self.url = f"http://127.0.0.1:{self.port}/v1"


# --- forged audio ---------------------------------------------------------------------------------------------


def forged_wav(data_bytes: int, sample_rate=16000, channels=1, bits=16, byte_rate=None, block_align=None) -> bytes:
    """A PCM WAV whose `fmt ` chunk may lie: `byte_rate` / `block_align` default to the honest values."""
    honest_block = channels * bits // 8
    byte_rate = sample_rate * honest_block if byte_rate is None else byte_rate
    block_align = honest_block if block_align is None else block_align
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, byte_rate, block_align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body + b"\x00" * data_bytes


def flac_declaring(seconds: float, sample_rate: int = 16000, padding: int = 2048) -> bytes:
    """A FLAC stream whose STREAMINFO declares `seconds` of 16 kHz mono 16-bit audio, followed by `padding` bytes
    (a PADDING metadata block) and no audio frames: a container that says "long" in very few bytes."""
    total_samples = int(seconds * sample_rate)
    # STREAMINFO: min/max block size (16 bits each), min/max frame size (24 bits each), then a 64-bit field of
    # sample rate (20 bits), channels-1 (3), bits-per-sample-1 (5), total samples (36); then a 128-bit MD5.
    packed = (sample_rate << 44) | (0 << 41) | (15 << 36) | total_samples
    info = struct.pack(">HH", 4096, 4096) + (0).to_bytes(3, "big") + (0).to_bytes(3, "big")
    info += packed.to_bytes(8, "big") + b"\x00" * 16
    assert len(info) == 34
    streaminfo = bytes([0x00]) + len(info).to_bytes(3, "big") + info  # not last
    pad = bytes([0x80 | 0x01]) + padding.to_bytes(3, "big") + b"\x00" * padding  # last block: PADDING
    return b"fLaC" + streaminfo + pad


# --- sockets --------------------------------------------------------------------------------------------------


def connect_from(source_ip: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:port from `source_ip` (any 127.0.0.0/8 address works on Linux loopback)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source_ip, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_http_response(s: socket.socket, timeout: float) -> bytes:
    """Reads what the server sends within `timeout` (until it closes or sends a full header block)."""
    s.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def peer_closed(s: socket.socket, timeout: float) -> bool:
    """True when the server closes (EOF or reset) the socket within `timeout`."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


__all__.append("peer_closed")


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- a minimal HTTP/2 client ----------------------------------------------------------------------------------


class H2Raw:
    """Just enough HTTP/2 to open gRPC streams by hand: preface, SETTINGS, HEADERS with literal (never Huffman)
    header fields, DATA. Reading only tracks which streams the server ended (HEADERS or DATA with END_STREAM, or
    RST_STREAM) and whether it sent GOAWAY; header blocks are not decoded."""

    DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
    END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1

    def __init__(self, port: int, source_ip: str = "127.0.0.1"):
        self.sock = connect_from(source_ip, port)
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self._frame(self.SETTINGS, 0, 0, b"")
        self.next_stream = 1
        self.ended: set[int] = set()
        self.goaway = False
        self.closed = False
        self._buf = b""

    def _frame(self, type_, flags, stream, payload):
        self.sock.sendall(len(payload).to_bytes(3, "big") + bytes([type_, flags]) + struct.pack(">I", stream) + payload)

    @staticmethod
    def _literal(name: str, value: str) -> bytes:
        n, v = name.encode(), value.encode()
        assert len(n) < 127 and len(v) < 127
        return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v

    def open_grpc(self, path: str, authority: str, metadata=(), declared_len: int = 0, sent: bytes = b"") -> int:
        """HEADERS for a gRPC call, then one DATA frame with a 5-byte message prefix declaring `declared_len`
        bytes and only `sent` of them. The stream stays open (no END_STREAM)."""
        sid = self.next_stream
        self.next_stream += 2
        block = b"".join(self._literal(k, v) for k, v in (
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"), *metadata))
        self._frame(self.HEADERS, self.END_HEADERS, sid, block)
        if declared_len or sent:
            self._frame(self.DATA, 0, sid, b"\x00" + struct.pack(">I", declared_len) + sent)
        return sid

    def pump(self, timeout: float):
        """Reads frames for up to `timeout` seconds, acking SETTINGS and PING."""
        self.sock.settimeout(0.05)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed:
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError, OSError):
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self._buf += chunk
            while len(self._buf) >= 9:
                length = int.from_bytes(self._buf[:3], "big")
                if len(self._buf) < 9 + length:
                    break
                type_, flags = self._buf[3], self._buf[4]
                sid = struct.unpack(">I", self._buf[5:9])[0] & 0x7FFFFFFF
                payload = self._buf[9:9 + length]
                self._buf = self._buf[9 + length:]
                if type_ == self.SETTINGS and not flags & self.ACK:
                    self._frame(self.SETTINGS, self.ACK, 0, b"")
                elif type_ == self.PING and not flags & self.ACK:
                    self._frame(self.PING, self.ACK, 0, payload)
                elif type_ in (self.HEADERS, self.DATA) and flags & self.END_STREAM:
                    self.ended.add(sid)
                elif type_ == self.RST_STREAM:
                    self.ended.add(sid)
                elif type_ == self.GOAWAY:
                    self.goaway = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class HugeUpstream(_Server):
    """Answers every transcription with a valid JSON body of `megabytes` MiB (a 'text' of that many letters),
    written in 1 MiB pieces: an upstream that tries to make the agent buffer without bound."""

    def __init__(self, megabytes: int):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                head, tail, piece = b'{"text": "', b'"}', b"a" * (1 << 20)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(head) + megabytes * len(piece) + len(tail)))
                self.end_headers()
                try:
                    self.wfile.write(head)
                    for _ in range(megabytes):
                        self.wfile.write(piece)
                    self.wfile.write(tail)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent stopped reading: what a size cap does

        super().__init__(H)
        self.url = f"http://127.0.0.1:{self.port}/v1"


__all__.append("HugeUpstream")


class StallProxy:
    """A TCP forwarder to 127.0.0.1:`target_port` that can be told to stall: after `stall()` every byte in either
    direction is held (sockets stay open, nothing is forwarded), like a hung API-server connection."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.stalled = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while not self.closing:
                data = src.recv(65536)
                if not data:
                    break
                while self.stalled.is_set() and not self.closing:
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass

    def stall(self):
        self.stalled.set()

    def stop(self):
        self.closing = True
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


__all__.append("StallProxy")
