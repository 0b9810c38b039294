# Sourced by the launch scripts (and usable in an interactive shell): creates the virtual environment on first use, then activates it.
# LUAB_VENV overrides its location (default: .venv at the repository root).
LUAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LUAB_VENV="${LUAB_VENV:-$LUAB_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$LUAB_VENV/.requirements.sha256"
want="$(sha256sum "$LUAB_ROOT/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$LUAB_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements.txt into $LUAB_VENV (first run: a few minutes)"
  "$PYTHON" -m venv "$LUAB_VENV" &&
    "$LUAB_VENV/bin/python" -m pip install --quiet --upgrade pip &&
    "$LUAB_VENV/bin/python" -m pip install --quiet -r "$LUAB_ROOT/requirements.txt" &&
    echo "$want" > "$stamp" ||
    { echo "[setup] installing the requirements failed" >&2; return 1 2>/dev/null || exit 1; }
fi
# shellcheck disable=SC1091
source "$LUAB_VENV/bin/activate"
cd "$LUAB_ROOT"
export PYTHONPATH="$LUAB_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# TensorFlow is only a data/summary library here: quiet, and off the accelerators.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
