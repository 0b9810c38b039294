#!/bin/bash
# CI hook for ahead-of-time TPU compilation: a second venv (.venv-tpu) with libtpu from
# requirements-tpu.txt, then tests/test_compile.py in it (on a CPU machine; no TPU needed).
#   bash launch/test_tpu_aot.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-tpu/bin/python ]; then
  python3 -m venv .venv-tpu
  .venv-tpu/bin/pip install -q -r requirements.txt -r requirements-tpu.txt pytest
fi
JAX_PLATFORMS=cpu PYTHONPATH="$PWD" .venv-tpu/bin/python -m pytest -q tests/test_compile.py "$@"
