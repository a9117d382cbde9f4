# Sourced by tests/run.sh: puts the project-local tools first on PATH.
export PATH="$INFERGATE_ROOT/.tools/bin:$INFERGATE_ROOT/.venv/bin:$PATH"
export INFERGATE_CACHE="$INFERGATE_ROOT/.cache"
