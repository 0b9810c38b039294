"""Random-access data sources: TFDS datasets prepared as ArrayRecord, read through Grain.

Every dataset of the project, the embedded benchmark and ImageNet-AB alike, is read the same way:
`tfds.data_source(name, split, data_dir, builder_kwargs={"file_format": "array_record"})`.
Builders that live in this package are imported (and so registered with TFDS) by name here.
"""

import dataclasses
import functools
import importlib
import importlib.util
import os
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
# TFDS's own copy of the tf.train.Example proto (no TensorFlow needed), as its parser uses.
from tensorflow_datasets.proto import tf_example_pb2

from luab_jax.datasets import preparation

# TFDS dataset name -> module of this package that registers its builder.
_LOCAL_BUILDERS = {
    "luab_shapes": "luab_jax.datasets.luab_shapes",
    "coco_ab": "luab_jax.datasets.coco_ab",
    "imagenet_ab": "luab_jax.datasets.imagenet_ab",
}

FILE_FORMAT = "array_record"


def _register(name: str) -> None:
  module = _LOCAL_BUILDERS.get(name.split("/")[0].split(":")[0])
  if module:
    importlib.import_module(module)


def _camel(snake: str) -> str:
  return "".join(part.capitalize() for part in snake.split("_"))


def builder(name: str, data_dir: str | None):
  _register(name)
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir  # TFDS takes "~" literally.
  try:
    return tfds.builder(name, data_dir=data_dir, file_format=FILE_FORMAT)
  except tfds.core.registered.DatasetNotFoundError as e:
    base = name.split("/")[0].split(":")[0]
    if base in _LOCAL_BUILDERS:
      raise ValueError(f"Dataset {base!r}: importing {_LOCAL_BUILDERS[base]} (its entry in "
                       f"_LOCAL_BUILDERS) registered no TFDS builder of that name. TFDS names a "
                       f"builder after its class in snake case (class {_camel(base)} -> {base}; a class "
                       "named Builder after its folder) unless the class sets `name`; the module (its __init__.py for a "
                       "package) must import the builder's class.") from e
    # TFDS's message lists every dataset it knows (hundreds of lines): name the culprit first.
    raise ValueError(f"Unknown dataset {name!r}: neither one of this package's "
                     f"({', '.join(sorted(_LOCAL_BUILDERS))}) nor one TFDS knows (for those, "
                     f"see `tfds.list_builders()`).") from e


def prepare(name: str, data_dir: str | None, *, manual_dir: str | None = None,
            num_processes: int = 1):
  """Generates (or finds) the ArrayRecord files of `name`; returns the builder.

  `manual_dir` holds the files a user downloads by hand (default: TFDS's
  `<data_dir>/downloads/manual`). With `num_processes` > 1 a builder made of work units
  (`preparation.UnitBuilder`) is prepared by that many processes; any other builder only
  prepares sequentially. For unit builders the report of repaired and skipped records is
  written next to the data (`prepare_report.json`) and printed.
  """
  if num_processes < 1:
    raise ValueError(f"num_processes={num_processes} must be at least 1.")
  b = builder(name, data_dir)
  units = isinstance(b, preparation.UnitBuilder)
  if num_processes > 1 and not units:
    raise ValueError(f"Dataset {name!r} is only prepared sequentially (num_processes=1).")
  if units:
    b.set_manual_dir(manual_dir or os.path.join(os.fspath(b.data_dir_root), "downloads", "manual"))
  if b.is_prepared() and manual_dir:
    logging.warning("%s is already prepared in %s: --manual_dir %s is not read (delete that "
                    "directory to prepare it again).", name, b.data_dir, manual_dir)
  _warn_about_interrupted_preparations(b)
  if units and b.is_prepared():
    report = preparation.read_report(b.data_dir)
    if report is None:
      logging.warning("%s has no %s (prepared by an older version, or its preparation was "
                      "killed after the data was in place): the repaired and skipped records "
                      "are not known.", b.data_dir, preparation.REPORT_FILE)
  elif num_processes > 1:
    report = preparation.prepare_sharded(b, num_processes)
  else:
    b.download_and_prepare(
        file_format=FILE_FORMAT,
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    report = b.prepare_report if units else None
    if report is not None:
      report.write(b.data_dir)
  if report is not None:
    print(f"{name} preparation report ({os.path.join(b.data_dir, preparation.REPORT_FILE)}):\n"
          f"{report.summary()}")
  return b


def _warn_about_interrupted_preparations(b) -> None:
  """TFDS prepares into `incomplete.*` next to the final directory and renames it when done; a
  killed preparation leaves it behind (a sharded one with up to the whole dataset in it), and
  TFDS never removes it. Named here with its size, not deleted: another preparation of the same
  dataset may be writing it."""
  parent = os.path.dirname(os.fspath(b.data_dir))
  if not os.path.isdir(parent):
    return
  for entry in sorted(os.listdir(parent)):
    path = os.path.join(parent, entry)
    if entry.startswith("incomplete.") and os.path.isdir(path):
      size = sum(os.path.getsize(os.path.join(root, name))
                 for root, _, names in os.walk(path) for name in names)
      logging.warning("%s (%.1f MB) was left by an interrupted preparation; delete it unless "
                      "a preparation is running now.", path, size / 2 ** 20)


@dataclasses.dataclass(frozen=True)
class _FlatField:
  """How to read one feature of a TFDS-serialized tf.train.Example (`FeatureSubsetSource`)."""
  key: str
  np_dtype: Any
  shape: tuple[int, ...] | None  # None: a scalar; -1 for the one unknown dimension.
  decoder: Any  # The feature itself, or the decoder the source was given for it.


def _flat_field(key: str, feature, decoder) -> _FlatField | None:
  """The `_FlatField` of a feature stored as one tf.train.Feature; None for any other."""
  info = feature.get_serialized_info()
  if not isinstance(info, tfds.features.TensorInfo) or info.sequence_rank:
    return None
  if sum(dim is None for dim in info.shape) > 1:  # Ragged: row lengths in other keys.
    return None
  if decoder is None:
    decoder = feature
  else:
    decoder.setup(feature=feature)
  shape = tuple(-1 if dim is None else dim for dim in info.shape) or None
  return _FlatField(key, info.np_dtype, shape, decoder)


@dataclasses.dataclass(frozen=True)
class FeatureSubsetSource:
  """A TFDS data source whose records come back with only `features` (a Grain source).

  Records are still read whole, but only `features` are converted: an ImageNet-AB record has
  14 features and training reads 5. Where each of them is stored as one tf.train.Feature
  (tensors, class labels, text, images kept encoded: every dataset of this project), they are
  read straight from the parsed proto with the value conversion of TFDS's numpy parser
  (`example_parser._feature_to_numpy`) and each feature's (or its decoder's)
  `decode_example_np`, so a record equals what TFDS gives, types included
  (tests/test_feature_subset.py). TFDS's own parser also walks every key of the record and
  packs nested dicts: on one core, parsing one ImageNet-AB record for training takes 16 us this
  way against 47 us through TFDS's parser restricted to the 5 features; the record read adds
  ~30 us (read + parse of all 14 features through TFDS: 0.17 ms; BENCHMARKS.md, Input
  pipeline). Other features (sequences, ragged or zlib-encoded tensors, nested dicts) go
  through TFDS's parser restricted to `features`.
  """
  source: Any  # A TFDS data source (`as_data_source`).
  features: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.source)

  @functools.cached_property
  def _fields(self) -> tuple[_FlatField, ...] | None:
    all_features = self.source.dataset_info.features
    decoders = self.source.decoders or {}
    fields = tuple(_flat_field(key, all_features[key], decoders.get(key))
                   for key in self.features)
    return None if any(field is None for field in fields) else fields

  @functools.cached_property
  def _parser(self):
    # TFDS's own FeaturesDict and decoders, restricted to `features`.
    all_features = self.source.dataset_info.features
    subset = tfds.features.FeaturesDict({key: all_features[key] for key in self.features})
    decoders = {key: decoder for key, decoder in (self.source.decoders or {}).items()
                if key in self.features}
    return functools.partial(subset.deserialize_example_np, decoders=decoders or None)

  def _record(self, index: int) -> str:
    """"Record 12 of imagenet_ab/fixture/1.0.0", for error messages."""
    return f"Record {index} of {self.source.dataset_info.full_name}"

  def _read_fields(self, serialized: bytes, index: int) -> dict:
    stored = tf_example_pb2.Example.FromString(serialized).features.feature
    record = {}
    for field in self._fields:
      if field.key not in stored:
        raise KeyError(f"{self._record(index)} has no feature {field.key!r}; it has "
                       f"{sorted(stored)}.")
      feature = stored[field.key]
      kind = feature.WhichOneof("kind")
      if kind is None:
        raise ValueError(f"{self._record(index)}: feature {field.key!r} holds no value list.")
      # A list first: numpy iterates protobuf's repeated fields 2-3x slower than a list.
      values = list(getattr(feature, kind).value)
      if field.shape is not None:
        value = np.array(values, dtype=field.np_dtype).reshape(field.shape)
      elif len(values) != 1:
        raise ValueError(f"{self._record(index)}: feature {field.key!r} is a scalar but holds "
                         f"{len(values)} values.")
      elif field.np_dtype == np.object_:  # Bytes: the object itself, as .item() would give.
        value = values[0]
      else:
        value = np.array(values, dtype=field.np_dtype).item()
      record[field.key] = field.decoder.decode_example_np(value)
    return record

  def __getitem__(self, index: int):
    serialized = self.source.data_source[index]
    if self._fields is None:
      return self._parser(serialized)
    return self._read_fields(serialized, index)


def get_source(name: str, split: str, data_dir: str | None, *,
               features: tuple[str, ...] | None = None):
  """The random-access source of one split; a clear error if it was never prepared.

  Image features come back as their encoded bytes (`image_ops.decode_rgb` decodes them).
  `features`: the record keys the consumer can use (e.g. `TrainTransform.RECORD_KEYS`); the
  dataset's other features are not decoded, and names the dataset does not have are left out
  (the consumer decides which it needs, and names the record when one is missing). None: all.
  """
  b = builder(name, data_dir)
  if not b.is_prepared():
    raise FileNotFoundError(
        f"Dataset {name!r} is not prepared in data_dir={data_dir or '~/tensorflow_datasets'!r} "
        f"(looked for {os.fspath(b.data_path)}). Prepare it with: python -m "
        f"luab_jax.prepare_data --dataset {name} --data_dir {data_dir or '~/tensorflow_datasets'}")
  if split.split("[")[0] not in b.info.splits:
    raise ValueError(f"Dataset {name!r} has no split {split!r}; it has "
                     f"{sorted(b.info.splits.keys())}.")
  if b.info.splits[split].num_examples == 0:  # array_record's own error names nothing.
    raise ValueError(f"Split {split!r} of dataset {name!r} selects no examples.")
  # Images stay encoded in the source and are decoded inside the Grain workers (pp/image_ops.py:
  # libjpeg-turbo, PIL): TFDS would otherwise decode every image with TensorFlow in the reading
  # thread.
  decoders = {key: tfds.decode.SkipDecoding() for key, feature in b.info.features.items()
              if isinstance(feature, tfds.features.Image)}
  indices = _slice_of_ordered_split(b, split)
  if indices is None:
    source = b.as_data_source(split=split, decoders=decoders or None)
  else:
    source = RecordSubset(b.as_data_source(split=split.split("[")[0],
                                           decoders=decoders or None), indices)
  if features is None:
    return source
  return FeatureSubsetSource(source, tuple(key for key in features if key in b.info.features))


# Seed of the fixed permutation that slices of record-ordered splits are taken over.
SLICE_PERMUTATION_SEED = 0


def _slice_of_ordered_split(b, split: str) -> np.ndarray | None:
  """The record indices a slice ("train[99%:]", "train[:1000]") selects when the builder
  stores records in generation order (`disable_shuffling`: ImageNet-AB and COCO-AB in class
  and file order, luab_shapes by index); None for a whole split or a shuffled builder.

  TFDS slices such a split as one contiguous block of records, so ImageNet-AB's
  train[99%:] was its last ~10 classes (never trained on by train[:99%]). Here the slice is
  taken over a fixed pseudo-random permutation of the split's records (sorted back into record
  order for reading), so complementary slices stay complementary and each samples every class.
  """
  base = split.split("[")[0]
  if base == split or not b.info.disable_shuffling:
    return None
  if "+" in split:
    raise ValueError(f"Split {split!r} of {b.info.full_name}: unions of slices are not "
                     "supported for this record-ordered dataset; use one slice.")
  (instruction,) = tfds.core.ReadInstruction.from_spec(split).to_absolute(b.info.splits)
  count = b.info.splits[base].num_examples
  order = np.random.default_rng(SLICE_PERMUTATION_SEED).permutation(count)
  return np.sort(order[instruction.from_:instruction.to])


@dataclasses.dataclass(frozen=True)
class _Indexed:
  """Items `indices` of a random-access sequence, in that order."""
  items: Any
  indices: np.ndarray

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.items[int(self.indices[index])]


class RecordSubset(_Indexed):
  """Records `indices` of a TFDS data source, as a data source of its own (`get_source`'s
  slices of record-ordered splits); `data_source` is the view of the raw records, as TFDS's."""

  @property
  def dataset_info(self):
    return self.items.dataset_info

  @property
  def decoders(self):
    return self.items.decoders

  @property
  def data_source(self):
    return _Indexed(self.items.data_source, self.indices)


def num_classes(name: str, data_dir: str | None) -> int | None:
  """The classes of a prepared dataset's labels: its ClassLabel `label`'s, or the width of its
  multi-hot `labels`; None if it has neither."""
  features = builder(name, data_dir).info.features
  if "label" in features and isinstance(features["label"], tfds.features.ClassLabel):
    return features["label"].num_classes
  if "labels" in features:
    return features["labels"].shape[-1]
  return None


def hide_accelerators_from_tensorflow() -> None:
  """TensorFlow is only used by TFDS and the summary writer: keep it off GPUs and TPUs.

  Otherwise a GPU build of TensorFlow grabs accelerator memory that JAX needs. Without
  TensorFlow installed (reading prepared ArrayRecord data needs only TFDS) there is nothing to
  hide.
  """
  if importlib.util.find_spec("tensorflow") is None:
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU")
