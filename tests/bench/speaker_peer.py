#!/usr/bin/env python3
"""Peer benchmark (not a test): Resemblyzer 0.1.4's own VoiceEncoder on PyTorch CPU, one thread, on the same 5 s
input the Rust bench uses (agent/speaker/benches/encoder.rs), to put next to `cargo bench -p infergate-speaker
--bench encoder`. tests/bench/speaker.sh runs both on one pinned core.

    bash tests/bench/install-speaker-peer.sh
    taskset -c 1 .cache/speaker-peer-venv/bin/python tests/bench/speaker_peer.py

It needs Debian's python3-torch (1.13, for /usr/bin/python3) plus librosa and resemblyzer, which the test venv
(.venv, pyenv 3.11.7) does not carry: install-speaker-peer.sh builds .cache/speaker-peer-venv (a venv of
/usr/bin/python3 with --system-site-packages), the same stack that made the goldens
(agent/speaker/scripts/make_golden.py).

Input: `voice_like(1, 5.0)` from agent/speaker/src/testing.rs, ported operation for operation (64-bit LCG noise
plus a five-harmonic tone with a wandering pitch, in float64 with libm `sin` as Python's `math.sin`, rounded to
float32), so both sides embed the same 80,000 samples; `--check-input` prints a digest to compare. (Time does not
depend on the content anyway: the number of partial windows depends only on the length.)

What is timed, per run (median of --runs after --warmup untimed runs; time.perf_counter, wall clock):
  1. "utterance": `normalize_volume(wav, -30 dBFS, increase_only=True)` + `VoiceEncoder.embed_utterance(wav)`,
     i.e. gain, partial layout, librosa mel spectrogram, the LSTM over all partial windows as one batch, head and
     averaging. That is the work infergate's `CpuEncoder::embed` does (frontend::prepare + mel + LSTM + head),
     excluding weight loading on both sides. Resemblyzer's `preprocess_wav` (resampling, webrtcvad silence
     trimming) is not part of it, as it is not on the Rust side.
  2. "forward only": `VoiceEncoder.forward` under torch.no_grad() on the precomputed [partials, 160, 40] mel
     tensor, i.e. just the network (3-layer LSTM + linear + ReLU + L2 norm).
torch.set_num_threads(1) and set_num_interop_threads(1) are set (and OMP/OpenBLAS/numba thread counts to 1 before
import); pinning to a core is the caller's job (`taskset -c N`, as speaker.sh does). Process CPU time per run is
printed on stderr next to the wall time, like the Rust bench's thread-CPU-time line.

Output on stdout, two lines:
  speaker peer (resemblyzer torch 1.13, 1 thread): 5 s utterance in N ms -> Mx real time per core
  speaker peer forward only (resemblyzer torch 1.13, 1 thread): 5 s utterance (P partials) in N ms -> Mx real time per core
Details (versions, which libblas.so.3 torch loaded, CPU time, min/max) go to stderr.
"""
import argparse
import math
import os
import statistics
import sys
import time
import types
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")
# resemblyzer.audio imports webrtcvad (C extension) only for trim_long_silences, which is not timed here.
sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

import librosa  # noqa: E402
from resemblyzer import VoiceEncoder, audio  # noqa: E402
from resemblyzer.hparams import audio_norm_target_dBFS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000
LCG_MUL = 6364136223846793005
LCG_INC = 1442695040888963407
MASK64 = (1 << 64) - 1


def voice_like(seed, seconds):
    """agent/speaker/src/testing.rs `voice_like`, same operations in the same order (float64, libm sin)."""
    state = seed & MASK64
    tau = 2.0 * math.pi
    base = 90.0 + float(seed % 7) * 20.0
    n = int(math.floor(seconds * SAMPLE_RATE + 0.5))  # Rust's f64::round (half away from zero); seconds >= 0
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        state = (state * LCG_MUL + LCG_INC) & MASK64
        noise = ((state >> 40) / float(1 << 24) - 0.5) * 0.01
        t = i / float(SAMPLE_RATE)
        f0 = base + 30.0 * math.sin(tau * 0.7 * t)
        voice = 0.0  # a plain left-to-right loop like Iterator::sum (Python >= 3.12's sum() compensates)
        for h in range(1, 6):
            voice += math.sin(tau * f0 * float(h) * t) / float(h)
        out[i] = 0.05 * voice + noise  # float64 -> float32, round to nearest like `as f32`
    return out


def blas_library():
    """The libblas.so.3 this process mapped (Debian's alternatives decide: reference BLAS or OpenBLAS)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
    except OSError:
        return "unknown"
    paths = sorted(os.path.realpath(p) for p in paths if "numpy" not in p and "scipy" not in p)
    return ", ".join(paths) or "none mapped"


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(ROOT / ".cache/models/speaker/pretrained.pt"),
                    help="Resemblyzer's pretrained.pt (tests/tools/install-speaker-weights.sh puts it here)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--check-input", action="store_true",
                    help="print the input's length, float64 sum and first samples (to compare with the Rust generator)")
    args = ap.parse_args()
    if args.runs < 1 or args.warmup < 0:
        sys.exit("speaker_peer: --runs must be >= 1 and --warmup >= 0")
    if not Path(args.weights).is_file():
        sys.exit(f"speaker_peer: no weights at {args.weights}; run tests/tools/install-speaker-weights.sh")

    encoder = VoiceEncoder(device="cpu", verbose=False, weights_fpath=args.weights)
    encoder.eval()
    wav = voice_like(args.seed, args.seconds)
    if args.check_input:
        bits = wav.view(np.uint32)
        print(f"input: {len(wav)} samples, sum {float(np.sum(wav.astype(np.float64))):.17g}, "
              f"head {[float(v) for v in wav[:4]]}, bits xor {int(np.bitwise_xor.reduce(bits)):#010x}, "
              f"bits sum {int(np.sum(bits.astype(np.uint64)))}", file=sys.stderr)

    def utterance():
        normalized = audio.normalize_volume(wav, audio_norm_target_dBFS, increase_only=True)
        return encoder.embed_utterance(normalized.astype(np.float32, copy=False))

    # The exact partial batch embed_utterance builds, for the forward-only timing.
    normalized = audio.normalize_volume(wav, audio_norm_target_dBFS, increase_only=True).astype(np.float32)
    wav_slices, mel_slices = encoder.compute_partial_slices(len(normalized), 1.3, 0.75)
    padded = normalized
    if wav_slices[-1].stop >= len(padded):
        padded = np.pad(padded, (0, wav_slices[-1].stop - len(padded)), "constant")
    mel = audio.wav_to_mel_spectrogram(padded)
    mels = torch.from_numpy(np.array([mel[s] for s in mel_slices]))

    def forward():
        with torch.no_grad():
            return encoder(mels)

    # Same network output both ways (guards against timing something else than embed_utterance runs).
    with torch.no_grad():
        partial = encoder(mels).numpy()
    mean = partial.mean(axis=0)
    if not np.allclose(mean / np.linalg.norm(mean), utterance(), atol=1e-6):
        sys.exit("speaker_peer: forward-only batch does not reproduce embed_utterance's embedding")

    u_wall, u_cpu = timed(utterance, args.warmup, args.runs)
    f_wall, f_cpu = timed(forward, args.warmup, args.runs)

    torch_ver = ".".join(torch.__version__.split(".")[:2])
    label = f"resemblyzer torch {torch_ver}, {torch.get_num_threads()} thread" + \
        ("s" if torch.get_num_threads() != 1 else "")
    seconds = len(wav) / SAMPLE_RATE
    secs_txt = f"{seconds:g} s"
    u_med, f_med = statistics.median(u_wall), statistics.median(f_wall)
    print(f"speaker peer ({label}): {secs_txt} utterance in {u_med * 1e3:.1f} ms -> "
          f"{seconds / u_med:.1f}x real time per core")
    print(f"speaker peer forward only ({label}): {secs_txt} utterance ({len(mel_slices)} partials) in "
          f"{f_med * 1e3:.1f} ms -> {seconds / f_med:.1f}x real time per core")
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"  torch {torch.__version__} (num_threads {torch.get_num_threads()}, interop "
          f"{torch.get_num_interop_threads()}), numpy {np.__version__}, librosa {librosa.__version__}, "
          f"python {sys.version.split()[0]} ({sys.executable}); cpus allowed {affinity}; blas: {blas_library()}",
          file=sys.stderr)
    for name, wall, cpu in (("utterance", u_wall, u_cpu), ("forward", f_wall, f_cpu)):
        print(f"  {name}: {args.runs} runs after {args.warmup} warm-ups; wall median {statistics.median(wall) * 1e3:.1f}"
              f" ms (min {min(wall) * 1e3:.1f}, max {max(wall) * 1e3:.1f}); process CPU time median "
              f"{statistics.median(cpu) * 1e3:.1f} ms", file=sys.stderr)
    print(f"  front end (gain + librosa mel + slicing) ~ {(u_med - f_med) * 1e3:.1f} ms of the utterance time; "
          f"{len(wav)} samples, {mel.shape[0]} mel frames, {len(mel_slices)} partials of 160 frames", file=sys.stderr)


if __name__ == "__main__":
    main()
