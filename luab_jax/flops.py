"""Analytic model FLOPs of a ViT training step, to check the compiler's count against.

A multiply-add counts as 2 FLOPs. Per image, with N tokens (patches, plus the CLS token with
pool_type="tok"), width D, MLP width M and L layers, the forward pass is

  patch embedding  2 * patches * (P * P * 3) * D
  per layer        2 * N * D * 3D (q, k, v) + 2 * 2 * N^2 * D (scores, weighted values)
                   + 2 * N * D * D (attention output) + 2 * 2 * N * D * M (MLP)
  heads            2 * D * num_classes + the point head (linear or MLP; softargmax 2 * N * D)

Norms, softmaxes, GELUs and the loss are left out (a few percent of the matrix products). A
training step is 3 x forward (backward = 2 x forward); full rematerialisation recomputes the
forward pass once more (4 x), which the compiled count includes and this one does not.
"""

from luab_jax.models import vit

TRAIN_FACTOR = 3  # Forward + backward (weights and activations), per image.


def vit_forward_flops(model_config, num_classes: int) -> float:
  """Forward FLOPs of one image for `config.model` of a "vit" model."""
  size = vit.parse_variant(model_config.get("variant", "B/16"))
  for key in ("width", "depth", "mlp_dim", "num_heads"):
    if model_config.get(key) is not None:
      size[key] = model_config[key]
  d, m, depth, p = size["width"], size["mlp_dim"], size["depth"], size["patch_size"]
  image_size = model_config.image_size
  patches = (image_size // p) ** 2
  tokens = patches + (1 if model_config.get("pool_type", "gap") == "tok" else 0)
  embed = 2 * patches * p * p * 3 * d
  layer = 2 * tokens * d * 3 * d + 2 * 2 * tokens * tokens * d + 2 * tokens * d * d
  layer += 2 * 2 * tokens * d * m
  num_points = model_config.get("num_points", 1)
  point_head = model_config.get("point_head", "linear")
  features = 2 * d if model_config.get("point_features", "pooled") == "cls+gap" else d
  if point_head == "linear":
    points = 2 * features * 2 * num_points
  elif point_head == "mlp":
    points = 2 * features * d + 2 * d * 2 * num_points
  else:  # softargmax: a logit per patch token and point.
    points = 2 * patches * d * num_points
  return float(embed + depth * layer + 2 * d * num_classes + points)


def train_step_flops(config) -> float:
  """Analytic FLOPs of one training step over the global batch (`config.batch_size`)."""
  if config.model_name != "vit":
    raise ValueError(f"config.model_name={config.model_name!r}: analytic FLOPs exist for 'vit' "
                     "only (luab_jax/flops.py).")
  return TRAIN_FACTOR * config.batch_size * vit_forward_flops(config.model, config.num_classes)
