#!/usr/bin/env python3
"""Peer benchmark (not a test): faster-whisper 1.2.1 (CTranslate2, CPU) on the infergate-whisper fixtures, to put
next to the Rust crate's own bench.

    bash tests/tools/install-whisper-weights.sh
    .cache/refvenv/bin/python tests/bench/whisper_peer.py --model-dir .cache/models/whisper/tiny.en

It needs faster-whisper, which the test venv does not carry; use the reference venv that
agent/whisper/scripts/make_reference.py documents (python3 -m venv .cache/refvenv &&
.cache/refvenv/bin/pip install faster-whisper==1.2.1 numpy).

What is timed: transcribe() on an in-memory float32 waveform, consumed to the last segment (faster-whisper's
segments are a lazy generator, so the work happens while iterating). That covers log-mel, encoder, greedy decoding,
the 30 s seek loop and, when on, word alignment; it excludes model loading and WAV decoding, which the Rust side
does not repeat per request either. Settings mirror reference.json so both sides do the same work: one CPU thread
(cpu_threads=1, num_workers=1), beam_size=1, best_of=1, temperature 0.0 only, condition_on_previous_text, no VAD,
language "en"; word_timestamps both off and on; compute types float32 and int8. Each case runs once untimed
(warm-up: first-call allocations, page faults in the weights) and then --runs times; the median is reported.

Output: one JSON object per line on stdout, per (compute_type, word_timestamps, file), plus one "short_total" line
per (compute_type, word_timestamps) over all short_*.wav clips together. rtf = audio seconds / compute seconds
(higher is faster: 10 means ten seconds of audio per second of CPU time), as in the Rust bench. Human-readable
progress goes to stderr. `--cpu N` pins the process to one core (like tests/bench/run_all.sh's taskset); on a
shared machine compare runs at similar load.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "agent/whisper/tests/fixtures"

# Same decoding setup as agent/whisper/scripts/make_reference.py (word_timestamps is the benchmark's variable).
OPTIONS = dict(language="en", task="transcribe", beam_size=1, best_of=1, temperature=[0.0],
               condition_on_previous_text=True, without_timestamps=False, vad_filter=False)


def load_wav(path):
    """int16 PCM / 32768, which is bit-identical to what faster-whisper's PyAV decoder yields for these files."""
    with wave.open(str(path)) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            sys.exit(f"whisper_peer: {path} is not 16 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def run_once(model, audio, word_timestamps):
    t0 = time.perf_counter()
    segments, _ = model.transcribe(audio, word_timestamps=word_timestamps, **OPTIONS)
    text = "".join(s.text for s in segments).strip()  # iterating does the work
    return time.perf_counter() - t0, text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / ".cache/models/whisper/tiny.en",
                    help="CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json, vocabulary.txt)")
    ap.add_argument("--fixtures", type=Path, default=FIXTURES, help="directory with short_*.wav and long_*.wav")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per case (median reported)")
    ap.add_argument("--compute-types", nargs="+", default=["float32", "int8"])
    ap.add_argument("--word-timestamps", nargs="+", choices=["off", "on"], default=["off", "on"])
    ap.add_argument("--threads", type=int, default=1, help="CTranslate2 cpu_threads (intra-op)")
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU core")
    args = ap.parse_args()

    if not (args.model_dir / "model.bin").is_file():
        sys.exit(f"whisper_peer: no model.bin in {args.model_dir}; run tests/tools/install-whisper-weights.sh")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel

    files = sorted(args.fixtures.glob("long_*.wav")) + sorted(args.fixtures.glob("short_*.wav"))
    if not files:
        sys.exit(f"whisper_peer: no long_*.wav / short_*.wav in {args.fixtures}")
    audio = {p.name: load_wav(p) for p in files}
    reference = {}
    ref_path = args.fixtures / "reference.json"
    if ref_path.exists():
        reference = {n: f["text"] for n, f in json.loads(ref_path.read_text())["files"].items()}

    common = dict(
        bench="whisper_peer",
        impl="faster-whisper",
        version=faster_whisper.__version__,
        ctranslate2=ctranslate2.__version__,
        model=args.model_dir.name,
        cpu_threads=args.threads,
        beam_size=1,
        machine=platform.machine(),
        pinned_cpu=args.cpu,
    )
    for compute_type in args.compute_types:
        t0 = time.perf_counter()
        model = WhisperModel(str(args.model_dir), device="cpu", compute_type=compute_type,
                             cpu_threads=args.threads, num_workers=1)
        load_s = time.perf_counter() - t0
        print(f"[{compute_type}] model loaded in {load_s:.2f} s", file=sys.stderr)
        for wt in args.word_timestamps:
            short_audio = short_compute = 0.0
            for name, samples in audio.items():
                audio_s = len(samples) / 16000
                run_once(model, samples, wt == "on")  # warm-up, untimed
                times, texts = [], set()
                for _ in range(args.runs):
                    dt, text = run_once(model, samples, wt == "on")
                    times.append(dt)
                    texts.add(text)
                median = statistics.median(times)
                line = dict(
                    common, compute_type=compute_type, word_timestamps=wt == "on", file=name,
                    audio_s=round(audio_s, 4), runs_s=[round(t, 4) for t in times], median_s=round(median, 4),
                    rtf=round(audio_s / median, 3), model_load_s=round(load_s, 3),
                    # A list when runs disagreed (they should not: one thread, greedy, deterministic kernels).
                    text=texts.pop() if len(texts) == 1 else sorted(texts),
                )
                # float32 should reproduce reference.json's text exactly; int8 may drift on some clips.
                line["matches_reference"] = reference.get(name) == line["text"] if name in reference else None
                print(json.dumps(line, ensure_ascii=False), flush=True)
                print(f"[{compute_type} words={wt}] {name}: {audio_s:.1f} s audio, median {median * 1000:.0f} ms, "
                      f"rtf {audio_s / median:.1f}", file=sys.stderr)
                if name.startswith("short_"):
                    short_audio += audio_s
                    short_compute += median
            if short_compute:
                print(json.dumps(dict(common, compute_type=compute_type, word_timestamps=wt == "on",
                                      file="short_total", audio_s=round(short_audio, 4),
                                      median_s=round(short_compute, 4), rtf=round(short_audio / short_compute, 3)),
                                 ensure_ascii=False), flush=True)
        del model


if __name__ == "__main__":
    main()
