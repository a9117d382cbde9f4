#!/usr/bin/env bash
# Fetches the speaker-encoder weights (Resemblyzer's pretrained.pt, Apache-2.0) from the PyPI wheel and checks
# them against the sha256 the wheel's own RECORD lists, so a corrupted or swapped file fails here and not as
# odd embeddings later. Idempotent: a present file with the right hash is left alone. Weights are never committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WHEEL_DIR="$ROOT/.cache/wheels"
MODEL_DIR="$ROOT/.cache/models/speaker"
TARGET="$MODEL_DIR/pretrained.pt"
MEMBER="resemblyzer/pretrained.pt"
# Also pinned in agent/speaker/src/weights.rs (PRETRAINED_SHA256); both come from the 0.1.4 wheel's RECORD.
EXPECTED_HEX="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"

PY=python3
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"

sha_hex() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$TARGET" ] && [ "$(sha_hex "$TARGET")" = "$EXPECTED_HEX" ]; then
  exit 0
fi

mkdir -p "$WHEEL_DIR" "$MODEL_DIR"
wheel=$(ls "$WHEEL_DIR"/[Rr]esemblyzer-0.1.4-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$WHEEL_DIR" resemblyzer==0.1.4
  wheel=$(ls "$WHEEL_DIR"/[Rr]esemblyzer-0.1.4-*.whl | head -n1)
fi

# RECORD stores "path,sha256=<urlsafe base64 without padding>,size"; decode it to hex and extract next to it.
"$PY" - "$wheel" "$MEMBER" "$TARGET" "$EXPECTED_HEX" <<'PYEOF'
import base64, hashlib, sys, zipfile, os
wheel, member, target, expected_hex = sys.argv[1:5]
with zipfile.ZipFile(wheel) as zf:
    record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
    record = zf.read(record_name).decode()
    line = next((l for l in record.splitlines() if l.startswith(member + ",")), None)
    if line is None:
        sys.exit(f"install-speaker-weights: {member} is not listed in {record_name}")
    algo, _, b64 = line.split(",")[1].partition("=")
    if algo != "sha256":
        sys.exit(f"install-speaker-weights: RECORD uses {algo}, expected sha256")
    record_hex = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    if record_hex != expected_hex:
        sys.exit(f"install-speaker-weights: RECORD sha256 {record_hex} differs from the pinned {expected_hex}; "
                 "the wheel changed upstream, refusing to use it")
    data = zf.read(member)
actual = hashlib.sha256(data).hexdigest()
if actual != record_hex:
    sys.exit(f"install-speaker-weights: {member} has sha256 {actual}, RECORD says {record_hex}: corrupt download, "
             f"delete {os.path.dirname(wheel)} and retry")
tmp = target + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, target)
PYEOF

if [ "$(sha_hex "$TARGET")" != "$EXPECTED_HEX" ]; then
  echo "install-speaker-weights: $TARGET does not match sha256 $EXPECTED_HEX after extraction" >&2
  exit 1
fi
echo "install-speaker-weights: $TARGET ok"
