"""Multi-label pieces: the COCO-AB crop rule in the train transform, and average precision."""

import io

import numpy as np
from PIL import Image

from luab_jax.evaluators import multilabel
from luab_jax.pp import transforms


def _jpeg(height=100, width=100):
  buffer = io.BytesIO()
  Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="JPEG")
  return buffer.getvalue()


def test_clicked_class_outside_crop_loses_its_label():
  record = {
      "image": _jpeg(),
      "labels": np.array([1, 1, 1, 0], bool),
      # Class 0 clicked at the top-left corner, class 1 at the bottom-right: a crop of a
      # quarter of the area never holds both. Class 2 is present but never clicked.
      "points": np.array([[0.0, 0.0], [1.0, 1.0], [-1, -1], [-1, -1]], np.float32),
      "has_points": np.array([True, True, False, False]),
      "file_name": "fixture",
  }
  transform = transforms.TrainTransform(image_size=16, scale=(0.25, 0.25), ratio=(1.0, 1.0),
                                        num_points=4)
  dropped = 0
  for seed in range(20):
    example = transform.random_map(dict(record), np.random.default_rng(seed))
    labels, weights = example["labels"], example["point_weight"]
    assert labels.dtype == np.float32 and labels.shape == (4,)
    # Kept exactly where the click survived the crop; unclicked classes keep their label.
    np.testing.assert_array_equal(labels[:2], weights[:2])
    assert labels[2] == 1.0 and labels[3] == 0.0
    assert weights[2] == 0.0 and weights[3] == 0.0
    dropped += int(labels[:2].sum() < 2)
  assert dropped == 20


def test_eval_transform_keeps_every_label():
  record = {"image": _jpeg(), "labels": np.array([1, 1], bool),
            "points": np.array([[0.0, 0.0], [0.5, 0.5]], np.float32),
            "has_points": np.array([True, True])}
  example = transforms.EvalTransform(image_size=16, crop_fraction=0.5, num_points=2).map(record)
  np.testing.assert_array_equal(example["labels"], [1.0, 1.0])
  np.testing.assert_array_equal(example["point_weight"], [0.0, 1.0])


def test_record_without_points_gives_missing_points():
  example = transforms.EvalTransform(image_size=16, num_points=1).map(
      {"image": _jpeg(), "label": 3})
  assert example["label"] == 3
  np.testing.assert_array_equal(example["points"], [[-1.0, -1.0]])
  np.testing.assert_array_equal(example["point_weight"], [0.0])


def _brute_force_ap(scores, positives):
  precisions = [np.sum(positives & (scores >= s)) / np.sum(scores >= s)
                for s in scores[positives]]
  return float(np.mean(precisions))


def test_average_precision_by_hand_and_brute_force():
  # Positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
  ap = multilabel.average_precision(np.array([0.9, 0.8, 0.7, 0.6]),
                                    np.array([1, 0, 1, 0], bool))
  np.testing.assert_allclose(ap, (1 + 2 / 3) / 2)
  # A tie between a positive and a negative counts both above the threshold.
  np.testing.assert_allclose(multilabel.average_precision(np.array([0.5, 0.5]),
                                                          np.array([1, 0], bool)), 0.5)
  assert np.isnan(multilabel.average_precision(np.array([0.1, 0.2]), np.array([0, 0], bool)))
  rng = np.random.default_rng(0)
  for _ in range(20):
    scores = np.round(rng.random(50), 1)  # Rounded: many ties.
    positives = rng.random(50) < 0.3
    if positives.any():
      np.testing.assert_allclose(multilabel.average_precision(scores, positives),
                                 _brute_force_ap(scores, positives))


def test_map_skips_classes_without_positives():
  scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]])
  labels = np.array([[1, 0, 0], [0, 1, 0]])
  metrics = multilabel.multilabel_metrics(scores, labels)
  assert metrics["map"] == 1.0 and metrics["num_classes_with_positives"] == 2
  assert "class_ap/2" not in metrics and metrics["precision_at_1"] == 1.0


def test_batch_rows_equal_their_records_transformed_alone():
  """`map_batch` keeps rows apart: a skipped image, dropped clicks and the crop rule per row."""
  rng = np.random.default_rng(0)
  records = []
  for i in range(6):
    records.append({
        "image": _jpeg(80 + 10 * i, 120 - 10 * i) if i != 2 else _jpeg()[:150],  # 2: truncated.
        "labels": rng.random(4) < 0.7,
        "points": rng.uniform(-0.1, 1.1, (4, 2)).astype(np.float32),
        "has_points": rng.random(4) < 0.8,
        "file_name": f"record_{i}",
    })
  transform = transforms.TrainTransform(image_size=16, scale=(0.2, 0.6), num_points=4)
  batch = transform.map_batch(records, [np.random.default_rng(seed) for seed in range(6)])
  assert batch["image"].shape == (6, 16, 16, 3)
  for i, record in enumerate(records):
    alone = transform.random_map(record, np.random.default_rng(i))
    assert list(alone) == list(batch)
    for key, value in alone.items():
      np.testing.assert_array_equal(batch[key][i], value, err_msg=f"row {i}, {key}")
      assert batch[key].dtype == np.asarray(value).dtype, key
  # Not vacuous: the truncated row is skipped, the others train, some clicks are dropped.
  np.testing.assert_array_equal(batch["weight"], [1, 1, 0, 1, 1, 1])
  assert batch["bad_points"].sum() > 0 and 0 < batch["point_weight"].mean() < 1


def test_precision_at_1_is_over_labelled_examples():
  scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
  labels = np.array([[1, 0], [1, 0], [0, 0]])  # The last image has no label at all.
  metrics = multilabel.multilabel_metrics(scores, labels)
  assert metrics["precision_at_1"] == 0.5 and metrics["num_examples_without_labels"] == 1
  assert metrics["num_examples"] == 3


def test_the_summary_table_prints_counts_as_counts():
  from luab_jax import eval_results  # pylint: disable=g-import-not-at-top
  rows = [{"step": 4, "evaluator": "real", "metric": name, "value": value}
          for name, value in (("accuracy", 0.81234), ("real_num_examples", 9.0),
                              ("num_examples", 10.0))]
  table = eval_results.summary_table({"run": rows})
  assert "| real/accuracy | 0.8123 |" in table and "| real/real_num_examples | 9 |" in table
  assert "| real/num_examples | 10 |" in table
