#!/usr/bin/env python3
"""Reference transcripts for infergate-whisper, from faster-whisper 1.2.1 (CTranslate2) on Whisper tiny.en.

One-off and not part of CI: the Rust tests read the committed tests/fixtures/reference.json and never run Python.
faster-whisper is deliberately kept out of the test venv (it pulls ctranslate2, onnxruntime and PyAV), so run it
from a separate reference venv:

    python3 -m venv .cache/refvenv && .cache/refvenv/bin/pip install faster-whisper==1.2.1 numpy
    bash tests/tools/install-whisper-weights.sh
    .cache/refvenv/bin/python agent/whisper/scripts/make_reference.py --synth   # (re)make the WAVs, then reference
    .cache/refvenv/bin/python agent/whisper/scripts/make_reference.py           # reference only, WAVs as committed

Fixtures are English sentences written for this project, spoken by espeak-ng (en-us, 160 wpm) and converted by
sox to 16 kHz mono 16-bit PCM without dither (`-D`), so re-synthesis on the same espeak-ng/sox gives the same
samples; the WAVs are committed anyway (about 2.4 MB), because other espeak-ng builds do not. short_*.wav are single
sentences of 4-7 s; long_meeting.wav is ~44 s of sentences separated by 0.4 s of silence, so decoding has to
cross the 30 s window boundary (seek to the last timestamp, carry the previous text as prompt).

Decoding settings are the deterministic core of faster-whisper that the Rust port reproduces: greedy
(beam_size=1, best_of=1), a single temperature 0.0 (so no fallback re-decode can kick in and mask a divergence),
condition_on_previous_text, timestamps on, word timestamps on, no VAD, language forced to "en", float32 on one
CPU thread (CTranslate2's multi-threaded GEMMs can change the last bits, and so argmax ties). The int8 text is
recorded too (text_int8), only to show how much quantisation alone moves the output. Everything else is
faster-whisper's defaults, listed under "options" in the JSON.

Per file the JSON holds: text (segments joined, stripped), duration, the spoken source text, the WAV's sha256,
segments (start/end/text/tokens/avg_logprob/no_speech_prob/compression_ratio/seek and words), and "windows": one
entry per 30 s decoding window with the exact prompt token ids faster-whisper fed the decoder and the tokens it got
back, which is what to diff first when the Rust seek loop or prompt conditioning disagrees. "words_off" repeats
text/segments/windows for word_timestamps=False (float32), because word timestamps move the seek (see below).
"""
import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "agent/whisper/tests/fixtures"
DEFAULT_MODEL = ROOT / ".cache/models/whisper/tiny.en"
SR = 16000
VOICE, WPM = "en-us", 160
PAUSE_S = 0.4

# name -> sentences. Short clips cover digits spoken as words, a personal name and a place, a question, a date and
# time, and domain vocabulary. Single sentences each, so every clip fits one window.
SHORT = {
    "short_01_card.wav": [
        "My card number is four one one one, two two two two, three three three three, four four four four."
    ],
    "short_02_name.wav": ["Hello, my name is Margaret Thompson, and I am calling from the Seattle office."],
    "short_03_question.wav": ["What time does the last train to Boston leave on Friday evening?"],
    "short_04_date.wav": ["Please move the budget review to March twenty third at half past three."],
    "short_05_agent.wav": ["The agent schedules each request onto the node with the most free memory."],
}
LONG = {
    "long_meeting.wav": [
        "Good morning everyone, and welcome to the weekly planning meeting.",
        "First, the new build server arrived on Tuesday and it is already running the nightly tests.",
        "Second, we still need a volunteer to update the installation guide before the release.",
        "Sarah offered to review the security report, but she will be away until the fourteenth.",
        "The customer in Denver asked whether the service can handle two thousand calls per minute.",
        "We measured about eighteen hundred last week, so we should add one more machine.",
        "Does anyone object to moving the release from Thursday to the following Monday?",
        "If not, I will send the updated schedule this afternoon.",
        "Thank you all, and see you next week.",
    ]
}
ALL = {**SHORT, **LONG}

# The deterministic decoding setup the Rust port must match (see the module docstring).
OPTIONS = dict(
    language="en",
    task="transcribe",
    beam_size=1,
    best_of=1,
    temperature=[0.0],
    condition_on_previous_text=True,
    without_timestamps=False,
    word_timestamps=True,
    vad_filter=False,
)


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def synth(name, sentences, out_dir):
    """espeak-ng each sentence (22.05 kHz), join with silence, resample to 16 kHz mono s16 without dither."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i, sentence in enumerate(sentences):
            raw = os.path.join(tmp, f"s{i}.wav")
            subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(WPM), "-w", raw, sentence], check=True)
            if parts:
                # The silence has to match espeak-ng's format (22050 Hz mono s16) for sox to concatenate. -D here
                # too: sox treats the null input as 32-bit and would dither the "silence" with random noise.
                gap = os.path.join(tmp, f"gap{i}.wav")
                subprocess.run(["sox", "-D", "-n", "-r", "22050", "-c", "1", "-b", "16", gap, "trim", "0", str(PAUSE_S)],
                               check=True)
                parts.append(gap)
            parts.append(raw)
        # Written next to the target and renamed, so an interrupted run never leaves a truncated fixture.
        tmp_out = out_dir / f".{name}.tmp.wav"
        # -D: no dither, so the output is a pure function of espeak-ng's samples (sox dithers by default when
        # resampling to 16 bits, which would add noise that is not a function of the sentences).
        subprocess.run(["sox", "-D", *parts, "-r", str(SR), "-c", "1", "-b", "16", "-e", "signed-integer",
                        str(tmp_out)], check=True)
        os.replace(tmp_out, out_dir / name)


def wav_duration(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2, f"{path}: not 16k mono s16"
        return w.getnframes() / SR


class WindowRecorder:
    """Wraps WhisperModel.generate_with_fallback to log every decoding window's prompt and result.

    generate_segments calls self.generate_with_fallback(encoder_output, prompt, tokenizer, options) once per window;
    an instance attribute shadows the method, so this sees exactly what faster-whisper sent. seek/segment_size are
    read from the caller's frame because generate_with_fallback is not given them (fine for a reference script;
    asserted, so a faster-whisper refactor fails loudly instead of recording nonsense).
    """

    def __init__(self, model):
        self.model = model
        self.inner = model.generate_with_fallback
        self.windows = []
        model.generate_with_fallback = self

    def __call__(self, encoder_output, prompt, tokenizer, options):
        caller = sys._getframe(1).f_locals
        assert "seek" in caller and "segment_size" in caller, "faster-whisper internals changed"
        result, avg_logprob, temperature, compression_ratio = self.inner(encoder_output, prompt, tokenizer, options)
        self.windows.append(dict(
            seek=int(caller["seek"]),
            segment_size=int(caller["segment_size"]),
            prompt=[int(t) for t in prompt],
            tokens=[int(t) for t in result.sequences_ids[0]],
            avg_logprob=float(avg_logprob),
            no_speech_prob=float(result.no_speech_prob),
            temperature=float(temperature),
            compression_ratio=float(compression_ratio),
        ))
        return result, avg_logprob, temperature, compression_ratio


def transcribe(model, path, record_windows, **overrides):
    recorder = WindowRecorder(model) if record_windows else None
    try:
        segments, info = model.transcribe(str(path), **{**OPTIONS, **overrides})
        segments = list(segments)  # the generator does the decoding; consume it inside the try
    finally:
        if recorder is not None:
            del model.generate_with_fallback  # back to the class method
    return segments, info, (recorder.windows if recorder else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--synth", action="store_true", help="regenerate the WAV fixtures with espeak-ng + sox first")
    ap.add_argument("--out", type=Path, default=FIXTURES / "reference.json")
    args = ap.parse_args()

    FIXTURES.mkdir(parents=True, exist_ok=True)
    if args.synth:
        for name, sentences in ALL.items():
            synth(name, sentences, FIXTURES)
    missing = [n for n in ALL if not (FIXTURES / n).exists()]
    if missing:
        sys.exit(f"make_reference: missing fixtures {missing}; run with --synth")

    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    f32 = WhisperModel(str(args.model_dir), device="cpu", compute_type="float32", cpu_threads=1, num_workers=1)
    i8 = WhisperModel(str(args.model_dir), device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)
    tok = Tokenizer(f32.hf_tokenizer, f32.model.is_multilingual, task="transcribe", language="en")

    files = {}
    for name in sorted(ALL):
        path = FIXTURES / name
        segments, info, windows = transcribe(f32, path, record_windows=True)
        segments_i8, _, _ = transcribe(i8, path, record_windows=False)
        # word_timestamps changes more than the words: after a window that does not end on a single timestamp,
        # faster-whisper seeks to the last word's end instead of the last timestamp token, so the next window
        # starts elsewhere. Record the word-less path too (float32), for the Rust fast path.
        segments_nw, _, windows_nw = transcribe(f32, path, record_windows=True, word_timestamps=False)
        text = "".join(s.text for s in segments).strip()
        text_i8 = "".join(s.text for s in segments_i8).strip()
        text_nw = "".join(s.text for s in segments_nw).strip()
        files[name] = dict(
            source_text=" ".join(ALL[name]),
            wav_sha256=sha256_file(path),
            duration=info.duration,
            num_samples=round(wav_duration(path) * SR),
            text=text,
            text_int8=text_i8,
            int8_matches_float32=text == text_i8,
            segments=[
                dict(
                    id=s.id,
                    seek=s.seek,
                    start=s.start,
                    end=s.end,
                    text=s.text,
                    tokens=list(s.tokens),
                    temperature=s.temperature,
                    avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob,
                    compression_ratio=s.compression_ratio,
                    words=[dict(word=w.word, start=w.start, end=w.end, probability=w.probability) for w in s.words],
                )
                for s in segments
            ],
            windows=windows,
            words_off=dict(
                text=text_nw,
                segments=[dict(seek=s.seek, start=s.start, end=s.end, text=s.text, tokens=list(s.tokens))
                          for s in segments_nw],
                windows=windows_nw,
            ),
        )
        print(f"{name}: {text!r}" + ("" if text == text_i8 else f"\n   int8: {text_i8!r}")
              + ("" if text == text_nw else f"\n   words off: {text_nw!r}"), file=sys.stderr)

    model_files = {n: sha256_file(args.model_dir / n)
                   for n in ("model.bin", "tokenizer.json", "vocabulary.txt", "config.json")}
    doc = dict(
        about="Generated by agent/whisper/scripts/make_reference.py; do not edit by hand.",
        generator=dict(
            faster_whisper=faster_whisper.__version__,
            ctranslate2=ctranslate2.__version__,
            python=platform.python_version(),
            machine=platform.machine(),
            espeak_ng=subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip(),
        ),
        model=dict(name="tiny.en", files_sha256=model_files),
        compute=dict(device="cpu", compute_type="float32", cpu_threads=1, int8_compute_type="int8"),
        options=dict(
            OPTIONS,
            # faster-whisper defaults that are in effect (and that the Rust port must mirror):
            patience=1.0, length_penalty=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
            compression_ratio_threshold=2.4, log_prob_threshold=-1.0, no_speech_threshold=0.6,
            prompt_reset_on_temperature=0.5, initial_prompt=None, prefix=None, suppress_blank=True,
            max_initial_timestamp=1.0, max_initial_timestamp_index=50, max_length=448,
            prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
            hallucination_silence_threshold=None, chunk_length=30,
            suppress_tokens=list(get_suppressed_tokens(tok, [-1])),
        ),
        special_tokens=dict(
            sot=tok.sot, eot=tok.eot, sot_prev=tok.sot_prev, no_timestamps=tok.no_timestamps,
            timestamp_begin=tok.timestamp_begin, no_speech=tok.no_speech, sot_sequence=list(tok.sot_sequence),
            first_window_prompt=f32.get_prompt(tok, [], without_timestamps=False),
        ),
        fixtures=dict(voice=VOICE, wpm=WPM, pause_s=PAUSE_S, sample_rate=SR,
                      synth="espeak-ng -v en-us -s 160 -w s.wav TEXT; sox -D parts... -r 16000 -c 1 -b 16 out.wav"),
        files=files,
    )
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"make_reference: wrote {args.out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
