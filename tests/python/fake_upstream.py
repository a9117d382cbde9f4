"""A small OpenAI-compatible transcription server for the gateway tests.

It answers POST /v1/audio/transcriptions with a deterministic text derived from the upload ("heard N bytes"), so
tests can check that what the client receives really came from the upstream. It never pretends to understand
audio. Options: --port (0 = pick one; the chosen port is printed as `PORT <n>` on stdout), --gpu-seconds (reported
in the x-infergate-gpu-seconds header for settlement), --delay (seconds to wait before answering).

    python tests/python/fake_upstream.py --port 0
"""
import argparse
import email.parser
import email.policy
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_multipart(content_type: str, body: bytes) -> dict:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = part.get_payload(decode=True) or b""
    return fields


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-upstream/1"
    gpu_seconds = None
    delay = 0.0
    requests = 0
    lock = threading.Lock()

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if self.path == "/stats":
            self._json(200, {"requests": Handler.requests})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        if not self.path.endswith("/audio/transcriptions"):
            return self._json(404, {"error": {"message": "not found"}})
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        fields = parse_multipart(self.headers.get("content-type", ""), body)
        if "file" not in fields or "model" not in fields:
            return self._json(400, {"error": {"message": "file and model are required"}})
        with Handler.lock:
            Handler.requests += 1
        if Handler.delay:
            time.sleep(Handler.delay)
        audio = fields["file"]
        model = fields["model"].decode()
        text = f"heard {len(audio)} bytes for {model}"
        fmt = fields.get("response_format", b"json").decode()
        extra = {}
        if Handler.gpu_seconds is not None:
            extra["x-infergate-gpu-seconds"] = str(Handler.gpu_seconds)
        if fmt == "text":
            self._send(200, text.encode(), "text/plain; charset=utf-8", extra)
        elif fmt == "verbose_json":
            self._json(200, {"text": text, "language": "en", "duration": 0.0, "segments": []}, extra)
        else:
            self._json(200, {"text": text}, extra)

    def _json(self, status, obj, extra=None):
        self._send(status, json.dumps(obj).encode(), "application/json", extra or {})

    def _send(self, status, body, content_type, extra):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--gpu-seconds", type=float, default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    Handler.gpu_seconds = args.gpu_seconds
    Handler.delay = args.delay
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
