"""ViT-L/16 on ImageNet-AB: the B/16 recipe (configs/vit_b16_imagenet_ab.py) with the large model.

  python -m luab_jax.train --config configs/vit_l16_imagenet_ab.py:lam=1 \
      --config.data_dir=/mnt/BUCKET/tfds \
      --workdir /mnt/BUCKET/luab/vit_l16_lam1

Everything but the model size comes from configs/vit_b16_imagenet_ab.py (and through it from
configs/vit_s16_imagenet_ab.py): the same data, recipe caveats, evaluators, sharding rules and
mesh. The 24 blocks are scanned (`model.scan_layers=True`: one compiled block, compile time
independent of depth; checkpoints are not interchangeable with an unscanned L/16). Activation
rematerialisation is off by default; `--config.model.remat=full` or `=dots_saveable` trades
FLOPs for memory (see the table below and luab_jax/models/vit.py).

Arguments: lam (point-regression weight; 0 = baseline), epochs, batch_size, runlocal (the B/16
config's local mode on the committed fixture: ViT-mu/8, seconds on a CPU).

Expected runtime: not measured. Compute: ViT-L/16 at 224 px is about 3 x 123 = 370 GFLOP per
image per training step (flops.py), 3.5 x B/16; 300 epochs are 1.4e20 FLOP.

What fits (ahead-of-time compilation of the real train step, no TPU; 2026-11-25, jax 0.10.2,
libtpu 0.0.42.1; global batch 1024, bfloat16 compute, float32 parameters and AdamW moments,
mesh data=all, i.e. parameters replicated; commands in BENCHMARKS.md):

  JAX_PLATFORMS=cpu python -m luab_jax.compile --config configs/vit_l16_imagenet_ab.py \
      --topology v4:2x2x4 --config.model.remat=full

  | topology         | chips | remat         | memory per chip (args / temps / total) | HBM    | fits |
  |------------------|-------|---------------|----------------------------------------|--------|------|
  | v4:2x2x4 (v4-32) | 16    | none          | compiler: temporaries 33.09G > 30.75G usable | 32 GiB | NO   |
  | v4:2x2x4 (v4-32) | 16    | full          | 3.44 / 4.53 / 8.00 GiB                 | 32 GiB | yes  |
  | v4:2x2x4 (v4-32) | 16    | dots_saveable | 3.44 / 15.68 / 19.14 GiB               | 32 GiB | yes  |
  | v5e:8x8 (v5e-64) | 64    | none          | 3.41 / 9.42 / 12.85 GiB                | 16 GiB | yes  |
  | v5e:8x8 (v5e-64) | 64    | full          | 3.41 / 2.19 / 5.63 GiB                 | 16 GiB | yes  |
  | v5e:8x8 (v5e-64) | 64    | dots_saveable | 3.41 / 5.88 / 9.31 GiB                 | 16 GiB | yes  |

So on a v4-32 (64 images per chip) run it with --config.model.remat=full (or dots_saveable).
FLOPs: analytic 3.76e14 per step; the compiled count is not comparable here, because XLA
counts the scanned block once (1.7e13 without remat, about 1/24 of the blocks plus the rest).
"""

import importlib.util
import os


def _vit_b16_config_module():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vit_b16_imagenet_ab.py")
  spec = importlib.util.spec_from_file_location("vit_b16_imagenet_ab", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  config = _vit_b16_config_module().get_config(arg)
  if config.model.variant == "B/16":  # Not in local mode (its tiny model stays).
    config.model.variant = "L/16"
    config.model.scan_layers = True
  return config
