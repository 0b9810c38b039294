"""Random-access data sources: TFDS datasets prepared as ArrayRecord, read through Grain.

Every dataset of the project, the embedded benchmark and ImageNet-AB alike, is read the same way:
`tfds.data_source(name, split, data_dir, builder_kwargs={"file_format": "array_record"})`.
Builders that live in this package are imported (and so registered with TFDS) by name here.
"""

import importlib
import os

import tensorflow_datasets as tfds

# TFDS dataset name -> module of this package that registers its builder.
_LOCAL_BUILDERS = {
    "luab_shapes": "luab_jax.datasets.luab_shapes",
}

FILE_FORMAT = "array_record"


def _register(name: str) -> None:
  module = _LOCAL_BUILDERS.get(name.split("/")[0].split(":")[0])
  if module:
    importlib.import_module(module)


def builder(name: str, data_dir: str | None):
  _register(name)
  return tfds.builder(name, data_dir=data_dir, file_format=FILE_FORMAT)


def prepare(name: str, data_dir: str | None):
  """Generates (or finds) the ArrayRecord files of `name`; returns the builder."""
  b = builder(name, data_dir)
  b.download_and_prepare(file_format=FILE_FORMAT)
  return b


def get_source(name: str, split: str, data_dir: str | None):
  """The random-access source of one split; a clear error if it was never prepared.

  Image features come back as their encoded bytes (`image_ops.decode_rgb` decodes them).
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
  # Images stay encoded in the source and are decoded by PIL inside the Grain workers: TFDS
  # would otherwise decode every image with TensorFlow in the reading thread.
  decoders = {key: tfds.decode.SkipDecoding() for key, feature in b.info.features.items()
              if isinstance(feature, tfds.features.Image)}
  return b.as_data_source(split=split, decoders=decoders or None)


def hide_accelerators_from_tensorflow() -> None:
  """TensorFlow is only used by TFDS and the summary writer: keep it off GPUs and TPUs.

  Otherwise a GPU build of TensorFlow grabs accelerator memory that JAX needs.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU")
