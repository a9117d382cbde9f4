"""Merges interleaved whisper.sh rounds: one JSON line per case (engine, compute type, word times, file), its
time the median over the rounds, in each side's own line format (what report.py reads)."""
import json, statistics, sys
cases = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        o = json.loads(line)
        key = (o.get("engine") or o.get("impl"), o.get("compute_type"), bool(o.get("word_timestamps")), o.get("file"))
        cases.setdefault(key, []).append(o)
for runs in cases.values():
    field = "median_seconds" if "median_seconds" in runs[0] else "median_s"
    o = dict(runs[-1])
    o[field] = statistics.median(r[field] for r in runs)
    audio = o.get("audio_seconds") or o.get("audio_s")
    o["rtf"] = audio / o[field] if audio and o[field] else None
    o["rounds"] = [r[field] for r in runs]
    o.pop("runs_s", None)
    print(json.dumps(o))
