"""Classification and masked point-regression losses, always computed in float32.

LUAB loss = classification + lambda * point_regression, where point_regression is a masked mean
over the points that survived augmentation (weight 1) and ignores the rest (weight 0).
"""

import jax
import jax.numpy as jnp
import optax

POINT_LOSSES = ("l1", "smooth_l1", "l2")
POINT_NORMALIZATIONS = ("valid", "batch")


def softmax_xent(logits, labels, *, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy from integer labels, optional label smoothing."""
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def sigmoid_xent(logits, multi_hot):
  """Per-example binary cross-entropy summed over classes (multi-label, e.g. COCO)."""
  logits = logits.astype(jnp.float32)
  return optax.sigmoid_binary_cross_entropy(logits, multi_hot.astype(jnp.float32)).sum(-1)


def masked_point_loss(predicted, targets, weights, *, kind: str = "smooth_l1",
                      normalize: str = "valid", smooth_l1_beta: float = 0.1,
                      example_weight=None, denominator=None):
  """Masked regression loss between predicted and target points.

  Args:
    predicted, targets: [B, P, 2] (x, y) in crop coordinates.
    weights: [B, P], 1 where the target is usable, 0 where missing or cropped out.
    kind: "l1", "smooth_l1" (Huber-like, quadratic below `smooth_l1_beta`) or "l2" (squared).
    normalize: "valid" divides by the number of usable points in the (global) batch, so the
      loss scale does not depend on how many images have clicks; "batch" divides by all B * P
      points, so images without clicks dilute the loss (closer to a plain mean over the batch).
    example_weight: optional [B] 0/1; a weight-0 example (an undecodable image kept for static
      shapes) has no usable point and is not counted in the "batch" denominator either.
    denominator: optional float32 scalar replacing the one `normalize` computes from this
      batch. Gradient accumulation passes the whole batch's count to each micro-batch, so that
      the micro-batch losses sum to the whole batch's loss (see `point_denominator`).

  Per point, the loss is the mean over the two coordinates. Returns a float32 scalar; 0 when
  no point in the batch is usable.
  """
  if kind not in POINT_LOSSES:
    raise ValueError(f"Unknown point loss {kind!r}; use one of {POINT_LOSSES}.")
  if normalize not in POINT_NORMALIZATIONS:
    raise ValueError(f"Unknown point loss normalization {normalize!r}; "
                     f"use one of {POINT_NORMALIZATIONS}.")
  diff = predicted.astype(jnp.float32) - targets.astype(jnp.float32)
  if kind == "l1":
    per_coord = jnp.abs(diff)
  elif kind == "l2":
    per_coord = jnp.square(diff)
  else:
    abs_diff = jnp.abs(diff)
    per_coord = jnp.where(abs_diff < smooth_l1_beta,
                          0.5 * jnp.square(abs_diff) / smooth_l1_beta,
                          abs_diff - 0.5 * smooth_l1_beta)
  weights = weights.astype(jnp.float32)
  if example_weight is not None:
    weights = weights * example_weight.astype(jnp.float32)[:, None]
  total = jnp.sum(per_coord.mean(-1) * weights)
  if denominator is None:
    denominator = point_denominator(weights, normalize=normalize, example_weight=example_weight)
  return total / denominator


def point_denominator(weights, *, normalize: str, example_weight=None):
  """The count `masked_point_loss` divides by (`weights` already times `example_weight`)."""
  if normalize == "valid":
    return jnp.maximum(jnp.sum(weights), 1.0)
  if example_weight is None:
    return jnp.float32(weights.size)
  num_examples = jnp.maximum(jnp.sum(example_weight.astype(jnp.float32)), 1.0)
  return num_examples * weights.shape[-1]
