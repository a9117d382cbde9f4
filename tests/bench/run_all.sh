#!/usr/bin/env bash
# infergate data-plane benchmarks 2-4 (docs/benchmarks.md): HTTP path vs nginx, revocation propagation, and the
# streaming load generator against one tier. Benchmark 1 (criterion) is separate:
#   cargo bench -p infergate-agent --bench admission -- --warm-up-time 1 --measurement-time 3
# Bounded time: ~3 min with the defaults. Loopback only. Not part of CI; prints a summary at the end.
#
# Knobs (environment):
#   BENCH_HTTP_SECONDS=10  BENCH_HTTP_ROUNDS=3  BENCH_WRK_THREADS=1  BENCH_WRK_CONNECTIONS=32
#   BENCH_STREAM_SECONDS=60  BENCH_STREAMS=8  BENCH_STREAM_KEYS=4  BENCH_REVOKE_TRIALS=50
#   BENCH_UPLOAD_SECONDS=0.1 (the small upload's WAV length)
#   BENCH_SKIP="http streams revocation" (any subset)   BENCH_NO_BUILD=1 (use the existing release binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

HTTP_SECONDS=${BENCH_HTTP_SECONDS:-10}
HTTP_ROUNDS=${BENCH_HTTP_ROUNDS:-3}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-32}
STREAM_SECONDS=${BENCH_STREAM_SECONDS:-60}
STREAMS=${BENCH_STREAMS:-8}
STREAM_KEYS=${BENCH_STREAM_KEYS:-4}
REVOKE_TRIALS=${BENCH_REVOKE_TRIALS:-50}
SKIP=${BENCH_SKIP:-}
# Tier `bench`: 3 GPU-s/min, burst 2; endpoint cost 0.1 GPU-s per audio second. A real-time stream offers
# 0.1 GPU-s/s against a refill of 0.05 GPU-s/s per key, so every key is oversubscribed and the bucket decides.
RATE_PER_MIN=3
BURST=2
COST=0.1
MODEL=whisper-bench

# Servers (agent, nginx) on the first half of the CPUs, clients (wrk, load generator) on the second half, so the
# client never steals the server's core (on 2 cores: server on cpu 0, client on cpu 1). BENCH_PIN=0 turns it off.
SERVER_PIN=(); CLIENT_PIN=(); SERVER_WORKERS=auto
if [ "${BENCH_PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  half_cpus=$(( $(nproc) / 2 ))
  SERVER_PIN=(taskset -c "0-$((half_cpus - 1))"); CLIENT_PIN=(taskset -c "$half_cpus-$(( $(nproc) - 1 ))")
  SERVER_WORKERS=$half_cpus
fi
PY="$ROOT/.venv/bin/python"
LOADGEN="$ROOT/tests/bench/loadgen.py"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

step() { printf '\n==> %s\n' "$*"; }
skipped() { [[ " $SKIP " == *" $1 "* ]]; }

step "tools"
bash tests/bench/install-tools.sh

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  step "cargo build --release -p infergate-agent"
  cargo build --release -p infergate-agent --bin infergate-agent 2>&1 | tail -n 2
fi
AGENT="${BENCH_AGENT:-$ROOT/target/release/infergate-agent}"
[ -x "$AGENT" ] || { echo "no release binary at $AGENT; build it or unset BENCH_NO_BUILD" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/infergate-bench.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx/nginx.pid" ] && kill "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/nginx-proxy/nginx.pid" ] && kill "$(cat "$WORK/nginx-proxy/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url, seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $1" >&2; return 1; }
    sleep 0.1
  done
}

HTTP_PORT=$(free_port); GRPC_PORT=$(free_port); ADMIN_PORT=$(free_port); NGINX_PORT=$(free_port); NGINX_PROXY_PORT=$(free_port)
UPSTREAM_PORT=$(free_port)

step "fake upstream, manifest, agent (standalone)"
"$PY" "$LOADGEN" upstream --port "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"$PY" "$LOADGEN" manifest --out "$WORK/bench.yaml" --upstream "http://127.0.0.1:$UPSTREAM_PORT/v1" \
  --rate-per-minute $RATE_PER_MIN --burst $BURST --cost $COST --model $MODEL \
  --policies "$STREAM_KEYS" --revoke-policies "$REVOKE_TRIALS" --upload-upstream "http://127.0.0.1:$NGINX_PORT/v1"
RUST_LOG=${RUST_LOG:-warn} "${SERVER_PIN[@]}" "$AGENT" standalone -f "$WORK/bench.yaml" --keys-out "$WORK/keys.out" \
  --http-addr "127.0.0.1:$HTTP_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
  >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=($AGENT_PID)
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 60 || { tail -n 30 "$WORK/agent.log"; exit 1; }
echo "agent pid $AGENT_PID: http :$HTTP_PORT grpc :$GRPC_PORT admin :$ADMIN_PORT"

declare -A RESULT

# ------------------------------------------------------------------------------------------------ 2. HTTP path
if ! skipped http; then
  step "HTTP: nginx return 200 vs agent unauthenticated vs agent authenticated (wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, ${HTTP_SECONDS}s x $HTTP_ROUNDS rounds; server pin: ${SERVER_PIN[*]:-none}, client pin: ${CLIENT_PIN[*]:-none})"
  # One nginx instance in $1 (its config, pid, logs and temp files) serving the http-block lines $3.
  start_nginx() { # dir comment http-block-lines
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<EOF
# Generated by tests/bench/run_all.sh: $2
worker_processes $SERVER_WORKERS;
daemon on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 100000000;
$3
}
EOF
    "${SERVER_PIN[@]}" "$NGINX" -p "$1" -c "$1/nginx.conf"
  }
  start_nginx "$WORK/nginx" "the reference server, as cheap as nginx gets." "
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type text/plain; return 200 \"ok\\n\"; }
    # The small upload's answer, direct (the peer) and as the agent's upstream: a transcription at once.
    location = /v1/audio/transcriptions { default_type application/json; return 200 '{\"text\":\"ok\"}\\n'; }
  }"
  # A reference for the upload: nginx doing the agent's hop (proxying the same POST to the same upstream, kept
  # alive). Its own nginx, as the agent is its own process: a server block in the upstream's nginx would proxy
  # inside one worker's event loop and skip the switch between two processes on one core that the agent pays.
  start_nginx "$WORK/nginx-proxy" "nginx as a reverse proxy in front of the same upstream as the agent's." "
  upstream answer { server 127.0.0.1:$NGINX_PORT; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX_PROXY_PORT;
    location / { proxy_pass http://answer; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
  wait_http "http://127.0.0.1:$NGINX_PORT/" 10

  # The authenticated bench uses an unmetered key: it measures the cost of checking limits, not of refusals.
  "$PY" - "$WORK/keys.out" "$WORK/http.key" "$WORK/upload.key" <<'EOF'
import sys; sys.path.insert(0, "tests/bench"); import loadgen, pathlib
pairs = loadgen.keys_for(pathlib.Path(sys.argv[1]), "http-")
pathlib.Path(sys.argv[2]).write_text(pairs[0][1] + "\n")
pairs = loadgen.keys_for(pathlib.Path(sys.argv[1]), "upload-")
pathlib.Path(sys.argv[3]).write_text(pairs[0][1] + "\n")
EOF
  chmod 600 "$WORK/http.key" "$WORK/upload.key"
  # The unauthenticated baseline: /healthz on the public listener when the agent serves one there, else the
  # admin listener's /healthz (same binary, runtime and HTTP stack, no key check).
  AUTH_URL=${BENCH_AUTH_URL:-http://127.0.0.1:$HTTP_PORT/v1/models}
  if [ -z "${BENCH_UNAUTH_URL:-}" ]; then
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/healthz")" = 200 ]; then
      BENCH_UNAUTH_URL=http://127.0.0.1:$HTTP_PORT/healthz
    else
      BENCH_UNAUTH_URL=http://127.0.0.1:$ADMIN_PORT/healthz
    fi
  fi
  UNAUTH_URL=$BENCH_UNAUTH_URL
  code=$(curl -s -o /dev/null -w '%{http_code}' -H @<(printf 'Authorization: Bearer %s\n' "$(cat "$WORK/http.key")") "$AUTH_URL")
  echo "authenticated: $AUTH_URL -> $code; unauthenticated: $UNAUTH_URL -> $(curl -s -o /dev/null -w '%{http_code}' "$UNAUTH_URL")"

  # Server CPU per request (user + system ticks of the server's processes over the run, from /proc) next to
  # req/s: wrk shares the second core with the kernel's loopback work and runs near saturation, so req/s also
  # moves with the client and the neighbours; the server's own CPU per request is the steadier comparison.
  CLK_TCK=$(getconf CLK_TCK)
  server_ticks() { # pids...
    local total=0 pid u s
    for pid in "$@"; do
      read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
      total=$((total + u + s))
    done
    echo "$total"
  }
  instance_pids() { local master; master=$(cat "$1/nginx.pid"); echo "$master" $(pgrep -P "$master"); }
  nginx_pids() { instance_pids "$WORK/nginx"; }
  proxy_pids() { instance_pids "$WORK/nginx-proxy"; }
  server_pids() { # name
    case $1 in
      # The proxy and its upstream, as for the agent below.
      nginx_proxy_upload) echo $(proxy_pids) $(nginx_pids) ;;
      nginx*) nginx_pids ;;
      # The agent's upload is served by the agent and its upstream (nginx) together, both on the server's core.
      agent_upload) echo "$AGENT_PID" $(nginx_pids) ;;
      *) echo "$AGENT_PID" ;;
    esac
  }
  run_wrk() { # name url [lua [key file]]
    local name=$1 url=$2 script=${3:-} key=${4:-$WORK/http.key} out pids ticks0 ticks1
    pids=$(server_pids "$name"); ticks0=$(server_ticks $pids)
    if [ -n "$script" ]; then
      out=$(BENCH_KEY_FILE="$key" BENCH_UPLOAD_SECONDS="${BENCH_UPLOAD_SECONDS:-0.1}" "${CLIENT_PIN[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${HTTP_SECONDS}s" --latency -s "$script" "$url")
    else
      out=$("${CLIENT_PIN[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${HTTP_SECONDS}s" --latency "$url")
    fi
    ticks1=$(server_ticks $pids)
    local rps p50 p99 non2xx requests cpu_us
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu_us=$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v n="${requests:-0}" 'BEGIN { printf "%.2f", n ? t * 1e6 / hz / n : 0 }')
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' <<<"$out")
    printf '  %-22s %10s req/s   p50 %-8s p99 %-8s non-2xx %-4s server CPU %s us/req\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" "$cpu_us"
    echo "$name $rps ${non2xx:-0} $cpu_us" >>"$WORK/http.results"
  }
  for round in $(seq 1 "$HTTP_ROUNDS"); do
    echo " round $round"
    # Same wrk script (same request bytes, Authorization header included) for all three, so the client's cost
    # is equal: nginx and /healthz ignore the header. A scripted wrk is ~8% slower than a plain one here.
    run_wrk nginx "http://127.0.0.1:$NGINX_PORT/" "$ROOT/tests/bench/wrk-auth.lua"
    run_wrk agent_unauthenticated "$UNAUTH_URL" "$ROOT/tests/bench/wrk-auth.lua"
    run_wrk agent_authenticated "$AUTH_URL" "$ROOT/tests/bench/wrk-auth.lua"
  done
  # The small authenticated upload: the same multipart POST to nginx (which answers it) and to the agent (which
  # authenticates, reads the form, checks the WAV, charges the estimate, forwards to nginx, settles and answers).
  UPLOAD_PATH=/v1/audio/transcriptions
  code=$(BENCH_KEY_FILE="$WORK/upload.key" wrk -t1 -c1 -d1s -s "$ROOT/tests/bench/wrk-upload.lua" "http://127.0.0.1:$HTTP_PORT$UPLOAD_PATH" | awk -F': *' '/Non-2xx/ {print "non-2xx " $2}')
  echo "upload: ${BENCH_UPLOAD_SECONDS:-0.1} s WAV, POST $UPLOAD_PATH${code:+ ($code in a 1 s probe)}"
  for round in $(seq 1 "$HTTP_ROUNDS"); do
    echo " upload round $round"
    run_wrk nginx_upload "http://127.0.0.1:$NGINX_PORT$UPLOAD_PATH" "$ROOT/tests/bench/wrk-upload.lua" "$WORK/upload.key"
    run_wrk nginx_proxy_upload "http://127.0.0.1:$NGINX_PROXY_PORT$UPLOAD_PATH" "$ROOT/tests/bench/wrk-upload.lua" "$WORK/upload.key"
    run_wrk agent_upload "http://127.0.0.1:$HTTP_PORT$UPLOAD_PATH" "$ROOT/tests/bench/wrk-upload.lua" "$WORK/upload.key"
  done
  kill "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null || true
  kill "$(cat "$WORK/nginx-proxy/nginx.pid")" 2>/dev/null || true
  RESULT[http]=$(awk '
    { sum[$1]+=$2; n[$1]++; bad[$1]+=$3; cpu[$1]+=$4 }
    END {
      ng=sum["nginx"]/n["nginx"]; un=sum["agent_unauthenticated"]/n["agent_unauthenticated"];
      au=sum["agent_authenticated"]/n["agent_authenticated"];
      cng=cpu["nginx"]/n["nginx"]; cun=cpu["agent_unauthenticated"]/n["agent_unauthenticated"];
      cau=cpu["agent_authenticated"]/n["agent_authenticated"];
      printf "nginx %.0f req/s; agent unauthenticated %.0f req/s; agent authenticated %.0f req/s (non-2xx %d)\n", ng, un, au, bad["agent_authenticated"];
      printf "    authenticated / nginx = %.3f (target >= 1.0); auth+limits cost vs unauthenticated = %.2f%% (target <= 5%%)\n", au/ng, (1-au/un)*100;
      printf "    server CPU per request: nginx %.2f us, agent unauthenticated %.2f us, authenticated %.2f us (auth+limits %+.1f%% CPU)\n", cng, cun, cau, (cau/cun-1)*100
      nu=sum["nginx_upload"]/n["nginx_upload"]; agu=sum["agent_upload"]/n["agent_upload"]; npu=sum["nginx_proxy_upload"]/n["nginx_proxy_upload"];
      printf "    small upload: nginx %.0f req/s, agent %.0f req/s (non-2xx %d) = %.3f (target >= 1.0); server CPU %.2f vs %.2f us (agent + its upstream)\n", nu, agu, bad["agent_upload"], agu/nu, cpu["nginx_upload"]/n["nginx_upload"], cpu["agent_upload"]/n["agent_upload"]
      printf "    for reference, nginx proxying the same upload to the same upstream: %.0f req/s (agent / nginx proxy = %.3f), server CPU %.2f us", npu, agu/npu, cpu["nginx_proxy_upload"]/n["nginx_proxy_upload"]
    }' "$WORK/http.results")
  # The same means as one machine-readable line (tests/bench/all.sh collects it).
  unauth_listener="public"; [ "$UNAUTH_URL" = "http://127.0.0.1:$ADMIN_PORT/healthz" ] && unauth_listener="admin"
  awk -v rounds="$HTTP_ROUNDS" -v secs="$HTTP_SECONDS" -v listener="$unauth_listener" -v upload_s="${BENCH_UPLOAD_SECONDS:-0.1}" '
    { sum[$1]+=$2; n[$1]++; bad[$1]+=$3; cpu[$1]+=$4 }
    function mean(k) { return n[k] ? sum[k]/n[k] : 0 }
    function cpu_us(k) { return n[k] ? cpu[k]/n[k] : 0 }
    END {
      printf "RESULT {\"bench\":\"http\",\"rounds\":%d,\"seconds\":%d,\"nginx_rps\":%.0f,\"unauthenticated_rps\":%.0f,", rounds, secs, mean("nginx"), mean("agent_unauthenticated");
      printf "\"nginx_cpu_us\":%.3f,\"unauthenticated_cpu_us\":%.3f,\"authenticated_cpu_us\":%.3f,", cpu_us("nginx"), cpu_us("agent_unauthenticated"), cpu_us("agent_authenticated");
      printf "\"authenticated_rps\":%.0f,\"authenticated_non_2xx\":%d,\"unauthenticated_listener\":\"%s\",", mean("agent_authenticated"), bad["agent_authenticated"], listener
      printf "\"upload_nginx_rps\":%.0f,\"upload_rps\":%.0f,\"upload_non_2xx\":%d,\"upload_nginx_cpu_us\":%.3f,\"upload_cpu_us\":%.3f,", mean("nginx_upload"), mean("agent_upload"), bad["agent_upload"], cpu_us("nginx_upload"), cpu_us("agent_upload")
      printf "\"upload_nginx_proxy_rps\":%.0f,\"upload_nginx_proxy_cpu_us\":%.3f,\"upload_seconds\":%s}\n", mean("nginx_proxy_upload"), cpu_us("nginx_proxy_upload"), upload_s
    }' "$WORK/http.results"
fi

# --------------------------------------------------------------------------------------------- 4. load generator
if ! skipped streams; then
  step "streams: $STREAMS real-time WebSocket streams over $STREAM_KEYS keys of tier bench for ${STREAM_SECONDS}s"
  "${CLIENT_PIN[@]}" "$PY" "$LOADGEN" streams --keys "$WORK/keys.out" --ws-url "ws://127.0.0.1:$HTTP_PORT/v1/stream" \
    --admin-url "http://127.0.0.1:$ADMIN_PORT" --model $MODEL --rate-per-minute $RATE_PER_MIN --burst $BURST \
    --cost $COST --streams "$STREAMS" --keys-used "$STREAM_KEYS" --duration "$STREAM_SECONDS" | tee "$WORK/streams.log"
  RESULT[streams]=$(grep '^RESULT ' "$WORK/streams.log" | cut -c8-)
fi

# ------------------------------------------------------------------------------------------------ 3. revocation
if ! skipped revocation; then
  # Two ways a change reaches standalone mode: SIGHUP right after the write, and the file poll alone (the
  # agent's default --poll-interval, 500 ms). Each trial revokes a different policy's key.
  half=$(( (REVOKE_TRIALS + 1) / 2 ))
  step "revocation (SIGHUP): $half trials of manifest change -> refusal and stream close"
  "${CLIENT_PIN[@]}" "$PY" "$LOADGEN" revocation --keys "$WORK/keys.out" --ws-url "ws://127.0.0.1:$HTTP_PORT/v1/stream" \
    --http-url "http://127.0.0.1:$HTTP_PORT" --manifest "$WORK/bench.yaml" --model $MODEL \
    --agent-pid "$AGENT_PID" --trials "$half" --skip 0 | tee "$WORK/revocation-sighup.log"
  RESULT[revocation_sighup]=$(grep '^RESULT ' "$WORK/revocation-sighup.log" | cut -c8-)
  step "revocation (file poll only): $((REVOKE_TRIALS - half)) trials"
  "${CLIENT_PIN[@]}" "$PY" "$LOADGEN" revocation --keys "$WORK/keys.out" --ws-url "ws://127.0.0.1:$HTTP_PORT/v1/stream" \
    --http-url "http://127.0.0.1:$HTTP_PORT" --manifest "$WORK/bench.yaml" --model $MODEL \
    --agent-pid 0 --trials "$((REVOKE_TRIALS - half))" --skip "$half" | tee "$WORK/revocation-poll.log"
  RESULT[revocation_poll]=$(grep '^RESULT ' "$WORK/revocation-poll.log" | cut -c8-)
fi

step "summary ($(nproc) cores, $(date -u +%FT%TZ))"
for k in http streams revocation_sighup revocation_poll; do
  if [ -n "${RESULT[$k]:-}" ]; then printf '  %-18s %s\n' "$k:" "${RESULT[$k]}"; fi
done
if [ -n "${BENCH_KEEP:-}" ]; then echo "work dir kept: $WORK"; fi
