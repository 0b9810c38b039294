#!/usr/bin/env bash
# Creates .venv-bench, the separate environment of the peer benchmarks (timm, tf.data):
# requirements-bench.txt, never mixed into the project's .venv. About 6 GB (torch's CUDA build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LUAB_BENCH_VENV:-$root/.venv-bench}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet -r "$root/requirements-bench.txt"
echo "[bench_env] ready: $venv/bin/python"
