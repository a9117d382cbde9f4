#!/usr/bin/env python3
"""Writes the decoder's test fixtures: short tones in every upload format OpenAI accepts.

Each file is a sine of a known frequency and length, so a test can check the decoded duration and the dominant
frequency without a reference decoder. Files stay under 40 KB so they can be committed.

Needs PyAV (which bundles FFmpeg with libmp3lame and libopus) and numpy:
    python3 -m venv /tmp/avvenv && /tmp/avvenv/bin/pip install av numpy
and sox with libvorbis for Ogg/Vorbis (FFmpeg's own Vorbis encoder is experimental and stereo-only).

Run from anywhere: /tmp/avvenv/bin/python agent/audio/scripts/make_fixtures.py
The table at the bottom is the contract with tests/fixtures.rs: name, rate, channels, seconds, tone.
"""
import os
import subprocess
import sys

import av
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
AMPLITUDE = 0.5
ADPCM_SECONDS = 16 * 2041 / 22050


def tone(rate, seconds, freq, channels):
    """Planar float32 [channels][n]; the right channel is half as loud so a mixdown is visible."""
    t = np.arange(int(round(rate * seconds))) / rate
    mono = (AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([mono if c == 0 else mono * 0.5 for c in range(channels)])


def encode(path, container, codec, rate, channels, seconds, freq, sample_fmt, bit_rate=None, options=None):
    planar = tone(rate, seconds, freq, channels)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(path, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        if options:
            stream.options = options
        stream.format = sample_fmt
        # Feed 1024-sample frames in packed float; PyAV's resampler converts to the encoder's format.
        step = 1024
        for start in range(0, planar.shape[1], step):
            chunk = planar[:, start:start + step]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.T.reshape(1, -1)), format="flt",
                                               layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def raw_pcm(path, seconds, freq):
    samples = np.clip(tone(16000, seconds, freq, 1)[0] * 32767, -32768, 32767).astype("<i2")
    with open(path, "wb") as f:
        f.write(samples.tobytes())


def sox_vorbis(path, rate, channels, seconds, freq):
    # sox's synth makes a full-scale sine: `vol` brings it to AMPLITUDE.
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", str(channels), "-C", "0", path,
                    "synth", str(seconds), "sine", str(freq), "vol", str(AMPLITUDE)], check=True)


FIXTURES = [
    # name,                    rate,  ch, seconds, tone Hz, how
    ("pcm_s16_16k.wav",       16000, 1, 1.0, 440, lambda p: encode(p, "wav", "pcm_s16le", 16000, 1, 1.0, 440, "s16")),
    ("pcm_s24_8k.wav",         8000, 1, 1.2, 1000, lambda p: encode(p, "wav", "pcm_s24le", 8000, 1, 1.2, 1000, "s32")),
    ("pcm_f32_8k.wav",         8000, 1, 1.0, 700, lambda p: encode(p, "wav", "pcm_f32le", 8000, 1, 1.0, 700, "flt")),
    ("pcm_s16_44k_stereo.wav", 44100, 2, 0.2, 1000,
     lambda p: encode(p, "wav", "pcm_s16le", 44100, 2, 0.2, 1000, "s16")),
    # IMA ADPCM codes whole blocks of 2041 samples and pads the last one: 16 blocks, so the length is exact.
    ("adpcm_ima_22k.wav",     22050, 1, ADPCM_SECONDS, 500,
     lambda p: encode(p, "wav", "adpcm_ima_wav", 22050, 1, ADPCM_SECONDS, 500, "s16p")),
    ("tone_16k.pcm",          16000, 1, 0.8, 600, lambda p: raw_pcm(p, 0.8, 600)),
    ("tone_16k.flac",         16000, 1, 1.5, 440, lambda p: encode(p, "flac", "flac", 16000, 1, 1.5, 440, "s16")),
    ("tone_44k.mp3",          44100, 1, 1.5, 1000,
     lambda p: encode(p, "mp3", "libmp3lame", 44100, 1, 1.5, 1000, "fltp", bit_rate=64000)),
    ("tone_48k_aac.m4a",      48000, 1, 1.5, 880,
     lambda p: encode(p, "ipod", "aac", 48000, 1, 1.5, 880, "fltp", bit_rate=64000)),
    ("tone_44k_stereo_vorbis.ogg", 44100, 2, 1.5, 660, lambda p: sox_vorbis(p, 44100, 2, 1.5, 660)),
    ("tone_48k_opus.ogg",     48000, 1, 1.5, 1000,
     lambda p: encode(p, "ogg", "libopus", 48000, 1, 1.5, 1000, "flt", bit_rate=32000)),
    ("tone_48k_opus.webm",    48000, 1, 1.5, 750,
     lambda p: encode(p, "webm", "libopus", 48000, 1, 1.5, 750, "flt", bit_rate=32000)),
    # Three minutes of silence in ~34 KB: the length-cap ("decompression bomb") tests. Its
    # STREAMINFO states the length; the test clears it to exercise the cap enforced while decoding.
    ("silence_16k_3min.flac", 16000, 1, 180.0, 0,
     lambda p: encode(p, "flac", "flac", 16000, 1, 180.0, 0, "s16")),
    ("tone_48k_stereo_opus.webm", 48000, 2, 1.0, 1200,
     lambda p: encode(p, "webm", "libopus", 48000, 2, 1.0, 1200, "flt", bit_rate=48000)),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, _rate, _channels, _seconds, _freq, make in FIXTURES:
        path = os.path.join(OUT, name)
        make(path)
        size = os.path.getsize(path)
        if size > 40_000:
            sys.exit(f"{name} is {size} bytes: fixtures stay under 40 KB")
        print(f"{name:28} {size:6} bytes")


if __name__ == "__main__":
    main()
