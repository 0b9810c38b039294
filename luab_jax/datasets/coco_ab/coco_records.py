"""COCO 2014 instances and COCO-AB records: parsing, joining on image id, and the official target.

Pure Python + numpy (no TFDS, no images): the builder turns the parsed JSONs into `Entry`s (one
per image, everything but the pixels) in the main process, and `example_targets` turns an entry
into the stored features. Every record that is repaired or left out comes back as a `Note`
(kind, reason, name) for the preparation report; the rules are listed in the builder's docstring.

Classes
-------
COCO-AB's `iconType` names are the 91-name COCO list (`COCO_91_NAMES[i]` is category id i + 1,
unused ids such as 12 "street sign" included). The 80 training classes are the used category ids
in increasing order, mapped to 0..79 (`CATEGORY_IDS[k]` is the category id of class k), exactly as
the official loader's `cat2cat` does over the instances file's categories.

Official target (NeglectedFreeLunch `coco_dataloader.ipynb`)
--------------------------------------------------------------
- Labels: 80-way multi-hot over ALL instances annotations of the image (`iscrowd` included: the
  official loader calls `getAnnIds(imgIds=...)`, which does not filter crowds).
- Points: the records' `actionHistories` in file order; only `add` actions count, a later `add`
  of a class overwrites the earlier one, `move` and `remove` are ignored (even though in the
  annotation tool a move changes where the icon ends up).
- The official loader only reads points for classes in the ground truth: a class clicked but not
  in the ground truth gets no label and no point (here: `has_points` False, counted).
- Points are stored as (x, y) normalised to [0, 1] over the whole image, x right, y down (the
  project's single convention). COCO-AB stores `pointTo` as {x, y} normalised by the displayed
  image size; the official loader converts to integer pixels `int(y * originalImageHeight)`,
  `int(x * originalImageWidth)` and keeps them in (y, x) order. We keep the normalised floats:
  the crop maths happens in the input pipeline.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np

# COCO's 91 category names; index i is category id i + 1 (the list the COCO-AB tool and the
# official loader use for `iconType`).
COCO_91_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat",
    "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window",
    "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush")
# Ids with a name but no annotation in COCO 2014 (and no icon in the COCO-AB tool).
UNUSED_CATEGORY_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91})
CATEGORY_IDS = tuple(i for i in range(1, len(COCO_91_NAMES) + 1) if i not in UNUSED_CATEGORY_IDS)
CLASS_NAMES = tuple(COCO_91_NAMES[i - 1] for i in CATEGORY_IDS)
NUM_CLASSES = len(CATEGORY_IDS)  # 80
CLASS_OF_CATEGORY = {category_id: k for k, category_id in enumerate(CATEGORY_IDS)}
_CATEGORY_OF_ICON = {name: i + 1 for i, name in enumerate(COCO_91_NAMES)}

# The tool normalises by the displayed size without its 2 px border, so drops on the border land
# a little outside [0, 1]: within this margin a point is clipped, beyond it the add is dropped.
POINT_TOLERANCE = 0.02
# Boxes are clipped to the image silently only up to float rounding.
_BOX_EPSILON = 1e-6

SKIP = "skip"
REPAIR = "repair"


@dataclasses.dataclass(frozen=True)
class Note:
  """One repaired or skipped record: `kind` is SKIP or REPAIR; `name` finds it (file, id)."""
  kind: str
  reason: str
  name: str


@dataclasses.dataclass(frozen=True)
class CocoImage:
  """One image of an instances file with its annotations (one category id and bbox each)."""
  image_id: int
  file_name: str
  width: int
  height: int
  category_ids: tuple[int, ...] = ()
  # COCO (x, y, width, height) in pixels, or None where the annotation has no usable bbox.
  bboxes: tuple[tuple[float, float, float, float] | None, ...] = ()


@dataclasses.dataclass(frozen=True)
class Byproducts:
  """The official target and summary byproducts of one COCO-AB record."""
  points: tuple[tuple[int, float, float], ...]  # (class index, x, y) of each clicked class.
  time_spent_ms: float                          # -1 when the record has none.
  num_actions: int
  mouse_trace_length: int


@dataclasses.dataclass(frozen=True)
class Entry:
  """Everything the builder needs to write one image's example, except the pixels.

  `notes` are the repairs made to this image's records; they are reported only if the example
  is written.
  """
  image: CocoImage
  byproducts: Byproducts | None
  notes: tuple[Note, ...] = ()


def _as_int(value: Any) -> int | None:
  # bool is an int subclass: `true` is not an id.
  return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_finite(value: Any) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value) if math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------
# Instances files.
# ----------------------------------------------------------------------------------------------


def check_categories(categories: Any, path: str) -> None:
  """Raises ValueError (naming `path`) unless the file has exactly COCO's 80 categories.

  The label space, and the mapping of COCO-AB icon names to it, depend on them: a different
  file cannot be repaired record by record.
  """
  if not isinstance(categories, list):
    raise ValueError(f"{path}: 'categories' is not a list.")
  found = {}
  for category in categories:
    if not isinstance(category, dict) or _as_int(category.get("id")) is None:
      raise ValueError(f"{path}: malformed category {category!r}.")
    found[category["id"]] = category.get("name")
  expected = {i: COCO_91_NAMES[i - 1] for i in CATEGORY_IDS}
  if found != expected:
    wrong = sorted(set(found.items()) ^ set(expected.items()), key=str)[:6]
    raise ValueError(f"{path}: categories differ from COCO 2014's 80 (id, name) pairs, e.g. "
                     f"{wrong}; this builder only reads the official instances files.")


def _parse_image(entry: Any) -> CocoImage | None:
  if not isinstance(entry, dict):
    return None
  image_id, width, height = (_as_int(entry.get(k)) for k in ("id", "width", "height"))
  file_name = entry.get("file_name")
  if image_id is None or not width or not height or width < 0 or height < 0:
    return None
  if not isinstance(file_name, str) or not file_name:
    return None
  return CocoImage(image_id=image_id, file_name=file_name, width=width, height=height)


def _parse_bbox(bbox: Any) -> tuple[float, float, float, float] | None:
  if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
    return None
  values = tuple(_as_finite(v) for v in bbox)
  return None if None in values else values


def parse_instances(data: Any, path: str) -> tuple[dict[int, CocoImage], list[Note]]:
  """The images of a COCO instances file (by image id) with their annotations, and the notes.

  Raises ValueError (naming `path`) when the file is not an instances file at all.
  """
  if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations",
                                                               "categories")):
    raise ValueError(f"{path}: not a COCO instances file (needs 'images', 'annotations' and "
                     "'categories').")
  for key in ("images", "annotations"):
    if not isinstance(data[key], list):
      raise ValueError(f"{path}: '{key}' is a {type(data[key]).__name__}, not a list.")
  check_categories(data["categories"], path)
  notes = []
  images = {}
  for i, raw in enumerate(data["images"]):
    image = _parse_image(raw)
    if image is None:
      notes.append(Note(SKIP, "malformed_image_entry", f"{os.path.basename(path)} images[{i}]"))
      continue
    if image.image_id in images:
      # Later wins, as in pycocotools' index (a dict by id).
      notes.append(Note(SKIP, "duplicate_image_entry", f"image_id {image.image_id}"))
    images[image.image_id] = image

  category_ids = {image_id: [] for image_id in images}
  bboxes = {image_id: [] for image_id in images}
  for i, ann in enumerate(data["annotations"]):
    if not isinstance(ann, dict):
      notes.append(Note(SKIP, "malformed_annotation",
                        f"{os.path.basename(path)} annotations[{i}]"))
      continue
    name = f"annotation id {ann.get('id')} (image_id {ann.get('image_id')})"
    image_id, category_id = _as_int(ann.get("image_id")), _as_int(ann.get("category_id"))
    if image_id not in images:
      notes.append(Note(SKIP, "annotation_of_unknown_image", name))
      continue
    if category_id not in CLASS_OF_CATEGORY:
      notes.append(Note(SKIP, "annotation_of_unknown_category", name))
      continue
    category_ids[image_id].append(category_id)
    bboxes[image_id].append(_parse_bbox(ann.get("bbox")))
  images = {image_id: dataclasses.replace(image, category_ids=tuple(category_ids[image_id]),
                                          bboxes=tuple(bboxes[image_id]))
            for image_id, image in images.items()}
  return images, notes


# ----------------------------------------------------------------------------------------------
# COCO-AB records: the official point target.
# ----------------------------------------------------------------------------------------------


def icon_class(icon_type: Any) -> tuple[int | None, str | None]:
  """(class index 0..79, None), or (None, why the icon name cannot be used)."""
  category_id = _CATEGORY_OF_ICON.get(icon_type) if isinstance(icon_type, str) else None
  if category_id is None:
    return None, "add_unknown_icon_name"
  if category_id not in CLASS_OF_CATEGORY:
    return None, "add_icon_of_unused_category"
  return CLASS_OF_CATEGORY[category_id], None


def _add_point(point_to: Any) -> tuple[tuple[float, float] | None, str | None]:
  """((x, y), None) for a valid point; ((x, y), reason) when clipped; (None, reason) if unusable."""
  if not isinstance(point_to, dict):
    return None, "add_without_point"
  x, y = _as_finite(point_to.get("x")), _as_finite(point_to.get("y"))
  if x is None or y is None:
    return None, "add_point_not_a_number"
  lo, hi = -POINT_TOLERANCE, 1.0 + POINT_TOLERANCE
  if not (lo <= x <= hi and lo <= y <= hi):
    return None, "add_point_outside_image"
  if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
    return (x, y), None
  return (min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)), "add_point_clipped_to_image"


def official_points(actions: Sequence[Any],
                    name: str) -> tuple[dict[int, tuple[float, float]], list[Note]]:
  """The official click target of one record: {class index: (x, y)} from its `add` actions.

  An `add` that cannot be used (unknown icon, unused category, no point, not-a-number or far
  outside the image) is dropped as if it were not in the history, so an earlier valid `add` of
  the same class stands. Notes are per action.
  """
  points, notes = {}, []
  for action in actions:
    if not isinstance(action, dict):
      notes.append(Note(REPAIR, "malformed_action", name))
      continue
    action_type = action.get("actionType")
    if action_type in ("move", "remove"):
      continue  # Official: ignored.
    if action_type != "add":
      notes.append(Note(REPAIR, "unknown_action_type", name))
      continue
    k, reason = icon_class(action.get("iconType"))
    if k is None:
      notes.append(Note(REPAIR, reason, name))
      continue
    point, reason = _add_point(action.get("pointTo"))
    if reason:
      notes.append(Note(REPAIR, reason, name))
    if point is not None:
      points[k] = point  # A later add overwrites.
  return points, notes


def parse_record(record: dict, image: CocoImage) -> tuple[Byproducts, list[Note]]:
  """The byproducts of one COCO-AB record of `image` and the repairs they needed."""
  name = image.file_name
  notes = []
  width, height = (_as_int(record.get(k)) for k in ("originalImageWidth", "originalImageHeight"))
  if not width or not height:
    # Points are normalised to the displayed image, so no pixel size enters the stored target;
    # where one is needed (the pipeline's crops) it is the COCO image size.
    notes.append(Note(REPAIR, "original_size_zero", name))
  elif (width, height) != (image.width, image.height):
    notes.append(Note(REPAIR, "original_size_differs_from_instances", name))

  actions = record.get("actionHistories")
  if not isinstance(actions, list):
    notes.append(Note(REPAIR, "malformed_action_histories", name))
    actions = []
  points, action_notes = official_points(actions, name)
  notes.extend(action_notes)

  # The dataset card says `timeSpent`; the annotation tool's source writes `timeSpend`.
  time_spent = _as_finite(record.get("timeSpent", record.get("timeSpend")))
  if time_spent is None or time_spent < 0:
    notes.append(Note(REPAIR, "time_spent_missing", name))
    time_spent = -1.0
  trace = record.get("mouseTracking")
  if not isinstance(trace, list):
    notes.append(Note(REPAIR, "mouse_tracking_missing", name))
    trace = []
  byproducts = Byproducts(points=tuple((k, x, y) for k, (x, y) in sorted(points.items())),
                          time_spent_ms=time_spent, num_actions=len(actions),
                          mouse_trace_length=len(trace))
  return byproducts, notes


def join_records(records: Any, images: dict[int, CocoImage], path: str
                 ) -> tuple[dict[int, Byproducts], dict[int, list[Note]], list[Note]]:
  """Joins COCO-AB records to the instances' images on `image_id`.

  Returns the byproducts by image id, the notes about each joined image's record, and the notes
  about records that were left out. Duplicates: the later record of an image id wins, as in the
  official loader's dict.
  """
  if not isinstance(records, list):
    raise ValueError(f"{path}: not a COCO-AB file (expected a JSON list of records).")
  chosen: dict[int, tuple[int, dict]] = {}
  left_out = []
  for i, record in enumerate(records):
    image_id = _as_int(record.get("image_id")) if isinstance(record, dict) else None
    if image_id is None:
      left_out.append(Note(SKIP, "malformed_byproduct_record",
                           f"{os.path.basename(path)} record #{i}"))
      continue
    if image_id not in images:
      left_out.append(Note(SKIP, "byproduct_record_image_not_in_instances",
                           f"image_id {image_id} (record #{i})"))
      continue
    if image_id in chosen:
      left_out.append(Note(SKIP, "duplicate_byproduct_record",
                           f"{images[image_id].file_name} (record #{chosen[image_id][0]} "
                           f"replaced by #{i})"))
    chosen[image_id] = (i, record)

  byproducts, image_notes = {}, {}
  for image_id, (_, record) in chosen.items():
    byproducts[image_id], image_notes[image_id] = parse_record(record, images[image_id])
  return byproducts, image_notes, left_out


def entries(images: dict[int, CocoImage], byproducts: dict[int, Byproducts] | None = None,
            image_notes: dict[int, Iterable[Note]] | None = None) -> list[Entry]:
  """One entry per image, by increasing image id.

  With `byproducts` (the train split), an image without a record is kept with its labels and
  no points, and noted as `no_byproduct_record`; without (validation) nothing is noted.
  """
  result = []
  for image_id in sorted(images):
    image = images[image_id]
    notes = list((image_notes or {}).get(image_id, ()))
    found = None
    if byproducts is not None:
      found = byproducts.get(image_id)
      if found is None:
        notes.append(Note(REPAIR, "no_byproduct_record", image.file_name))
    result.append(Entry(image=image, byproducts=found, notes=tuple(notes)))
  return result


# ----------------------------------------------------------------------------------------------
# The stored features.
# ----------------------------------------------------------------------------------------------


def _normalised_box(bbox, width: int, height: int) -> tuple[np.ndarray | None, str | None]:
  """COCO (x, y, w, h) pixels -> (x_min, y_min, x_max, y_max) in [0, 1], and a repair reason."""
  if bbox is None:
    return None, "invalid_box_dropped"
  x, y, w, h = bbox
  if w <= 0 or h <= 0:
    return None, "invalid_box_dropped"
  box = np.array([x / width, y / height, (x + w) / width, (y + h) / height], np.float64)
  clipped = np.clip(box, 0.0, 1.0)
  if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
    return None, "invalid_box_dropped"  # Entirely outside the image.
  reason = "box_clipped_to_image" if np.abs(clipped - box).max() > _BOX_EPSILON else None
  return clipped.astype(np.float32), reason


def example_targets(entry: Entry) -> tuple[dict[str, np.ndarray], list[Note]]:
  """The stored label and byproduct features of one entry (all but image, image_id, file_name).

  labels bool [80]; points float32 [80, 2] (x, y), -1 where no point; has_points bool [80];
  boxes float32 [M, 4]; box_labels int64 [M]; time_spent_ms float32 (-1 without a record);
  num_actions int32 and mouse_trace_length int32 (0 without a record).
  """
  image, name = entry.image, entry.image.file_name
  notes = []
  labels = np.zeros((NUM_CLASSES,), bool)
  boxes, box_labels = [], []
  for category_id, bbox in zip(image.category_ids, image.bboxes):
    k = CLASS_OF_CATEGORY[category_id]
    labels[k] = True  # Every annotation, crowds included (official).
    box, reason = _normalised_box(bbox, image.width, image.height)
    if reason:
      notes.append(Note(REPAIR, reason, name))
    if box is not None:
      boxes.append(box)
      box_labels.append(k)

  points = np.full((NUM_CLASSES, 2), -1.0, np.float32)
  has_points = np.zeros((NUM_CLASSES,), bool)
  byproducts = entry.byproducts
  for k, x, y in (byproducts.points if byproducts else ()):
    if not labels[k]:
      # The official loader only looks up clicks of ground-truth classes.
      notes.append(Note(REPAIR, "click_on_class_not_in_ground_truth", name))
      continue
    points[k] = (x, y)
    has_points[k] = True

  features = {
      "labels": labels,
      "points": points,
      "has_points": has_points,
      "boxes": np.array(boxes, np.float32).reshape(-1, 4),
      "box_labels": np.array(box_labels, np.int64),
      "time_spent_ms": np.float32(byproducts.time_spent_ms if byproducts else -1.0),
      "num_actions": np.int32(byproducts.num_actions if byproducts else 0),
      "mouse_trace_length": np.int32(byproducts.mouse_trace_length if byproducts else 0),
  }
  return features, notes
