"""ViT-B/16 on ImageNet-AB: the paper's headline setting (reported top-1 81.6 -> 82.5).

LUAB (lam > 0) or the baseline (lam=0), evaluated on ImageNet val. Prepare the data once
(README, "Real data"), then on a pod slice (launch/README section of the README):

  python -m luab_jax.train --config configs/vit_b16_imagenet_ab.py:lam=1 \
      --config.data_dir=/mnt/BUCKET/tfds \
      --workdir /mnt/BUCKET/luab/vit_b16_lam1
  python -m luab_jax.train --config configs/vit_b16_imagenet_ab.py:lam=0 \
      --config.data_dir=/mnt/BUCKET/tfds \
      --workdir /mnt/BUCKET/luab/vit_b16_baseline

Larger slices: shard parameters and optimizer state too (FSDP), and/or split attention heads
and MLP units over a tensor-parallel "model" axis, e.g.
  --config.mesh='[("data", -1), ("fsdp", 8), ("model", 1)]'
  --config.mesh='[("data", -1), ("fsdp", 4), ("model", 2)]'
For ViT-L or memory-bound runs: --config.model.remat=dots_saveable (or full) and
--config.model.scan_layers=True (see luab_jax/models/vit.py).

Small local mode, on the test fixture (a handful of photographs; seconds on a CPU):

  python -m luab_jax.prepare_data --dataset imagenet_ab/fixture \
      --manual_dir tests/fixtures/imagenet_ab --data_dir data/tfds_fixture
  python -m luab_jax.train --config configs/vit_b16_imagenet_ab.py:runlocal \
      --workdir workdirs/vit_b16_imagenet_ab_local

Arguments: lam (point-regression weight; 0 = baseline), epochs, batch_size, runlocal. Everything
but the model size and the sharding comes from configs/vit_s16_imagenet_ab.py.

Recipe. The paper's exact recipe is not public (see the LUAB reference); its ViT-B baseline
(81.6) is at DeiT-B's level (81.8), i.e. the DeiT recipe. This config has DeiT's optimiser and
schedule (batch 1024, AdamW lr 1e-3, weight decay 0.05, 5 warmup epochs, cosine, label
smoothing 0.1, 300 epochs) but NOT its RandAugment, Mixup/CutMix, random erasing, repeated
augmentation and stochastic depth, which this project does not implement yet. Without them a
ViT-B trained from scratch on ImageNet-1k overfits and lands far below 81.6 (well under 80%):
do not compare its absolute numbers with the paper's. Further differences from DeiT, big_vision
choices here: gradient clipping at global norm 1.0 (DeiT: none), the image read out by global
average pooling (DeiT: the class token; `model.pool_type="tok"` selects it), Xavier-uniform
layers with zero-initialised heads (DeiT: truncated normal 0.02), bilinear training crops
(DeiT and the official LUAB loader: bicubic; `input.resize_method`) and pixels scaled to
[-1, 1] (DeiT: ImageNet mean and std). Weight decay applies to kernels only, as in both.
Expected result: LUAB above the baseline in top-1 and in minival point error; not yet measured
by this project.

Training runs on ImageNet-AB's train[:99%]; train[99%:] (12,812 images) is the minival split for
the point error, and ImageNet's validation set (TFDS `imagenet2012`) gives top-1. ImageNet-AB
stores its records class by class, so both slices are taken over a fixed permutation of the
records (`datasets.core.get_source`): minival samples every class, and no class is left out
of training.

Expected runtime: not measured. Compute: ViT-B/16 at 224 px is about 105 GFLOP per image per
training step (3 x 35 GFLOP forward, a multiply-add counted as 2), so 300 epochs are 4.0e19
FLOP: about 5.7 h on a v4-32 slice (16 chips, 275 TFLOP/s bf16 each) at 45% model FLOPs
utilisation, with the input pipeline feeding ~19k images/s.

What fits (ahead-of-time compilation of the real train step, no TPU; 2026-11-25, jax 0.10.2,
libtpu 0.0.42.1; this config as is: global batch 1024, bfloat16 compute, float32 parameters
and AdamW moments, mesh data=all; BENCHMARKS.md has the commands and ViT-L/16):

  JAX_PLATFORMS=cpu python -m luab_jax.compile --config configs/vit_b16_imagenet_ab.py \
      --topology v5e:8x8 [--config.model.remat=full]
  python -m benchmarks.tpu_aot --python VENV_WITH_LIBTPU/bin/python --topologies v5e:8x8,v4:2x2x4

  | topology           | chips | remat         | memory per chip (args / temps / total) | HBM    | fits | FLOPs per step (compiled / analytic) |
  |--------------------|-------|---------------|----------------------------------------|--------|------|--------------------------------------|
  | v4:2x2x4 (v4-32)   | 16    | none          | 1.01 / 6.21 / 7.39 GiB                 | 32 GiB | yes  | 1.083e14 / 1.073e14                  |
  | v4:2x2x4 (v4-32)   | 16    | full          | 1.01 / 1.01 / 2.22 GiB                 | 32 GiB | yes  | 1.331e14 / 1.073e14                  |
  | v4:2x2x4 (v4-32)   | 16    | dots_saveable | 1.01 / 4.41 / 5.61 GiB                 | 32 GiB | yes  | 1.090e14 / 1.073e14                  |
  | v5e:8x8 (v5e-64)   | 64    | none          | 0.98 / 1.38 / 2.51 GiB                 | 16 GiB | yes  | 1.084e14 / 1.073e14                  |
  | v5e:8x8 (v5e-64)   | 64    | full          | 0.98 / 0.33 / 1.49 GiB                 | 16 GiB | yes  | 1.339e14 / 1.073e14                  |
  | v5e:8x8 (v5e-64)   | 64    | dots_saveable | 0.98 / 1.16 / 2.31 GiB                 | 16 GiB | yes  | 1.095e14 / 1.073e14                  |
  | v5p:4x4x4 (v5p-128)| 64    | none          | 0.98 / 1.62 / 2.75 GiB                 | 95 GiB | yes  | 1.084e14 / 1.073e14                  |

(the v5p row is from an earlier compile with the same versions.) v5e-256 (v5e:16x16): not yet
compiled (a compile did not finish in 10 minutes on a 2-core CPU). Temporaries (activations)
grow with the batch per chip: 64 images on v4-32 need 6.2 GiB, 16 on v5e-64 1.4 GiB; v5e-256
holds 4 per chip, so it should need less than v5e-64, but that is an expectation, not a
compiled figure. Compiled FLOPs are within 1-2% of the analytic count (norms, softmax,
optimizer are the difference); remat=full recomputes each block's forward pass (+25%).
B/16 fits everywhere without remat; remat=full cuts the temporaries 4-6x.
"""

import importlib.util
import os

from luab_jax import config_args
from luab_jax.models import vit


def _vit_s16_config_module():
  # The recipe lives in the ViT-S/16 config; only the model size and the sharding differ.
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vit_s16_imagenet_ab.py")
  spec = importlib.util.spec_from_file_location("vit_s16_imagenet_ab", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  args = config_args.parse_arg(arg, lam=1.0, epochs=300, batch_size=1024, runlocal=False)
  config = _vit_s16_config_module().get_config(
      f"lam={args.lam},epochs={args.epochs},batch_size={args.batch_size},"
      f"runlocal={args.runlocal},variant=B/16")
  # Attention and MLP kernels split over "model" (tensor parallel; nothing while its size is 1)
  # and, like every tensor larger than fsdp_min_size_mb, over "fsdp" (nothing while its size is
  # 1); small ones (biases, norms) stay replicated.
  config.sharding_rules = (*vit.TENSOR_PARALLEL_RULES, (".*", "fsdp"))
  config.fsdp_min_size_mb = 4.0
  if not args.runlocal:
    # Present so that --config.model.remat=full / --config.model.scan_layers=True override them.
    config.model.scan_layers = False
    config.model.remat = "none"
  return config
