#!/usr/bin/env bash
# Per-admission cost with the counters on Redis (loopback): infergate leased and exact against limitador 0.14's
# Redis storages, in one process on one core. Starts its own redis-server; prints a markdown table and the same
# numbers as one `RESULT {json}` line.
#   bash tests/bench/redis.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/target/bench-peer
mkdir -p "$OUT"
# limitador 0.14 builds its Redis storage only together with rocksdb: its `bin` key module is gated on
# `disk_storage`. Patch those two cfgs in a copy of the published crate (never committed).
SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/limitador-0.14.0 2>/dev/null | head -n 1 || true)
if [ -z "$SRC" ]; then
  cargo fetch --manifest-path tests/bench/redis-peer/Cargo.toml >/dev/null 2>&1 || true
  SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/limitador-0.14.0 | head -n 1)
fi
rm -rf "$OUT/limitador" && cp -r "$SRC" "$OUT/limitador"
sed -i -E 's/^( *)#\[cfg\(feature = "disk_storage"\)\]$/\1#[cfg(any(feature = "disk_storage", feature = "redis_storage"))]/' \
  "$OUT/limitador/src/storage/keys.rs" "$OUT/limitador/src/counter.rs"
# Building against the patched copy makes cargo re-resolve and rewrite the committed lockfile; it is put back
# afterwards so a bench run leaves the tree as it found it.
cp tests/bench/redis-peer/Cargo.lock "$OUT/redis-peer.Cargo.lock"
CARGO_TARGET_DIR=$OUT cargo build --release --quiet --manifest-path tests/bench/redis-peer/Cargo.toml \
  --config "patch.crates-io.limitador.path=\"$OUT/limitador\"" || build_failed=1
cp "$OUT/redis-peer.Cargo.lock" tests/bench/redis-peer/Cargo.lock
[ -z "${build_failed:-}" ] || { echo "redis.sh: building the limitador peer failed" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >/dev/null 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
echo "redis-server $(redis-server --version | awk '{print $3}') on loopback; $(nproc) cores; $(date -u +%F)"
taskset -c 0 "$OUT/release/infergate-redis-bench" "redis://127.0.0.1:$port/" | tee "$OUT/redis-table.md"
# The table as one machine-readable line (tests/bench/all.sh collects it): ns per admission by contender.
python3 - "$OUT/redis-table.md" <<'EOF'
import json, sys
rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in open(sys.argv[1]) if line.startswith("| ")]
ns = {r[0]: float(r[1]) for r in rows if len(r) > 1 and r[1].replace(".", "", 1).isdigit()}
print("RESULT " + json.dumps({"bench": "redis", "ns_per_admission": ns}))
EOF
