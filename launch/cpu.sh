#!/usr/bin/env bash
# Local CPU training, one process (all cores are one JAX device unless XLA_FLAGS says otherwise).
#   bash launch/cpu.sh --config configs/demo.py:runlocal --workdir workdirs/cpu_local
# Simulated multi-device run on one CPU (e.g. to try a mesh):
#   LUAB_CPU_DEVICES=8 bash launch/cpu.sh --config configs/demo.py:runlocal \
#       --workdir workdirs/cpu8 --config.mesh='[("data", 2), ("fsdp", 2), ("model", 2)]'
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export JAX_PLATFORMS=cpu
if [ -n "${LUAB_CPU_DEVICES:-}" ]; then
  if ! [[ "$LUAB_CPU_DEVICES" =~ ^[1-9][0-9]*$ ]]; then
    echo "LUAB_CPU_DEVICES=$LUAB_CPU_DEVICES: a positive number of simulated devices." >&2
    exit 2
  fi
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$LUAB_CPU_DEVICES"
fi
exec python -m luab_jax.train "$@"
