"""A misbehaving "OpenAI-compatible" upstream for the fault-injection tests (issue 15, item 10).

`FaultUpstream(mode)` listens on a free loopback port (raw sockets, one daemon thread per connection) and answers
every POST the way `mode` says:

- `ok`: a well-formed transcription (`{"text": "heard N bytes"}`, N the size of the uploaded file) after
  `answer_delay` seconds, reporting `gpu_seconds` in `x-infergate-gpu-seconds` when given;
- `hang`: reads the request, then never answers (holds the socket until the agent lets go of it);
- `500`: `HTTP/1.1 500` with an OpenAI-style JSON error body;
- `garbage`: bytes that are not HTTP at all, then closes;
- `garbage_json`: `HTTP/1.1 200`, `content-type: application/json`, a body that is not JSON;
- `close_mid_body`: `HTTP/1.1 200` declaring a 4,096-byte JSON body, sends 30 bytes of it, then closes;
- `close_before_answer`: reads the request, then closes without a byte;
- `stall_body`: waits `header_delay` seconds, sends `HTTP/1.1 200` headers and 10 bytes of a 4,096-byte body, then
  holds the connection without another byte.

It counts the requests it got (`requests`) and the connections it holds open right now (`open_connections`), so
a test can check that the agent does not keep hung upstream connections after it gave up on them.
"""
from __future__ import annotations

import json
import socket
import threading
import time

__all__ = ["FaultUpstream", "MODES"]

MODES = ("ok", "hang", "500", "garbage", "garbage_json", "close_mid_body", "close_before_answer", "stall_body")


def _read_request(conn: socket.socket) -> tuple[str, bytes] | None:
    """Reads one HTTP/1.1 request (Content-Length or chunked body); returns its content type and body, None if
    the peer left."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    if b"content-length" in headers:
        need = int(headers[b"content-length"])
        while len(rest) < need:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return content_type, rest[:need]
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                rest += chunk
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                rest += chunk
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return content_type, body
    return content_type, rest


def _file_size(content_type: str, body: bytes) -> int:
    """Size of the multipart `file` part (what fake_upstream.py reports too); the body's size if there is none."""
    from fake_upstream import parse_multipart

    try:
        return len(parse_multipart(content_type, body)["file"])
    except Exception:  # noqa: BLE001 - any other upload: its size
        return len(body)


def _response(status: str, body: bytes, content_type: str = "application/json", length: int | None = None,
              extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{extra}"
        f"content-length: {len(body) if length is None else length}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class FaultUpstream:
    def __init__(self, mode: str, header_delay: float = 0.0, gpu_seconds: float | None = None,
                 answer_delay: float = 0.0):
        assert mode in MODES, mode
        self.mode = mode
        self.header_delay = header_delay
        self.gpu_seconds = gpu_seconds
        self.answer_delay = answer_delay
        self.requests = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        with self._lock:
            self.open_connections += 1
            self.max_open_connections = max(self.max_open_connections, self.open_connections)
        try:
            conn.settimeout(30)
            request = _read_request(conn)
            if request is None:
                return
            with self._lock:
                self.requests += 1
            self._answer(conn, *request)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                self.open_connections -= 1

    def _answer(self, conn: socket.socket, content_type: str, body: bytes):
        mode = self.mode
        if self.header_delay:
            time.sleep(self.header_delay)
        if mode == "ok":
            if self.answer_delay:
                time.sleep(self.answer_delay)
            text = json.dumps({"text": f"heard {_file_size(content_type, body)} bytes"}).encode()
            extra = "" if self.gpu_seconds is None else f"x-infergate-gpu-seconds: {self.gpu_seconds}\r\n"
            conn.sendall(_response("200 OK", text, extra=extra))
        elif mode in ("hang", "stall_body"):
            if mode == "stall_body":
                conn.sendall(_response("200 OK", b'{"text": "he', length=4096))
            # Holds the connection, answering nothing more, until the agent closes it (or the test ends).
            conn.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    if conn.recv(65536) == b"":
                        return
                except socket.timeout:
                    continue
        elif mode == "500":
            err = json.dumps({"error": {"message": "CUDA error: an illegal memory access", "type": "server_error"}})
            conn.sendall(_response("500 Internal Server Error", err.encode()))
        elif mode == "garbage":
            conn.sendall(b"\x00\xff\xfeSPEECH-SERVER-V0 \x13\x37 not http at all\r\n\r\n\x89PNG\x1a\n")
        elif mode == "garbage_json":
            conn.sendall(_response("200 OK", b"\x89\x00{\"text\": \"heard 3 byt\xff\xfe<html>oops"))
        elif mode == "close_mid_body":
            full = json.dumps({"text": "heard " + "x" * 4000}).encode()
            conn.sendall(_response("200 OK", full[:30], length=len(full)))
            time.sleep(0.05)
            conn.shutdown(socket.SHUT_RDWR)
        elif mode == "close_before_answer":
            conn.shutdown(socket.SHUT_RDWR)

    def wait_released(self, timeout: float = 5.0) -> bool:
        """True once the upstream holds no connection (the agent let go of every hung one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.open_connections == 0:
                return True
            time.sleep(0.05)
        return self.open_connections == 0

    def stop(self):
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
