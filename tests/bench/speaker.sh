#!/usr/bin/env bash
# Speaker encoder on CPU, one core: infergate's CpuEncoder (criterion bench agent/speaker/benches/encoder.rs) next
# to Resemblyzer 0.1.4's own VoiceEncoder on PyTorch 1.13 CPU with one thread (tests/bench/speaker_peer.py), same
# 5 s input (voice_like(1, 5.0), bit-identical on both sides), same pinned core, in one run. Not part of CI.
#   bash tests/bench/speaker.sh            (CPU=0 to pin elsewhere; installs the peer: tests/bench/install-speaker-peer.sh)
# Prints the bench's headline lines, criterion's estimate for embed_5s, the peer's lines, then a markdown table
# (wall time as the headline numbers; CPU time too: Rust thread CPU time, the peer's process CPU time).
# rt = audio seconds / compute seconds per core (higher is faster). On a shared machine compare runs at similar load:
# wall time includes waiting for the core (both sides also print CPU time).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CPU=${CPU:-1}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
export CRITERION_HOME=${CRITERION_HOME:-$TARGET/criterion}
OUT=$TARGET/bench-peer
mkdir -p "$OUT"

bash tests/tools/install-speaker-weights.sh
bash tests/bench/install-speaker-peer.sh
PEER_PY=${SPEAKER_PEER_VENV:-$ROOT/.cache/speaker-peer-venv}/bin/python

# Build unpinned (both cores), then run the already-built bench on the one core.
cargo bench -q -p infergate-speaker --bench encoder --no-run
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; pinned to cpu $CPU; $(date -u +%F)"
taskset -c "$CPU" cargo bench -q -p infergate-speaker --bench encoder -- --warm-up-time 1 --measurement-time 5 \
  >"$OUT/speaker-criterion.log" 2>&1 || { cat "$OUT/speaker-criterion.log"; exit 1; }
if grep -q '^SKIP' "$OUT/speaker-criterion.log"; then cat "$OUT/speaker-criterion.log"; exit 1; fi
grep '^speaker cpu' "$OUT/speaker-criterion.log"
# criterion's own summary for the single-utterance case, "time: [low estimate high]" (same line or the next).
echo "criterion speaker_cpu/embed_5s $(grep -A1 '^speaker_cpu/embed_5s' "$OUT/speaker-criterion.log" \
  | grep -m1 -o 'time: *\[[^]]*\]' || echo '(no time line found)')"

taskset -c "$CPU" "$PEER_PY" tests/bench/speaker_peer.py >"$OUT/speaker-peer.log" 2>"$OUT/speaker-peer.err" \
  || { cat "$OUT/speaker-peer.log" "$OUT/speaker-peer.err"; exit 1; }
cat "$OUT/speaker-peer.log"
sed -n 's/^  //p' "$OUT/speaker-peer.err" | head -n 1

python3 - "$CRITERION_HOME/speaker_cpu/embed_5s/new/estimates.json" "$OUT/speaker-criterion.log" \
  "$OUT/speaker-peer.log" "$OUT/speaker-peer.err" "$CPU" <<'PYEOF'
import json, re, sys
estimates, bench_log, peer_log, peer_err, cpu = sys.argv[1:6]
seconds = 5.0
ms = lambda pattern, text: float(re.search(pattern, text).group(1))
bench, peer, err = open(bench_log).read(), open(peer_log).read(), open(peer_err).read()
est = json.load(open(estimates))["median"]
median = est["point_estimate"] / 1e6
ci = est["confidence_interval"]
print(f"criterion speaker_cpu/embed_5s median: {median:.1f} ms (95% CI {ci['lower_bound'] / 1e6:.1f}"
      f"-{ci['upper_bound'] / 1e6:.1f} ms)")
# CPU time: the Rust bench's thread CPU time over its 5 headline runs; the peer's process CPU time, median.
rust_cpu = ms(r"speaker cpu \(thread CPU time\): .* in ([\d.]+) ms", bench)
rows = [
    ("infergate CpuEncoder, criterion median (embed_5s)", median, None),
    ("infergate CpuEncoder, headline (5 runs)", ms(r"speaker cpu \(wall\): .* in ([\d.]+) ms", bench), rust_cpu),
    ("Resemblyzer 0.1.4 embed_utterance (gain + librosa mel + LSTM)",
     ms(r"speaker peer \(.*\): .* in ([\d.]+) ms", peer), ms(r"utterance: .*CPU time median ([\d.]+) ms", err)),
    ("Resemblyzer 0.1.4 forward only (LSTM on precomputed mel)",
     ms(r"speaker peer forward only \(.*\): .* in ([\d.]+) ms", peer), ms(r"forward: .*CPU time median ([\d.]+) ms", err)),
]
print(f"\n| 5 s utterance, 1 thread on cpu {cpu} | wall ms | rt per core | wall / infergate median | CPU ms | CPU / infergate CPU |")
print("|---|---:|---:|---:|---:|---:|")
for name, wall, cpu_ms in rows:
    cpu_cols = "| - | -" if cpu_ms is None else f"| {cpu_ms:.1f} | {cpu_ms / rust_cpu:.2f}"
    print(f"| {name} | {wall:.1f} | {seconds / (wall / 1e3):.1f}x | {wall / median:.2f} {cpu_cols} |")
PYEOF
