#!/usr/bin/env bash
# The GPU benchmarks of BENCHMARKS.md in one go, on a single-GPU machine with JAX for CUDA:
#
#   bash benchmarks/gpu_suite.sh DATA_DIR OUT_DIR
#
# DATA_DIR: the ArrayRecord dataset `imagenet_ab/fixture` made of ImageNet-like JPEGs by
#   python -m benchmarks.input_pipeline --workdir W --num_images 256 --prepare_only
# (then DATA_DIR=W/tfds; preparing needs TensorFlow, reading it does not). For a GPU machine
# without network, benchmarks/gpu_offline_prep.sh prepares the data and the missing packages
# as wheels elsewhere, and writes the script that runs this there.
# Each part writes its JSON lines to OUT_DIR/<part>.jsonl and its output to OUT_DIR/parts.log, and
# runs under its own time limit, so one failing part does not stop the others. In priority order:
#   levers      A/B in one process (benchmarks.ab_backward) of the GPU program's gradients:
#               as committed (all), the position embedding's gradient as a reduction (-pos),
#               LayerNorm and biases with the hand-written CPU gradients (-gpu), and both, the
#               program measured on 2026-11-29 (-pos-gpu); and as committed with XLA's Triton
#               GEMMs off (cuBLAS for every matmul, bias additions fused into it); B/16 @ 224,
#               batch 256, bfloat16, cuDNN attention. benchmarks.gpu_hlo predicts 53.7 / 59.8 /
#               56.8 / 60.8 / 51.1 ms floors.
#   train_b16   ViT-B/16 @ 224 px, batch 256, bfloat16, cuDNN attention, lam 4; MFU
#               against the measured bf16 matmul peak and the datasheet's dense bf16 peak
#               (989 TFLOP/s, H100/H200 SXM).
#   timm        the peer: timm's ViT-B/16, same batch, bfloat16 autocast, fused attention
#               (benchmarks.peers.timm_step; needs torch and timm, which GPU images usually have).
#   stall       the trainer's loop with the real Grain pipeline vs synthetic batches (B/16 config,
#               batch 256, cuDNN attention, the config's Grain settings: 16 workers).
# Then a summary: ours / timm, MFU, the levers' A/B, the stall. At most 9.5 minutes by the
# limits (train_b16, stall and input ran in about 7 on one H200 with 16 cores on 2026-11-30,
# with the written-out attention and lam 0 in train_b16 too). Parts run only when named in
# PARTS (e.g. PARTS="input batch512" bash ...; the default PARTS is the four above):
#   input       the input pipeline alone at 1 core, half and all cores (224 px, batch 128).
#   xla         B/16 @ 224, batch 256, the written-out attention (`--attention xla`), lam 4.
#   train_small ViT-S/16 and ViT-Ti/16 @ 224 px, bfloat16, cuDNN attention.
#   batch512    B/16 @ 224 with batch 512.
#   lam0        B/16 @ 224, batch 256, lam 0: the point loss's cost against train_b16's lam 4.
set -uo pipefail
PYTHON=${PYTHON:-python3}
DATA_DIR=${1:?DATA_DIR}
OUT_DIR=${2:?OUT_DIR}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
CORES=$(nproc)
HALF=$((CORES / 2))
PARTS=" ${PARTS:-levers train_b16 timm stall} "
B16=(--dtype bfloat16 --steps_per_call 10 --warmup 2 --repeats 10 --datasheet_gflops 989000)

part() {  # part NAME SECONDS COMMAND...: runs it if NAME is in PARTS.
  local name=$1 limit=$2
  shift 2
  [[ "$PARTS" == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  echo "=== $name: $*" >>"$OUT_DIR/parts.log"
  timeout --signal=INT --kill-after=15 "$limit" "$@" --out "$OUT_DIR/$name.jsonl" \
    >"$OUT_DIR/part.log" 2>&1
  echo "=== $name rc=$? in $((SECONDS - start))s"
  cat "$OUT_DIR/part.log" >>"$OUT_DIR/parts.log"
  grep -v '^I[0-9]\{4\}\|^W[0-9]\{4\}' "$OUT_DIR/part.log" | tail -n 12
  rm "$OUT_DIR/part.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv

part levers 240 "$PYTHON" -m benchmarks.ab_backward --case B/16@224:256 --dtype bfloat16 \
  --attention cudnn --variants "all,-pos,-gpu,-pos-gpu,all[xla_gpu_enable_triton_gemm=false]" \
  --rounds 4 --steps_per_round 10

part train_b16 70 "$PYTHON" -m benchmarks.train_step --cases B/16@224:256 \
  --attention cudnn --lams 4 "${B16[@]}"

part timm 120 "$PYTHON" -m benchmarks.peers.timm_step --cases B/16@224:256 --device cuda \
  --dtype bfloat16 --steps_per_call 10 --warmup 2 --repeats 10

part stall 130 "$PYTHON" -m benchmarks.end_to_end \
  --config configs/vit_b16_imagenet_ab.py:batch_size=256 --config.dataset=imagenet_ab/fixture \
  --config.train_split=train --config.num_classes=3 --config.model.attention=cudnn \
  --data_dir "$DATA_DIR" --steps 40 --warmup 5 --rounds 3

part input 80 "$PYTHON" -m benchmarks.input_pipeline --workdir "$(dirname "$DATA_DIR")" \
  --num_images 256 --batch_size 128 --batches 16 --repeats 3 \
  --settings "loop,1:0:1:2,$HALF:$HALF:1:2,$CORES:$CORES:1:2,$CORES:0:$CORES:$((2 * CORES))"

part xla 70 "$PYTHON" -m benchmarks.train_step --cases B/16@224:256 --attention xla \
  --lams 4 "${B16[@]}"

part train_small 90 "$PYTHON" -m benchmarks.train_step --cases S/16@224:256,Ti/16@224:256 \
  --attention cudnn --lams 4 "${B16[@]}"

part batch512 70 "$PYTHON" -m benchmarks.train_step --cases B/16@224:512 --attention cudnn \
  --lams 4 "${B16[@]}"

part lam0 70 "$PYTHON" -m benchmarks.train_step --cases B/16@224:256 --attention cudnn \
  --lams 0 "${B16[@]}"

echo "=== summary"
"$PYTHON" - "$OUT_DIR" <<'PY'
import glob, json, os, sys
rows = [json.loads(line) for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.jsonl")))
        for line in open(path)]
ours = [r for r in rows if r.get("kind") == "result" and "mfu" in r]  # Train-step results.
timm = [r for r in rows if r.get("impl") == "timm" and r.get("kind") == "result"]
for r in ours:
  ratio = [r["images_per_s"]["median"] / t["images_per_s"]["median"] for t in timm
           if t["case"] == r["case"]]
  print(f'{r["case"]:14s} {r["attention"]:5s} lam={r["lam"]:g}  '
        f'{r["images_per_s"]["median"]:8.0f} images/s  MFU {100 * r["mfu"]:4.1f} % measured, '
        f'{100 * r.get("mfu_datasheet", float("nan")):4.1f} % datasheet'
        + (f'  ours/timm {ratio[0]:.2f}' if ratio else ""))
for t in timm:
  print(f'{t["case"]:14s} timm  {t["images_per_s"]["median"]:8.0f} images/s')
for r in rows:  # The levers' A/B (benchmarks.ab_backward).
  if r.get("kind") == "result" and "variant" in r:
    print(f'{r["case"]:14s} {r["variant"]:10s} {1e3 * r["step_s"]["median"]:6.1f} ms '
          f'({1e3 * r["step_s"]["min"]:.1f}-{1e3 * r["step_s"]["max"]:.1f})  '
          f'{r["images_per_s"]:8.0f} images/s')
for r in rows:
  if r.get("kind") == "summary" and r.get("bench") == "end_to_end":
    print(f'input stall: median {100 * r["median_stall"]:.2f} % over {r["rounds"]} rounds')
PY
