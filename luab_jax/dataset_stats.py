"""Statistics and plots of the annotation byproducts (clicks) of a prepared dataset.

  python -m luab_jax.dataset_stats --dataset imagenet_ab/1k --split train --data_dir data/tfds \
      --out_dir workdirs/stats/imagenet_ab [--max_examples 20000] [--num_samples 16]

Writes to `out_dir`:
  stats.json           every number below, with all per-class rows
  click_heatmap.png    2-D histogram of the click locations over normalised image coordinates
                       (x right, y down, as in the image)
  clicks_per_image.png histogram of the number of clicks per image
  samples.png          `num_samples` images with their clicks (dots), the mean point (cross),
                       the ground-truth boxes (rectangles) and the class name as title
and prints a table.

The fields are detected from the dataset's features, not from its name:
  clicks           `clicks` [N, 2] (ImageNet-AB, luab_shapes), or `points` [K, 2] with
                   `has_points` [K] (COCO-AB: one point per class, each counted as one click)
  label            `label` (one class) or `labels` (K-way multi-hot)
  boxes            `boxes` [M, 4] (with `box_labels` [M] on COCO-AB), or `object_box` [4]
                   (-1 where there is none)
  optional         `point` + `has_point` (the official mean point), `has_xml`, and the scalar
                   byproducts `num_metadata`, `selected_count`, `estimate_time_ms`,
                   `mouse_trace_length`, `time_spent_ms`, `num_actions` (+ per click
                   `click_times_ms`)
All points and boxes are (x, y) / (x_min, y_min, x_max, y_max) in [0, 1], x right, y down.

Definitions (also written into stats.json under "definitions"):
- Clicks per image counts every examined image, including those without clicks.
- A click is inside a box if x_min <= x <= x_max and y_min <= y <= y_max (inclusive). Single-label
  datasets: the share is over the clicks of images with at least one box, a click counts if it is
  inside any box. COCO-AB: the share is over the points whose class has at least one box in the
  image (`box_labels` are class indices 0..K-1), a point counts if it is inside a box of its class.
- Per-class coverage: the share of the images of a class with at least one click; for multi-label
  datasets an image "of class c" has labels[c], and it counts as covered if it has a point of c.
- The scalar byproducts are summarised over the images with `has_xml` where that field exists,
  otherwise over all images; negative values (the builders' -1 for "unreadable" / "none") are
  left out and counted as `missing`.

The split is streamed in chunks of records (images stay undecoded bytes), so memory holds only
per-image counters. `--max_examples M` examines M records evenly spaced over the split (indices
floor(i * N / M)), the same ones every run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

# File names written into out_dir.
STATS_FILE = "stats.json"
HEATMAP_FILE = "click_heatmap.png"
CLICKS_HIST_FILE = "clicks_per_image.png"
SAMPLES_FILE = "samples.png"

HEATMAP_BINS = 64
CHUNK = 256  # Records read per `__getitems__` call.
LOWEST_SHOWN = 10  # Classes of lowest coverage in the printed table.
SCALAR_BYPRODUCTS = ("num_metadata", "selected_count", "estimate_time_ms", "mouse_trace_length",
                     "time_spent_ms", "num_actions")
PER_CLICK_BYPRODUCTS = ("click_times_ms",)

DEFINITIONS = {
    "clicks_per_image": "over every examined image, images without clicks count as 0",
    "inside_box": "x_min <= x <= x_max and y_min <= y <= y_max; single-label: clicks of images "
                  "with >= 1 box, inside any box; multi-label: points whose class has >= 1 box "
                  "in the image, inside a box of that class",
    "coverage": "share of the images of a class with >= 1 click (multi-label: with a point of "
                "that class)",
    "byproducts": "summarised over images with has_xml where that field exists, else all "
                  "images; negative values (-1 = unreadable or none) are counted as missing",
    "percentiles": "numpy.percentile, linear interpolation",
}


# ---------------------------------------------------------------------------------------------
# Which fields a dataset has.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fields:
  """The byproduct-related features present in a dataset (detected from its features)."""
  clicks: str  # "clicks" ([N, 2]) or "points" ([K, 2] with "has_points").
  label: str | None  # "label" (one class), "labels" (multi-hot) or None.
  boxes: str | None  # "boxes" ([M, 4]), "object_box" ([4]) or None.
  box_labels: str | None  # "box_labels" ([M]) or None.
  point: bool  # "point" + "has_point" exist.
  has_xml: bool
  scalars: tuple[str, ...]
  per_click: tuple[str, ...]
  class_names: tuple[str, ...] | None
  num_classes: int | None

  @property
  def multi_label(self) -> bool:
    return self.label == "labels"

  @property
  def per_class_points(self) -> bool:
    return self.clicks == "points"


def _class_label_names(feature) -> tuple[str, ...] | None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  while isinstance(feature, tfds.features.Sequence):
    feature = feature.feature
  if isinstance(feature, tfds.features.ClassLabel):
    return tuple(feature.names)
  return None


def detect_fields(features, dataset: str = "?", split: str = "?") -> Fields:
  """Reads which click, label and box fields `features` (a TFDS FeaturesDict) holds."""
  keys = set(features.keys())
  if "clicks" in keys:
    clicks = "clicks"
  elif {"points", "has_points"} <= keys:
    clicks = "points"
  else:
    raise ValueError(
        f"Dataset {dataset!r} split {split!r} has no click fields: expected `clicks` [N, 2] or "
        f"`points` [K, 2] with `has_points` [K]; its features are {sorted(keys)}.")
  label = "label" if "label" in keys else ("labels" if "labels" in keys else None)
  boxes = "boxes" if "boxes" in keys else ("object_box" if "object_box" in keys else None)
  box_labels = "box_labels" if boxes == "boxes" and "box_labels" in keys else None

  names = None
  for key in (label, box_labels):
    if key is not None and names is None:
      names = _class_label_names(features[key])
  num_classes = len(names) if names else None
  if label == "labels" and getattr(features["labels"], "shape", None):
    num_classes = int(features["labels"].shape[-1])
  if clicks == "points" and getattr(features["points"], "shape", None):
    num_classes = num_classes or int(features["points"].shape[0])
  if names is not None and num_classes is not None and len(names) != num_classes:
    names = None  # E.g. box labels named over another class list: do not guess.
  return Fields(
      clicks=clicks, label=label, boxes=boxes, box_labels=box_labels,
      point={"point", "has_point"} <= keys, has_xml="has_xml" in keys,
      scalars=tuple(k for k in SCALAR_BYPRODUCTS if k in keys),
      per_click=tuple(k for k in PER_CLICK_BYPRODUCTS if k in keys),
      class_names=names, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# Reading one record.
# ---------------------------------------------------------------------------------------------


def _record_clicks(fields: Fields, ex: dict) -> tuple[np.ndarray, np.ndarray | None]:
  """(clicks [N, 2] float32, their class indices [N] or None)."""
  if fields.per_class_points:
    has = np.asarray(ex["has_points"], bool).reshape(-1)
    points = np.asarray(ex["points"], np.float32).reshape(-1, 2)
    return points[has], np.nonzero(has)[0]
  return np.asarray(ex["clicks"], np.float32).reshape(-1, 2), None


def _record_boxes(fields: Fields, ex: dict) -> tuple[np.ndarray, np.ndarray | None]:
  """(boxes [M, 4] without the -1 padding / "no box" rows, their class indices or None)."""
  if fields.boxes is None:
    return np.zeros((0, 4), np.float32), None
  boxes = np.asarray(ex[fields.boxes], np.float32).reshape(-1, 4)
  valid = np.all(boxes >= 0, axis=1)
  labels = None
  if fields.box_labels is not None:
    labels = np.asarray(ex[fields.box_labels], np.int64).reshape(-1)[valid]
  return boxes[valid], labels


def _inside(clicks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """[N, M] bool: click n inside box m (inclusive bounds)."""
  x, y = clicks[:, 0:1], clicks[:, 1:2]
  return ((x >= boxes[None, :, 0]) & (x <= boxes[None, :, 2]) &
          (y >= boxes[None, :, 1]) & (y <= boxes[None, :, 3]))


def _record_classes(fields: Fields, ex: dict) -> np.ndarray:
  """Indices of the classes of the record (one for single-label datasets)."""
  if fields.label is None:
    return np.zeros((0,), np.int64)
  if fields.multi_label:
    return np.nonzero(np.asarray(ex["labels"]).reshape(-1))[0]
  label = np.asarray(ex["label"], np.int64).reshape(1)
  return label[label >= 0]  # A negative label (unknown class) belongs to no class.


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
    return _text(value.item())
  return str(value)


# ---------------------------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------------------------


def _grow(array: np.ndarray, size: int) -> np.ndarray:
  if size <= len(array):
    return array
  return np.concatenate([array, np.zeros(size - len(array), array.dtype)])


def _summary(values) -> dict[str, float | int | None]:
  values = np.asarray(values, np.float64).reshape(-1)
  if values.size == 0:
    return {"count": 0, "mean": None, "median": None, "p90": None, "max": None}
  return {"count": int(values.size), "mean": float(values.mean()),
          "median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
          "max": float(values.max())}


def _byproduct_summary(values) -> dict[str, float | int | None]:
  """`_summary` of the non-negative values; negatives (-1: unreadable / none) count as missing."""
  values = np.asarray(values, np.float64).reshape(-1)
  out = _summary(values[values >= 0])
  out["missing"] = int(np.sum(values < 0))
  return out


def example_indices(num_records: int, max_examples: int | None) -> np.ndarray:
  """The examined record indices: all, or `max_examples` evenly spaced (deterministic)."""
  if not max_examples or max_examples >= num_records:
    return np.arange(num_records, dtype=np.int64)
  if max_examples < 0:
    raise ValueError(f"max_examples must be >= 0, got {max_examples}.")
  return (np.arange(max_examples, dtype=np.int64) * num_records) // max_examples


@dataclasses.dataclass
class Stats:
  """What `compute_stats` returns: the JSON summary plus the arrays the plots need."""
  summary: dict[str, Any]
  indices: np.ndarray  # Record indices examined, in order.
  clicks_per_image: np.ndarray  # [len(indices)] int.
  heatmap: np.ndarray  # [HEATMAP_BINS (y), HEATMAP_BINS (x)] counts; row 0 is the image top.
  fields: Fields


def compute_stats(source: Sequence[dict], fields: Fields, *, max_examples: int | None = None,
                  dataset: str = "?", split: str = "?", chunk: int = CHUNK,
                  log_every_s: float = 30.0) -> Stats:
  """Streams over `source` (records as dicts of numpy values) and counts everything.

  `source` should not decode images (pass `decoders={"image": tfds.decode.SkipDecoding()}`):
  only the click, label, box and byproduct fields are read.
  """
  indices = example_indices(len(source), max_examples)
  n = len(indices)
  k = fields.num_classes or 0
  images_per_class = np.zeros(k, np.int64)
  clicked_per_class = np.zeros(k, np.int64)
  clicks_per_class = np.zeros(k, np.int64)  # Single-label: clicks of images of the class.
  inside_per_class = np.zeros(k, np.int64)  # Multi-label: points inside a box of their class.
  boxed_per_class = np.zeros(k, np.int64)  # Multi-label: points whose class has a box.
  clicks_per_image = np.zeros(n, np.int64)
  heatmap = np.zeros((HEATMAP_BINS, HEATMAP_BINS), np.int64)
  counts = dict(images_with_xml=0, images_with_clicks=0, images_with_point=0,
                images_with_boxes=0, clicks_out_of_range=0, inside_considered=0, inside=0,
                clicks_on_unlabelled_classes=0, box_labels_out_of_range=0,
                images_with_clicks_without_xml=0)
  scalars = {key: [] for key in fields.scalars}
  per_click = {key: [] for key in fields.per_click}

  started = last_log = time.time()
  for start in range(0, n, chunk):
    keys = [int(i) for i in indices[start:start + chunk]]
    records = (source.__getitems__(keys) if hasattr(source, "__getitems__")
               else [source[i] for i in keys])
    chunk_clicks = []
    for offset, ex in enumerate(records):
      clicks, click_classes = _record_clicks(fields, ex)
      boxes, box_classes = _record_boxes(fields, ex)
      classes = _record_classes(fields, ex)
      num = len(clicks)
      clicks_per_image[start + offset] = num
      chunk_clicks.append(clicks)
      if num:
        counts["images_with_clicks"] += 1
        counts["clicks_out_of_range"] += int(np.sum(np.any((clicks < 0) | (clicks > 1), axis=1)))
      if len(boxes):
        counts["images_with_boxes"] += 1
      xml = bool(np.asarray(ex["has_xml"])) if fields.has_xml else True
      if fields.has_xml:
        counts["images_with_xml"] += int(xml)
        counts["images_with_clicks_without_xml"] += int(num > 0 and not xml)
      if fields.point:
        counts["images_with_point"] += int(bool(np.asarray(ex["has_point"])))

      # Inside a ground-truth box.
      if fields.per_class_points:
        if box_classes is not None:
          bad = (box_classes < 0) | (box_classes >= max(k, 1))
          counts["box_labels_out_of_range"] += int(bad.sum())
        if num and len(boxes):
          inside = _inside(clicks, boxes)
          if box_classes is not None:
            same = click_classes[:, None] == box_classes[None, :]
            considered = same.any(axis=1)
            hit = (inside & same).any(axis=1)
          else:  # Boxes without classes: any box.
            considered = np.ones(num, bool)
            hit = inside.any(axis=1)
          counts["inside_considered"] += int(considered.sum())
          counts["inside"] += int(hit.sum())
          top = max(k, int(click_classes.max()) + 1)
          boxed_per_class = _grow(boxed_per_class, top)
          inside_per_class = _grow(inside_per_class, top)
          np.add.at(boxed_per_class, click_classes[considered], 1)
          np.add.at(inside_per_class, click_classes[hit], 1)
      elif num and len(boxes):
        counts["inside_considered"] += num
        counts["inside"] += int(_inside(clicks, boxes).any(axis=1).sum())

      # Per class.
      if len(classes) or (click_classes is not None and len(click_classes)):
        top = max([len(images_per_class)] + [int(c) + 1 for c in classes] +
                  ([int(click_classes.max()) + 1] if click_classes is not None and num else []))
        images_per_class = _grow(images_per_class, top)
        clicked_per_class = _grow(clicked_per_class, top)
        clicks_per_class = _grow(clicks_per_class, top)
        boxed_per_class = _grow(boxed_per_class, top)
        inside_per_class = _grow(inside_per_class, top)
        images_per_class[classes] += 1
        if fields.per_class_points:
          clicked_per_class[np.intersect1d(classes, click_classes)] += 1
          np.add.at(clicks_per_class, click_classes, 1)
          counts["clicks_on_unlabelled_classes"] += int(np.sum(~np.isin(click_classes, classes)))
        elif num:
          clicked_per_class[classes] += 1
          clicks_per_class[classes] += num

      if xml:
        for key in fields.scalars:
          scalars[key].append(float(np.asarray(ex[key]).reshape(-1)[0]))
        for key in fields.per_click:
          per_click[key].append(np.asarray(ex[key], np.float64).reshape(-1))

    all_clicks = np.concatenate(chunk_clicks) if chunk_clicks else np.zeros((0, 2), np.float32)
    if len(all_clicks):
      hist, _, _ = np.histogram2d(all_clicks[:, 1], all_clicks[:, 0], bins=HEATMAP_BINS,
                                  range=[[0.0, 1.0], [0.0, 1.0]])
      heatmap += hist.astype(np.int64)
    if time.time() - last_log > log_every_s:
      last_log = time.time()
      done = start + len(keys)
      logging.info("%s %s: %d / %d records (%.0f / s)", dataset, split, done, n,
                   done / (last_log - started))

  summary = _summarise(
      fields, dataset=dataset, split=split, num_records=len(source), n=n, counts=counts,
      clicks_per_image=clicks_per_image, images_per_class=images_per_class,
      clicked_per_class=clicked_per_class, clicks_per_class=clicks_per_class,
      boxed_per_class=boxed_per_class, inside_per_class=inside_per_class, scalars=scalars,
      per_click=per_click, seconds=time.time() - started)
  return Stats(summary=summary, indices=indices, clicks_per_image=clicks_per_image,
               heatmap=heatmap, fields=fields)


def _share(part: int, whole: int) -> float | None:
  return float(part) / whole if whole else None


def _summarise(fields: Fields, *, dataset, split, num_records, n, counts, clicks_per_image,
               images_per_class, clicked_per_class, clicks_per_class, boxed_per_class,
               inside_per_class, scalars, per_click, seconds) -> dict[str, Any]:
  """The JSON-ready summary."""
  names = fields.class_names
  per_class = []
  for c in range(len(images_per_class)):
    row = {"class": c, "name": names[c] if names and c < len(names) else str(c),
           "images": int(images_per_class[c]), "images_with_clicks": int(clicked_per_class[c]),
           "coverage": _share(clicked_per_class[c], images_per_class[c]),
           "clicks": int(clicks_per_class[c])}
    if fields.per_class_points:
      row["clicks_with_box_of_class"] = int(boxed_per_class[c])
      row["clicks_inside_box"] = int(inside_per_class[c])
      row["inside_box_share"] = _share(inside_per_class[c], boxed_per_class[c])
    per_class.append(row)
  covered = [row for row in per_class if row["images"]]
  lowest = sorted(covered, key=lambda row: (row["coverage"], row["class"]))[:LOWEST_SHOWN]

  clicked = clicks_per_image[clicks_per_image > 0]
  out: dict[str, Any] = {
      "dataset": dataset,
      "split": split,
      "records_in_split": int(num_records),
      "num_images": int(n),
      "sampled": bool(n < num_records),
      "fields": {key: value for key, value in dataclasses.asdict(fields).items()
                 if key != "class_names"},
      "images_with_xml": counts["images_with_xml"] if fields.has_xml else None,
      "images_with_clicks": counts["images_with_clicks"],
      "images_with_clicks_share": _share(counts["images_with_clicks"], n),
      "images_with_point": counts["images_with_point"] if fields.point else None,
      "images_with_boxes": counts["images_with_boxes"] if fields.boxes else None,
      "num_clicks": int(clicks_per_image.sum()),
      "clicks_out_of_range": counts["clicks_out_of_range"],
      "clicks_per_image": _summary(clicks_per_image),
      "clicks_per_clicked_image": _summary(clicked),
      "inside_box": {
          "rule": ("inside a box of the point's class" if fields.per_class_points
                   and fields.box_labels else "inside any box"),
          "clicks_considered": counts["inside_considered"],
          "clicks_inside": counts["inside"],
          "share": _share(counts["inside"], counts["inside_considered"]),
      } if fields.boxes else None,
      "coverage_mean": (float(np.mean([row["coverage"] for row in covered])) if covered
                        else None),
      "classes_with_images": len(covered),
      "classes_without_images": (fields.num_classes - len(covered)
                                 if fields.num_classes else None),
      "lowest_coverage": lowest,
      "per_class": per_class,
      "byproducts": {key: _byproduct_summary(values) for key, values in scalars.items()},
      "seconds": seconds,
      "definitions": DEFINITIONS,
  }
  for key, chunks in per_click.items():
    out["byproducts"][key] = _byproduct_summary(np.concatenate(chunks) if chunks else [])
  if fields.has_xml:
    out["images_with_clicks_without_xml"] = counts["images_with_clicks_without_xml"]
  if fields.per_class_points:
    out["clicks_on_unlabelled_classes"] = counts["clicks_on_unlabelled_classes"]
    out["box_labels_out_of_range"] = counts["box_labels_out_of_range"]
  return out


def _pct(value) -> str:
  return "-" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
  if value is None:
    return "-"
  return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def format_table(summary: dict[str, Any]) -> str:
  """The readable table printed by the tool."""
  n = summary["num_images"]
  lines = [f"{summary['dataset']} split={summary['split']}: {n:,} of "
           f"{summary['records_in_split']:,} records examined"
           + (" (evenly spaced sample)" if summary["sampled"] else "")]

  def row(name, value):
    lines.append(f"  {name:<30} {value}")

  def count(name, key):
    if summary.get(key) is not None:
      row(name, f"{summary[key]:,} ({_pct(summary[key] / n if n else None)})")

  row("images", f"{n:,}")
  count("images with XML", "images_with_xml")
  count("images with >= 1 click", "images_with_clicks")
  count("images with a mean point", "images_with_point")
  count("images with a GT box", "images_with_boxes")
  if summary.get("images_with_clicks_without_xml"):
    row("images with clicks, no XML", f"{summary['images_with_clicks_without_xml']:,}")
  row("clicks", f"{summary['num_clicks']:,}")
  if summary["clicks_out_of_range"]:
    row("clicks outside [0, 1]", f"{summary['clicks_out_of_range']:,}")
  for key, name in (("clicks_per_image", "clicks per image"),
                    ("clicks_per_clicked_image", "clicks per clicked image")):
    s = summary[key]
    row(name, f"mean {_num(s['mean'])}  median {_num(s['median'])}  p90 {_num(s['p90'])}  "
              f"max {_num(s['max'])}")
  box = summary.get("inside_box")
  if box:
    row("clicks inside a GT box", f"{_pct(box['share'])} of {box['clicks_considered']:,} "
                                  f"clicks ({box['rule']})")
  if summary.get("clicks_on_unlabelled_classes"):
    row("points of unlabelled classes", f"{summary['clicks_on_unlabelled_classes']:,}")
  if summary.get("box_labels_out_of_range"):
    row("box labels out of range", f"{summary['box_labels_out_of_range']:,}")
  for key, s in summary["byproducts"].items():
    row(key, f"mean {_num(s['mean'])}  median {_num(s['median'])}  p90 {_num(s['p90'])}  "
             f"max {_num(s['max'])}" + (f"  ({s['missing']:,} missing)" if s["missing"] else ""))
  if summary["classes_with_images"]:
    missing = summary.get("classes_without_images")
    row("per-class coverage", f"mean {_pct(summary['coverage_mean'])} over "
                              f"{summary['classes_with_images']:,} classes"
                              + (f" ({missing} without images)" if missing else ""))
    lines.append(f"  lowest {len(summary['lowest_coverage'])} classes by coverage:")
    lines.append(f"    {'class':>5}  {'name':<24} {'images':>8} {'clicked':>8} {'coverage':>9} "
                 f"{'clicks':>8}")
    for r in summary["lowest_coverage"]:
      lines.append(f"    {r['class']:>5}  {r['name'][:24]:<24} {r['images']:>8,} "
                   f"{r['images_with_clicks']:>8,} {_pct(r['coverage']):>9} {r['clicks']:>8,}")
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots.
# ---------------------------------------------------------------------------------------------


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def sample_indices(stats: Stats, num_samples: int) -> list[int]:
  """Record indices shown in samples.png: evenly spaced over the examined images with clicks,
  topped up with evenly spaced images without clicks when there are too few."""
  if num_samples <= 0:
    return []
  clicked = stats.indices[stats.clicks_per_image > 0]
  unclicked = stats.indices[stats.clicks_per_image == 0]

  def spread(pool, m):
    if m <= 0 or not len(pool):
      return []
    if m >= len(pool):
      return [int(i) for i in pool]
    return [int(pool[j]) for j in (np.arange(m) * len(pool)) // m]

  chosen = spread(clicked, num_samples)
  chosen += spread(unclicked, num_samples - len(chosen))
  return sorted(chosen)


def _decode_image(value) -> np.ndarray:
  if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3:
    return value if value.shape[-1] == 3 else np.repeat(value[..., :1], 3, axis=-1)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  data = value.item() if isinstance(value, np.ndarray) else value
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def _title(fields: Fields, ex: dict) -> str:
  names = fields.class_names
  classes = [int(c) for c in _record_classes(fields, ex)]
  shown = [names[c] if names and c < len(names) else str(c) for c in classes]
  if not shown:
    return _text(ex.get("file_name", ""))
  if len(shown) > 3:
    return ", ".join(shown[:3]) + f" +{len(shown) - 3}"
  return ", ".join(shown)


def write_plots(stats: Stats, source: Sequence[dict], out_dir: str, *,
                num_samples: int = 16) -> list[str]:
  """Writes the heatmap, the clicks-per-image histogram and the sample grid; returns paths.

  `source` is the same (undecoded-image) source as given to `compute_stats`; only the
  `num_samples` shown records are read again and decoded.
  """
  plt = _pyplot()
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  s = stats.summary
  name = f"{s['dataset']} {s['split']}"
  paths = []

  # Heatmap: row 0 of the histogram is y in [0, 1/B), drawn at the top.
  fig, ax = plt.subplots(figsize=(6, 5.2))
  im = ax.imshow(stats.heatmap, extent=(0, 1, 1, 0), origin="upper", cmap="magma",
                 interpolation="nearest", aspect="equal")
  fig.colorbar(im, ax=ax, label="clicks per bin")
  ax.set_xlabel("x (normalised, right)")
  ax.set_ylabel("y (normalised, down)")
  ax.set_title(f"{name}: {s['num_clicks']:,} clicks, {HEATMAP_BINS}x{HEATMAP_BINS} bins")
  paths.append(_save(fig, out_dir, HEATMAP_FILE))

  # Clicks per image.
  fig, ax = plt.subplots(figsize=(6, 4))
  counts = stats.clicks_per_image
  top = int(counts.max()) if len(counts) else 0
  bins = np.arange(top + 2) - 0.5 if top <= 60 else 60
  ax.hist(counts, bins=bins, color="tab:blue", edgecolor="white")
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_xlabel("clicks per image")
  ax.set_ylabel("images")
  ax.set_title(f"{name}: mean {_num(s['clicks_per_image']['mean'])}, "
               f"{_pct(s['images_with_clicks_share'])} with clicks")
  paths.append(_save(fig, out_dir, CLICKS_HIST_FILE))

  # Samples.
  chosen = sample_indices(stats, num_samples)
  cols = max(1, math.ceil(math.sqrt(len(chosen))))
  rows = max(1, math.ceil(len(chosen) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(max(2.6 * cols, 5.0), 2.8 * rows + 0.4),
                           squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  records = (source.__getitems__(chosen) if hasattr(source, "__getitems__")
             else [source[i] for i in chosen]) if chosen else []
  for ax, index, ex in zip(axes.flat, chosen, records):
    _draw_sample(ax, stats.fields, ex, index, patches)
  if not chosen:
    axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
  fig.suptitle(f"{name}\nclicks: dots, mean point: cross, GT boxes: rectangles", fontsize=9)
  paths.append(_save(fig, out_dir, SAMPLES_FILE))
  return paths


def _draw_sample(ax, fields: Fields, ex: dict, index: int, patches) -> None:
  """One panel: the image over [0, 1]^2 (y down), boxes, clicks (dots), mean point (cross).

  With per-class points (COCO-AB) each point and box takes the colour of its class."""
  try:
    image = _decode_image(ex["image"])
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("Record %d: image not decodable (%s).", index, e)
    image = np.full((8, 8, 3), 128, np.uint8)
  h, w = image.shape[:2]
  ax.imshow(image, extent=(0, 1, 1, 0), interpolation="bilinear")
  ax.set_aspect(h / w)
  ax.set_xlim(0, 1)
  ax.set_ylim(1, 0)
  palette = _pyplot().get_cmap("tab10")

  def colour(classes, default, n):
    if classes is None or not fields.per_class_points:
      return [default] * n
    return [palette(int(c) % 10) for c in classes]

  boxes, box_classes = _record_boxes(fields, ex)
  for (x0, y0, x1, y1), c in zip(boxes, colour(box_classes, "lime", len(boxes))):
    ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=c,
                                   linewidth=1.2))
  if fields.point and bool(np.asarray(ex["has_point"])):
    px, py = np.asarray(ex["point"], np.float32).reshape(2)
    ax.plot([px], [py], marker="x", markersize=9, markeredgewidth=2.0, color="yellow", zorder=3)
  clicks, click_classes = _record_clicks(fields, ex)
  if len(clicks):
    ax.scatter(clicks[:, 0], clicks[:, 1], s=18, c=colour(click_classes, "red", len(clicks)),
               edgecolors="white", linewidths=0.6, zorder=4)
  ax.set_title(_title(fields, ex), fontsize=8)


def _save(fig, out_dir: str, name: str) -> str:
  path = os.path.join(out_dir, name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)
  return path


# ---------------------------------------------------------------------------------------------
# The tool.
# ---------------------------------------------------------------------------------------------


def open_source(dataset: str, split: str, data_dir: str | None):
  """(source with undecoded images, features, class names from the dataset's metadata or None).

  `core.get_source` gives the clear "not prepared" / "no such split" errors.
  """
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  source = core.get_source(dataset, split, data_dir)
  info = core.builder(dataset, data_dir).info
  names = (info.metadata or {}).get("class_names")  # COCO-AB keeps its names there.
  return source, info.features, tuple(names) if names else None


def run(dataset: str, split: str, data_dir: str | None, out_dir: str, *,
        max_examples: int | None = None, num_samples: int = 16,
        plots: bool = True) -> dict[str, Any]:
  """Computes the statistics, writes stats.json (and the plots), prints the table."""
  source, features, metadata_names = open_source(dataset, split, data_dir)
  fields = detect_fields(features, dataset, split)
  if fields.class_names is None and metadata_names and len(metadata_names) == fields.num_classes:
    fields = dataclasses.replace(fields, class_names=metadata_names)
  stats = compute_stats(source, fields, max_examples=max_examples, dataset=dataset, split=split)
  os.makedirs(out_dir, exist_ok=True)
  if plots:
    stats.summary["plots"] = [os.path.basename(p)
                              for p in write_plots(stats, source, out_dir,
                                                   num_samples=num_samples)]
  with open(os.path.join(out_dir, STATS_FILE), "w", encoding="utf-8") as f:
    json.dump(stats.summary, f, indent=1)
  print(format_table(stats.summary))
  print(f"Wrote {STATS_FILE}" + (" and plots" if plots else "") + f" to {out_dir}")
  return stats.summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.dataset or not f.out_dir:
    raise app.UsageError("--dataset and --out_dir are required.")
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  core.hide_accelerators_from_tensorflow()
  if f.max_examples is not None and f.max_examples < 1:
    raise app.UsageError(f"--max_examples={f.max_examples}: at least 1 (leave it out for all).")
  run(f.dataset, f.split, f.data_dir, f.out_dir, max_examples=f.max_examples,
      num_samples=f.num_samples)


if __name__ == "__main__":
  # Defined here, not at import, so that this module can be imported next to the other tools.
  flags.DEFINE_string("dataset", None, "TFDS name[/config], e.g. imagenet_ab/1k.")
  flags.DEFINE_string("split", "train", "Split to examine.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory.")
  flags.DEFINE_string("out_dir", None, "Where stats.json and the PNGs go.")
  flags.DEFINE_integer("max_examples", None, "Examine this many evenly spaced records only.")
  flags.DEFINE_integer("num_samples", 16, "Images in samples.png.")
  app.run(main)
