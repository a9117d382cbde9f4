#!/usr/bin/env bash
# Built-in Whisper (CPU, tiny.en) next to faster-whisper (CTranslate2 float32 and int8), one core each, same audio,
# in one run. Prints JSON lines from both; rtf = audio seconds / compute seconds (higher is faster).
#   bash tests/bench/whisper.sh            (makes .cache/refvenv with faster-whisper 1.2.1 the first time)
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! .cache/refvenv/bin/python -c "import faster_whisper" 2>/dev/null; then
  python3 -m venv .cache/refvenv
  .cache/refvenv/bin/pip install -q faster-whisper==1.2.1 numpy
fi
bash tests/tools/install-whisper-weights.sh tiny.en
# BENCH_NO_BUILD=1: use the rtf example already in target/release (tests/bench/all.sh builds it up front).
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p infergate-whisper --example rtf
CPU=${CPU:-1}
# Interleaved rounds (infergate, then the peer, ROUNDS times; one timed run per case after an untimed warm-up):
# on a shared machine the load drifts over minutes, and running one side's whole set before the other's put that
# drift into the ratio. Each case reports the median over the rounds (tests/bench/whisper_merge.py).
ROUNDS=${ROUNDS:-5}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
for _ in $(seq "$ROUNDS"); do
  for words in "" "--words"; do
    taskset -c "$CPU" target/release/examples/rtf --runs 1 $words >> "$raw"
  done
  taskset -c "$CPU" .cache/refvenv/bin/python tests/bench/whisper_peer.py --runs 1 --compute-types float32 int8 \
    --word-timestamps off on 2>/dev/null >> "$raw"
done
python3 tests/bench/whisper_merge.py "$raw"
