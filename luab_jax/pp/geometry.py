"""Crop boxes and the annotator points that have to follow them.

Point convention (the one convention of the whole project): a point is (x, y) normalised to
[0, 1] over the whole image, x to the right, y down. Datasets that store another order (COCO-AB
stores (y, x)) convert when their records are read, never inside the pipeline.

A crop box is (top, left, height, width) in pixels of the original image, the form used by the
official LUAB loaders (torchvision's RandomResizedCrop parameters).
"""

import math

import numpy as np

# The value the official loaders put in the target where there is no usable point.
MISSING = -1.0


def sample_inception_box(rng: np.random.Generator, height: int, width: int, *,
                         scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                         attempts: int = 10) -> tuple[int, int, int, int]:
  """Samples a RandomResizedCrop ("inception crop") box: area share in `scale`, aspect in `ratio`.

  Follows the usual rejection scheme: try `attempts` random boxes, then fall back to the
  largest central box whose aspect ratio is within `ratio`.
  """
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(attempts):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  image_ratio = width / height
  if image_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif image_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def central_box(height: int, width: int, crop_fraction: float, *,
                keep_aspect: bool = True) -> tuple[int, int, int, int]:
  """The evaluation crop: the square central box of side `crop_fraction` * shorter side, or
  with `keep_aspect=False` the central `crop_fraction` of each side (the whole image at 1.0;
  resized to a square it is squashed, the usual multi-label protocol)."""
  h, w = (min(height, width),) * 2 if keep_aspect else (height, width)
  h, w = max(1, int(round(h * crop_fraction))), max(1, int(round(w * crop_fraction)))
  return (height - h) // 2, (width - w) // 2, h, w


def points_into_crop(points: np.ndarray, valid: np.ndarray, box, image_hw, *,
                     flip) -> tuple[np.ndarray, np.ndarray]:
  """Moves image-normalised points into the coordinates of a crop (official LUAB semantics).

  One example, or a batch of them along leading axes `...` (the training pipeline moves a
  whole batch in one call: one numpy pass instead of one per example).

  Args:
    points: [..., P, 2] (x, y) in [0, 1] over the original image.
    valid: [..., P] bool, False where the image has no point.
    box: [..., 4] (top, left, height, width) in pixels of the original image.
    image_hw: [..., 2] (height, width) of the original image.
    flip: [...] bool, whether the crop is flipped left-right afterwards.

  Returns:
    targets [..., P, 2] float32 in crop coordinates, MISSING (-1) where the weight is 0, and
    weights [..., P] float32: 1 for a point inside the crop (bounds inclusive), 0 for a missing,
    non-finite or outside point.
  """
  points = np.asarray(points, np.float64)
  valid = np.asarray(valid, bool)
  # [..., 1] each, to broadcast over the P points.
  top, left, h, w = np.moveaxis(np.asarray(box, np.float64), -1, 0)[..., None]
  height, width = np.moveaxis(np.asarray(image_hw, np.float64), -1, 0)[..., None]
  u = (points[..., 0] * width - left) / w
  v = (points[..., 1] * height - top) / h
  # NaN and +-inf fail both bounds, so the range test also drops non-finite points.
  inside = valid & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
  u = np.where(np.asarray(flip, bool)[..., None], 1.0 - u, u)
  targets = np.where(inside[..., None], np.stack([u, v], axis=-1), MISSING)
  return targets.astype(np.float32), inside.astype(np.float32)


def boxes_into_crop(boxes: np.ndarray, box, image_hw) -> tuple[np.ndarray, np.ndarray]:
  """Moves image-normalised boxes into crop coordinates, exactly as `points_into_crop` moves points.

  Args:
    boxes: [M, 4] (x_min, y_min, x_max, y_max) in [0, 1] over the original image; a box with a
      negative coordinate (the datasets' -1 for "no box") or no area is missing.
    box: the crop, (top, left, height, width) in pixels of the original image.
    image_hw: (height, width) of the original image.

  Returns:
    boxes [M, 4] float32 in crop coordinates, NOT clipped to [0, 1] (a box reaching outside the
    crop keeps its true extent, so "is a point of the crop inside it" stays exact), MISSING
    where the weight is 0, and weights [M] float32 (1 = a real box). No flip: evaluation crops
    are never flipped.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  top, left, h, w = box
  height, width = image_hw
  with np.errstate(invalid="ignore"):
    valid = (np.all(np.isfinite(boxes), -1) & np.all(boxes >= 0, -1)
             & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
  x = (boxes[:, 0::2] * width - left) / w
  y = (boxes[:, 1::2] * height - top) / h
  moved = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=-1)
  moved = np.where(valid[:, None], moved, MISSING).astype(np.float32)
  return moved, valid.astype(np.float32)
