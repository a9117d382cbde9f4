#!/usr/bin/env bash
# TLS benchmark (issue 10), side by side in one run, loopback only, not part of CI:
#   handshakes/s, TLS 1.3, ECDSA P-256, resumption off (-new) and on (-reuse): `openssl s_time` against the agent's
#     HTTP listener and nginx configured the same way (same certificate, TLS 1.3 only, one worker per server CPU);
#   authenticated GET /v1/models over keep-alive TLS (wrk) vs nginx TLS `return 200`, and the agent's TLS vs its
#     own plaintext on the same route.
# Servers on the first half of the CPUs, clients on the second half (on 2 cores: cpu 0 / cpu 1).
# Knobs: BENCH_SECONDS=8 BENCH_ROUNDS=3 BENCH_WRK_CONNECTIONS=32 BENCH_NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECONDS_PER=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_WRK_CONNECTIONS:-32}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
SERVER_PIN=(); CLIENT_PIN=(); WORKERS=1
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  half=$(( $(nproc) / 2 )); WORKERS=$half
  SERVER_PIN=(taskset -c "0-$((half - 1))"); CLIENT_PIN=(taskset -c "$half-$(( $(nproc) - 1 ))")
fi

bash tests/bench/install-tools.sh >/dev/null
if [ -z "${BENCH_NO_BUILD:-}" ]; then cargo build --release -p infergate-agent --bin infergate-agent 2>&1 | tail -n 1; fi
AGENT="$ROOT/target/release/infergate-agent"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/infergate-tls-bench.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx/nginx.pid" ] && kill "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { "$ROOT/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One certificate for both servers: ECDSA P-256, made now, never committed.
( cd "$WORK"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -days 1 -subj /CN=bench-ca -out ca.pem 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
  openssl req -new -key server.key -subj /CN=127.0.0.1 -out server.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 1 -extfile ext -out server.pem 2>/dev/null )

cat > "$WORK/world.yaml" <<'EOF'
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: bench}
spec: {gpuSecondsPerMinute: 1000000, burstGpuSeconds: 1000000}
---
apiVersion: infergate.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: stt, namespace: default}
spec:
  model: whisper-bench
  features: [transcribe]
  backend: {upstream: {url: "http://127.0.0.1:9/v1", allowPrivateNetwork: true}}
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: bench, namespace: default}
spec: {tier: bench, environment: test, secretName: bench-key, scopes: [{endpoint: stt}]}
EOF

start_agent() { # name [tls args...] -> sets PORT_<name>
  local name=$1; shift
  local http grpc admin; http=$(port); grpc=$(port); admin=$(port)
  "${SERVER_PIN[@]}" "$AGENT" standalone -f "$WORK/world.yaml" --keys-out "$WORK/keys-$name.json" \
    --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" --admin-addr "127.0.0.1:$admin" \
    --log-format text --max-http-connections-per-ip 100000 "$@" >"$WORK/agent-$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  eval "PORT_$name=$http"
}
start_agent plain
start_agent tls --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key"
"$ROOT/.venv/bin/python" -c 'import json,sys; print(next(iter(json.load(open(sys.argv[1])).values()))["key"])' \
  "$WORK/keys-plain.json" > "$WORK/plain.key"
"$ROOT/.venv/bin/python" -c 'import json,sys; print(next(iter(json.load(open(sys.argv[1])).values()))["key"])' \
  "$WORK/keys-tls.json" > "$WORK/tls.key"

NGINX_PORT=$(port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon on;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body; proxy_temp_path $WORK/nginx/proxy; fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi; scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key;
    ssl_protocols TLSv1.3;
    ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
"${SERVER_PIN[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
sleep 0.5

handshakes() { # port mode(-new|-reuse) -> connections/s
  "${CLIENT_PIN[@]}" openssl s_time -connect "127.0.0.1:$1" -CAfile "$WORK/ca.pem" -tls1_3 "$2" -time "$SECONDS_PER" 2>/dev/null \
    | awk '/real seconds/ { v = $1 / $4 } END { printf "%.0f\n", v }'
}
rps() { # url keyfile
  BENCH_KEY_FILE=$2 "${CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"${SECONDS_PER}s" -s "$ROOT/tests/bench/wrk-auth.lua" "$1" \
    | awk '/^Requests\/sec:/ {print $2}'
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ); server ${SERVER_PIN[*]:-unpinned}, client ${CLIENT_PIN[*]:-unpinned}"
printf '%-6s %14s %14s %14s %14s %12s %12s %12s\n' round "agent new/s" "nginx new/s" "agent reuse/s" "nginx reuse/s" "agent tls" "nginx tls" "agent plain"
for r in $(seq 1 "$ROUNDS"); do
  an=$(handshakes "$PORT_tls" -new); nn=$(handshakes "$NGINX_PORT" -new)
  ar=$(handshakes "$PORT_tls" -reuse); nr=$(handshakes "$NGINX_PORT" -reuse)
  at=$(rps "https://127.0.0.1:$PORT_tls/v1/models" "$WORK/tls.key")
  nt=$(rps "https://127.0.0.1:$NGINX_PORT/" "$WORK/tls.key")
  ap=$(rps "http://127.0.0.1:$PORT_plain/v1/models" "$WORK/plain.key")
  printf '%-6s %14s %14s %14s %14s %12s %12s %12s\n' "$r" "$an" "$nn" "$ar" "$nr" "$at" "$nt" "$ap"
  echo "$an $nn $ar $nr $at $nt $ap" >> "$WORK/results"
done
awk -v secs="$SECONDS_PER" '{ for (i = 1; i <= 7; i++) s[i] += $i; n++ }
  END { printf "\nmeans: handshakes new agent/nginx = %.2f (target >= 1.0); reuse agent/nginx = %.2f;\n", s[1]/s[2], s[3]/s[4];
        printf "       keep-alive TLS agent %.0f req/s vs nginx %.0f req/s (%.2fx); agent TLS cost vs plaintext %.1f%% (target <= 10%%)\n",
               s[5]/n, s[6]/n, s[5]/s[6], (1 - s[5]/s[7]) * 100
        # the same means, machine-readable (tests/bench/all.sh collects it)
        printf "RESULT {\"bench\":\"tls\",\"rounds\":%d,\"seconds\":%d,\"agent_new_per_s\":%.0f,\"nginx_new_per_s\":%.0f,", n, secs, s[1]/n, s[2]/n;
        printf "\"agent_reuse_per_s\":%.0f,\"nginx_reuse_per_s\":%.0f,\"agent_tls_rps\":%.0f,\"nginx_tls_rps\":%.0f,\"agent_plain_rps\":%.0f}\n",
               s[3]/n, s[4]/n, s[5]/n, s[6]/n, s[7]/n }' "$WORK/results"
