#!/usr/bin/env bash
# Installs the peer for the speaker-encoder benchmark (tests/bench/speaker.sh): Resemblyzer 0.1.4's own
# VoiceEncoder on PyTorch CPU. Benchmark-only, never run by CI (so it lives here and not in tests/tools/).
# Idempotent: packages already present are left alone; a second run does nothing but check.
#   bash tests/bench/install-speaker-peer.sh      -> .cache/speaker-peer-venv/bin/python
#
# Same stack as the committed goldens (agent/speaker/scripts/make_golden.py):
#  - Debian bookworm's python3-torch 1.13.1+dfsg (CPU) for /usr/bin/python3 (3.11); PyPI's torch wheels pull
#    gigabytes of CUDA libraries, Debian's does not.
#  - libopenblas0-serial: libtorch 1.13 from Debian does its GEMMs (the LSTM input and recurrent products)
#    through whatever libblas.so.3 the alternatives system points at. `python3-torch` alone brings only the
#    reference BLAS (libblas3, unoptimised Fortran loops), which would make the peer several times slower than
#    PyTorch is with a real BLAS. OpenBLAS "serial" is single-threaded by build, matching torch.set_num_threads(1)
#    and the one pinned core; with it installed, libblas.so.3 resolves to OpenBLAS (higher alternatives priority).
#  - a venv with --system-site-packages (sees Debian's torch) holding librosa 0.11 and a numpy 1.x stack: librosa
#    alone resolves to numpy 2.x, which Debian's torch 1.13 cannot exchange arrays with.
#  - resemblyzer==0.1.4 with --no-deps: its webrtcvad dependency (C extension, used only by silence trimming) is
#    not needed; speaker_peer.py stubs the module. Its pretrained.pt is the file tests/tools/install-speaker-weights.sh
#    extracts and hash-checks; the peer loads that same file.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=${SPEAKER_PEER_VENV:-$ROOT/.cache/speaker-peer-venv}

APT_PACKAGES=(python3-torch python3-venv libopenblas0-serial)
# Everything pip puts in the venv, pinned (pip freeze of the first install); the rest comes from Debian.
PIP_PINS=(librosa==0.11.0 numpy==1.26.4 scipy==1.13.1 numba==0.60.0 llvmlite==0.43.0 scikit-learn==1.5.2
  soundfile==0.13.1 soxr==0.5.0.post1 audioread==3.1.0 decorator==5.3.1 joblib==1.6.0 lazy-loader==0.6
  msgpack==1.2.4 pooch==1.9.0 threadpoolctl==3.8.0 cffi==2.1.1 pycparser==3.12 platformdirs==4.14.9
  packaging==26.4 cloudpickle==3.1.3)
RESEMBLYZER=resemblyzer==0.1.4

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-speaker-peer: apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  # --no-install-recommends: python3-torch recommends ~60 more packages (cuda stubs, build helpers) the peer
  # does not use.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"

# One check of every pin; pip runs only when something is missing or at another version.
if ! "$PY" - "${PIP_PINS[@]}" "$RESEMBLYZER" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if have != want:
        sys.exit(1)
PYEOF
then
  echo "install-speaker-peer: pip install into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check "${PIP_PINS[@]}"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps "$RESEMBLYZER"
fi

bash tests/tools/install-speaker-weights.sh >/dev/null

# Fails here, not in the benchmark, if torch cannot take numpy arrays or resemblyzer does not import.
"$PY" - <<'PYEOF'
import sys, types
sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))
import numpy as np, torch, librosa, resemblyzer  # noqa: F401
torch.from_numpy(np.zeros(4, dtype=np.float32)).sum().item()
print(f"install-speaker-peer: ok (torch {torch.__version__}, numpy {np.__version__}, librosa {librosa.__version__},"
      f" resemblyzer 0.1.4) in {sys.prefix}")
PYEOF
