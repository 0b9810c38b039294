"""ViT-L/16 on ImageNet-AB: the B/16 recipe (configs/vit_b16_imagenet_ab.py) with the large model.

  python -m luab_jax.train --config configs/vit_l16_imagenet_ab.py:lam=1 \
      --workdir gs://BUCKET/luab/vit_l16_lam1

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

What fits: see the ahead-of-time compilation table (TPU_TABLE below, also in BENCHMARKS.md).
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
