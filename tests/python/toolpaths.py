"""Where the test and bench tools are: the project-local installs first, then PATH. Shared by the pytest
fixtures and the bench scripts (tests/bench), so both pick the same binary."""
from __future__ import annotations

import shutil
from pathlib import Path


def find_kubectl(root: Path) -> str | None:
    """The kubectl that tests/tools/install-kubectl.sh installs, else the one on PATH, else None."""
    for candidate in (root / ".tools" / "bin" / "kubectl", root / ".venv" / "bin" / "kubectl"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("kubectl")
