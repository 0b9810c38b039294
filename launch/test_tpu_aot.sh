#!/bin/bash
# CI hook for ahead-of-time TPU compilation: a second venv (.venv-tpu) with libtpu from
# requirements-tpu.txt (made and kept current by env.sh), then tests/test_compile.py in it
# (on a CPU machine; no TPU needed).
#   bash launch/test_tpu_aot.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
LUAB_VENV="$root/.venv-tpu" LUAB_REQUIREMENTS="requirements.txt requirements-tpu.txt" \
  source "$root/launch/env.sh"
JAX_PLATFORMS=cpu exec python -m pytest -q tests/test_compile.py "$@"
