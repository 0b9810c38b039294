"""Tests of `python -m luab_jax.dataset_stats`: hand-counted numbers on small made-up datasets
with the ImageNet-AB and COCO-AB schemas, the luab_shapes benchmark, and decodable PNGs."""

import io
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from luab_jax import dataset_stats as ds
from luab_jax.datasets import core
from luab_jax.datasets.luab_shapes import generator

FAKE_IMAGENET = "dataset_stats_fake_imagenet_ab"
NAMES = ["cat", "dog", "fish"]

# (label, has_xml, clicks, boxes) of the fake ImageNet-AB records; numbers below are by hand.
_IMAGENET_RECORDS = [
    (0, True, [(0.5, 0.5)], [(0.4, 0.4, 0.6, 0.6)]),  # 1 click, inside.
    (0, True, [(0.1, 0.1), (0.9, 0.9)], [(0.0, 0.0, 0.2, 0.2)]),  # 1 of 2 inside.
    (1, True, [(0.3, 0.3), (0.7, 0.7), (0.7, 0.3)],
     [(0.2, 0.2, 0.4, 0.4), (0.6, 0.6, 0.8, 0.8)]),  # 2 of 3 inside (either box).
    (1, False, [], [(0.1, 0.1, 0.5, 0.5)]),  # No XML, no clicks, a box.
    (1, True, [(0.25, 0.75)], []),  # A click, no box: not counted for the box share.
    (2, False, [], []),
    (2, True, [(0.5, 0.2), (0.2, 0.5)], [(0.2, 0.2, 0.5, 0.5)]),  # On the edges: inside.
    (0, True, [(1.0, 1.0)], [(0.0, 0.0, 1.0, 1.0)]),  # Corner: inside.
]


def _imagenet_features():
  f = tfds.features
  return f.FeaturesDict({
      "image": f.Image(shape=(None, None, 3), encoding_format="jpeg"),
      "label": f.ClassLabel(names=NAMES),
      "file_name": f.Text(),
      "clicks": f.Tensor(shape=(None, 2), dtype=np.float32),
      "click_times_ms": f.Tensor(shape=(None,), dtype=np.float32),
      "click_block": f.Tensor(shape=(None,), dtype=np.int32),
      "point": f.Tensor(shape=(2,), dtype=np.float32),
      "has_point": f.Tensor(shape=(), dtype=np.bool_),
      "boxes": f.Tensor(shape=(None, 4), dtype=np.float32),
      "has_xml": f.Tensor(shape=(), dtype=np.bool_),
      "num_metadata": f.Tensor(shape=(), dtype=np.int32),
      "selected_count": f.Tensor(shape=(), dtype=np.int32),
      "estimate_time_ms": f.Tensor(shape=(), dtype=np.float32),
      "mouse_trace_length": f.Tensor(shape=(), dtype=np.int32),
  })


def _imagenet_examples():
  rng = np.random.default_rng(0)
  for i, (label, xml, clicks, boxes) in enumerate(_IMAGENET_RECORDS):
    clicks = np.asarray(clicks, np.float32).reshape(-1, 2)
    has_point = len(clicks) > 0
    yield i, {
        "image": rng.integers(0, 255, (12, 16, 3), dtype=np.uint8),  # H 12, W 16.
        "label": label,
        "file_name": f"n0000000{label}/n0000000{label}_{i}.JPEG",
        "clicks": clicks,
        "click_times_ms": np.arange(len(clicks), dtype=np.float32) * 10.0,
        "click_block": np.arange(len(clicks), dtype=np.int32),
        "point": clicks.mean(0) if has_point else np.full((2,), -1.0, np.float32),
        "has_point": has_point,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "has_xml": xml,
        "num_metadata": int(xml),
        "selected_count": len(clicks),
        "estimate_time_ms": 100.0 * i if i != 7 else -1.0,  # -1: no readable time.
        "mouse_trace_length": 5 * i,
    }


@pytest.fixture(scope="module")
def fake_imagenet_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("fake_imagenet_ab"))
  tfds.dataset_builders.store_as_tfds_dataset(
      name=FAKE_IMAGENET, version="1.0.0", features=_imagenet_features(),
      split_datasets={"train": list(_imagenet_examples())}, data_dir=data_dir,
      file_format="array_record", disable_shuffling=True)
  return data_dir


def _check_pngs(out_dir):
  for name in (ds.HEATMAP_FILE, ds.CLICKS_HIST_FILE, ds.SAMPLES_FILE):
    with Image.open(os.path.join(out_dir, name)) as image:
      image.load()
      assert image.format == "PNG" and image.width > 100 and image.height > 100, name


def test_imagenet_ab_like_counts_by_hand(fake_imagenet_dir, tmp_path, capsys):
  out = str(tmp_path / "out")
  summary = ds.run(FAKE_IMAGENET, "train", fake_imagenet_dir, out, num_samples=4)
  printed = capsys.readouterr().out
  with open(os.path.join(out, ds.STATS_FILE)) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  _check_pngs(out)

  assert summary["num_images"] == 8 and not summary["sampled"]
  assert summary["images_with_xml"] == 6
  assert summary["images_with_clicks"] == 6
  assert summary["images_with_point"] == 6
  assert summary["images_with_boxes"] == 6
  assert summary["num_clicks"] == 10
  # Per image [1, 2, 3, 0, 1, 0, 2, 1]; sorted [0,0,1,1,1,2,2,3]: p90 at 6.3 -> 2.3.
  cpi = summary["clicks_per_image"]
  assert cpi["mean"] == pytest.approx(1.25) and cpi["median"] == 1
  assert cpi["p90"] == pytest.approx(2.3) and cpi["max"] == 3
  assert summary["clicks_per_clicked_image"]["mean"] == pytest.approx(10 / 6)
  # Clicks of images with boxes: 1 + 2 + 3 + 2 + 1 = 9, inside: 1 + 1 + 2 + 2 + 1 = 7.
  assert summary["inside_box"]["clicks_considered"] == 9
  assert summary["inside_box"]["clicks_inside"] == 7
  assert summary["inside_box"]["share"] == pytest.approx(7 / 9)
  # Coverage: cat 3/3, dog 2/3, fish 1/2.
  rows = {row["name"]: row for row in summary["per_class"]}
  assert [rows[n]["images"] for n in NAMES] == [3, 3, 2]
  assert [rows[n]["images_with_clicks"] for n in NAMES] == [3, 2, 1]
  assert [rows[n]["clicks"] for n in NAMES] == [4, 4, 2]
  assert summary["coverage_mean"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
  assert [row["name"] for row in summary["lowest_coverage"]] == ["fish", "dog", "cat"]
  # Byproducts over the 6 images with XML: records 0, 1, 2, 4, 6, 7.
  times = summary["byproducts"]["estimate_time_ms"]
  assert times["mean"] == pytest.approx(1300 / 5) and times["missing"] == 1
  assert summary["byproducts"]["mouse_trace_length"]["max"] == 35
  assert summary["byproducts"]["click_times_ms"]["count"] == 10
  assert summary["clicks_out_of_range"] == 0
  assert sorted(summary["plots"]) == sorted(
      [ds.HEATMAP_FILE, ds.CLICKS_HIST_FILE, ds.SAMPLES_FILE])
  assert "clicks inside a GT box" in printed and "77.8%" in printed and "fish" in printed


def test_imagenet_ab_like_heatmap_sampling_and_sample_choice(fake_imagenet_dir):
  source, features, _ = ds.open_source(FAKE_IMAGENET, "train", fake_imagenet_dir)
  assert isinstance(source[0]["image"], bytes)  # Images are not decoded while counting.
  fields = ds.detect_fields(features)
  assert (fields.clicks, fields.label, fields.boxes, fields.has_xml) == (
      "clicks", "label", "boxes", True)
  assert fields.class_names == tuple(NAMES)

  stats = ds.compute_stats(source, fields)
  b = ds.HEATMAP_BINS
  assert stats.heatmap.shape == (b, b) and stats.heatmap.sum() == 10
  # Rows are y (image top first), columns x: (x 0.25, y 0.75) sits low-left, nothing mirrored.
  assert stats.heatmap[int(0.75 * b), int(0.25 * b)] == 1
  assert stats.heatmap[int(0.25 * b), int(0.75 * b)] == 0
  assert stats.heatmap[b - 1, b - 1] == 1  # (1.0, 1.0): the right edge is in the last bin.
  assert stats.heatmap[int(0.9 * b), int(0.9 * b)] == 1

  # 4 of 8 evenly spaced: records 0, 2, 4, 6 -> clicks 1 + 3 + 1 + 2.
  sampled = ds.compute_stats(source, fields, max_examples=4).summary
  assert sampled["num_images"] == 4 and sampled["sampled"] and sampled["num_clicks"] == 7
  np.testing.assert_array_equal(ds.example_indices(8, 4), [0, 2, 4, 6])
  np.testing.assert_array_equal(ds.example_indices(8, None), np.arange(8))

  # Samples prefer images with clicks, then top up with the others.
  assert ds.sample_indices(stats, 3) == [0, 2, 6]
  assert ds.sample_indices(stats, 7) == [0, 1, 2, 3, 4, 6, 7]


def test_no_click_fields_is_a_clear_error():
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3)),
      "label": tfds.features.ClassLabel(num_classes=3)})
  with pytest.raises(ValueError, match=r"'imagenet2012'.*'validation'.*no click fields"):
    ds.detect_fields(features, "imagenet2012", "validation")


# ---------------------------------------------------------------------------------------------
# COCO-AB schema: one point per class, per-class boxes.
# ---------------------------------------------------------------------------------------------

COCO_NAMES = ["person", "bicycle", "car", "dog"]


def _png(color):
  buffer = io.BytesIO()
  Image.fromarray(np.full((10, 20, 3), color, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def _coco_record(labels, points, boxes, box_labels, image_id):
  k = len(COCO_NAMES)
  pts = np.full((k, 2), -1.0, np.float32)
  has = np.zeros(k, bool)
  for c, xy in points.items():
    pts[c], has[c] = xy, True
  lab = np.zeros(k, bool)
  lab[labels] = True
  return {"image": _png(40 * image_id), "image_id": image_id, "file_name": f"{image_id}.jpg",
          "labels": lab, "points": pts, "has_points": has,
          "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
          "box_labels": np.asarray(box_labels, np.int64), "time_spent_ms": 1000.0 * image_id,
          "num_actions": 3, "mouse_trace_length": 7}


def _coco_fields():
  f = tfds.features
  k = len(COCO_NAMES)
  features = f.FeaturesDict({
      "image": f.Image(shape=(None, None, 3)), "image_id": f.Tensor(shape=(), dtype=np.int64),
      "file_name": f.Text(), "labels": f.Tensor(shape=(k,), dtype=np.bool_),
      "points": f.Tensor(shape=(k, 2), dtype=np.float32),
      "has_points": f.Tensor(shape=(k,), dtype=np.bool_),
      "boxes": f.Tensor(shape=(None, 4), dtype=np.float32),
      "box_labels": f.Sequence(f.ClassLabel(names=COCO_NAMES)),
      "time_spent_ms": f.Tensor(shape=(), dtype=np.float32),
      "num_actions": f.Tensor(shape=(), dtype=np.int32),
      "mouse_trace_length": f.Tensor(shape=(), dtype=np.int32)})
  return ds.detect_fields(features, "coco_ab", "train")


def test_coco_ab_like_per_class_rules(tmp_path):
  records = [
      # person's point in a person box; bicycle's point outside the bicycle box.
      _coco_record([0, 1], {0: (0.5, 0.5), 1: (0.1, 0.1)},
                   [(0.4, 0.4, 0.6, 0.6), (0.5, 0.5, 0.9, 0.9)], [0, 1], 1),
      # bicycle inside its box; dog (unlabelled, no dog box) lies in a car box: not considered.
      _coco_record([1, 2], {1: (0.7, 0.7), 3: (0.2, 0.2)},
                   [(0.0, 0.0, 0.3, 0.3), (0.6, 0.6, 0.8, 0.8)], [2, 1], 2),
      _coco_record([0], {}, [(0.1, 0.1, 0.2, 0.2)], [0], 3),
  ]
  fields = _coco_fields()
  assert fields.per_class_points and fields.multi_label and fields.num_classes == 4
  assert fields.class_names == tuple(COCO_NAMES)
  stats = ds.compute_stats(records, fields, dataset="coco_ab", split="train")
  s = stats.summary
  assert s["num_images"] == 3 and s["images_with_clicks"] == 2 and s["num_clicks"] == 4
  assert s["images_with_xml"] is None and s["images_with_point"] is None
  assert s["inside_box"]["clicks_considered"] == 3 and s["inside_box"]["clicks_inside"] == 2
  assert s["clicks_on_unlabelled_classes"] == 1 and s["box_labels_out_of_range"] == 0
  rows = {row["name"]: row for row in s["per_class"]}
  assert [rows[n]["clicks"] for n in COCO_NAMES] == [1, 2, 0, 1]
  assert [rows[n]["images"] for n in COCO_NAMES] == [2, 2, 1, 0]
  assert [rows[n]["images_with_clicks"] for n in COCO_NAMES] == [1, 2, 0, 0]
  assert rows["bicycle"]["inside_box_share"] == pytest.approx(0.5)
  assert rows["dog"]["coverage"] is None
  assert s["coverage_mean"] == pytest.approx((0.5 + 1 + 0) / 3)
  assert s["classes_with_images"] == 3 and s["classes_without_images"] == 1
  assert s["byproducts"]["time_spent_ms"]["mean"] == pytest.approx(2000.0)
  ds.write_plots(stats, records, str(tmp_path), num_samples=3)
  _check_pngs(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# The embedded benchmark.
# ---------------------------------------------------------------------------------------------


def test_luab_shapes_tiny(tiny_data_dir, tmp_path):
  summary = ds.run("luab_shapes/tiny", "train", tiny_data_dir, str(tmp_path), num_samples=9)
  _check_pngs(str(tmp_path))
  plain = core.get_source("luab_shapes/tiny", "train", tiny_data_dir)
  clicks = [len(plain[i]["clicks"]) for i in range(len(plain))]
  assert summary["num_images"] == len(plain) == 256
  assert summary["num_clicks"] == sum(clicks)
  assert summary["images_with_clicks"] == summary["images_with_point"] == sum(
      n > 0 for n in clicks)
  assert summary["images_with_boxes"] == 256
  assert summary["inside_box"]["clicks_considered"] == sum(clicks)
  assert summary["inside_box"]["share"] > 0.8  # Clicks are sampled on the object (+ jitter).
  assert [row["name"] for row in summary["per_class"]] == list(generator.CLASS_NAMES[:4])
  assert sum(row["images"] for row in summary["per_class"]) == 256
  assert summary["images_with_xml"] is None


def test_luab_shapes_only_bg_has_no_boxes(tiny_data_dir):
  source, features, _ = ds.open_source("luab_shapes/tiny", "only_bg", tiny_data_dir)
  s = ds.compute_stats(source, ds.detect_fields(features), max_examples=16).summary
  assert s["num_images"] == 16 and s["images_with_clicks"] == 16
  assert s["images_with_boxes"] == 0  # object_box is all -1.
  assert s["inside_box"]["clicks_considered"] == 0 and s["inside_box"]["share"] is None
