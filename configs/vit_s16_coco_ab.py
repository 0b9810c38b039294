"""ViT-S/16 on COCO-AB: multi-label classification of the 80 COCO classes with one point per
clicked class; LUAB (lam > 0) or the baseline (lam=0), evaluated by mAP on COCO 2014 val.

Prepare the data once (README, "Real data"), then:

  python -m luab_jax.train --config configs/vit_s16_coco_ab.py:lam=1 \
      --workdir workdirs/vit_s16_coco_ab_lam1
  python -m luab_jax.train --config configs/vit_s16_coco_ab.py:lam=0 \
      --workdir workdirs/vit_s16_coco_ab_baseline

Small local mode, on the test fixture (a handful of photographs; seconds on a CPU):

  python -m luab_jax.prepare_data --dataset coco_ab/fixture \
      --manual_dir tests/fixtures/coco_ab --data_dir data/tfds_fixture
  python -m luab_jax.train --config configs/vit_s16_coco_ab.py:runlocal \
      --workdir workdirs/vit_s16_coco_ab_local

Arguments: lam, epochs, batch_size, runlocal.

Targets (official COCO-AB loader, see luab_jax/pp/transforms.py): labels are the 80-way multi-hot
ground truth; the point of class c is its annotator's last `add` click, (x, y) in [0, 1]. A
clicked class whose point leaves the training crop loses its positive label for that crop; a
class never clicked keeps its label and has no point. The soft-argmax point head predicts one
heat map per class over the patch tokens, so the 80 point predictions cost one linear layer.

Recipe: AdamW (lr 5e-4 at batch 512, weight decay 0.05), 10 warmup epochs, cosine, 100 epochs,
sigmoid cross-entropy. From scratch on COCO's 82,783 training images a ViT-S overfits: expect a
low mAP (the literature's 80+ mAP numbers start from ImageNet-pretrained weights, which this
project does not load yet). Expected result: LUAB's mAP above the baseline's; not yet measured.

Expected runtime: not measured. Compute: 27.6 GFLOP per image per step x 82,783 x 100 epochs
= 2.3e17 FLOP, minutes on a TPU slice and about 2.5 h on one H100 at 40% of its bf16 peak.
"""

import ml_collections

from luab_jax import config_args
from luab_jax import config_schema


def get_config(arg=None):
  args = config_args.parse_arg(arg, lam=1.0, epochs=100, batch_size=512, runlocal=False)
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = "coco_ab/2014"
  # None: TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR); str-typed, so that
  # --config.data_dir=DIR can set it.
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.train_split = "train"
  config.num_classes = 80

  config.input = dict(
      image_size=224,
      crop_scale=(0.08, 1.0),  # The official LUAB loader's RandomResizedCrop.
      crop_ratio=(3 / 4, 4 / 3),
      flip=True,
      # big_vision's kernels: bilinear crops for training, antialiased (area) for evaluation.
      resize_method="bilinear",
      eval_resize_method="area",
      # Objects reach the image borders: the whole image, squashed to the square (the usual
      # multi-label protocol; a central square would drop 25-33 % of a 640 x 480 image while
      # every label of the image still counts).
      eval_crop_fraction=1.0,
      eval_keep_aspect=False,
      num_workers=16,
      eval_num_workers=8,
      read_threads=8,
      prefetch_buffer=128,
      # Bounds the batches the 16 workers keep ready: prefetch_buffer is lowered to fit
      # (num_workers x (prefetch_buffer + 1) batches; input_pipeline.buffer_options).
      ram_budget_mb=32768,
  )

  config.batch_size = args.batch_size
  config.total_epochs = args.epochs
  config.warmup_epochs = 10
  config.log_training_steps = 100
  config.ckpt_steps = 2000
  config.keep_ckpts = 3
  # The trainer's run options at its defaults (compilation cache, NaN policy, best checkpoint,
  # EMA, ...), declared so that --config.KEY=VALUE can set them.
  config.update(config_schema.run_options())

  config.model_name = "vit"
  config.model = dict(
      variant="S/16",
      image_size=224,
      pool_type="gap",
      num_points=80,  # One point per class; weight 0 where the class was not clicked.
      point_head="softargmax",
      point_features="pooled",
      # The heads too: logits of 8 significant bits tie more often, and AP ranks ties
      # pessimistically; `--config.model.dtype=float32` avoids that.
      dtype="bfloat16",
      attention="xla",  # "cudnn" on GPUs: cuDNN's fused attention (models/vit.py).
  )

  config.loss = dict(
      classification="sigmoid",
      label_smoothing=0.0,
      point_lambda=args.lam,
      point_loss="smooth_l1",
      point_normalize="valid",
      # Quadratic below this |error| (crop coordinates in [0, 1]; torch's default 1.0
      # would make it quadratic everywhere).
      point_smooth_l1_beta=0.1,
  )

  config.optax = dict(lr=5e-4 * args.batch_size / 512, lr_min_ratio=0.01, weight_decay=0.05,
                      grad_clip_norm=1.0, b1=0.9, b2=0.999)

  config.mesh = (("data", -1), ("fsdp", 1), ("model", 1))  # Tuples: --config.mesh can set them.
  config.sharding_rules = ((".*", "replicate"),)

  config.evals = ml_collections.ConfigDict()
  config.evals.val = dict(type="multilabel", dataset="coco_ab/2014", split="validation",
                          batch_size=512, every_steps=5_000)

  if args.runlocal:
    config.dataset = config.evals.val.dataset = "coco_ab/fixture"
    config.data_dir = "data/tfds_fixture"
    config.input.image_size = config.model.image_size = 32
    config.input.num_workers = config.input.eval_num_workers = 0
    config.input.read_threads = 1
    config.model.variant = "mu/8"
    config.model.dtype = "float32"
    config.batch_size = 8
    del config["total_epochs"], config["warmup_epochs"]
    config.total_steps = 4
    config.warmup_steps = 1
    config.log_training_steps = 2
    config.ckpt_steps = 2
    config.evals.val.batch_size = 8
  return config
