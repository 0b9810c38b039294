#!/usr/bin/env bash
# Single-host GPU training: one process drives all visible GPUs (CUDA_VISIBLE_DEVICES to pick).
#   bash launch/gpu.sh --config configs/vit_b16_imagenet_ab.py:lam=1 --workdir workdirs/b16
# Installs requirements-gpu.txt (jax[cuda13]) into the venv on first use.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if ! python -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  echo "[gpu] installing requirements-gpu.txt into $LUAB_VENV"
  python -m pip install --quiet -r requirements-gpu.txt
fi
python -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())'
# Let XLA take most GPU memory up front (the default 75% leaves room we never use).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
exec python -m luab_jax.train "$@"
