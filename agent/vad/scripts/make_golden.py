#!/usr/bin/env python3
"""Golden vectors for infergate-vad, from the original Silero VAD v6 model run by onnxruntime.

One-off and not part of CI (it needs onnxruntime, which the test venv does not carry). Run it in a throwaway venv:

    python3 -m venv /tmp/vad-golden && /tmp/vad-golden/bin/pip install onnxruntime==1.32.0 numpy==2.4.6
    bash tests/tools/install-vad-weights.sh
    /tmp/vad-golden/bin/python agent/vad/scripts/make_golden.py

Inputs are generated, never stored: a splitmix64 noise generator and sines that the Rust test rebuilds
bit-for-bit, and an espeak-ng phrase (through sox, no dither) whose int16 sha256 is recorded so the Rust test
knows whether its local espeak-ng produced the same samples. Chunking and state handling follow silero's
`OnnxWrapper.__call__` (64 samples of context, state carried, last chunk zero-padded as in
`get_speech_timestamps`). Segment cases run the upstream `get_speech_timestamps_from_probs`, taken verbatim from
the wheel's utils_vad.py (it is plain Python; the rest of that module needs torch).
"""
import argparse
import ast
import hashlib
import json
import math
import random
import subprocess
import typing
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime

ROOT = Path(__file__).resolve().parents[3]
SR = 16000
CHUNK = 512
CONTEXT = 64
MASK64 = (1 << 64) - 1

# Kept in sync with SPEECH_COMMAND users in agent/vad/tests/golden.rs (they read it from the JSON).
SPEECH_COMMAND = (
    'espeak-ng -v en-us -s 150 --stdout "The quick brown fox jumps over the lazy dog. '
    'Voice activity detection keeps only the speech." '
    "| sox -D -t wav - -t raw -r 16000 -e signed-integer -b 16 -c 1 -"
)
SPEECH_PAD_S = 1.0


def splitmix64_noise(seed: int, n: int, amplitude: float) -> np.ndarray:
    """Uniform in [-1, 1) with 24-bit resolution, times a power-of-two amplitude: exact in f32 on both sides."""
    state = seed & MASK64
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        out[i] = np.float32(z >> 40) / np.float32(1 << 23) - np.float32(1.0)
    return out * np.float32(amplitude)


def tones(n: int, parts) -> np.ndarray:
    """Sum of amplitude * sin(2 pi f t) computed in f64 per sample, then rounded to f32 (as the Rust test does)."""
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        v = 0.0
        for freq, amp in parts:
            v += amp * math.sin(2.0 * math.pi * freq * i / SR)
        out[i] = np.float32(v)
    return out


def speech() -> tuple[np.ndarray, str]:
    raw = subprocess.run(["sh", "-c", SPEECH_COMMAND], check=True, capture_output=True).stdout
    pcm16 = np.frombuffer(raw, dtype="<i2")
    sha = hashlib.sha256(pcm16.tobytes()).hexdigest()
    pad = np.zeros(int(SPEECH_PAD_S * SR), dtype=np.float32)
    return np.concatenate([pad, pcm16.astype(np.float32) / np.float32(32768.0), pad]), sha


def probabilities(session: onnxruntime.InferenceSession, pcm: np.ndarray) -> list[float]:
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, CONTEXT), dtype=np.float32)
    probs = []
    for start in range(0, len(pcm), CHUNK):
        chunk = np.zeros((1, CHUNK), dtype=np.float32)
        piece = pcm[start:start + CHUNK]
        chunk[0, :len(piece)] = piece
        x = np.concatenate([context, chunk], axis=1)
        out, state = session.run(None, {"input": x, "state": state, "sr": np.array(SR, dtype=np.int64)})
        context = x[:, -CONTEXT:]
        probs.append(float(out[0, 0]))
    return probs


def upstream_segments_fn(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("silero_vad/utils_vad.py").decode()
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_speech_timestamps_from_probs")
    namespace = {"List": typing.List, "Callable": typing.Callable, "make_visualization": None}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "utils_vad.py", "exec"), namespace)
    return namespace["get_speech_timestamps_from_probs"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", default=ROOT / ".cache/models/vad/silero_vad.onnx", type=Path)
    ap.add_argument("--wheel", default=ROOT / ".cache/wheels/silero_vad-6.2.3-py3-none-any.whl", type=Path)
    ap.add_argument("--out", default=ROOT / "agent/vad/tests/golden/silero_vad_v6.json", type=Path)
    args = ap.parse_args()

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"], sess_options=opts)
    get_segments = upstream_segments_fn(args.wheel)

    # `kind` + parameters tell the Rust test how to rebuild each input.
    cases = [
        {"name": "silence_half_second", "kind": "silence", "samples": 8000},
        {"name": "noise_one_second", "kind": "noise", "samples": 16000, "seed": 1, "amplitude": 0.125},
        {"name": "loud_noise_partial_chunk", "kind": "noise", "samples": 5000, "seed": 7, "amplitude": 0.5},
        {"name": "sine_440", "kind": "tones", "samples": 16000, "tones": [[440.0, 0.5]]},
        {"name": "two_tones", "kind": "tones", "samples": 12000, "tones": [[300.0, 0.25], [2500.0, 0.25]]},
    ]
    for case in cases:
        if case["kind"] == "silence":
            pcm = np.zeros(case["samples"], dtype=np.float32)
        elif case["kind"] == "noise":
            pcm = splitmix64_noise(case["seed"], case["samples"], case["amplitude"])
        else:
            pcm = tones(case["samples"], case["tones"])
        case["probabilities"] = probabilities(session, pcm)

    speech_pcm, speech_sha = speech()
    speech_probs = probabilities(session, speech_pcm)
    cases.append({
        "name": "espeak_phrase_with_silence",
        "kind": "speech",
        "samples": len(speech_pcm),
        "command": SPEECH_COMMAND,
        "pad_seconds": SPEECH_PAD_S,
        "pcm16_sha256": speech_sha,
        "probabilities": speech_probs,
    })

    # Segment cases: exact probability sequences in, upstream segments out.
    rng = random.Random(20261122)
    walk, p = [], 0.1
    for _ in range(600):
        p = min(1.0, max(0.0, p + rng.uniform(-0.2, 0.2)))
        walk.append(float(np.float32(p)))
    param_sets = [
        {},
        {"threshold": 0.3, "min_speech_duration_ms": 100, "min_silence_duration_ms": 50, "speech_pad_ms": 10},
        {"threshold": 0.6, "min_speech_duration_ms": 0, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
        {"max_speech_duration_s": 1.0},
        {"max_speech_duration_s": 0.5, "use_max_poss_sil_at_max_speech": False},
        {"max_speech_duration_s": 0.8, "min_silence_at_max_speech": 30, "neg_threshold": 0.2},
    ]
    segment_cases = []
    for source, probs, audio_len in [
        ("espeak_phrase_with_silence", speech_probs, len(speech_pcm)),
        ("random_walk", walk, len(walk) * CHUNK - 123),
    ]:
        for params in param_sets:
            expected = get_segments(list(probs), sampling_rate=SR, audio_length_samples=audio_len, **params)
            segment_cases.append({
                "probabilities_of": source,
                "audio_samples": audio_len,
                "params": params,
                "expected": [[int(s["start"]), int(s["end"])] for s in expected],
            })

    golden = {
        "about": "Silero VAD v6 (silero-vad==6.2.3, silero_vad.onnx, 16 kHz) run by onnxruntime "
                 f"{onnxruntime.__version__}; made by agent/vad/scripts/make_golden.py",
        "onnx_sha256": hashlib.sha256(args.onnx.read_bytes()).hexdigest(),
        "chunk_samples": CHUNK,
        "cases": cases,
        "random_walk": walk,
        "segment_cases": segment_cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), speech pcm16 sha256 {speech_sha}")


if __name__ == "__main__":
    main()
