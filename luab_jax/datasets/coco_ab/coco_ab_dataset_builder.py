"""TFDS builder "coco_ab": COCO 2014 with the COCO-AB annotation byproducts, as ArrayRecord.

  python -m luab_jax.prepare_data --dataset coco_ab/2014 --manual_dir M --data_dir D \
      --num_processes 16
  import luab_jax.datasets.coco_ab  # registers the builder
  b = tfds.builder("coco_ab/2014", data_dir=D, file_format="array_record")
  src = b.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})

Configs: `2014` (default; IMAGES_PER_UNIT-image work units) and `fixture` (the same data rules,
4-image units so that the 13-image test fixture has several; its manual directory is
tests/fixtures/coco_ab).

Manual directory M (nothing is downloaded; see MANUAL_DOWNLOAD_INSTRUCTIONS):
  train2014/ or train2014.zip        COCO 2014 train images (the zip as released: members
  val2014/   or val2014.zip          `train2014/<file_name>`, or at the zip's top level)
  annotations/instances_train2014.json   (or at the top level of M)
  annotations/instances_val2014.json     (or at the top level of M)
  coco_ab_v1_0.json or instances_train2014_metadata.json   (the COCO-AB JSON; top level of M or
                                                            annotations/)
A folder wins over a zip of the same split. Missing files are all listed in one error.

Splits
------
- "train": every image of instances_train2014.json (also those without annotations, as the
  official loader), joined with COCO-AB on image_id.
- "validation": every image of instances_val2014.json; no byproducts.
Records are in image id order (shuffling disabled), by either way of preparing:
`download_and_prepare` (one process) or `preparation.prepare_sharded(builder, N)`.
Work unit: a chunk of `images_per_unit` images (config), carrying the parsed annotations and byproducts of
its images (`coco_records.Entry`), so the big JSONs are parsed once, in the process that lists
the units (which holds the parsed COCO-AB JSON, a few GB, while it does), and a unit needs
nothing but its image files.

Features (record keys; coordinates (x, y) normalised to [0, 1], x right, y down)
----------------------------------------------------------------------------------
  image              JPEG bytes (TFDS stores them unchanged: the original file when it is a
                     3-channel JPEG that decodes completely); decode with PIL, e.g.
                     `as_data_source(..., decoders={"image": tfds.decode.SkipDecoding()})`
  image_id           int64, COCO image id (also the example key)
  file_name          text, e.g. COCO_train2014_000000000009.jpg
  labels             bool [80], multi-hot over all instances annotations (iscrowd included)
  points             float32 [80, 2], the official click of each class (x, y); -1 where none
                     (COCO-AB stores {x, y}; the official loader's array is (y, x) in pixels)
  has_points         bool [80]; True only for ground-truth classes (see coco_records)
  boxes              float32 [M, 4], COCO boxes as (x_min, y_min, x_max, y_max) over the
                     instances file's width / height; all annotations, crowds included
  box_labels         int64 [M], class index 0..79 of each box
  time_spent_ms      float32, the record's timeSpent (or timeSpend); -1 without a record
  num_actions        int32, len(actionHistories) (add, move, remove); 0 without a record
  mouse_trace_length int32, len(mouseTracking); 0 without a record
Class k is `coco_records.CLASS_NAMES[k]` (COCO category `coco_records.CATEGORY_IDS[k]`), also in
`builder.info.metadata["class_names"]`.

Bad records: repair rules (kept, noted as repaired) and skip rules (left out, noted as skipped)
-------------------------------------------------------------------------------------------------
Every rule is counted in `builder.prepare_report` under its reason, with example names (file
name, image id or record index): once per image and reason for the repairs of a written image
(repairs of an image that is then skipped are not counted), once per record for skips.
Images:
- missing_image_file (skip): the instances file names an image that is not in the folder / zip.
- unreadable_image_file (skip): it is there but reading it fails (I/O error, bad zip CRC). A zip
  that cannot be opened at all stops preparation with an error naming it.
- undecodable_image (skip): PIL cannot decode the whole file (truncated, corrupt): the pipeline
  decodes with PIL too, and would fail on it in training.
- "image: FORMAT MODE re-encoded as RGB JPEG q95" (repair): anything but a 3-channel JPEG (CMYK,
  grayscale, PNG bytes named .jpg, ...) is converted to RGB by PIL and re-encoded
  (`luab_jax.datasets.stored_images`, shared with ImageNet-AB).
- image_size_differs_from_instances (repair): the decoded size is not the instances file's
  width / height; boxes stay normalised by the instances size (the size they were drawn on).
Instances files (a file that is not an instances file, or whose categories are not COCO's 80,
raises an error naming it):
- malformed_image_entry, duplicate_image_entry (skip; the later duplicate wins),
  malformed_annotation, annotation_of_unknown_image, annotation_of_unknown_category (skip).
- invalid_box_dropped (repair): bbox missing, not 4 finite numbers, width or height <= 0, or
  entirely outside the image: the box is dropped, the label kept.
- box_clipped_to_image (repair): a box reaching outside the image is clipped to it.
COCO-AB records (train):
- malformed_byproduct_record (skip): not an object, or no integer image_id.
- byproduct_record_image_not_in_instances (skip).
- duplicate_byproduct_record (skip): several records for one image_id: the later one in the file
  wins, as in the official loader's dict.
- no_byproduct_record (repair): an instances image without a record is kept with its labels,
  no points, time_spent_ms -1.
- original_size_zero / original_size_differs_from_instances (repair): originalImageWidth or
  Height is 0 (or absent) / differs from the COCO size. Points are normalised to the displayed
  image, so they are kept as they are; the COCO image size is the size used everywhere.
- malformed_action_histories (repair): actionHistories is not a list: no actions.
- time_spent_missing (repair): timeSpent absent, not a finite number, or negative: -1.
- mouse_tracking_missing (repair): mouseTracking is not a list: length 0.
Actions (a dropped `add` is treated as absent, so an earlier valid `add` of the same class
stands):
- malformed_action, unknown_action_type (repair: dropped).
- add_unknown_icon_name (not one of the 91 COCO names), add_icon_of_unused_category (a name of
  an id without a class, e.g. "street sign") (repair: dropped).
- add_without_point (pointTo null or absent), add_point_not_a_number (x or y null, a string,
  NaN or infinite) (repair: dropped).
- add_point_outside_image (repair: dropped): x or y outside [-0.02, 1.02]
  (`coco_records.POINT_TOLERANCE`); add_point_clipped_to_image (repair): within that margin but
  outside [0, 1], clipped to [0, 1] (the tool measures drops on its 2 px border just outside).
- click_on_class_not_in_ground_truth (repair): a clicked class that the image's annotations do
  not have: no point and no label, as in the official loader (which only reads the points of
  ground-truth classes).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Iterator, Sequence
import zipfile

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from luab_jax.datasets import preparation
from luab_jax.datasets import stored_images
from luab_jax.datasets.coco_ab import coco_records

IMAGES_PER_UNIT = 1000
TRAIN, VALIDATION = "train", "validation"
_COCO_SPLIT = {TRAIN: "train2014", VALIDATION: "val2014"}
BYPRODUCT_FILE_NAMES = ("coco_ab_v1_0.json", "instances_train2014_metadata.json")


@dataclasses.dataclass(eq=False)
class CocoAbConfig(tfds.core.BuilderConfig):
  """A config only sets how many images make a work unit (one ArrayRecord shard if sharded)."""
  images_per_unit: int = IMAGES_PER_UNIT

  def __post_init__(self):
    if self.images_per_unit < 1:
      raise ValueError(f"Config {self.name!r}: images_per_unit must be >= 1.")


@dataclasses.dataclass(frozen=True)
class SplitFiles:
  """Where one split's files are: an image folder or zip, its instances file, COCO-AB's JSON."""
  images: str
  instances: str
  byproducts: str | None  # Train only.


@dataclasses.dataclass(frozen=True, repr=False)
class WorkUnit:
  """A chunk of images of one split, with everything but the pixels (picklable)."""
  images: str                                 # Image folder or zip.
  entries: tuple[coco_records.Entry, ...]
  notes: tuple[coco_records.Note, ...] = ()   # Notes about records of no entry (e.g. skipped).

  def __repr__(self) -> str:
    # Short: errors name the unit, and a unit holds a thousand images' annotations.
    ids = [e.image.image_id for e in self.entries]
    span = f"image ids {ids[0]}..{ids[-1]}" if ids else "no images"
    return f"WorkUnit({self.images}: {len(ids)} images, {span})"


# ----------------------------------------------------------------------------------------------
# Files of the manual directory.
# ----------------------------------------------------------------------------------------------


def _candidates(manual_dir: str, split: str) -> dict[str, list[str]]:
  coco = _COCO_SPLIT[split]
  where = {
      "images": [os.path.join(manual_dir, coco), os.path.join(manual_dir, f"{coco}.zip")],
      "instances": [os.path.join(manual_dir, "annotations", f"instances_{coco}.json"),
                    os.path.join(manual_dir, f"instances_{coco}.json")],
  }
  if split == TRAIN:
    where["byproducts"] = [os.path.join(manual_dir, folder, name)
                           for folder in ("", "annotations") for name in BYPRODUCT_FILE_NAMES]
  return where


def _present(path: str) -> bool:
  # Archives and JSONs are files; the image folders are directories.
  return os.path.isfile(path) if path.endswith((".zip", ".json")) else os.path.isdir(path)


def find_files(manual_dir: str, splits: Sequence[str] = (TRAIN, VALIDATION)
               ) -> dict[str, SplitFiles]:
  """The files of `splits` in `manual_dir`; FileNotFoundError listing everything missing."""
  found, missing = {}, []
  for split in splits:
    paths = {}
    for what, candidates in _candidates(manual_dir, split).items():
      present = [p for p in candidates if _present(p)]
      if present:
        paths[what] = present[0]
      else:
        missing.append(f"  {split} {what}: one of {', '.join(candidates)}")
    if len(paths) == len(_candidates(manual_dir, split)):
      found[split] = SplitFiles(images=paths["images"], instances=paths["instances"],
                                byproducts=paths.get("byproducts"))
  if missing:
    raise FileNotFoundError(
        f"coco_ab: files missing from the manual directory {manual_dir}:\n" + "\n".join(missing)
        + "\nSee the builder's MANUAL_DOWNLOAD_INSTRUCTIONS.")
  return found


def _load_json(path: str):
  logging.info("coco_ab: parsing %s", path)
  with open(path, "rb") as f:
    try:
      return json.load(f)
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8.
      raise ValueError(f"{path} is not valid JSON: {e}") from e


class _ZipImages:
  """Reads images from a COCO zip; one open archive per process (a forked child reopens it,
  since processes must not share the file offset of an inherited handle)."""
  _open: dict[tuple[str, int], tuple[zipfile.ZipFile, str]] = {}

  @classmethod
  def read(cls, path: str, file_name: str) -> bytes | None:
    key = (path, os.getpid())
    if key not in cls._open:
      try:
        archive = zipfile.ZipFile(path)
      except zipfile.BadZipFile as e:
        # The whole split is unreadable: stop, rather than skip every image.
        raise ValueError(f"{path} is not a readable zip archive: {e}") from e
      # The released zips hold `train2014/<file>`; a re-zipped folder may not.
      folder = os.path.splitext(os.path.basename(path))[0] + "/"
      prefix = folder if any(n.startswith(folder) for n in archive.namelist()) else ""
      cls._open[key] = (archive, prefix)
    archive, prefix = cls._open[key]
    try:
      return archive.read(prefix + file_name)
    except KeyError:
      return None


def read_image(images: str, file_name: str) -> bytes | None:
  """The bytes of `file_name` from an image folder or zip; None when it is not there.

  Raises OSError or zipfile.BadZipFile (e.g. a bad CRC) when it is there but cannot be read.
  """
  if images.endswith(".zip"):
    return _ZipImages.read(images, file_name)
  try:
    with open(os.path.join(images, file_name), "rb") as f:
      return f.read()
  except FileNotFoundError:
    return None


def _tell(report: preparation.PrepareReport, split: str, note: coco_records.Note) -> None:
  if note.kind == coco_records.SKIP:
    report.skip(split, note.reason, note.name)
  else:
    report.repair(split, note.reason, note.name)


# ----------------------------------------------------------------------------------------------
# The builder.
# ----------------------------------------------------------------------------------------------


class CocoAb(preparation.UnitBuilder):
  """COCO 2014 multi-label classification with COCO-AB's per-class clicks (train)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      CocoAbConfig(name="2014", description="COCO 2014 train + COCO-AB, and COCO 2014 val.",
                   images_per_unit=IMAGES_PER_UNIT),
      CocoAbConfig(name="fixture", description="The test fixture (tests/fixtures/coco_ab).",
                   images_per_unit=4),
  ]
  DEFAULT_CONFIG_NAME = "2014"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put in the manual directory:
  - the COCO 2014 images: train2014.zip and val2014.zip from https://cocodataset.org (or their
    extracted train2014/ and val2014/ folders);
  - annotations/instances_train2014.json and annotations/instances_val2014.json (unzip
    annotations_trainval2014.zip there; the files may also sit at the top level);
  - the COCO-AB JSON, coco_ab_v1_0.json (https://huggingface.co/datasets/coallaoh/COCO-AB; the
    official notebook calls it instances_train2014_metadata.json; either name, at the top level
    or in annotations/).
"""

  def _info(self) -> tfds.core.DatasetInfo:
    n = coco_records.NUM_CLASSES
    return self.dataset_info_from_configs(
        description=("COCO 2014 train (with the COCO-AB annotation byproducts: one click per "
                     "clicked class) and val (no byproducts); 80-way multi-hot labels."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "image_id": tfds.features.Scalar(dtype=np.int64),
            "file_name": tfds.features.Text(),
            "labels": tfds.features.Tensor(shape=(n,), dtype=np.bool_),
            "points": tfds.features.Tensor(shape=(n, 2), dtype=np.float32),
            "has_points": tfds.features.Tensor(shape=(n,), dtype=np.bool_),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "box_labels": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "time_spent_ms": tfds.features.Scalar(dtype=np.float32),
            "num_actions": tfds.features.Scalar(dtype=np.int32),
            "mouse_trace_length": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=("image", "labels"),
        # Records in image id order, the same whether prepared by TFDS or by prepare_sharded.
        disable_shuffling=True,
        homepage="https://github.com/naver-ai/NeglectedFreeLunch",
        metadata=tfds.core.MetadataDict(class_names=list(coco_records.CLASS_NAMES),
                                        category_ids=list(coco_records.CATEGORY_IDS)),
    )

  def _split_names(self) -> Sequence[str]:
    return (TRAIN, VALIDATION)

  def _split_generators(self, dl_manager):
    generators = super()._split_generators(dl_manager)
    # Check every split's files before reading any: one error lists all that is missing.
    find_files(self.manual_dir, self._split_names())
    return generators

  def _files(self, split: str) -> SplitFiles:
    return find_files(self.manual_dir, (split,))[split]

  def _work_units(self, split: str) -> Sequence[WorkUnit]:
    # Cached: the JSONs are parsed once per builder, however often the units are listed.
    if not hasattr(self, "_units_by_split"):
      self._units_by_split = {}
    cache = self._units_by_split
    if split not in cache:
      cache[split] = self._make_units(split)
    return cache[split]

  def _make_units(self, split: str) -> list[WorkUnit]:
    files = self._files(split)
    images, notes = coco_records.parse_instances(_load_json(files.instances), files.instances)
    if split == TRAIN:
      byproducts, image_notes, left_out = coco_records.join_records(
          _load_json(files.byproducts), images, files.byproducts)
      notes.extend(left_out)
      split_entries = coco_records.entries(images, byproducts, image_notes)
    else:
      split_entries = coco_records.entries(images)
    # Notes about no written image travel with the first unit, so they are counted once.
    size = self.builder_config.images_per_unit
    chunks = [tuple(split_entries[i:i + size])
              for i in range(0, len(split_entries), size)] or [()]
    return [WorkUnit(images=files.images, entries=chunk, notes=tuple(notes) if i == 0 else ())
            for i, chunk in enumerate(chunks)]

  def _unit_examples(self, split: str, unit: WorkUnit,
                     report: preparation.PrepareReport) -> Iterator[tuple[int, dict]]:
    for note in unit.notes:
      _tell(report, split, note)
    for entry in unit.entries:
      example = self._example(split, unit.images, entry, report)
      if example is not None:
        yield entry.image.image_id, example

  def _example(self, split: str, images: str, entry: coco_records.Entry,
               report: preparation.PrepareReport) -> dict | None:
    image = entry.image
    try:
      data = read_image(images, image.file_name)
    except (OSError, zipfile.BadZipFile) as e:
      logging.warning("coco_ab: skipping %s in %s: cannot read it: %s", image.file_name,
                      images, e)
      report.skip(split, "unreadable_image_file", image.file_name)
      return None
    if data is None:
      report.skip(split, "missing_image_file", image.file_name)
      return None
    try:
      stored = stored_images.storable_jpeg(data)
    except stored_images.UndecodableImageError as e:
      logging.warning("coco_ab: skipping %s in %s: cannot decode it: %s", image.file_name,
                      images, e)
      report.skip(split, "undecodable_image", image.file_name)
      return None
    targets, notes = coco_records.example_targets(entry)
    if stored.repair:
      report.repair(split, stored.repair, image.file_name)
    if (stored.width, stored.height) != (image.width, image.height):
      report.repair(split, "image_size_differs_from_instances", image.file_name)
    # Once per image and reason (an image may have several bad actions or boxes of one kind).
    for note in dict.fromkeys((*entry.notes, *notes)):
      _tell(report, split, note)
    return {"image": stored.data, "image_id": image.image_id, "file_name": image.file_name,
            **targets}


# The name TFDS also accepts for the builder class of a `*_dataset_builder.py` module.
Builder = CocoAb
