#!/usr/bin/env bash
# Built-in Whisper (CPU, tiny.en) next to faster-whisper (CTranslate2 float32 and int8), one core each, same audio,
# in one run. Prints JSON lines from both; rtf = audio seconds / compute seconds (higher is faster).
#   bash tests/bench/whisper.sh            (needs .cache/refvenv with faster-whisper: see tests/bench/whisper_peer.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/tools/install-whisper-weights.sh tiny.en
# BENCH_NO_BUILD=1: use the rtf example already in target/release (tests/bench/all.sh builds it up front).
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p infergate-whisper --example rtf
CPU=${CPU:-1}
for words in "" "--words"; do
  taskset -c "$CPU" target/release/examples/rtf --runs 3 $words
done
taskset -c "$CPU" .cache/refvenv/bin/python tests/bench/whisper_peer.py --runs 3 --compute-types float32 int8 \
  --word-timestamps off on 2>/dev/null
