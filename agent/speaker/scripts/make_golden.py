#!/usr/bin/env python3
"""Writes the speaker-encoder golden vectors from the original Resemblyzer code (one-off dev step, not CI).

The Rust CPU path (agent/speaker) must reproduce these within 1e-4; `cargo test -p infergate-speaker` reads the
JSON files this script writes under agent/speaker/tests/golden/.

Environment used for the committed goldens (Debian bookworm, 2026-11-22):
    apt-get install -y python3-torch python3-venv          # torch 1.13.1+dfsg (CPU), numpy 1.24 for /usr/bin/python3
    /usr/bin/python3 -m venv --system-site-packages /tmp/golden-venv
    /tmp/golden-venv/bin/pip install librosa==0.11.0
    /tmp/golden-venv/bin/pip install --no-deps resemblyzer==0.1.4
    # librosa pulled numpy 2.x, which Debian's torch 1.13 cannot exchange arrays with; pin a numpy 1.x stack:
    /tmp/golden-venv/bin/pip install numpy==1.26.4 scipy==1.13.1 numba==0.60.0
    bash tests/tools/install-speaker-weights.sh              # .cache/models/speaker/pretrained.pt, hash-checked
    /tmp/golden-venv/bin/python agent/speaker/scripts/make_golden.py \
        --weights .cache/models/speaker/pretrained.pt --out agent/speaker/tests/golden

`webrtcvad` (a dependency of resemblyzer.audio, used only by trim_long_silences) is not installed; a stub module
is put in sys.modules before the import because silence trimming is not part of what the goldens cover.

librosa 0.11 pads STFT frames with zeros (pad_mode="constant", the default since librosa 0.10); librosa < 0.10
padded with reflection. The Rust port follows 0.11, which is what `pip install resemblyzer` resolves to today.

Inputs are synthesised by a tiny deterministic generator (64-bit LCG noise + sines via math.sin, computed in
float64 and rounded to float32) that agent/speaker/tests/golden.rs re-implements, so no audio is committed.
"""
import argparse
import json
import math
import sys
import types
from pathlib import Path

sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from resemblyzer import VoiceEncoder, audio  # noqa: E402
from resemblyzer.hparams import audio_norm_target_dBFS  # noqa: E402

SR = 16000
LCG_MUL = 6364136223846793005
LCG_INC = 1442695040888963407
MASK64 = (1 << 64) - 1

# name, seconds, seed, noise amplitude, [(freq Hz, amplitude, phase)], tremolo Hz (0 = none)
CASES = [
    ("noise_sines_2s", 2.0, 1, 0.02, [(220.0, 0.05, 0.0), (440.0, 0.03, 0.5), (1000.0, 0.02, 1.0)], 0.0),
    ("quiet_chirpish_3s", 3.3, 7, 0.002, [(150.0, 0.004, 0.2), (310.0, 0.003, 0.9), (2500.0, 0.001, 2.0)], 3.0),
    ("loud_no_gain_2_5s", 2.5, 42, 0.3, [(120.0, 0.4, 0.0), (3000.0, 0.1, 0.3)], 5.0),
    ("short_0_8s", 0.8, 99, 0.05, [(500.0, 0.1, 0.0)], 0.0),
]
MEL_FRAMES_KEPT = 3  # first frames, plus the last frame and one in the middle

SLICE_LENGTHS = [1, 159, 160, 16000, 25599, 25600, 25601, 28000, 30000, 32000, 37920, 40000, 44320, 80000,
                 123457, 160000]


def synth(seconds, seed, noise_amp, sines, tremolo_hz):
    n = int(round(seconds * SR))
    state = seed & MASK64
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        state = (state * LCG_MUL + LCG_INC) & MASK64
        uniform = (state >> 40) / float(1 << 24)
        x = noise_amp * (2.0 * uniform - 1.0)
        for freq, amp, phase in sines:
            x += amp * math.sin(2.0 * math.pi * freq * i / SR + phase)
        if tremolo_hz > 0.0:
            x *= 0.75 + 0.25 * math.sin(2.0 * math.pi * tremolo_hz * i / SR)
        out[i] = x
    return out


def floats(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    encoder = VoiceEncoder(device="cpu", verbose=False, weights_fpath=args.weights)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    for name, seconds, seed, noise_amp, sines, tremolo in CASES:
        wav = synth(seconds, seed, noise_amp, sines, tremolo)
        normalized = audio.normalize_volume(wav, audio_norm_target_dBFS, increase_only=True).astype(np.float32)
        peak = int(np.argmax(np.abs(wav)))
        gain = float(normalized[peak]) / float(wav[peak])
        embed, partials, wav_slices = encoder.embed_utterance(normalized, return_partials=True)
        # The mel spectrogram of exactly the padded waveform embed_utterance used.
        _, mel_slices = encoder.compute_partial_slices(len(normalized), 1.3, 0.75)
        padded = normalized
        if wav_slices[-1].stop >= len(padded):
            padded = np.pad(padded, (0, wav_slices[-1].stop - len(padded)), "constant")
        mel = audio.wav_to_mel_spectrogram(padded)
        keep = sorted(set(list(range(MEL_FRAMES_KEPT)) + [mel.shape[0] // 2, mel.shape[0] - 1]))
        doc = {
            "name": name,
            "generator": {"seconds": seconds, "seed": seed, "noise_amp": noise_amp,
                          "sines": [list(s) for s in sines], "tremolo_hz": tremolo},
            "n_samples": int(len(wav)),
            "input_sum": float(np.sum(wav.astype(np.float64))),
            "input_head": floats(wav[:4]),
            "gain": gain,
            "n_mel_frames": int(mel.shape[0]),
            "mel_frames": {str(i): floats(mel[i]) for i in keep},
            "mel_slices": [[int(s.start), int(s.stop)] for s in mel_slices],
            "partial_embeddings": [floats(p) for p in partials],
            "embedding": floats(embed),
        }
        (out_dir / f"{name}.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{name}: {len(partials)} partials, {mel.shape[0]} mel frames, gain {gain:.6f}")

    slices = []
    for n in SLICE_LENGTHS:
        wav_s, mel_s = VoiceEncoder.compute_partial_slices(n, 1.3, 0.75)
        slices.append({"n_samples": n, "mel": [[int(s.start), int(s.stop)] for s in mel_s],
                       "wav": [[int(s.start), int(s.stop)] for s in wav_s]})
    meta = {
        "resemblyzer": "0.1.4",
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "stft_pad_mode": "constant",
        "partial_slices": slices,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
