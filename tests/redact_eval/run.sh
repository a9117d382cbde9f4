#!/usr/bin/env bash
# Redaction evaluation (issue 13): word-level P/R/F1 per entity type and overall, plus throughput on one core,
# for infergate (patterns + NER, and patterns only) and Presidio (full default analyzer, and patterns only),
# side by side on the same texts.
#
#   bash tests/redact_eval/run.sh [--half report|tune] [--regen] [--check-data] [--no-infergate]
#                                 [--no-presidio] [--strict] [--repeat N]
#
#   --half        which half of the data set to score (default: report; tune on `tune`, report on `report`)
#   --regen       regenerate data/{tune,report}.jsonl from presidio-evaluator + Faker before scoring
#   --check-data  regenerate into a temporary directory and fail if the committed files differ
#   --strict      out-of-scope gold words (ORGANIZATION, URL, ...) count as negatives (see score.py)
#   --repeat N    timed passes per system (median reported; default 3)
#
# Environment:
#   INFERGATE_REDACT_BIN  a prebuilt `redact_jsonl` binary (skips cargo)
#   INFERGATE_NO_BUILD=1  do not build: use target/release/examples/redact_jsonl if present
#   REDACT_EVAL_VENV      venv path (default .cache/redact-eval-venv)
#   REDACT_EVAL_CPU       the CPU every timed run is pinned to (default: the last one this shell may use)
#
# infergate's predictor is `cargo run --release -p infergate-ner --example redact_jsonl -- [--no-ner]`:
# {"id","text"} JSONL on stdin, {"id","spans":[{"start","end","entity"}]} JSONL on stdout (character
# offsets). If the example does not exist yet, its columns are left out and the script says so.
# Its throughput is (chars fed) / (time on the timing input - time on one line), wall and CPU (the child's
# user+sys, steadier on a shared machine), so model loading
# and process start are not counted; the timing input is the half repeated IG_COPIES_FULL (default 3) times
# with the NER, IG_COPIES_PATTERNS (default 50, ~4 MB) times without, so the pattern layer's run is long
# enough to time. It includes JSON parsing and writing, which Presidio's in-process timing
# (presidio_peer.py: analyze + anonymize only) does not, so the comparison leans against infergate.
# Outputs: .cache/redact-eval/<half>/ (predictions, timings, the table as table.txt and scores.json); the headline
# numbers as one `RESULT {json}` line at the end.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${REDACT_EVAL_VENV:-$ROOT/.cache/redact-eval-venv}"
HALF=report REGEN=0 CHECK=0 RUN_IG=1 RUN_PRES=1 STRICT="" REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --half) HALF="$2"; shift ;;
    --regen) REGEN=1 ;;
    --check-data) CHECK=1 ;;
    --no-infergate) RUN_IG=0 ;;
    --no-presidio) RUN_PRES=0 ;;
    --strict) STRICT="--strict" ;;
    --repeat) REPEAT="$2"; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
DATA="$HERE/data/$HALF.jsonl"
OUT="$ROOT/.cache/redact-eval/$HALF"
mkdir -p "$OUT"
CPU="${REDACT_EVAL_CPU:-$(python3 -c 'import os; print(sorted(os.sched_getaffinity(0))[-1])')}"
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c "$CPU")

step() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- Python venv (pinned)
need_venv=$(( RUN_PRES || REGEN || CHECK ))
if [ "$need_venv" = 1 ]; then
  stamp="$VENV/.redact-eval-reqs"
  want="$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "venv $VENV (pip install -r requirements.txt -c constraints.txt)"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"
    echo "$want" > "$stamp"
  fi
  PY="$VENV/bin/python"
fi

if [ "$CHECK" = 1 ]; then
  step "check: committed data reproduces"
  "$PY" "$HERE/make_dataset.py" --check
fi
if [ "$REGEN" = 1 ]; then
  step "regenerate data/tune.jsonl, data/report.jsonl"
  "$PY" "$HERE/make_dataset.py" > "$OUT/dataset-stats.json"
  echo "stats: $OUT/dataset-stats.json"
fi
[ -f "$DATA" ] || { echo "no data set $DATA" >&2; exit 1; }

# {"id","text"} input for the Rust predictor
python3 -c '
import json, sys
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as o, open(sys.argv[3], "w", encoding="utf-8") as one:
    for i, line in enumerate(f):
        r = json.loads(line)
        s = json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n"
        o.write(s)
        if i == 0:
            one.write(s)
' "$DATA" "$OUT/input.jsonl" "$OUT/input-one.jsonl"
copies() { local n="$1" dst="$2"; : > "$dst"; for _ in $(seq "$n"); do cat "$OUT/input.jsonl" >> "$dst"; done; }
CHARS=$(python3 -c 'import json,sys; print(sum(len(json.loads(l)["text"]) for l in open(sys.argv[1], encoding="utf-8")))' "$DATA")

PREDS=() EXTRA=() SPEEDS=()

# ---------------------------------------------------------------- infergate
IG_BIN="${INFERGATE_REDACT_BIN:-}"
if [ "$RUN_IG" = 1 ] && [ -z "$IG_BIN" ]; then
  if [ -f "$ROOT/agent/ner/examples/redact_jsonl.rs" ] || [ -d "$ROOT/agent/ner/examples/redact_jsonl" ]; then
    if [ "${INFERGATE_NO_BUILD:-0}" != 1 ]; then
      step "cargo build --release -p infergate-ner --example redact_jsonl"
      (cd "$ROOT" && cargo build --release -p infergate-ner --example redact_jsonl)
    fi
    IG_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/redact_jsonl"
  fi
fi
if [ "$RUN_IG" = 1 ] && [ -n "$IG_BIN" ] && [ -x "$IG_BIN" ]; then
  for mode in full patterns; do
    flag=(); n="${IG_COPIES_FULL:-3}"
    [ "$mode" = patterns ] && { flag=(--no-ner); n="${IG_COPIES_PATTERNS:-50}"; }
    name="infergate-$mode"
    step "$name: $IG_BIN ${flag[*]:-}"
    "${PIN[@]}" "$IG_BIN" "${flag[@]}" < "$OUT/input.jsonl" > "$OUT/$name.jsonl"  # predictions
    copies "$n" "$OUT/input-timing.jsonl"
    fed=$(( CHARS * n ))
    # wall and CPU (user+sys of the child) seconds: timing input minus one line, median of REPEAT runs
    read -r kcs kcpu < <(python3 - "$REPEAT" "$fed" "$OUT/input-one.jsonl" "$OUT/input-timing.jsonl" \
        "${PIN[@]}" "$IG_BIN" "${flag[@]}" <<'PY'
import os, statistics, subprocess, sys, time
repeat, fed, one, full, cmd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
def run(inp):
    with open(inp, "rb") as f:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=f, stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        if status:
            sys.exit(f"{cmd} failed: {status}")
        return time.perf_counter() - t, ru.ru_utime + ru.ru_stime
walls, cpus = [], []
for _ in range(repeat):
    w1, c1 = run(one)
    w2, c2 = run(full)
    walls.append(max(1e-6, w2 - w1)); cpus.append(max(1e-6, c2 - c1))
print(f"{fed / statistics.median(walls) / 1000:.1f} {fed / statistics.median(cpus) / 1000:.1f}")
print(f"wall {walls} cpu {cpus}", file=sys.stderr)
PY
    )
    echo "$name: $kcs kchars/s wall, $kcpu kchars/CPU-s ($fed chars, net of a one-line run)"
    PREDS+=("$name=$OUT/$name.jsonl"); EXTRA+=(--extra "kchars/s wall:$name=$kcs")
    EXTRA+=(--extra "kchars/CPU-s:$name=$kcpu"); SPEEDS+=("$name $kcs $kcpu")
  done
elif [ "$RUN_IG" = 1 ]; then
  step "infergate: SKIPPED: agent/ner/examples/redact_jsonl.rs is not there yet (or INFERGATE_REDACT_BIN is not executable)"
fi

# ---------------------------------------------------------------- Presidio
if [ "$RUN_PRES" = 1 ]; then
  for mode in full patterns; do
    name="presidio-$mode"
    step "$name (presidio_peer.py --mode $mode, CPU $CPU)"
    "$PY" "$HERE/presidio_peer.py" "$DATA" --mode "$mode" --repeat "$REPEAT" \
      --out "$OUT/$name.jsonl" --timing "$OUT/$name.timing.json" 2> >(grep -v 'PyTorch was not found' >&2)
    kcs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kchars_per_s"])' "$OUT/$name.timing.json")
    kcpu=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kchars_per_cpu_s"])' "$OUT/$name.timing.json")
    PREDS+=("$name=$OUT/$name.jsonl"); EXTRA+=(--extra "kchars/s wall:$name=$kcs")
    EXTRA+=(--extra "kchars/CPU-s:$name=$kcpu"); SPEEDS+=("$name $kcs $kcpu")
  done
fi

[ ${#PREDS[@]} -gt 0 ] || { echo "nothing to score" >&2; exit 1; }
step "word-level scores on the $HALF half ($(wc -l < "$DATA") sentences, $CHARS chars)"
python3 "$HERE/score.py" "$DATA" "${PREDS[@]}" $STRICT --json > "$OUT/scores.json"
python3 "$HERE/score.py" "$DATA" "${PREDS[@]}" $STRICT "${EXTRA[@]}" | tee "$OUT/table.txt"
# The headline numbers as one machine-readable line (tests/bench/all.sh collects it).
python3 - "$OUT/scores.json" "$HALF" "${SPEEDS[@]}" <<'PY'
import json, sys
scores, half, speeds = json.load(open(sys.argv[1])), sys.argv[2], [s.split() for s in sys.argv[3:]]
if "overall" in scores:  # score.py --json prints one system's result unwrapped
    scores = {speeds[0][0]: scores}
systems = {}
for name, kcs, kcpu in speeds:
    r = scores[name]
    systems[name] = {k: r["overall"][k] for k in ("precision", "recall", "f1")}
    systems[name].update({t.lower() + "_recall": r["per_type"][t]["recall"] for t in ("CREDIT_CARD", "US_SSN")
                          if t in r["per_type"]})
    systems[name].update(kchars_per_s=float(kcs), kchars_per_cpu_s=float(kcpu))
print("RESULT " + json.dumps({"bench": "redaction", "half": half, "systems": systems}))
PY
echo
echo "per-system detail: python3 tests/redact_eval/score.py $DATA <pred.jsonl>   (files in $OUT)"
