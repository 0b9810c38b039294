#!/usr/bin/env bash
# Cloud TPU VM or pod slice: create (or reuse), install, copy the code, run the same command on
# every worker, stream the logs, stop, delete. Needs an authenticated `gcloud` and a project.
#
#   export LUAB_TPU_NAME=luab-v5e LUAB_TPU_ZONE=us-west4-a LUAB_TPU_TYPE=v5litepod-16 \
#          LUAB_TPU_RUNTIME=v2-alpha-tpuv5-lite
#   bash launch/tpu_pod.sh create              # reuses the TPU VM if it exists
#   bash launch/tpu_pod.sh setup               # copies this checkout, installs the venv
#   bash launch/tpu_pod.sh run --config configs/vit_b16_imagenet_ab.py:lam=1 \
#       --config.data_dir=/mnt/BUCKET/tfds \
#       --workdir /mnt/BUCKET/luab/b16_lam1    # starts on all workers, then streams worker 0
#   bash launch/tpu_pod.sh logs [WORKER]       # stream a worker's log again (default 0)
#   bash launch/tpu_pod.sh stop                # stops the trainer on every worker
#   bash launch/tpu_pod.sh delete              # deletes the TPU VM (billing stops)
#
# Every worker runs the trainer with LUAB_DISTRIBUTED=auto: jax.distributed.initialize() learns
# the coordinator and the process ids from the TPU metadata (luab_jax/distributed.py). The
# work directory and the data must be paths all workers see: mount the bucket on every worker
# (e.g. `gcsfuse --implicit-dirs BUCKET /mnt/BUCKET`); a gs:// URL is refused, since the trainer
# writes its work directory with local file I/O (luab_jax/workdir.py).
set -euo pipefail
: "${LUAB_TPU_NAME:?set LUAB_TPU_NAME}" "${LUAB_TPU_ZONE:?set LUAB_TPU_ZONE}"
remote_dir="luab_jax"  # Under each worker's home directory.
tpu=(gcloud compute tpus tpu-vm)
on_all() { "${tpu[@]}" ssh "$LUAB_TPU_NAME" --zone="$LUAB_TPU_ZONE" --worker=all --command="$1"; }

command="${1:?usage: tpu_pod.sh create|setup|run ARGS|logs [WORKER]|stop|delete}"
shift
case "$command" in
  create)
    if "${tpu[@]}" describe "$LUAB_TPU_NAME" --zone="$LUAB_TPU_ZONE" >/dev/null 2>&1; then
      echo "[tpu] reusing $LUAB_TPU_NAME"
    else
      "${tpu[@]}" create "$LUAB_TPU_NAME" --zone="$LUAB_TPU_ZONE" \
        --accelerator-type="${LUAB_TPU_TYPE:?set LUAB_TPU_TYPE, e.g. v5litepod-16}" \
        --version="${LUAB_TPU_RUNTIME:?set LUAB_TPU_RUNTIME, e.g. v2-alpha-tpuv5-lite}"
    fi
    ;;
  setup)
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # Tracked files only (no venv, data or work directories), as one tarball per worker.
    tarball="$(mktemp -d)/luab_jax.tar.gz"
    git -C "$root" archive --format=tar.gz -o "$tarball" HEAD
    "${tpu[@]}" scp "$tarball" "$LUAB_TPU_NAME:luab_jax.tar.gz" --zone="$LUAB_TPU_ZONE" \
      --worker=all
    on_all "mkdir -p $remote_dir && tar -xzf luab_jax.tar.gz -C $remote_dir &&
            cd $remote_dir && source launch/env.sh &&
            python -m pip install --quiet -r requirements-tpu.txt &&
            python -c 'import jax; print(jax.process_index(), jax.devices())'"
    ;;
  run)
    # printf %q keeps the arguments' quoting through the remote shell.
    args="$(printf '%q ' "$@")"
    on_all "cd $remote_dir && source launch/env.sh &&
            LUAB_DISTRIBUTED=auto nohup python -m luab_jax.train $args > ~/luab_run.log 2>&1 &
            echo \$! > ~/luab_run.pid"
    exec "$0" logs 0
    ;;
  logs)
    "${tpu[@]}" ssh "$LUAB_TPU_NAME" --zone="$LUAB_TPU_ZONE" --worker="${1:-0}" \
      --command="tail -n +1 -f ~/luab_run.log"
    ;;
  stop)
    on_all 'if [ -f ~/luab_run.pid ]; then kill "$(cat ~/luab_run.pid)" || true; fi'
    ;;
  delete)
    "${tpu[@]}" delete "$LUAB_TPU_NAME" --zone="$LUAB_TPU_ZONE" --quiet
    ;;
  *)
    echo "unknown command $command; use create|setup|run|logs|stop|delete" >&2
    exit 2
    ;;
esac
