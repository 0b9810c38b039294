"""The real-data configs in their local mode: the committed fixtures go through the real
builders, the training pipeline and a few training steps of each config."""

import os
import pickle

import jax
import numpy as np
import pytest
from ml_collections import config_flags

from luab_jax import input_pipeline
from luab_jax import metric_logs
from luab_jax import train
from luab_jax.datasets import core
from luab_jax.pp import transforms

_ROOT = os.path.dirname(os.path.dirname(__file__))
_FIXTURES = os.path.join(_ROOT, "tests", "fixtures")


def _load_config(name, arg="runlocal"):
  path = os.path.join(_ROOT, "configs", f"{name}.py")
  return config_flags.config_flags._LoadConfigModule(name, path).get_config(arg)  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def fixture_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_fixture"))
  core.prepare("imagenet_ab/fixture", data_dir,
               manual_dir=os.path.join(_FIXTURES, "imagenet_ab"))
  core.prepare("coco_ab/fixture", data_dir, manual_dir=os.path.join(_FIXTURES, "coco_ab"))
  return data_dir


def _expected_in_central_crop(point, height, width, crop_fraction):
  """The eval crop's coordinates of an image-normalised (x, y) point, computed by hand."""
  side = round(min(height, width) * crop_fraction)
  top, left = (height - side) // 2, (width - side) // 2
  return np.array([(point[0] * width - left) / side, (point[1] * height - top) / side])


@pytest.mark.parametrize("dataset,point_key,valid_key", [
    ("imagenet_ab/fixture", "point", "has_point"),
    ("coco_ab/fixture", "points", "has_points"),
])
def test_points_are_x_then_y_through_the_pipeline(fixture_data_dir, dataset, point_key,
                                                  valid_key):
  from luab_jax.pp import image_ops  # pylint: disable=g-import-not-at-top
  source = core.get_source(dataset, "train", fixture_data_dir)
  checked = 0
  for index in range(len(source)):
    record = source[index]
    points = np.asarray(record[point_key], np.float32).reshape(-1, 2)
    valid = np.asarray(record[valid_key], bool).reshape(-1)
    image = image_ops.decode_rgb(record["image"])
    example = transforms.EvalTransform(image_size=32, crop_fraction=1.0,
                                       num_points=len(points)).map(record)
    for p, ok, got, weight in zip(points, valid, example["points"], example["point_weight"]):
      if not ok:
        assert weight == 0 and np.all(got == -1)
        continue
      want = _expected_in_central_crop(p, image.shape[0], image.shape[1], 1.0)
      if np.all((want >= 0) & (want <= 1)):
        np.testing.assert_allclose(got, want, atol=1e-5)
        checked += 1
      else:
        assert weight == 0
  assert checked >= 2  # The fixtures have clicked images whose click survives the crop.


@pytest.mark.parametrize("dataset", ["imagenet_ab/fixture", "coco_ab/fixture"])
def test_training_source_decodes_only_what_the_transform_reads(fixture_data_dir, dataset):
  whole = core.get_source(dataset, "train", fixture_data_dir)
  subset = core.get_source(dataset, "train", fixture_data_dir,
                           features=transforms.TrainTransform.RECORD_KEYS)
  # Grain's worker processes get the source pickled.
  subset = pickle.loads(pickle.dumps(subset))
  assert len(subset) == len(whole)
  transform = transforms.TrainTransform(image_size=32, num_points=80 if "coco" in dataset else 1)
  for index in range(len(whole)):
    full, lean = whole[index], subset[index]
    assert set(lean) == set(full) & set(transforms.TrainTransform.RECORD_KEYS) < set(full)
    for key, value in lean.items():
      np.testing.assert_array_equal(value, full[key], err_msg=f"{dataset}[{index}] {key}")
    want = transform.random_map(full, np.random.default_rng(index))
    got = transform.random_map(lean, np.random.default_rng(index))
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=f"{dataset}[{index}] {key}")


def test_coco_train_batches_follow_the_crop_rule(fixture_data_dir):
  source = core.get_source("coco_ab/fixture", "train", fixture_data_dir,
                           features=transforms.TrainTransform.RECORD_KEYS)
  config = _load_config("vit_s16_coco_ab")
  ds = input_pipeline.make_train_dataset(source, config.input, per_process_batch_size=8,
                                         seed=0, num_points=80)
  iterator = iter(ds)
  positives_seen = 0
  for _ in range(3):
    batch = next(iterator)
    labels, weights = batch["labels"], batch["point_weight"]
    assert labels.shape == (8, 80) and batch["points"].shape == (8, 80, 2)
    # A usable point only ever belongs to a class that is positive in this crop.
    assert np.all(labels[weights > 0] == 1)
    positives_seen += int(labels.sum())
  assert positives_seen > 0


def _flat(config, prefix=""):
  flat = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


@pytest.mark.parametrize("arg", ["lam=0", "runlocal"])
def test_vit_b16_is_the_vit_s16_recipe_with_a_bigger_model(arg):
  # So its local mode is the ViT-S/16 one (same tiny model), which the next test trains.
  s16 = _flat(_load_config("vit_s16_imagenet_ab", arg))
  b16 = _flat(_load_config("vit_b16_imagenet_ab", arg))
  differing = {key for key in s16.keys() | b16.keys() if s16.get(key) != b16.get(key)}
  expected = {"sharding_rules", "fsdp_min_size_mb"}
  if arg != "runlocal":  # The local mode uses the same tiny ViT for both.
    # scan_layers and remat are spelled out so that --config.model.remat=... can override them.
    expected |= {"model.variant", "model.scan_layers", "model.remat"}
    assert b16["model.variant"] == "B/16" and b16["loss.point_lambda"] == 0.0
    assert b16["model.remat"] == "none" and not b16["model.scan_layers"]
  assert differing == expected


@pytest.mark.parametrize("arg", ["lam=0", "runlocal"])
def test_vit_l16_is_the_vit_b16_config_with_the_large_scanned_model(arg):
  b16 = _flat(_load_config("vit_b16_imagenet_ab", arg))
  l16 = _flat(_load_config("vit_l16_imagenet_ab", arg))
  differing = {key for key in b16.keys() | l16.keys() if b16.get(key) != l16.get(key)}
  if arg == "runlocal":
    assert not differing
  else:
    assert differing == {"model.variant", "model.scan_layers"}
    assert l16["model.variant"] == "L/16" and l16["model.scan_layers"]


@pytest.mark.parametrize("name,metric", [("vit_s16_imagenet_ab", "minival/accuracy"),
                                         ("vit_s16_coco_ab", "val/map")])
def test_config_trains_in_local_mode(fixture_data_dir, tmp_path, name, metric):
  config = _load_config(name)
  config.data_dir = fixture_data_dir
  results = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= results[metric] <= 1.0
  logged = [r for r in metric_logs.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
            if "loss" in r]
  assert [r["step"] for r in logged] == [2, 4]
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["point_loss"]) for r in logged)
  # The fixture has clicks, so the point loss is really trained on something.
  assert max(r["points_per_image"] for r in logged) > 0
  assert jax.device_count() == 8
