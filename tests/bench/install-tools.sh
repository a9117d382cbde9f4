#!/usr/bin/env bash
# Tools for tests/bench/run_all.sh only (CI does not run the benches, so this is deliberately not named
# tests/tools/install-*.sh, which setup.sh would pick up). Idempotent; Debian bookworm.
#   wrk + nginx   HTTP bench (nginx `return 200` is the reference)
#   websockets, httpx, pyyaml in the project venv: the load generator's clients
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts the packaged nginx service on port 80 where an init system runs; the bench starts its own.
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import websockets, httpx, yaml' 2>/dev/null; then
  # Same pins as tests/requirements.txt where it has them; these are the versions the benches were run with.
  .venv/bin/python -m pip install -q --disable-pip-version-check websockets==15.0.1 httpx==0.28.1 pyyaml==6.0.3
fi
echo "bench tools: $(wrk --version 2>&1 | head -n1 | cut -c1-40); $(/usr/sbin/nginx -v 2>&1)"
