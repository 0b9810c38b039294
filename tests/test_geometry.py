"""Crop boxes and the point transform against hand-computed cases (official LUAB semantics)."""

import numpy as np
import pytest

from luab_jax.pp import geometry
from luab_jax.pp import transforms

# Image of width 200, height 100; crop box top=25, left=50, height=50, width=100.
_HW = (100, 200)
_BOX = (25, 50, 50, 100)


def _move(point, valid=True, flip=False):
  targets, weights = geometry.points_into_crop(np.array([point]), np.array([valid]), _BOX, _HW,
                                               flip=flip)
  return targets[0], weights[0]


def test_point_inside_crop():
  # x = 0.3 * 200 = 60 px -> (60 - 50) / 100 = 0.1; y = 0.4 * 100 = 40 px -> (40 - 25) / 50 = 0.3.
  target, weight = _move((0.3, 0.4))
  np.testing.assert_allclose(target, [0.1, 0.3], atol=1e-6)
  assert weight == 1.0


def test_flip_mirrors_u_only():
  target, weight = _move((0.3, 0.4), flip=True)
  np.testing.assert_allclose(target, [0.9, 0.3], atol=1e-6)
  assert weight == 1.0


def test_bounds_are_inclusive():
  # x = 0.75 * 200 = 150 px -> u = 1.0 exactly; y = 0.25 * 100 = 25 px -> v = 0.0 exactly.
  target, weight = _move((0.75, 0.25))
  np.testing.assert_allclose(target, [1.0, 0.0], atol=1e-6)
  assert weight == 1.0


@pytest.mark.parametrize("point", [(0.1, 0.5), (0.5, 0.9), (0.76, 0.5)])
def test_point_outside_crop_is_dropped(point):
  target, weight = _move(point)
  np.testing.assert_array_equal(target, [-1.0, -1.0])
  assert weight == 0.0


def test_missing_and_non_finite_points_are_dropped():
  for point, valid in [((0.5, 0.5), False), ((np.nan, 0.5), True), ((0.5, np.inf), True)]:
    target, weight = _move(point, valid=valid)
    np.testing.assert_array_equal(target, [-1.0, -1.0])
    assert weight == 0.0


def test_inception_box_respects_scale_and_ratio():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = geometry.sample_inception_box(rng, 120, 90, scale=(0.3, 1.0))
    assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 90
    assert 0.3 * 120 * 90 * 0.9 <= h * w <= 120 * 90
    assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_inception_box_fallback_is_central():
  # A 10:1 image cannot hold a box of ratio <= 4/3 with scale >= 0.9: central fallback.
  top, left, h, w = geometry.sample_inception_box(np.random.default_rng(0), 10, 100,
                                                  scale=(0.9, 1.0))
  assert (top, h) == (0, 10) and w == 13 and left == (100 - 13) // 2


def test_train_transform_moves_a_painted_dot_with_its_point():
  """End to end: a dot painted at the click must land where the transformed target says."""
  height, width = 96, 128
  px, py = 80, 40
  image = np.zeros((height, width, 3), np.uint8)
  image[py - 2:py + 3, px - 2:px + 3] = 255
  record = {"image": image, "label": 3, "point": np.array([(px + 0.5) / width,
                                                           (py + 0.5) / height], np.float32),
            "has_point": True, "file_name": "dot"}
  transform = transforms.TrainTransform(image_size=64, scale=(0.3, 1.0), resize_method="bilinear")
  seen = 0
  for seed in range(40):
    example = transform.random_map(record, np.random.default_rng(seed))
    brightness = example["image"].mean(-1)
    if example["point_weight"][0] == 1.0:
      seen += 1
      ys, xs = np.nonzero(brightness > brightness.min() + 64)
      assert len(xs), f"seed {seed}: the point is in the crop but the dot is not"
      centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / 64
      np.testing.assert_allclose(centre, example["points"][0], atol=2.5 / 64,
                                 err_msg=f"seed {seed}")
    else:
      np.testing.assert_array_equal(example["points"][0], [-1, -1])
  assert 5 <= seen < 40  # Both branches were exercised.


def test_a_batch_moves_as_its_examples_one_at_a_time():
  rng = np.random.default_rng(0)
  count, num_points = 64, 3
  image_hw = np.stack([rng.integers(20, 400, count), rng.integers(20, 400, count)], axis=-1)
  boxes = np.array([geometry.sample_inception_box(rng, int(h), int(w)) for h, w in image_hw])
  points = rng.uniform(-0.2, 1.2, (count, num_points, 2))
  points[rng.random(points.shape) < 0.05] = np.nan
  points[rng.random(points.shape) < 0.05] = np.inf
  valid = rng.random((count, num_points)) < 0.8
  flips = rng.random(count) < 0.5
  targets, weights = geometry.points_into_crop(points, valid, boxes, image_hw, flip=flips)
  assert targets.shape == (count, num_points, 2) and weights.shape == (count, num_points)
  for i in range(count):
    one_targets, one_weights = geometry.points_into_crop(
        points[i], valid[i], tuple(boxes[i]), tuple(image_hw[i]), flip=bool(flips[i]))
    np.testing.assert_array_equal(targets[i], one_targets, err_msg=f"example {i}")
    np.testing.assert_array_equal(weights[i], one_weights, err_msg=f"example {i}")
  # Not vacuous: both kept and dropped points, and flipped and unflipped crops.
  assert 0 < weights.mean() < 1 and 0 < flips.mean() < 1
