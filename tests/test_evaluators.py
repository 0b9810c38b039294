"""Every evaluator on small data made here: TFDS datasets with the real builders' features, image folders.

The model is a fake whose predictions are known exactly: its logits rank the classes by how
close the image's mean colour is to a per-class colour ("prototype"), and it predicts a fixed
point. Each image is painted with the prototype of the class it should be taken for, so every
expected metric below is worked out by hand.
"""

import io
import os

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import imagenet_common
from tensorflow_datasets.datasets.siscore import labels as siscore_labels

from luab_jax import sharding as sharding_lib
from luab_jax.datasets import imagenet_subsets
from luab_jax.evaluators import common
from luab_jax.models import vit
from luab_jax.pp import geometry

# ------------------------------------------------------------------ The fake model.
_STEP = 0.15  # Prototype c is the colour (c // 100, c // 10 % 10, c % 10) * _STEP - 0.9.
_SHIFT = 0.03  # Painted colours sit a little above in blue, so that no two classes tie.
_WEIGHTS = (100.0, 10.0, 1.0)  # Red differences count most: the nearest classes differ in blue.


def _prototype(c):
  return np.array([c // 100, c // 10 % 10, c % 10]) * _STEP - 0.9


def _jpeg(c, size=40, fmt="JPEG"):
  colour = np.round((_prototype(c) + [0, 0, _SHIFT] + 1) / 2 * 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(np.broadcast_to(colour, (size, size, 3)).copy()).save(
      buffer, format=fmt, **({"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}))
  return buffer.getvalue()


def _fns(num_classes=1000, num_points=1, point=(0.25, 0.5), logit_offset=0.0):
  prototypes = jnp.asarray(np.stack([_prototype(c) for c in range(num_classes)]), jnp.float32)

  def apply(params, images):
    images = vit.to_input_range(images, jnp.float32)  # Batches carry uint8 pixels.
    diff = images.mean((1, 2))[:, None, :] - prototypes[None]
    logits = logit_offset - (diff * diff * jnp.asarray(_WEIGHTS)).sum(-1)
    points = jnp.broadcast_to(params["point"], (images.shape[0], num_points, 2))
    return {"logits": logits, "points": points}

  mesh = sharding_lib.make_mesh([("data", -1)])
  shardings = {"point": NamedSharding(mesh, P())}
  fns = common.make_model_fns(apply, mesh, shardings, num_points=num_points,
                              num_classes=num_classes)
  params = jax.device_put({"point": jnp.asarray(point, jnp.float32)}, shardings)
  return fns, mesh, params


def _input(crop_fraction=1.0):
  return ml_collections.ConfigDict(dict(image_size=16, eval_crop_fraction=crop_fraction,
                                        read_threads=1, prefetch_buffer=4, eval_num_workers=0))


# ------------------------------------------------------------------ Test TFDS datasets.
class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes EXAMPLES[config name][split] (records) with FEATURES(); ArrayRecord like the real ones."""
  VERSION = tfds.core.Version("1.0.0")
  EXAMPLES = {}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=self.FEATURES(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    name = self.builder_config.name if self.builder_config else ""
    return {split: self._generate_examples(records)
            for split, records in self.EXAMPLES[name].items()}

  def _generate_examples(self, records):
    for index, record in enumerate(records):
      yield index, {"file_name": f"{index}.JPEG", **record}


def _imagenet_label():
  return tfds.features.ClassLabel(names_file=imagenet_common.label_names_file())


def _labelled(pairs):
  """[(painted class, label), ...] -> records of an ImageNet-style (image, label) dataset."""
  return [{"image": _jpeg(c), "label": label} for c, label in pairs]


class LuabtestImagenetA(_Builder):
  """The features of TFDS imagenet_a / imagenet_r / imagenet_v2: image, label, file_name."""
  FEATURES = lambda self: tfds.features.FeaturesDict({  # pylint: disable=g-long-lambda
      "image": tfds.features.Image(encoding_format="jpeg"), "label": _imagenet_label(),
      "file_name": tfds.features.Text()})
  EXAMPLES = {"": {"test": _labelled([(6, 6), (5, 6), (11, 13), (500, 6)])}}


class LuabtestImagenetReal(_Builder):
  """The features of TFDS imagenet2012_real."""
  FEATURES = lambda self: tfds.features.FeaturesDict({  # pylint: disable=g-long-lambda
      "image": tfds.features.Image(encoding_format="jpeg"), "original_label": _imagenet_label(),
      "real_label": tfds.features.Sequence(_imagenet_label()),
      "file_name": tfds.features.Text()})
  EXAMPLES = {"": {"validation": [
      {"image": _jpeg(6), "original_label": 6, "real_label": [6, 7]},
      {"image": _jpeg(6), "original_label": 7, "real_label": [6]},
      {"image": _jpeg(6), "original_label": 6, "real_label": []},  # Excluded from ReaL.
      {"image": _jpeg(500), "original_label": 3, "real_label": [3]},
  ]}}


class LuabtestSiscore(_Builder):
  """The features and configs of TFDS siscore."""
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ("rotation", "size", "location")]
  FEATURES = lambda self: tfds.features.FeaturesDict({  # pylint: disable=g-long-lambda
      "image_id": np.int64, "image": tfds.features.Image(),
      "label": tfds.features.ClassLabel(num_classes=1000),
      "dataset_label": tfds.features.ClassLabel(names=siscore_labels.IMAGENET_LABELS_LIST)})
  EXAMPLES = {name: {"test": [{"image_id": i, "image": _jpeg(c), "label": label,
                               "dataset_label": 0} for i, (c, label) in enumerate(pairs)]}
              for name, pairs in (("rotation", [(6, 6), (7, 7)]), ("size", [(6, 6), (7, 6)]),
                                  ("location", [(6, 7), (500, 6)]))}

  def _generate_examples(self, records):
    yield from enumerate(records)  # No file_name in siscore.


_CORRUPTED = {"gaussian_noise_1": [(6, 6), (7, 7)], "gaussian_noise_2": [(6, 6), (6, 7)],
              "fog_1": [(6, 6), (6, 7)], "fog_2": [(6, 7), (7, 6)]}


class LuabtestImagenet2012Corrupted(_Builder):
  """The features (224 x 224 JPEG) and `{corruption}_{severity}` configs of TFDS's ImageNet-C."""
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in _CORRUPTED]
  FEATURES = lambda self: tfds.features.FeaturesDict({  # pylint: disable=g-long-lambda
      "image": tfds.features.Image(shape=(224, 224, 3), encoding_format="jpeg"),
      "label": _imagenet_label(), "file_name": tfds.features.Text()})
  EXAMPLES = {name: {"validation": [{"image": _jpeg(c, size=224), "label": label}
                                    for c, label in pairs]}
              for name, pairs in _CORRUPTED.items()}


class LuabtestCoco(_Builder):
  """Multi-label records as the COCO-AB pipeline reads them: multi-hot labels, a point per class."""
  FEATURES = lambda self: tfds.features.FeaturesDict({  # pylint: disable=g-long-lambda
      "image": tfds.features.Image(encoding_format="jpeg"),
      "labels": tfds.features.Tensor(shape=(4,), dtype=np.bool_),
      "points": tfds.features.Tensor(shape=(4, 2), dtype=np.float32),
      "has_points": tfds.features.Tensor(shape=(4,), dtype=np.bool_),
      "file_name": tfds.features.Text()})
  EXAMPLES = {"": {"validation": [
      {"image": _jpeg(i), "labels": np.isin(np.arange(4), positives),
       "points": np.full((4, 2), -1, np.float32), "has_points": np.zeros(4, bool)}
      for i, positives in enumerate([(0, 3), (0, 1), (2,), (3,)])]}}


def _shapes_record(point, box):
  has_point = point is not None
  return {"image": _jpeg(6, size=50, fmt="PNG"), "label": 0,
          "point": np.asarray(point if has_point else (-1, -1), np.float32),
          "has_point": has_point,
          "object_box": np.asarray(box if box is not None else (-1, -1, -1, -1), np.float32)}


class LuabtestShapes(_Builder):
  """The localisation fields of luab_shapes: point/has_point and object_box, image-normalised."""
  FEATURES = lambda self: tfds.features.FeaturesDict({  # pylint: disable=g-long-lambda
      "image": tfds.features.Image(shape=(50, 50, 3), encoding_format="png"),
      "label": tfds.features.ClassLabel(num_classes=4),
      "point": tfds.features.Tensor(shape=(2,), dtype=np.float32),
      "has_point": tfds.features.Tensor(shape=(), dtype=np.bool_),
      "object_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "file_name": tfds.features.Text()})
  # The central 0.8 crop of these 50 x 50 images is pixels 5..45; the model always predicts
  # (0.25, 0.5) in crop coordinates, i.e. (0.3, 0.5) in the image.
  EXAMPLES = {"": {"original": [
      _shapes_record((0.3, 0.5), (0.2, 0.4, 0.36, 0.6)),  # On the click, inside the box.
      # 0.25 from the click; the box x 0.22..0.28 becomes 0.15..0.225 in the crop: outside
      # (it would contain 0.25 if boxes were not moved into the crop).
      _shapes_record((0.5, 0.5), (0.22, 0.1, 0.28, 0.9)),
      _shapes_record(None, (0.1, 0.1, 0.2, 0.2)),  # No click; box outside.
      _shapes_record((0.3, 0.75), None),  # 0.3125 from the click; no box.
      # Click outside the crop (not counted); the box reaches out of the crop (x -0.125..0.275
      # in crop units) and contains the prediction.
      _shapes_record((0.05, 0.5), (0.0, 0.0, 0.32, 1.0)),
  ]}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("eval_tfds"))
  for builder in (LuabtestImagenetA, LuabtestImagenetReal, LuabtestImagenet2012Corrupted,
                  LuabtestSiscore, LuabtestCoco, LuabtestShapes):
    for config in builder.BUILDER_CONFIGS or [None]:
      builder(data_dir=root, config=config, file_format="array_record").download_and_prepare(
          file_format="array_record")
  return root


def _evaluator(kind, fns, mesh, data_dir, input_config=None, **cfg):
  return common.from_config({"e": dict(type=kind, batch_size=8, **cfg)}, fns=fns, mesh=mesh,
                            data_dir=data_dir, input_config=input_config or _input())["e"]


# ------------------------------------------------------------------ Class lists.
# hendrycks/imagenet-r eval.py, `imagenet_r_wnids`: the official definition of the 200 classes.
_IMAGENET_R_WNIDS = """
n01443537 n01484850 n01494475 n01498041 n01514859 n01518878 n01531178 n01534433 n01614925
n01616318 n01630670 n01632777 n01644373 n01677366 n01694178 n01748264 n01770393 n01774750
n01784675 n01806143 n01820546 n01833805 n01843383 n01847000 n01855672 n01860187 n01882714
n01910747 n01944390 n01983481 n01986214 n02007558 n02009912 n02051845 n02056570 n02066245
n02071294 n02077923 n02085620 n02086240 n02088094 n02088238 n02088364 n02088466 n02091032
n02091134 n02092339 n02094433 n02096585 n02097298 n02098286 n02099601 n02099712 n02102318
n02106030 n02106166 n02106550 n02106662 n02108089 n02108915 n02109525 n02110185 n02110341
n02110958 n02112018 n02112137 n02113023 n02113624 n02113799 n02114367 n02117135 n02119022
n02123045 n02128385 n02128757 n02129165 n02129604 n02130308 n02134084 n02138441 n02165456
n02190166 n02206856 n02219486 n02226429 n02233338 n02236044 n02268443 n02279972 n02317335
n02325366 n02346627 n02356798 n02363005 n02364673 n02391049 n02395406 n02398521 n02410509
n02423022 n02437616 n02445715 n02447366 n02480495 n02480855 n02481823 n02483362 n02486410
n02510455 n02526121 n02607072 n02655020 n02672831 n02701002 n02749479 n02769748 n02793495
n02797295 n02802426 n02808440 n02814860 n02823750 n02841315 n02843684 n02883205 n02906734
n02909870 n02939185 n02948072 n02950826 n02951358 n02966193 n02980441 n02992529 n03124170
n03272010 n03345487 n03372029 n03424325 n03452741 n03467068 n03481172 n03494278 n03495258
n03498962 n03594945 n03602883 n03630383 n03649909 n03676483 n03710193 n03773504 n03775071
n03888257 n03930630 n03947888 n04086273 n04118538 n04133789 n04141076 n04146614 n04147183
n04192698 n04254680 n04266014 n04275548 n04310018 n04325704 n04347754 n04389033 n04409515
n04465501 n04487394 n04522168 n04536866 n04552348 n04591713 n07614500 n07693725 n07695742
n07697313 n07697537 n07714571 n07714990 n07718472 n07720875 n07734744 n07742313 n07745940
n07749582 n07753275 n07753592 n07768694 n07873807 n07880968 n07920052 n09472597 n09835506
n10565667 n12267677
""".split()


def test_imagenet_r_indices_are_its_wnids_in_the_tfds_label_file():
  with open(imagenet_common.label_names_file(), encoding="utf-8") as f:
    wnids = f.read().split()
  assert len(wnids) == 1000 and len(set(_IMAGENET_R_WNIDS)) == 200
  assert tuple(sorted(wnids.index(w) for w in _IMAGENET_R_WNIDS)) == \
      imagenet_subsets.IMAGENET_R_INDICES


def test_class_lists_have_the_official_sizes():
  assert len(imagenet_subsets.label_subset("imagenet_a")) == 200
  table = imagenet_subsets.imagenet_to_in9()
  # Class sizes of the official in_to_in9.json: 370 ImageNet classes in the nine.
  assert [int((table == k).sum()) for k in range(9)] == [116, 52, 42, 36, 35, 27, 26, 20, 16]
  assert table[160] == 0 and table[10] == 1 and table[500] == -1
  with pytest.raises(ValueError, match="Unknown label_subset"):
    imagenet_subsets.label_subset("imagenet_b")


def test_boxes_move_into_the_crop_like_points():
  # 50 x 50 image, central crop of 40 from pixel 5.
  boxes, weights = geometry.boxes_into_crop(
      np.array([[0.1, 0.2, 0.5, 0.9], [-1, -1, -1, -1], [0.3, 0.3, 0.3, 0.6]]), (5, 5, 40, 40),
      (50, 50))
  np.testing.assert_allclose(boxes[0], [0.0, 0.125, 0.5, 1.0])
  np.testing.assert_array_equal(weights, [1, 0, 0])  # Missing, then zero width.
  np.testing.assert_array_equal(boxes[1:], -1)
  corner, _ = geometry.points_into_crop(np.array([[0.5, 0.9]]), np.array([True]),
                                        (5, 5, 40, 40), (50, 50), flip=False)
  np.testing.assert_allclose(corner[0], boxes[0, 2:])


# ------------------------------------------------------------------ Evaluators.
def test_label_subset_masks_the_logits_and_top5(data_dir):
  fns, mesh, params = _fns()
  full = _evaluator("classification", fns, mesh, data_dir, dataset="luabtest_imagenet_a",
                    split="test").run(params)
  masked = _evaluator("classification", fns, mesh, data_dir, dataset="luabtest_imagenet_a",
                      split="test", label_subset="imagenet_a").run(params)
  # Painted 6 (label 6): right either way. Painted 5 (not an ImageNet-A class), label 6: right
  # only when the prediction is confined to the 200 classes. Painted 11, label 13: top-5 only.
  assert full["accuracy"] == 0.25 and masked["accuracy"] == 0.5
  assert full["top5_accuracy"] == 0.75 and masked["top5_accuracy"] == 0.75
  assert full["num_examples"] == masked["num_examples"] == 4  # 8 - 4 padding rows ignored.
  assert np.isfinite(masked["loss"]) and masked["loss"] < full["loss"]


def test_real_labels_count_any_listed_label_and_skip_empty_lists(data_dir):
  fns, mesh, params = _fns()
  metrics = _evaluator("classification", fns, mesh, data_dir, dataset="luabtest_imagenet_real",
                       split="validation", label_key="original_label",
                       label_set_key="real_label").run(params)
  assert metrics["accuracy"] == 0.5  # Original labels: the 1st and 3rd image.
  assert metrics["real_num_examples"] == 3 and metrics["num_examples"] == 4
  np.testing.assert_allclose(metrics["real_accuracy"], 2 / 3)


def test_siscore_groups_and_mean(data_dir):
  fns, mesh, params = _fns()
  metrics = _evaluator("siscore", fns, mesh, data_dir, dataset="luabtest_siscore").run(params)
  assert (metrics["rotation/accuracy"], metrics["size/accuracy"],
          metrics["location/accuracy"]) == (1.0, 0.5, 0.0)
  assert metrics["mean_accuracy"] == 0.5


def test_imagenet_corrupted_means_over_severities_then_corruptions(data_dir):
  fns, mesh, params = _fns()
  evaluator = _evaluator("imagenet_corrupted", fns, mesh, data_dir,
                         dataset="luabtest_imagenet2012_corrupted",
                         corruptions=("gaussian_noise", "fog"), severities=(1, 2))
  metrics = evaluator.run(params)
  assert metrics["gaussian_noise_2/accuracy"] == 0.5 and metrics["fog_2/accuracy"] == 0.0
  assert metrics["gaussian_noise/accuracy"] == 0.75 and metrics["fog/accuracy"] == 0.25
  assert metrics["mean_accuracy"] == 0.5 and evaluator.num_examples == 8


def test_localization_in_crop_coordinates(data_dir):
  fns, mesh, params = _fns()
  metrics = _evaluator("localization", fns, mesh, data_dir, input_config=_input(0.8),
                       dataset="luabtest_shapes", split="original", box_key="object_box",
                       radii=(0.1, 0.3)).run(params)
  assert metrics["num_points"] == 3 and metrics["num_boxed"] == 4
  np.testing.assert_allclose(metrics["point_distance"], (0 + 0.25 + 0.3125) / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["point_l1"], (0 + 0.125 + 0.15625) / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["point_within_0.1"], 1 / 3)
  np.testing.assert_allclose(metrics["point_within_0.3"], 2 / 3)
  assert metrics["point_in_box"] == 0.5


def test_multilabel_map_and_points(data_dir):
  fns, mesh, params = _fns(num_classes=4, num_points=4)
  metrics = _evaluator("multilabel", fns, mesh, data_dir, dataset="luabtest_coco",
                       split="validation").run(params)
  # Classes 0-2: the positives are scored highest (AP 1). Class 3: positives ranked 1st and
  # 4th of 4, AP = (1/1 + 2/4) / 2.
  assert metrics["class_ap/3"] == 0.75 and metrics["class_ap/0"] == 1.0
  assert metrics["map"] == (1 + 1 + 1 + 0.75) / 4
  assert metrics["precision_at_1"] == 1.0 and "point_l1" not in metrics
  # Confident logits (float32 sigmoids of these are all 1.0, and would tie): the same ranking.
  fns, mesh, params = _fns(num_classes=4, num_points=4, logit_offset=40.0)
  assert _evaluator("multilabel", fns, mesh, data_dir, dataset="luabtest_coco",
                    split="validation").run(params) == metrics


def _write_folder(root, variants):
  for variant, images in variants.items():
    for k, name in enumerate(imagenet_subsets.IN9_CLASSES):
      os.makedirs(os.path.join(root, variant, "val", f"{k:02d}_{name}"), exist_ok=True)
    for i, (in9, painted) in enumerate(images):
      folder = f"{in9:02d}_{imagenet_subsets.IN9_CLASSES[in9]}"
      with open(os.path.join(root, variant, "val", folder, f"{i}.JPEG"), "wb") as f:
        f.write(_jpeg(painted))


def test_background_challenge_folder_with_the_imagenet9_mapping(tmp_path):
  # Painted ImageNet classes: 160 is a dog (IN-9 0), 10 a bird (1), 500 in none of the nine.
  _write_folder(str(tmp_path), {
      "original": [(0, 160), (1, 10), (8, 500)],
      "mixed_same": [(0, 160), (1, 10)],
      "mixed_rand": [(0, 10), (1, 10)],
      "only_bg_t": [(0, 500)],
  })
  fns, mesh, params = _fns()
  metrics = _evaluator("background_challenge", fns, mesh, None, folder=str(tmp_path),
                       class_map="imagenet_to_in9").run(params)
  np.testing.assert_allclose(metrics["original/accuracy"], 2 / 3)
  assert metrics["mixed_same/accuracy"] == 1.0 and metrics["mixed_rand/accuracy"] == 0.5
  assert metrics["only_bg_t/accuracy"] == 0.0 and metrics["bg_gap"] == 0.5
  assert all(np.isfinite(v) for v in metrics.values())
  assert "worst_group_accuracy" not in metrics  # Folders carry no background label.
  with pytest.raises(ValueError, match="9 class folders, but the predictions have 1000"):
    _evaluator("background_challenge", fns, mesh, None, folder=str(tmp_path))


def test_background_challenge_on_tfds_splits_with_boxes(tiny_data_dir):
  fns, mesh, params = _fns(num_classes=4)
  evaluator = _evaluator("background_challenge", fns, mesh, tiny_data_dir,
                         dataset="luab_shapes/tiny", box_key="object_box", radii=(0.2,))
  metrics = evaluator.run(params)
  assert evaluator.num_examples == 7 * 64
  assert 0.0 <= metrics["worst_group_accuracy"] <= 1.0
  np.testing.assert_allclose(metrics["bg_gap"], metrics["mixed_same/accuracy"]
                             - metrics["mixed_rand/accuracy"])
  assert "original/point_in_box" in metrics and "only_bg/point_in_box" not in metrics


def test_a_dataset_with_other_classes_than_the_predictions_is_refused(data_dir, tiny_data_dir):
  """Labels past the model's classes gave an infinite loss and a meaningless accuracy."""
  fns, mesh, _ = _fns(num_classes=10)
  with pytest.raises(ValueError, match=r"classification on luabtest_imagenet_a:test: dataset "
                                       r"'luabtest_imagenet_a' has 1000 classes, but the "
                                       r"predictions have 10 \(config.num_classes\)"):
    _evaluator("classification", fns, mesh, data_dir, dataset="luabtest_imagenet_a",
               split="test")
  with pytest.raises(ValueError, match=r"multilabel on luabtest_coco:validation: .* has 4 "
                                       r"classes, but the predictions have 10"):
    _evaluator("multilabel", fns, mesh, data_dir, dataset="luabtest_coco", split="validation")
  with pytest.raises(ValueError, match=r"background_challenge: dataset 'luab_shapes/tiny' has "
                                       r"4 classes, but the predictions have 10"):
    _evaluator("background_challenge", fns, mesh, tiny_data_dir, dataset="luab_shapes/tiny")
  # Through a class map, the evaluation classes count: ImageNet's 1000 -> ImageNet-9's 9.
  fns, mesh, _ = _fns(num_classes=1000)
  with pytest.raises(ValueError, match=r"has 4 classes, but the predictions have 9 "
                                       r"\(class_map='imagenet_to_in9'\)"):
    _evaluator("background_challenge", fns, mesh, tiny_data_dir, dataset="luab_shapes/tiny",
               class_map="imagenet_to_in9")
  # Localisation reads no labels: any class count.
  _evaluator("localization", fns, mesh, data_dir, dataset="luabtest_shapes", split="original",
             box_key="object_box")
