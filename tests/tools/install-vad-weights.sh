#!/usr/bin/env bash
# Fetches the Silero VAD v6 weights (silero_vad.onnx, MIT) from the PyPI wheel silero-vad==6.2.3 and checks them
# against the sha256 the wheel's own RECORD lists. The ONNX file is the source because the wheel's safetensors
# file holds older (v5) weights. Idempotent: a present file with the right hash is left alone. Never committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WHEEL_DIR="$ROOT/.cache/wheels"
MODEL_DIR="$ROOT/.cache/models/vad"
TARGET="$MODEL_DIR/silero_vad.onnx"
# The 16 kHz + 8 kHz opset-16 export that `load_silero_vad(onnx=True)` uses; the Rust loader takes its 16 kHz branch.
MEMBER="silero_vad/data/silero_vad.onnx"
# From the 6.2.3 wheel's RECORD (urlsafe base64 there, hex here). Also pinned in agent/vad/src/lib.rs.
EXPECTED_HEX="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"

PY=python3
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"

sha_hex() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$TARGET" ] && [ "$(sha_hex "$TARGET")" = "$EXPECTED_HEX" ]; then
  exit 0
fi

mkdir -p "$WHEEL_DIR" "$MODEL_DIR"
wheel=$(ls "$WHEEL_DIR"/silero_vad-6.2.3-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$WHEEL_DIR" silero-vad==6.2.3
  wheel=$(ls "$WHEEL_DIR"/silero_vad-6.2.3-*.whl | head -n1)
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
        sys.exit(f"install-vad-weights: {member} is not listed in {record_name}")
    algo, _, b64 = line.split(",")[1].partition("=")
    if algo != "sha256":
        sys.exit(f"install-vad-weights: RECORD uses {algo}, expected sha256")
    record_hex = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    if record_hex != expected_hex:
        sys.exit(f"install-vad-weights: RECORD sha256 {record_hex} differs from the pinned {expected_hex}; "
                 "the wheel changed upstream, refusing to use it")
    data = zf.read(member)
actual = hashlib.sha256(data).hexdigest()
if actual != record_hex:
    sys.exit(f"install-vad-weights: {member} has sha256 {actual}, RECORD says {record_hex}: corrupt download, "
             f"delete {os.path.dirname(wheel)}/silero_vad-6.2.3-*.whl and retry")
tmp = target + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, target)
PYEOF

if [ "$(sha_hex "$TARGET")" != "$EXPECTED_HEX" ]; then
  echo "install-vad-weights: $TARGET does not match sha256 $EXPECTED_HEX after extraction" >&2
  exit 1
fi
echo "install-vad-weights: $TARGET ok"
