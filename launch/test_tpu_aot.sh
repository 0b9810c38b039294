#!/bin/bash
# CI hook for ahead-of-time TPU compilation: a second venv (.venv-tpu) with libtpu from
# requirements-tpu.txt, then tests/test_compile.py in it (on a CPU machine; no TPU needed).
# The venv is (re)installed whenever requirements.txt or requirements-tpu.txt change.
#   bash launch/test_tpu_aot.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv-tpu/.requirements.sha256
want="$(cat requirements.txt requirements-tpu.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv-tpu/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements.txt + requirements-tpu.txt into .venv-tpu"
  python3 -m venv .venv-tpu
  .venv-tpu/bin/pip install -q -r requirements.txt -r requirements-tpu.txt pytest
  echo "$want" > "$stamp"
fi
JAX_PLATFORMS=cpu PYTHONPATH="$PWD" .venv-tpu/bin/python -m pytest -q tests/test_compile.py "$@"
