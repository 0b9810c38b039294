"""Grain transforms that turn a dataset record into a training or evaluation example.

Input record (what the TFDS builders of this project write): `image` (encoded bytes or uint8
array), `label` (int), `point` ([2] float, (x, y) in [0, 1]), `has_point` (bool), optional
`file_name` and extra keys such as `bg_label`.

Output example: `image` float32 [S, S, 3] in [-1, 1], `label` int32, `points` float32 [1, 2]
in crop coordinates (-1 where missing), `point_weight` float32 [1].
"""

import dataclasses

import grain
import numpy as np

from luab_jax.pp import geometry
from luab_jax.pp import image_ops


def _record_name(record) -> str:
  name = record.get("file_name")
  if isinstance(name, bytes):
    name = name.decode("utf-8", "replace")
  return str(name) if name is not None else "<record without file_name>"


def _point_and_validity(record):
  return (np.asarray(record["point"], np.float32).reshape(1, 2),
          np.asarray(record["has_point"], bool).reshape(1))


@dataclasses.dataclass(frozen=True)
class TrainTransform(grain.transforms.RandomMap):
  """RandomResizedCrop + horizontal flip, drawn once and applied to the image and its point.

  Seeded by Grain's `random_map(seed=...)` per element index, so the crop of example i is the
  same whatever the number of workers, and a resumed run sees the same augmentations.
  """
  image_size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = True
  resize_method: str = "bicubic"

  def random_map(self, record, rng: np.random.Generator):
    image = image_ops.decode_rgb(record["image"], name=_record_name(record))
    height, width = image.height, image.width
    box = geometry.sample_inception_box(rng, height, width, scale=self.scale, ratio=self.ratio)
    flip = self.flip and bool(rng.random() < 0.5)
    pixels = image_ops.crop_resize(image, box, self.image_size, method=self.resize_method)
    if flip:
      pixels = pixels[:, ::-1]
    points, valid = _point_and_validity(record)
    targets, weights = geometry.points_into_crop(points, valid, box, (height, width), flip=flip)
    return {
        "image": image_ops.to_minus_one_one(pixels),
        "label": np.int32(record["label"]),
        "points": targets,
        "point_weight": weights,
    }


@dataclasses.dataclass(frozen=True)
class EvalTransform(grain.transforms.Map):
  """Central crop of `crop_fraction` of the shorter side, resized; points follow the crop.

  `keep_keys` are copied through unchanged (e.g. `bg_label` for background-robustness metrics).
  Every real example gets `_mask = True`; padding examples (see input_pipeline) get False.
  """
  image_size: int
  crop_fraction: float = 0.875
  resize_method: str = "bicubic"
  keep_keys: tuple[str, ...] = ()

  def map(self, record):
    image = image_ops.decode_rgb(record["image"], name=_record_name(record))
    height, width = image.height, image.width
    box = geometry.central_box(height, width, self.crop_fraction)
    pixels = image_ops.crop_resize(image, box, self.image_size, method=self.resize_method)
    points, valid = _point_and_validity(record)
    targets, weights = geometry.points_into_crop(points, valid, box, (height, width), flip=False)
    example = {
        "image": image_ops.to_minus_one_one(pixels),
        "label": np.int32(record["label"]),
        "points": targets,
        "point_weight": weights,
        "_mask": np.bool_(True),
    }
    for key in self.keep_keys:
      if key not in record:
        raise KeyError(f"Evaluation keeps key {key!r}, but record {_record_name(record)} has "
                       f"only {sorted(record)}.")
      example[key] = np.asarray(record[key])
    return example
