#!/usr/bin/env bash
# Every benchmark in one command, then one table of infergate against its peers (tests/bench/report.py):
# benchmark | infergate | peer | ratio | target | met?, under a header with the date, machine, load and commit.
# Not part of CI. Each section runs its existing script once, pinned the way that script pins itself.
#
#   bash tests/bench/all.sh [--dry-run] [--write-docs]
#
#   --dry-run     print what would be built and run, run nothing, and render the table from the results already on
#                 disk (target/bench/logs/ from an earlier run, target/criterion/**/estimates.json)
#   --write-docs  also replace the block between <!-- bench:summary:start --> and <!-- bench:summary:end --> in
#                 docs/benchmarks.md with the header and the table (ignored with --dry-run)
#
# Sections (BENCH_SECTIONS picks them and their order; default: all but soak, in this order):
#   admission  cargo bench -p infergate-agent --bench admission; cargo bench -p infergate-token --bench verify
#   http       tests/bench/run_all.sh (HTTP vs nginx, N-stream tier accounting, revocation propagation)
#   tls        tests/bench/tls.sh           redis      tests/bench/redis.sh        whisper    tests/bench/whisper.sh
#   speaker    tests/bench/speaker.sh       redaction  tests/redact_eval/run.sh
#   operator   tests/bench/operator_scale.py --policies $BENCH_OPERATOR_POLICIES
#   load       tests/bench/load.sh          soak       tests/bench/load.sh soak (30 min with its defaults)
# A section whose script is not there is skipped and says so; one that fails is recorded (exit status under the
# table) and the others still run; all.sh then exits 1.
#
# Environment:
#   BENCH_SECTIONS="admission http tls redis whisper speaker redaction operator load"
#   BENCH_NO_BUILD=1           no up-front build (use what target/ holds); either way the scripts run with
#                              BENCH_NO_BUILD=1 INFERGATE_NO_BUILD=1, so nothing is built twice
#   BENCH_CRITERION_ARGS="--warm-up-time 1 --measurement-time 3"   passed to both criterion benches
#   BENCH_CRITERION_CPU        the core the criterion benches are pinned to (default: the last one); BENCH_PIN=0: none
#   BENCH_OPERATOR_POLICIES="1000 10000"
#   plus each script's own knobs (BENCH_HTTP_SECONDS, BENCH_SKIP, BENCH_ROUNDS, INFERGATE_BENCH_SCENARIOS, ...)
# Output: target/bench/logs/<section>.log and <section>.status.json, target/bench/report.md; the table on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

DRY=0 DOCS=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --write-docs) DOCS=1 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "all.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

DEFAULT_SECTIONS="admission http tls redis whisper speaker redaction operator load"
SECTIONS=()
for s in ${BENCH_SECTIONS:-$DEFAULT_SECTIONS}; do
  [[ " $DEFAULT_SECTIONS soak " == *" $s "* ]] || { echo "all.sh: unknown section '$s' (known: $DEFAULT_SECTIONS soak)" >&2; exit 2; }
  SECTIONS+=("$s")
done
selected() { [[ " ${SECTIONS[*]} " == *" $1 "* ]]; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LOGS=$TARGET/bench/logs
REPORT=$TARGET/bench/report.md
STARTED=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
CRITERION_ARGS=${BENCH_CRITERION_ARGS:---warm-up-time 1 --measurement-time 3}
OPERATOR_POLICIES=${BENCH_OPERATOR_POLICIES:-1000 10000}
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python  # operator_scale.py's stand-in wants the project venv

CRITERION_PIN=""
if [ "${BENCH_PIN:-1}" = 1 ] && command -v taskset >/dev/null; then
  CRITERION_PIN="taskset -c ${BENCH_CRITERION_CPU:-$(( $(nproc) - 1 ))} "
fi

# section -> command line (run with bash -c) and, where the script may be absent, the file it needs.
declare -A COMMAND=(
  [admission]="${CRITERION_PIN}cargo bench -p infergate-agent --bench admission -- $CRITERION_ARGS && ${CRITERION_PIN}cargo bench -p infergate-token --bench verify -- $CRITERION_ARGS"
  [http]="bash tests/bench/run_all.sh"
  [tls]="bash tests/bench/tls.sh"
  [redis]="bash tests/bench/redis.sh"
  [whisper]="bash tests/bench/whisper.sh"
  [speaker]="bash tests/bench/speaker.sh"
  [redaction]="bash tests/redact_eval/run.sh"
  [operator]="$PY tests/bench/operator_scale.py --policies $OPERATOR_POLICIES"
  [load]="bash tests/bench/load.sh"
  [soak]="bash tests/bench/load.sh soak"
)
declare -A NEEDS=(
  [http]=tests/bench/run_all.sh [tls]=tests/bench/tls.sh [redis]=tests/bench/redis.sh
  [whisper]=tests/bench/whisper.sh [speaker]=tests/bench/speaker.sh [redaction]=tests/redact_eval/run.sh
  [operator]=tests/bench/operator_scale.py [load]=tests/bench/load.sh [soak]=tests/bench/load.sh
)
# The knobs the caller set, for the report's header.
KNOBS=$(env | grep -E '^(BENCH_|INFERGATE_BENCH_|IG_COPIES_|REDACT_EVAL_|CPU=)' | sort | tr '\n' ' ' || true)

step() { printf '\n==> %s\n' "$*"; }

# ------------------------------------------------------------------------------------------------- build, once
BUILDS=("cargo build --release -p infergate-agent -p infergate-operator")
if selected admission; then
  BUILDS+=("cargo bench --no-run -p infergate-agent --bench admission" "cargo bench --no-run -p infergate-token --bench verify")
fi
selected whisper && BUILDS+=("cargo build --release -p infergate-whisper --example rtf")
selected speaker && BUILDS+=("cargo bench --no-run -p infergate-speaker --bench encoder")
if selected redaction && [ -f agent/ner/examples/redact_jsonl.rs ]; then
  BUILDS+=("cargo build --release -p infergate-ner --example redact_jsonl")
fi

[ "$DRY" = 1 ] || mkdir -p "$LOGS"
if [ -n "${BENCH_NO_BUILD:-}" ]; then
  step "build: skipped (BENCH_NO_BUILD=$BENCH_NO_BUILD)"
elif [ "$DRY" = 1 ]; then
  step "build (dry run: would run)"
  printf '  %s\n' "${BUILDS[@]}"
else
  : >"$LOGS/build.log"
  for b in "${BUILDS[@]}"; do
    step "build: $b"
    # shellcheck disable=SC2086  # each entry is a plain word list
    if ! $b >>"$LOGS/build.log" 2>&1; then tail -n 40 "$LOGS/build.log"; echo "all.sh: build failed" >&2; exit 1; fi
    tail -n 1 "$LOGS/build.log"
  done
fi

# ------------------------------------------------------------------------------------------------------ sections
write_status() { # section rc seconds command [skipped-reason]
  python3 - "$LOGS/$1.status.json" "$@" <<'EOF'
import json, sys, time
path, section, rc, seconds, command = sys.argv[1:6]
status = {"section": section, "rc": int(rc) if rc else None, "seconds": float(seconds), "command": command,
          "ended": time.time()}
if len(sys.argv) > 6:
    status["skipped"] = sys.argv[6]
open(path, "w").write(json.dumps(status) + "\n")
EOF
}

FAILED=()
for s in "${SECTIONS[@]}"; do
  cmd=${COMMAND[$s]}
  need=${NEEDS[$s]:-}
  if [ -n "$need" ] && [ ! -f "$need" ]; then
    step "$s: skipped, $need is not there"
    if [ "$DRY" = 0 ]; then
      rm -f "$LOGS/$s.log"  # an older run's results must not pass for this run's
      write_status "$s" "" 0 "$cmd" "$need is not there"
    fi
    continue
  fi
  if [ "$DRY" = 1 ]; then
    step "$s (dry run: would run) $cmd"
    continue
  fi
  step "$s: $cmd"
  t0=$(date +%s)
  set +e
  # built above, or the caller said not to build
  BENCH_NO_BUILD=1 INFERGATE_NO_BUILD=1 bash -c "$cmd" </dev/null 2>&1 | tee "$LOGS/$s.log"
  rc=${PIPESTATUS[0]}
  set -e
  write_status "$s" "$rc" "$(( $(date +%s) - t0 ))" "$cmd"
  [ "$rc" = 0 ] || FAILED+=("$s (exit $rc)")
done

# -------------------------------------------------------------------------------------------------------- report
step "summary"
REPORT_ARGS=(--logs "$LOGS" --criterion "$TARGET/criterion" --sections "${SECTIONS[*]}" --out "$REPORT"
  --started "$STARTED" --load-start "$LOAD_START" --knobs "$KNOBS")
if [ "$DRY" = 1 ]; then
  REPORT_ARGS+=(--dry-run)
  [ "$DOCS" = 0 ] || echo "(dry run: docs/benchmarks.md is left as it is)"
elif [ "$DOCS" = 1 ]; then
  REPORT_ARGS+=(--docs docs/benchmarks.md)
  [ "${SECTIONS[*]}" = "$DEFAULT_SECTIONS" ] ||
    echo "(--write-docs with BENCH_SECTIONS=\"${SECTIONS[*]}\": the docs table now holds only these sections)"
fi
python3 tests/bench/report.py "${REPORT_ARGS[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "failed sections: ${FAILED[*]} (logs in $LOGS)" >&2
  exit 1
fi
