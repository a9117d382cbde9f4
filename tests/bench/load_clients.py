"""Stream clients of the load and soak benchmarks (tests/bench/load.py; not a test).

A worker process runs its share of client slots on one asyncio loop, over the WebSocket door (``websockets``)
and the gRPC door (``grpc.aio``). Each slot opens a stream (``start``, wait for ``ready``), sends 16 kHz mono
PCM16 noise in fixed chunks at real time (chunk k leaves at open + k x chunk length), sends ``end`` when its time
is up and waits for the final result and the close. A refused or closed stream is recorded by its refusal code
(the WebSocket ``error`` message / close reason, the gRPC ``x-infergate-code`` trailer) and the slot opens a new
one after the ``retry_after`` it was given (0.5-5 s); after ``key_revoked`` the slot stops.

Neither door acknowledges a chunk: the agent answers each segment (``--segment-seconds`` of audio) with one
partial result once the backend has answered. The "ack" of a chunk is therefore the partial of the segment that
chunk completes, matched by the partial's end time, and its latency is receive(partial) - send(that chunk):
the agent's work on the chunk, the segment's backend call (the fake upstream) and the way back, plus any delay
of this client's loop. Partials that do not end on a segment boundary (a flush before a close) are not counted.

The send slip (how late each chunk left against its real-time schedule) is recorded too: when it grows, the
client, not the agent, is the bottleneck. Keys live in memory only; records name key ids (``kid_...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field

from loadgen import noise_chunk  # noqa: E402  (same directory)



class Hist:
    """Log-bucketed histogram (2% wide buckets from 10 us up): percentiles of many samples, mergeable."""

    BASE, RATIO = 1e-5, 1.02

    def __init__(self, data: dict | None = None):
        data = data or {}
        self.counts = {int(k): v for k, v in data.get("counts", {}).items()}
        self.n = data.get("n", 0)
        self.max = data.get("max", 0.0)

    def add(self, x: float) -> None:
        i = 0 if x <= self.BASE else int(math.log(x / self.BASE) / math.log(self.RATIO)) + 1
        self.counts[i] = self.counts.get(i, 0) + 1
        self.n += 1
        self.max = max(self.max, x)

    def merge(self, other: Hist) -> None:
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.n += other.n
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile (never more than the maximum seen)."""
        if not self.n:
            return 0.0
        want, seen = q * self.n, 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= want:
                return min(self.max, 0.0 if i == 0 else self.BASE * self.RATIO**i)
        return self.max

    def above(self, x: float) -> int:
        edge = 0 if x <= self.BASE else int(math.log(x / self.BASE) / math.log(self.RATIO)) + 1
        return sum(c for i, c in self.counts.items() if i > edge)

    def to_dict(self) -> dict:
        return {"counts": self.counts, "n": self.n, "max": self.max}


@dataclass
class Stream:
    """One stream attempt of one slot. Times are time.monotonic() (CLOCK_MONOTONIC: one clock for all processes)."""

    slot: int
    door: str
    role: str
    kid: str
    attempt_at: float
    ready_at: float | None = None
    ended_at: float | None = None
    outcome: str = ""  # "normal", a refusal code (key_revoked, rate_limited, ...), or "client:..." / "ws_close_..."
    close: str = ""  # "ws:<close code>" or "grpc:<status>"
    chunks: int = 0
    acks: int = 0
    final: bool = False
    end_sent: bool = False
    retry_after: float | None = None


@dataclass
class Door:
    acks: list[float] = field(default_factory=list)
    slip: Hist = field(default_factory=Hist)
    chunks: int = 0


class Pacer:
    """Real-time sender shared by both doors: records send times (for acks) and slip."""

    def __init__(self, cfg: dict, rec: Stream, door: Door):
        self.cs = cfg["chunk_ms"] / 1000.0
        self.seg = cfg["segment_s"]
        self.rec, self.door = rec, door
        self.sent: list[float] = []

    async def run(self, send, until: float, finished) -> bool:
        """Sends until ``until``; True when it got there (so ``end`` is due), False when the stream ended first."""
        start, k = time.monotonic(), 0
        while not finished():
            due = start + k * self.cs
            if due >= until:
                return True
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if finished():
                break
            now = time.monotonic()
            self.door.slip.add(max(0.0, now - due))
            self.sent.append(now)
            if not await send():
                break
            k += 1
            self.rec.chunks += 1
            self.door.chunks += 1
        return False

    def ack(self, end_seconds: float | None) -> None:
        if end_seconds is None:
            return
        now = time.monotonic()
        segments = end_seconds / self.seg
        if round(segments) < 1 or abs(segments - round(segments)) > 1e-3:
            return
        i = round(end_seconds / self.cs) - 1
        if 0 <= i < len(self.sent):
            self.door.acks.append(now - self.sent[i])
            self.rec.acks += 1


async def ws_stream(cfg: dict, slot: dict, rec: Stream, until: float, door: Door, chunk: bytes) -> None:
    import websockets

    headers = {"Authorization": f"Bearer {slot['key']}"}
    try:
        ws = await websockets.connect(
            cfg["ws_url"], additional_headers=headers, max_size=None, open_timeout=10, compression=None,
            ping_interval=None,
        )
    except websockets.InvalidStatus as refused:
        rec.ended_at, rec.close = time.monotonic(), f"http:{refused.response.status_code}"
        with contextlib.suppress(Exception):
            rec.outcome = json.loads(refused.response.body)["error"]["code"]
        rec.outcome = rec.outcome or f"http_{refused.response.status_code}"
        return
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as err:
        rec.ended_at, rec.outcome = time.monotonic(), f"client:connect_{type(err).__name__}"
        return
    pacer, ready = Pacer(cfg, rec, door), asyncio.Event()

    def on_text(text: str) -> None:
        msg = json.loads(text)
        kind = msg.get("type")
        if kind == "ready":
            rec.ready_at = time.monotonic()
            ready.set()
        elif kind == "partial":
            pacer.ack(msg.get("end"))
        elif kind == "final":
            rec.final = True
        elif kind == "error":
            error = msg.get("error") or {}
            rec.outcome = error.get("code") or "error_without_code"
            rec.retry_after = error.get("retry_after_seconds")

    async def reader() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                if isinstance(message, str):
                    on_text(message)
        rec.ended_at = time.monotonic()

    async def send() -> bool:
        try:
            await ws.send(chunk)
            return True
        except websockets.ConnectionClosed:
            return False

    rd = asyncio.create_task(reader())
    waiting = asyncio.create_task(ready.wait())
    try:
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(cfg["start_json"])
        await asyncio.wait({rd, waiting}, timeout=cfg["ready_timeout"], return_when=asyncio.FIRST_COMPLETED)
        if rec.ready_at is not None and await pacer.run(send, until, rd.done) and not rd.done():
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send('{"type":"end"}')
                rec.end_sent = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(rd), timeout=cfg["end_timeout"])
        if not rd.done():
            rec.outcome = rec.outcome or ("client:no_ready" if rec.ready_at is None else "client:no_close")
    finally:
        waiting.cancel()
        rd.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), timeout=2)
    rec.ended_at = rec.ended_at or time.monotonic()
    code, reason = ws.close_code, ws.close_reason or ""
    rec.close = f"ws:{code}"
    if not rec.outcome:
        if code == 1000 and rec.final and rec.end_sent:
            rec.outcome = "normal"
        elif code is not None and 4000 <= code < 5000 and ":" in reason:
            rec.outcome = reason.split(":", 1)[0]
        else:
            rec.outcome = f"ws_close_{code}"


def trailer(md, name: str) -> str | None:
    for k, v in md or ():
        if k == name:
            return v if isinstance(v, str) else v.decode()
    return None


async def grpc_stream(cfg: dict, slot: dict, rec: Stream, until: float, door: Door, chunk: bytes, stub, pb) -> None:
    import grpc

    call = stub.StreamTranscribe(metadata=(("authorization", f"Bearer {slot['key']}"),))
    pacer, ready = Pacer(cfg, rec, door), asyncio.Event()

    async def reader() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            while True:
                r = await call.read()
                if r is grpc.aio.EOF:
                    break
                kind = r.WhichOneof("msg")
                if kind == "ready":
                    rec.ready_at = time.monotonic()
                    ready.set()
                elif kind == "result":
                    if r.result.final:
                        rec.final = True
                    else:
                        pacer.ack(r.result.end_seconds)
        rec.ended_at = time.monotonic()

    rd = asyncio.create_task(reader())

    async def write(message) -> bool:
        if rd.done():
            return False
        try:
            await call.write(message)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:  # the call has ended: its status says how
            return False

    audio = pb.StreamRequest(audio=chunk)
    waiting = asyncio.create_task(ready.wait())
    status = None
    try:
        if await write(pb.StreamRequest(start=pb.StreamStart(model=cfg["model"], feature="transcribe"))):
            await asyncio.wait({rd, waiting}, timeout=cfg["ready_timeout"], return_when=asyncio.FIRST_COMPLETED)
        if rec.ready_at is not None and await pacer.run(lambda: write(audio), until, rd.done):
            rec.end_sent = await write(pb.StreamRequest(end=pb.StreamEnd()))
            with contextlib.suppress(Exception):
                await call.done_writing()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(rd), timeout=cfg["end_timeout"])
        if rd.done():
            status = await call.code()
            md = await call.trailing_metadata()
        else:
            rec.outcome = "client:no_ready" if rec.ready_at is None else "client:no_close"
    finally:
        waiting.cancel()
        rd.cancel()
        if status is None:
            call.cancel()
    rec.ended_at = rec.ended_at or time.monotonic()
    if status is None:
        return
    rec.close = f"grpc:{status.name}"
    code = trailer(md, "x-infergate-code")
    with contextlib.suppress(TypeError, ValueError):
        rec.retry_after = float(trailer(md, "retry-after"))
    if status == grpc.StatusCode.OK and rec.final and rec.end_sent:
        rec.outcome = "normal"
    else:
        rec.outcome = code or f"grpc_{status.name}"


async def run_slot(cfg: dict, slot: dict, t0: float, records: list, doors: dict, stubs: list, pb) -> None:
    rng = random.Random(slot["slot"])
    chunk = noise_chunk(cfg["chunk_ms"], random.Random(slot["slot"]))
    await asyncio.sleep(max(0.0, t0 + slot["start"] - time.monotonic()))
    stop_at = t0 + slot["stop"]
    while time.monotonic() < stop_at - 1.0:
        until = stop_at
        if cfg.get("life"):  # soak: streams of random length, one after the other
            until = min(stop_at, time.monotonic() + rng.uniform(*cfg["life"]))
        rec = Stream(slot["slot"], slot["door"], slot["role"], slot["kid"], time.monotonic())
        records.append(rec)
        if slot["door"] == "ws":
            await ws_stream(cfg, slot, rec, until, doors["ws"], chunk)
        else:
            stub = stubs[slot["slot"] % len(stubs)]
            await grpc_stream(cfg, slot, rec, until, doors["grpc"], chunk, stub, pb)
        if rec.outcome == "key_revoked":
            return
        if rec.outcome != "normal":
            await asyncio.sleep(min(5.0, max(0.5, rec.retry_after or 1.0)))


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_worker(cfg: dict, slots: list[dict], wid: int, go, t0_value, out) -> dict:
    import grpc

    sys.path.insert(0, cfg["stubs_dir"])
    import infergate.v1.inference_pb2 as pb
    import infergate.v1.inference_pb2_grpc as pbg

    n_grpc = sum(1 for s in slots if s["door"] == "grpc")
    # A channel per 50 gRPC streams, each on its own connection (no shared subchannel pool).
    channels = [
        grpc.aio.insecure_channel(cfg["grpc_addr"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, math.ceil(n_grpc / 50)))
    ]
    stubs = [pbg.InferenceStub(c) for c in channels]
    loop = asyncio.get_running_loop()
    out.put({"ready": wid})
    await loop.run_in_executor(None, go.wait)
    t0 = t0_value.value
    window: dict[str, float] = {}
    # asyncio's clock is time.monotonic(): the window is the same instants the parent samples the agent at.
    loop.call_at(t0 + cfg["window"][0], lambda: window.__setitem__("start", cpu_self()))
    loop.call_at(t0 + cfg["window"][1], lambda: window.__setitem__("end", cpu_self()))
    records: list[Stream] = []
    doors = {"ws": Door(), "grpc": Door()}
    await asyncio.gather(*(run_slot(cfg, s, t0, records, doors, stubs, pb) for s in slots))
    for c in channels:
        await c.close()
    return {
        "wid": wid,
        "streams": [asdict(r) for r in records],
        "doors": {d: {"acks": v.acks, "slip": v.slip.to_dict(), "chunks": v.chunks} for d, v in doors.items()},
        "cpu_window_s": window.get("end", cpu_self()) - window.get("start", 0.0),
        "cpu_total_s": cpu_self(),
    }


def worker_main(cfg: dict, slots: list[dict], wid: int, go, t0_value, out) -> None:
    profile = None
    if cfg.get("profile_dir"):  # LOAD_PROFILE=dir: where this worker's CPU goes (pstats files)
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    try:
        result = asyncio.run(run_worker(cfg, slots, wid, go, t0_value, out))
    except BaseException as err:  # reported, not swallowed: the parent fails the run
        result = {"wid": wid, "crash": f"{type(err).__name__}: {err}"}
    if profile:
        profile.disable()
        profile.dump_stats(f"{cfg['profile_dir']}/worker-{wid}.pstats")
    out.put(result)
