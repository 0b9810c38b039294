# Sourced by the launch scripts (and usable in an interactive shell): creates the virtual environment on first use, then activates it.
# LUAB_VENV overrides its location (default: .venv at the repository root); LUAB_REQUIREMENTS
# the requirement files installed into it (default: requirements.txt; e.g.
# "requirements.txt requirements-tpu.txt" for .venv-tpu). The venv is reinstalled whenever
# those files change.
LUAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LUAB_VENV="${LUAB_VENV:-$LUAB_ROOT/.venv}"
LUAB_REQUIREMENTS="${LUAB_REQUIREMENTS:-requirements.txt}"
PYTHON="${PYTHON:-python3}"
stamp="$LUAB_VENV/.requirements.sha256"
want="$(cd "$LUAB_ROOT" && cat $LUAB_REQUIREMENTS | sha256sum | cut -d' ' -f1)"
if [ ! -x "$LUAB_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing $LUAB_REQUIREMENTS into $LUAB_VENV (first run: a few minutes)"
  "$PYTHON" -m venv "$LUAB_VENV" &&
    "$LUAB_VENV/bin/python" -m pip install --quiet --upgrade pip &&
    (cd "$LUAB_ROOT" && "$LUAB_VENV/bin/python" -m pip install --quiet \
      $(printf -- '-r %s ' $LUAB_REQUIREMENTS)) &&
    echo "$want" > "$stamp" ||
    { echo "[setup] installing the requirements failed" >&2; return 1 2>/dev/null || exit 1; }
fi
# shellcheck disable=SC1091
source "$LUAB_VENV/bin/activate"
cd "$LUAB_ROOT"
export PYTHONPATH="$LUAB_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# TensorFlow is only a data/summary library here: quiet, and off the accelerators.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# glibc reads its malloc tunables only at process start; hugetlb=1 gives XLA:CPU's per-step
# temporaries transparent huge pages (luab_jax/glibc_tunables.py says why; a value you set wins).
case ":${GLIBC_TUNABLES:-}:" in
  *:glibc.malloc.hugetlb=*) ;;
  *) export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac
