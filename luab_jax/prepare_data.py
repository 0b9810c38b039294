"""Prepares a dataset as ArrayRecord in a TFDS data directory (once; later runs find it).

  python -m luab_jax.prepare_data --dataset luab_shapes/cpu64 --data_dir data/tfds
"""

import time

from absl import app
from absl import flags
from absl import logging

from luab_jax.datasets import core as datasets

_DATASET = flags.DEFINE_string("dataset", "luab_shapes/cpu64", "TFDS name[/config].")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")


def main(argv):
  del argv
  datasets.hide_accelerators_from_tensorflow()
  started = time.time()
  builder = datasets.prepare(_DATASET.value, _DATA_DIR.value)
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  logging.info("%s is ready in %s (%.1fs): %s", _DATASET.value, builder.data_dir,
               time.time() - started, splits)
  print(f"{_DATASET.value}: {splits} in {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
