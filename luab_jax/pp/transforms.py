"""Grain transforms that turn a dataset record into a training or evaluation example.

Input record (what the TFDS builders of this project write):
- `image`: encoded bytes (JPEG, PNG) or a uint8 array;
- the label: `label` (int, single-label datasets) or `labels` ([C] multi-hot, COCO-AB);
- the byproduct points, (x, y) in [0, 1] over the image: one point per image as `point` [2] +
  `has_point` (ImageNet-AB, luab_shapes), or one per class as `points` [C, 2] + `has_points` [C]
  (COCO-AB); or none at all (ImageNet validation), which gives `num_points` missing points;
- optional `file_name` (used in error messages) and extra keys such as `bg_label`.

Output example: `image` uint8 [S, S, 3] (the model maps it to [-1, 1] on the device, so the
workers and the host-to-device copy move a quarter of the bytes of float32); `label` int32 or
`labels` float32 [C]; `points` float32 [P, 2] in crop coordinates (-1 where missing);
`point_weight` float32 [P].
Training examples add `weight` float32 (1, or 0 for an undecodable image) and `bad_points`
int32 (the number of clicks dropped as non-finite or outside the image).

Bad input during training never stops the job (a 1.3M-image dataset has a few broken files):
- an image that cannot be decoded (truncated JPEG, zero-byte file, garbage) becomes a black
  image with `weight` 0 and no points: it stays in the batch (static shapes, so no
  recompilation and no change to the data order of later batches) but adds nothing to the loss,
  the accuracy or the gradients; the train step sums the zeros into `data/skipped_images`;
- CMYK, grayscale, palette and RGBA images and PNGs stored under a .JPEG name decode normally
  and are converted to RGB (`image_ops.load_rgb`); nothing is lost, nothing is counted;
- a NaN / infinite click or one outside [0, 1] is dropped (point weight 0) and counted in
  `data/bad_points`; the example still trains its classifier.
These counts travel in the batch, not in globals, because the transforms run in Grain worker
processes. Evaluation keeps failing loudly on an undecodable image: a metric silently computed
on fewer images would be worse than a stopped evaluation.
Evaluation can add `label_set` float32 [C] (multi-hot of a list of acceptable labels, such as
ImageNet ReaL's `real_label`) and `boxes` float32 [M, 4] + `box_weight` [M] (ground-truth boxes
moved into crop coordinates like the points, so they can be compared with predicted points).

Multi-label crop rule (official COCO-AB loader): a class whose click falls outside the training
crop loses its positive label for that crop; a class present but never clicked keeps it.
"""

import dataclasses
from typing import Any, ClassVar, Iterable, Sequence

import grain
import numpy as np

from luab_jax.pp import geometry
from luab_jax.pp import image_ops


def _record_name(record) -> str:
  name = record.get("file_name")
  if isinstance(name, bytes):
    name = name.decode("utf-8", "replace")
  return str(name) if name is not None else "<record without file_name>"


def _record_points(record, num_points: int):
  """([P, 2] float32 points, [P] validity) as the record stores them (module docstring)."""
  if "points" in record:
    points, valid = record["points"], record["has_points"]
  elif "point" in record:
    points, valid = record["point"], record["has_point"]
  else:  # A dataset without byproducts (e.g. ImageNet validation): every point is missing.
    return np.full((num_points, 2), -1, np.float32), np.zeros(num_points, bool)
  points = np.asarray(points, np.float32).reshape(-1, 2)
  valid = np.asarray(valid, bool).reshape(-1)
  if len(points) != num_points or len(valid) != num_points:
    raise ValueError(f"Record {_record_name(record)} has {len(points)} points and {len(valid)} "
                     f"validity flags, but the model predicts num_points={num_points} "
                     "(config.model.num_points).")
  return points, valid


def _points_and_validity(records, num_points: int):
  """([N, P, 2] points, [N, P] validity, [N] int32 bad points) of N records.

  A point marked valid that is not finite or lies outside [0, 1] is made invalid and counted.
  """
  rows = [_record_points(record, num_points) for record in records]
  points = np.stack([points for points, _ in rows])
  valid = np.stack([valid for _, valid in rows])
  # NaN and +-inf fail both bounds, so this also drops non-finite points.
  inside = (points >= 0) & (points <= 1)
  usable = inside[..., 0] & inside[..., 1]
  bad = np.count_nonzero(valid & ~usable, axis=-1).astype(np.int32)
  return points, valid & usable, bad


def _label_fields(record, *, label_key="label"):
  """`label` (int32) for single-label records; `labels` (float32 [C] multi-hot) otherwise.

  `label_key` names the record's single label (e.g. "original_label" in imagenet2012_real);
  None means the example carries no single label.
  """
  if "labels" not in record:
    if label_key is None:
      return {}
    if label_key not in record:
      raise KeyError(f"Record {_record_name(record)} has no label {label_key!r} (label_key); it "
                     f"has {sorted(record)}.")
    return {"label": np.int32(record[label_key])}
  return {"labels": np.asarray(record["labels"], np.float32).reshape(-1)}


def _train_labels(records, valid, weights, decoded) -> dict:
  """`label` [N] or `labels` [N, C] of a training batch, after the multi-label crop rule.

  A class that had a usable click (`valid`) whose point left the crop (weight 0) loses its
  positive label, as in the official COCO-AB loader; a row whose image was not decoded keeps
  no positive (no crop was taken, so none is known to be inside it).
  """
  rows = [_label_fields(record) for record in records]
  if "labels" not in rows[0]:
    return {"label": np.stack([row["label"] for row in rows])}
  for record, row in zip(records, rows):
    if len(row["labels"]) != weights.shape[-1]:
      raise ValueError(f"Record {_record_name(record)} has {len(row['labels'])} labels but "
                       f"{weights.shape[-1]} per-class points.")
  labels = np.stack([row["labels"] for row in rows])
  labels = np.where((valid & (weights == 0)) | ~decoded[:, None], 0.0, labels)
  return {"labels": labels.astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
  """RandomResizedCrop + horizontal flip, drawn once and applied to the image and its point.

  The crop of a record is drawn from the generator it is given: the training pipeline gives
  each stream position its own (`input_pipeline.element_rng`), so the crop of example i is
  the same whatever the number of threads, workers or processes, and a resumed run sees the
  same augmentations. The box is drawn from the header's size before any pixel is decoded, so
  a JPEG decodes only the box's region, at 1/2, 1/4 or 1/8 size where the box holds
  `draft_scale` x the output size; box and points stay in original pixels (`image_ops` module
  docstring).

  `map_batch` builds a whole batch: the image work per record, written into the batch array,
  then the points and labels of all records in single numpy passes; `random_map` is the batch
  of one record.
  """
  # Every record key `map_batch` can read (datasets.get_source(features=...) decodes no other).
  RECORD_KEYS: ClassVar[tuple[str, ...]] = ("image", "label", "labels", "point", "has_point",
                                            "points", "has_points", "file_name")
  image_size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = True
  resize_method: str = "bilinear"  # image_ops.RESIZE_METHODS; big_vision's inception_crop.
  num_points: int = 1

  def __post_init__(self):
    image_ops.check_resize_method(self.resize_method)

  def random_map(self, record, rng: np.random.Generator) -> dict:
    return {key: value[0] for key, value in self.map_batch([record], [rng]).items()}

  def map_batch(self, records: Sequence[Any], rngs: Iterable[np.random.Generator]) -> dict:
    """The batch (numpy arrays with a leading axis of len(records)) of `records`.

    Row i draws its crop and flip from the i-th generator of `rngs`, which is only taken once
    row i - 1 is done (so `rngs` may yield one generator reset for each row).
    """
    size, count = self.image_size, len(records)
    images = np.empty((count, size, size, 3), np.uint8)
    # Rows whose image is not decoded keep this unit box: their points are all dropped anyway.
    boxes = np.tile(np.array([0, 0, 1, 1], np.float64), (count, 1))
    image_hw = np.ones((count, 2), np.float64)
    flips = np.zeros(count, bool)
    decoded = np.ones(count, bool)
    for i, (record, rng) in enumerate(zip(records, rngs, strict=True)):
      name = _record_name(record)
      try:
        # The header gives the size; the box is drawn before decoding, so only the box is
        # decoded, at reduced size where it is large enough (image_ops module docstring).
        image = image_ops.open_image(record["image"], name=name)
        width, height = image.size
        box = geometry.sample_inception_box(rng, height, width, scale=self.scale,
                                            ratio=self.ratio)
        flip = self.flip and bool(rng.random() < 0.5)
        crop = image_ops.load_box(image, box, name=name,
                                  scale=image_ops.draft_scale(box, size))
      except ValueError:  # Undecodable: kept with weight 0 and counted (module docstring).
        decoded[i] = False
        images[i] = 0
        continue
      image_ops.resize(crop, size, method=self.resize_method, flip=flip, out=images[i])
      boxes[i], image_hw[i], flips[i] = box, (height, width), flip
    points, valid, bad_points = _points_and_validity(records, self.num_points)
    valid &= decoded[:, None]
    targets, weights = geometry.points_into_crop(points, valid, boxes, image_hw, flip=flips)
    return {
        "image": images,
        **_train_labels(records, valid, weights, decoded),
        "points": targets,
        "point_weight": weights,
        "weight": decoded.astype(np.float32),
        "bad_points": np.where(decoded, bad_points, 0).astype(np.int32),
    }


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """Central crop of `crop_fraction` of the shorter side, resized; points follow the crop.

  `keep_aspect=False`: the central `crop_fraction` of each side instead (the whole image at
  1.0), squashed to the square (`geometry.central_box`).

  `keep_keys` are copied through unchanged (e.g. `bg_label` for background-robustness metrics).
  `label_set_key` names a list of acceptable class indices (ImageNet ReaL), returned as the
  multi-hot `label_set` [num_classes]; `box_key` names boxes [M, 4] (or one box [4]), returned
  in crop coordinates padded to `max_boxes` with missing boxes.
  Every real example gets `_mask = True`; padding examples (see input_pipeline) get False.
  """
  image_size: int
  crop_fraction: float = 0.875
  # Antialiased downscaling of the central crop, as big_vision's resize_small.
  resize_method: str = "area"
  keep_keys: tuple[str, ...] = ()
  num_points: int = 1
  label_key: str | None = "label"
  label_set_key: str | None = None
  num_classes: int | None = None
  box_key: str | None = None
  max_boxes: int = 1
  keep_aspect: bool = True

  def __post_init__(self):
    image_ops.check_resize_method(self.resize_method)

  def _label_set(self, record):
    if self.num_classes is None:
      raise ValueError("EvalTransform needs num_classes to read label_set_key.")
    if self.label_set_key not in record:
      raise KeyError(f"Record {_record_name(record)} has no {self.label_set_key!r} "
                     f"(label_set_key); it has {sorted(record)}.")
    indices = np.asarray(record[self.label_set_key], np.int64).reshape(-1)
    if np.any((indices < 0) | (indices >= self.num_classes)):
      raise ValueError(f"Record {_record_name(record)}: {self.label_set_key} = {indices.tolist()} "
                       f"is outside the {self.num_classes} classes of the model.")
    multi_hot = np.zeros(self.num_classes, np.float32)
    multi_hot[indices] = 1.0
    return multi_hot

  def _boxes(self, record, box, image_hw):
    if self.box_key not in record:
      raise KeyError(f"Record {_record_name(record)} has no {self.box_key!r} (box_key); it has "
                     f"{sorted(record)}.")
    boxes = np.asarray(record[self.box_key], np.float32).reshape(-1, 4)
    if len(boxes) > self.max_boxes:
      raise ValueError(f"Record {_record_name(record)} has {len(boxes)} boxes in "
                       f"{self.box_key!r}, more than max_boxes={self.max_boxes}; raise the "
                       "evaluator's max_boxes.")
    padded = np.full((self.max_boxes, 4), geometry.MISSING, np.float32)
    padded[:len(boxes)] = boxes
    return geometry.boxes_into_crop(padded, box, image_hw)

  def map(self, record):
    name = _record_name(record)
    image = image_ops.open_image(record["image"], name=name)
    width, height = image.size
    box = geometry.central_box(height, width, self.crop_fraction, keep_aspect=self.keep_aspect)
    crop = image_ops.load_box(image, box, name=name,
                              scale=image_ops.draft_scale(box, self.image_size))
    pixels = image_ops.resize(crop, self.image_size, method=self.resize_method)
    points, valid, _ = _points_and_validity([record], self.num_points)
    targets, weights = geometry.points_into_crop(points[0], valid[0], box, (height, width),
                                                 flip=False)
    example = {
        "image": pixels,
        # Evaluation keeps every ground-truth label: the crop rule is a training augmentation.
        **_label_fields(record, label_key=self.label_key),
        "points": targets,
        "point_weight": weights,
        "_mask": np.bool_(True),
    }
    if self.label_set_key is not None:
      example["label_set"] = self._label_set(record)
    if self.box_key is not None:
      example["boxes"], example["box_weight"] = self._boxes(record, box, (height, width))
    for key in self.keep_keys:
      if key not in record:
        raise KeyError(f"Evaluation keeps key {key!r}, but record {_record_name(record)} has "
                       f"only {sorted(record)}.")
      example[key] = np.asarray(record[key])
    return example
