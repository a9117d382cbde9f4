#!/usr/bin/env python3
"""Intermediate values of faster-whisper 1.2.1 / CTranslate2 on the first short fixture, for debugging the Rust port.

Not a test oracle by itself (reference.json is); this is what to compare stage by stage when the Rust transcript
disagrees: audio -> log-mel -> padded encoder input -> encoder output -> decoder logits -> greedy tokens ->
word alignment. Same reference venv as make_reference.py:

    .cache/refvenv/bin/python agent/whisper/scripts/dump_internals.py

Writes agent/whisper/tests/fixtures/internals.json (kept small: slices and summary statistics, not tensors).

Things faster-whisper 1.2.1 does that differ from openai-whisper, and that the JSON makes checkable:
  * The log-mel is computed over the *unpadded* clip plus 160 zero samples (FeatureExtractor.__call__'s
    padding=160), not over clip + 30 s of zeros. So the clamp `max(log_spec, log_spec.max() - 8)` uses the
    clip's own maximum, and the frame count is (num_samples + 160) // 160 (STFT with center=True, reflect
    padding of n_fft/2, periodic Hann window of 400, the last STFT frame dropped).
  * generate_segments treats the last frame as padding (content_frames = frames - 1), slices
    features[:, seek:seek + segment_size] and zero-pads *the log-mel* to 3000 frames (audio.pad_or_trim). The
    padded frames are 0.0, not the log-mel of silence.
  * tiny.en is English-only: the SOT sequence is just <|startoftranscript|> (no language or task token), and with
    timestamps on no <|notimestamps|> is appended, so the first window's prompt is [50257].
  * CTranslate2's return_logits_vocab gives the decoder's *raw logits* after its logit processors, with
    suppressed entries set to float32's lowest value (not -inf, and not log-softmax). Log-probs below are
    log_softmax over the entries that survived, computed here in float64.
"""
import argparse
import hashlib
import json
import os
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "agent/whisper/tests/fixtures"
DEFAULT_MODEL = ROOT / ".cache/models/whisper/tiny.en"
FIRST_SHORT = "short_01_card.wav"  # the first of make_reference.py's short fixtures, by name
TIMESTAMP_BEGIN = 50363  # tiny.en and the multilingual models alike (<|notimestamps|> + 1); asserted in main()


def r(x, nd=6):
    """Rounds floats (nested) so the JSON stays small; 6 decimals is well below float32 agreement tolerances."""
    if isinstance(x, (list, tuple)):
        return [r(v, nd) for v in x]
    return round(float(x), nd)


def stats(a):
    a = np.asarray(a, dtype=np.float64)
    return dict(mean=r(a.mean(), 8), std=r(a.std(), 8), min=r(a.min()), max=r(a.max()))


def frames(feat, idx):
    """Frames as rows: {frame_index: [80 bins]} (faster-whisper's array is [80 bins, frames])."""
    return {str(i): r(feat[:, i].tolist()) for i in idx}


def token_name(hf, i, timestamp_begin):
    """tokenizer.json has no entries for the timestamp ids (>= timestamp_begin); name those like Whisper prints them."""
    name = hf.id_to_token(int(i))
    if name is None and i >= timestamp_begin:
        name = f"<|{(i - timestamp_begin) * 0.02:.2f}|>"
    return name


def top_k(logits_row, tok, k=10):
    """Top-k of one decoder step: (id, token, raw logit, log-prob over the unsuppressed entries)."""
    y = np.asarray(logits_row, dtype=np.float64)
    alive = y > np.finfo(np.float32).min / 2  # suppressed entries are float32 lowest
    lse = np.log(np.exp(y[alive] - y[alive].max()).sum()) + y[alive].max()
    order = np.argsort(-y, kind="stable")[:k]
    return dict(
        num_unsuppressed=int(alive.sum()),
        top=[dict(id=int(i), token=token_name(tok, i, TIMESTAMP_BEGIN), logit=r(y[i]), logprob=r(y[i] - lse))
             for i in order],
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--wav", type=Path, default=FIXTURES / FIRST_SHORT)
    ap.add_argument("--out", type=Path, default=FIXTURES / "internals.json")
    args = ap.parse_args()

    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio, pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    model = WhisperModel(str(args.model_dir), device="cpu", compute_type="float32", cpu_threads=1, num_workers=1)
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    hf = model.hf_tokenizer
    assert tokenizer.timestamp_begin == TIMESTAMP_BEGIN, tokenizer.timestamp_begin

    # --- audio: what transcribe(path) decodes (PyAV) vs. plain int16 / 32768 -------------------------------------
    audio = decode_audio(str(args.wav), sampling_rate=16000)
    with wave.open(str(args.wav)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    scaled = pcm.astype(np.float32) / 32768.0
    out = dict(
        about="Generated by agent/whisper/scripts/dump_internals.py; do not edit by hand.",
        faster_whisper=faster_whisper.__version__,
        ctranslate2=ctranslate2.__version__,
        compute=dict(device="cpu", compute_type="float32", cpu_threads=1),
        wav=args.wav.name,
        wav_sha256=hashlib.sha256(args.wav.read_bytes()).hexdigest(),
        audio=dict(
            num_samples=int(audio.shape[0]),
            decode_audio_equals_int16_div_32768=bool(np.array_equal(audio, scaled)),
            first_samples_int16=pcm[:8].tolist(),
            stats=stats(audio),
        ),
    )

    # --- log-mel, exactly as transcribe() computes it ------------------------------------------------------------
    fe = FeatureExtractor(feature_size=model.model.n_mels)
    feat = fe(audio)  # padding=160 default
    assert np.array_equal(feat, model.feature_extractor(audio)), "model's feature extractor differs from default"
    n = feat.shape[1]
    mid = [n // 2, n // 2 + 1]
    filters = fe.mel_filters
    out["mel"] = dict(
        params=dict(n_fft=fe.n_fft, hop_length=fe.hop_length, n_mels=int(filters.shape[0]), sample_rate=16000,
                    tail_padding_samples=160, stft="center=True, reflect pad 200, periodic hann(400), last frame dropped",
                    log="log10(clip(mel, 1e-10)); max(x, x.max() - 8); (x + 4) / 4; filters: Slaney mel, librosa-style"),
        shape=list(feat.shape),
        dtype=str(feat.dtype),
        expected_frames_formula="(num_samples + 160) // 160",
        first_5_frames=frames(feat, range(5)),
        middle_frames=frames(feat, mid),
        last_frame=frames(feat, [n - 1]),
        stats=stats(feat),
        filters=dict(
            shape=list(filters.shape),
            sum=r(filters.astype(np.float64).sum(), 8),
            # Nonzero weights of a few rows, as (fft_bin, weight): enough to pin the Slaney mel scale and norm.
            rows={str(b): [[int(j), r(filters[b, j], 9)] for j in np.nonzero(filters[b])[0]] for b in (0, 1, 40, 79)},
        ),
    )

    # --- encoder input: window 0 as generate_segments builds it ---------------------------------------------------
    content_frames = n - 1
    segment_size = min(fe.nb_max_frames, content_frames)
    seg = pad_or_trim(feat[:, 0:segment_size])
    out["encoder_input"] = dict(
        content_frames=content_frames,
        segment_size=segment_size,
        shape=list(seg.shape),
        pad_value=0.0,
        note="features[:, seek:seek+segment_size] (the final mel frame is excluded), then zero-padded to 3000",
        first_5_frames=frames(seg, range(5)),
        boundary_frames=frames(seg, [segment_size - 1, segment_size]),
        stats=stats(seg),
    )

    # --- encoder output --------------------------------------------------------------------------------------------
    enc = model.encode(seg)  # = model.model.encode(StorageView([1, 80, 3000]))
    e = np.array(enc)
    out["encoder_output"] = dict(
        shape=list(e.shape),
        first_8={str(p): r(e[0, p, :8].tolist()) for p in (0, 1, 100, 1499)},
        stats=stats(e),
        stats_first_323_positions=stats(e[0, : (segment_size + 1) // 2]),  # the audio part: 2 mel frames/position
    )

    # --- decoder ---------------------------------------------------------------------------------------------------
    prompt = model.get_prompt(tokenizer, [], without_timestamps=False)
    suppress = list(get_suppressed_tokens(tokenizer, [-1]))
    res = model.model.generate(
        enc, [prompt], beam_size=1, patience=1, length_penalty=1, repetition_penalty=1, no_repeat_ngram_size=0,
        max_length=448, return_scores=True, return_logits_vocab=True, return_no_speech_prob=True,
        suppress_blank=True, suppress_tokens=suppress, max_initial_timestamp_index=50,
    )[0]
    toks = res.sequences_ids[0]
    steps = [np.array(s) for s in res.logits[0]]  # one StorageView [vocab] per generated token
    # Unprocessed first step: with <|notimestamps|> there are no timestamp rules, and with no suppression at all
    # every logit comes back as computed, so this checks the decoder alone.
    raw = model.model.generate(enc, [prompt + [tokenizer.no_timestamps]], beam_size=1, max_length=448,
                               return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])[0]
    raw0 = np.asarray(raw.logits[0][0], dtype=np.float64)
    out["decoder"] = dict(
        prompt=prompt,
        prompt_tokens=[token_name(hf, t, TIMESTAMP_BEGIN) for t in prompt],
        sot_sequence=list(tokenizer.sot_sequence),
        special=dict(sot=tokenizer.sot, eot=tokenizer.eot, sot_prev=tokenizer.sot_prev,
                     no_timestamps=tokenizer.no_timestamps, timestamp_begin=tokenizer.timestamp_begin,
                     no_speech=tokenizer.no_speech, model_vocab_size=int(len(steps[0])),
                     tokenizer_json_vocab_size=hf.get_vocab_size(with_added_tokens=True),
                     note="tokenizer.json has no timestamp tokens; ids >= timestamp_begin are (id - 50363) * 0.02 s"),
        generate_args=dict(beam_size=1, max_length=448, suppress_blank=True, max_initial_timestamp_index=50,
                           suppress_tokens=suppress),
        greedy_tokens=toks,
        greedy_text=tokenizer.decode([t for t in toks if t < tokenizer.eot]),
        greedy_with_timestamps=tokenizer.decode_with_timestamps(toks),
        score=r(res.scores[0], 8),
        score_note="cumulative logprob (incl. <|endoftext|>) / len(tokens); faster-whisper's avg_logprob = "
                   "score * len / (len + 1)",
        no_speech_prob=r(res.no_speech_prob, 8),
        no_speech_note="softmax of the logits at the <|startoftranscript|> position, entry <|nospeech|>",
        num_steps=len(steps),
        steps_processed=[dict(step=i, chosen=int(toks[i]) if i < len(toks) else tokenizer.eot, **top_k(steps[i], hf))
                         for i in range(3)],
        steps_processed_note="step 0 only allows timestamps <= 1.0 s (max_initial_timestamp_index=50): 51 entries",
        step0_unprocessed_notimestamps=dict(
            prompt=prompt + [tokenizer.no_timestamps],
            stats=stats(raw0),
            **top_k(raw0, hf),
        ),
    )

    # Cross-check: the decode above must be the one make_reference.py recorded through transcribe().
    ref_path = FIXTURES / "reference.json"
    if ref_path.exists() and args.wav.parent == FIXTURES:
        ref = json.loads(ref_path.read_text())["files"].get(args.wav.name)
        if ref is not None:
            assert ref["windows"][0]["prompt"] == prompt, "prompt differs from reference.json"
            assert ref["windows"][0]["tokens"] == toks, "greedy tokens differ from reference.json"
            out["decoder"]["matches_reference_json"] = True

    # --- word alignment (what add_word_timestamps asks CTranslate2 for) --------------------------------------------
    text_tokens = [t for t in toks if t < tokenizer.eot]
    al = model.model.align(enc, tokenizer.sot_sequence, [text_tokens], segment_size, median_filter_width=7)[0]
    pairs = np.asarray(al.alignments)
    jumps = np.pad(np.diff(pairs[:, 0]), (1, 0), constant_values=1).astype(bool)
    out["alignment"] = dict(
        call="model.align(encoder_output, sot_sequence, [text_tokens], num_frames=segment_size, median_filter_width=7)",
        text_tokens=text_tokens,
        text_token_probs=r(list(al.text_token_probs)),
        path_len=int(len(pairs)),
        # The DTW path compressed to where the text index advances; faster-whisper turns these time indices into
        # seconds with tokens_per_second = 50 (0.02 s per encoder position).
        jump_text_indices=pairs[jumps, 0].tolist(),
        jump_time_indices=pairs[jumps, 1].tolist(),
    )

    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"dump_internals: wrote {args.out.relative_to(ROOT)} ({args.out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
