"""Prepares a dataset as ArrayRecord in a TFDS data directory (once; later runs find it).

  python -m luab_jax.prepare_data --dataset luab_shapes/cpu64 --data_dir data/tfds
  python -m luab_jax.prepare_data --dataset imagenet_ab/1k --data_dir data/tfds \
      --manual_dir /path/to/downloads --num_processes 16
"""

import time

from absl import app
from absl import flags
from absl import logging

from luab_jax.datasets import core as datasets

_DATASET = flags.DEFINE_string("dataset", "luab_shapes/cpu64", "TFDS name[/config].")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Files downloaded by hand (ImageNet, ImageNet-AB); default "
    "<data_dir>/downloads/manual.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 1, "Processes preparing work units in parallel (builders made of work "
    "units, e.g. imagenet_ab); 1 runs TFDS's sequential download_and_prepare.")


def main(argv):
  del argv
  datasets.hide_accelerators_from_tensorflow()
  started = time.time()
  builder = datasets.prepare(_DATASET.value, _DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                             num_processes=_NUM_PROCESSES.value)
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  logging.info("%s is ready in %s (%.1fs): %s", _DATASET.value, builder.data_dir,
               time.time() - started, splits)
  print(f"{_DATASET.value}: {splits} in {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
