#!/usr/bin/env bash
# The long fuzz run (docs/fuzzing.md): builds the libFuzzer targets of fuzz/ and runs each for N executions or
# T seconds, whichever comes first. Not part of tests/run.sh, which only replays the committed corpora.
#
#   tests/fuzz/run.sh [--runs N] [--time SECONDS] [--no-build] [--merge] [--keep-going] [TARGET ...]
#     --runs N        executions per target (default 10000000)
#     --time SECONDS  wall-clock cap per target (default 1800)
#     --no-build      use the binaries already in fuzz/target
#     --merge         afterwards, fold inputs that add coverage into the committed corpus fuzz/corpus/<target>
#     --keep-going    run past crashes (libFuzzer's fork mode, one worker), collecting every one found; the
#                     stats then hold fork mode's status lines (no final stats block)
#     TARGET          any of the targets (default: all, from fuzz/fuzz_targets/)
#   tests/fuzz/run.sh --minimize TARGET FILE   shrinks a crashing input (written next to FILE as FILE.min)
#
# Per target: libFuzzer's final status and stats go to fuzz/stats/<target>.txt; the inputs it generates stay in
# fuzz/target/corpus/<target> (not committed); a crash, timeout or OOM input is copied to
# fuzz/artifacts/<target>/, which the replay test (tests/tests/fuzz_replay.rs) runs from then on.
# Exits non-zero when any target found one.
#
# Stable Rust is enough: no sanitizer (cargo-fuzz's `-s none`), only LLVM's SanitizerCoverage, which are plain
# codegen options, so cargo-fuzz is not needed (it is not installed on the dev machine; `cargo fuzz run -s none`
# should build the same crate, untried).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
FUZZ=$ROOT/fuzz

RUNS=10000000
TIME=1800
BUILD=1
MERGE=0
KEEP_GOING=()
TARGETS=()
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --time) TIME=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --merge) MERGE=1; shift ;;
        --keep-going) KEEP_GOING=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1); shift ;;
        --minimize) MINIMIZE_TARGET=$2; MINIMIZE_FILE=$3; shift 3 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
if [ ${#TARGETS[@]} = 0 ]; then
    for f in "$FUZZ"/fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi

HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR=$FUZZ/target/$HOST/release

# cargo-fuzz's flags for `-s none`. `--target` keeps them off build scripts and proc macros.
FLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

if [ "$BUILD" = 1 ]; then
    echo "==> building the fuzz targets (fuzz/target, $HOST)"
    (cd "$FUZZ" && RUSTFLAGS="$FLAGS" cargo build --release --target "$HOST" --target-dir "$FUZZ/target" \
        --bins 2>&1 | tail -n 3)
fi

if [ -n "${MINIMIZE_TARGET:-}" ]; then
    "$BIN_DIR/$MINIMIZE_TARGET" -minimize_crash=1 -runs=100000 -exact_artifact_path="$MINIMIZE_FILE.min" \
        "$MINIMIZE_FILE"
    exit 0
fi

# What identifies a failure: the first panic site (registry path prefix dropped), else libFuzzer's error kind.
signature() {
    local out
    out=$("$1" -timeout=10 "$2" 2>&1 || true)
    grep -m1 -oE 'panicked at [^ ]+|ERROR: libFuzzer: [a-z-]+' <<<"$out" | sed -E 's#/[^ ]*/registry/src/[^/]+/##' \
        || echo unknown
}

# Whole API keys are seeds too, but never committed (they look like leaked secrets): written into the scratch
# corpus (fuzz/target, git-ignored) from fuzz/src/lib.rs runtime_seeds().
(cd "$FUZZ/.." && INFERGATE_FUZZ_SEED_DIR="$FUZZ/target/corpus" cargo test -q -p infergate-tests --test fuzz_replay \
    write_runtime_seeds -- --ignored >/dev/null)

found=0
for target in "${TARGETS[@]}"; do
    bin=$BIN_DIR/$target
    [ -x "$bin" ] || { echo "no binary for $target (build first)" >&2; exit 2; }
    work=$FUZZ/target/corpus/$target
    scratch=$FUZZ/target/artifacts/$target
    log=$FUZZ/target/logs/$target.log
    rm -rf "$scratch"
    mkdir -p "$work" "$scratch" "$(dirname "$log")" "$FUZZ/stats" "$FUZZ/artifacts/$target"
    dict=()
    [ -f "$FUZZ/dicts/$target.dict" ] && dict=(-dict="$FUZZ/dicts/$target.dict")
    echo "==> $target: up to $RUNS executions or $TIME s"
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    set +e
    # The first corpus directory receives new inputs; the committed one is only read.
    "$bin" -runs="$RUNS" -max_total_time="$TIME" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$scratch/" "${KEEP_GOING[@]}" "${dict[@]}" "$work" "$FUZZ/corpus/$target" >"$log" 2>&1
    rc=$?
    set -e
    # libFuzzer's own summary: the last status line (executions, coverage `cov`, features `ft`, corpus) and
    # the final stats block.
    status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    {
        echo "target: $target"
        echo "started: $started  limits: runs=$RUNS time=${TIME}s  exit: $rc"
        echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
        echo "last status: $status"
        grep -E '^stat::' "$log" || true
        grep -E '^==[0-9]+== ERROR|^SUMMARY|panicked at' "$log" | head -n 5 || true
    } >"$FUZZ/stats/$target.txt"
    # One regression per distinct failure: a crash input is kept only when its first panic site is new to
    # fuzz/artifacts/<target>, smallest input first (fork mode writes one file per crash, mostly duplicates).
    declare -A known=()
    for kept in "$FUZZ/artifacts/$target"/*; do
        if [ -f "$kept" ]; then known[$(signature "$bin" "$kept")]=1; fi
    done
    crashes=0
    while IFS= read -r crash; do
        crashes=$((crashes + 1))
        sig=$(signature "$bin" "$crash")
        [ -n "${known[$sig]:-}" ] && continue
        known[$sig]=1
        cp "$crash" "$FUZZ/artifacts/$target/"
        echo "    NEW fuzz/artifacts/$target/$(basename "$crash"): $sig" | tee -a "$FUZZ/stats/$target.txt"
        found=1
    done < <(ls -Sr "$scratch" 2>/dev/null | sed "s#^#$scratch/#")
    echo "failing inputs found: $crashes" >>"$FUZZ/stats/$target.txt"
    unset known
    [ "$rc" = 0 ] || { echo "    $target stopped with exit $rc; see $log"; found=1; }
    echo "    $status"
    if [ "$MERGE" = 1 ]; then
        "$bin" -merge=1 -timeout=10 "$FUZZ/corpus/$target" "$work" >>"$log" 2>&1
        echo "    merged: $(find "$FUZZ/corpus/$target" -type f | wc -l) files in fuzz/corpus/$target"
    fi
done
exit $found
