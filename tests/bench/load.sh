#!/usr/bin/env bash
# infergate load and soak benchmarks (issue 15; docs/benchmarks.md "Load: N streams"). A benchmark with a verdict,
# not part of CI or the test suite. One command runs everything: the fake upstream (tests/bench/loadgen.py
# upstream) and the load generator (tests/bench/load.py, in LOAD_PROCS processes) on the client CPU, a standalone
# agent on the server CPU (2 cores: agent on cpu 0, everything else on cpu 1), then prints a table and one
# `RESULT {json}` line.
#
#   bash tests/bench/load.sh          # load: 500 WebSocket + gRPC streams at real time for 60 s, revocation at 30 s
#   bash tests/bench/load.sh soak     # soak: 100 streams for 30 min, config reload every 10 s, RSS every 10 s
#   small trials:
#   LOAD_STREAMS=40 LOAD_SECONDS=15 LOAD_REVOKE_AT=7 BENCH_NO_BUILD=1 bash tests/bench/load.sh
#   SOAK_STREAMS=20 SOAK_SECONDS=60 BENCH_NO_BUILD=1 bash tests/bench/load.sh soak
#
# Knobs (environment):
#   LOAD_STREAMS=500 LOAD_SECONDS=60 LOAD_REVOKE_AT=30 LOAD_RAMP=5 LOAD_PROCS=2 LOAD_GRPC_SHARE=0.5
#   SOAK_STREAMS=100 SOAK_SECONDS=1800 SOAK_RELOAD_EVERY=10 SOAK_SAMPLE_EVERY=10 SOAK_WARMUP=60 SOAK_MAX_SLOPE=5
#   BENCH_SEGMENT_SECONDS=5 (the agent's --segment-seconds: the "ack" of a chunk is its segment's partial result)
#   BENCH_AGENT=path (default target/release/infergate-agent)   BENCH_NO_BUILD=1 (do not cargo build)
#   BENCH_PIN=0 (no taskset)   BENCH_KEEP=1 (keep the work dir: manifest, logs; keys.out holds keys, mode 0600)
# Exit status: 0 PASS; 1 FAIL (an unintended stream end, a revoked stream not closed within 1 s, RSS growth,
# a refused reload); 2 setup problem.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MODE=${1:-load}
case "$MODE" in load|soak) ;; *) echo "usage: $0 [load|soak]" >&2; exit 2 ;; esac

SEGMENT=${BENCH_SEGMENT_SECONDS:-5}
MODEL=whisper-load
PY="$ROOT/.venv/bin/python"
LOAD="$ROOT/tests/bench/load.py"

SERVER_PIN=(); CLIENT_PIN=()
if [ "${BENCH_PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  half_cpus=$(( $(nproc) / 2 ))
  SERVER_PIN=(taskset -c "0-$((half_cpus - 1))"); CLIENT_PIN=(taskset -c "$half_cpus-$(( $(nproc) - 1 ))")
fi

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "==> cargo build --release -p infergate-agent"
  cargo build --release -p infergate-agent --bin infergate-agent 2>&1 | tail -n 2
fi
AGENT=${BENCH_AGENT:-$ROOT/target/release/infergate-agent}
[ -x "$AGENT" ] || { echo "no agent binary at $AGENT; build it, set BENCH_AGENT, or unset BENCH_NO_BUILD" >&2; exit 2; }
echo "agent binary: $AGENT ($(date -u -r "$AGENT" +%FT%TZ))"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/infergate-load.XXXXXX")
PIDS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${BENCH_KEEP:-}" ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port); GRPC_PORT=$(free_port); ADMIN_PORT=$(free_port); UPSTREAM_PORT=$(free_port)
UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT/v1"

"${CLIENT_PIN[@]}" "$PY" "$ROOT/tests/bench/loadgen.py" upstream --port "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
"$PY" "$LOAD" manifest --out "$WORK/load.yaml" --upstream "$UPSTREAM" --model "$MODEL"
RUST_LOG=${RUST_LOG:-warn} "${SERVER_PIN[@]}" "$AGENT" standalone -f "$WORK/load.yaml" --keys-out "$WORK/keys.out" \
  --http-addr "127.0.0.1:$HTTP_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
  --segment-seconds "$SEGMENT" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ] || ! kill -0 $AGENT_PID 2>/dev/null; then
    echo "agent not ready" >&2; tail -n 30 "$WORK/agent.log" >&2; exit 2
  fi
  sleep 0.2
done
echo "agent pid $AGENT_PID (${SERVER_PIN[*]:-unpinned}): http :$HTTP_PORT grpc :$GRPC_PORT admin :$ADMIN_PORT;" \
  "upstream pid $UPSTREAM_PID and load generator: ${CLIENT_PIN[*]:-unpinned}; $(nproc) cores, $(date -u +%FT%TZ)"

COMMON=(--keys "$WORK/keys.out" --manifest "$WORK/load.yaml" --upstream "$UPSTREAM" --model "$MODEL"
  --ws-url "ws://127.0.0.1:$HTTP_PORT/v1/stream" --grpc-addr "127.0.0.1:$GRPC_PORT"
  --admin-url "http://127.0.0.1:$ADMIN_PORT" --agent-pid "$AGENT_PID" --upstream-pid "$UPSTREAM_PID"
  --segment-seconds "$SEGMENT" --stubs-dir "$WORK/stubs")
status=0
if [ "$MODE" = load ]; then
  "${CLIENT_PIN[@]}" "$PY" "$LOAD" load "${COMMON[@]}" --streams "${LOAD_STREAMS:-500}" \
    --duration "${LOAD_SECONDS:-60}" --revoke-at "${LOAD_REVOKE_AT:-30}" --ramp "${LOAD_RAMP:-5}" \
    --procs "${LOAD_PROCS:-2}" --grpc-share "${LOAD_GRPC_SHARE:-0.5}" | tee "$WORK/result.log" || status=$?
else
  "${CLIENT_PIN[@]}" "$PY" "$LOAD" soak "${COMMON[@]}" --streams "${SOAK_STREAMS:-100}" \
    --duration "${SOAK_SECONDS:-1800}" --reload-every "${SOAK_RELOAD_EVERY:-10}" \
    --sample-every "${SOAK_SAMPLE_EVERY:-10}" --warmup "${SOAK_WARMUP:-60}" --max-slope "${SOAK_MAX_SLOPE:-5}" \
    --ramp "${LOAD_RAMP:-5}" --procs "${LOAD_PROCS:-2}" | tee "$WORK/result.log" || status=$?
fi
if ! kill -0 $AGENT_PID 2>/dev/null; then
  echo "FAIL: the agent exited during the run" >&2; tail -n 30 "$WORK/agent.log" >&2; exit 1
fi
warnings=$(grep -ciE ' (warn|error) ' "$WORK/agent.log" || true)
echo "agent log: $warnings warn/error lines (RUST_LOG=${RUST_LOG:-warn}); last ones:"
grep -iE ' (warn|error) ' "$WORK/agent.log" | tail -n 5 | cut -c1-240 || true
exit $status
