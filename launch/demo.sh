#!/usr/bin/env bash
# The main job on the embedded benchmark: environment, dataset, baseline + LUAB, comparison.
#   bash launch/demo.sh [--workdir workdirs/demo] [--config_args steps=600]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m luab_jax.demo "$@"
