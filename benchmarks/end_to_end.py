"""The input stall: train-loop images/s with the real Grain pipeline vs synthetic batches.

    python -m benchmarks.end_to_end --config configs/demo.py --data_dir data/tfds --rounds 3

The config is given as to the trainer (`--config FILE[:ARGS]`, then `--config.KEY=VALUE`
overrides), e.g. ViT-B/16 in bfloat16 on the benchmark JPEGs of `benchmarks.input_pipeline`:

    python -m benchmarks.end_to_end --config configs/vit_b16_imagenet_ab.py:batch_size=256 \
        --config.dataset=imagenet_ab/fixture --config.train_split=train \
        --config.num_classes=3 --data_dir /tmp/luab_input_bench/tfds

Runs the trainer's loop body (batch -> `sharding.to_global` -> jitted train step, no host sync
until the end, as train.py between logging steps) for `--steps` steps after `--warmup` steps,
once pulling batches from `input_pipeline.make_train_dataset` over the config's dataset (its
Grain workers already running and warm) and once re-feeding one batch that is already on the
device. The two alternate for `--rounds` rounds; stall = 1 - real / synthetic, per round, and
the median. The config's own input settings (workers, threads, prefetch) are used.
"""

import statistics
import time

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from benchmarks import timing
from benchmarks import train_step as train_step_bench
from luab_jax import input_pipeline
from luab_jax import sharding as sharding_lib
from luab_jax.datasets import core as datasets
from luab_jax.pp import transforms


_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py",
                                          "Config file, optionally with ':ARGS'.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Overrides config.data_dir.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per loop.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps before the rounds.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating real/synthetic rounds.")
_OUT = flags.DEFINE_string("out", None, "Also append the JSON lines here.")


def main(argv):
  del argv
  config = _CONFIG.value
  if _DATA_DIR.value:
    config.data_dir = _DATA_DIR.value
  datasets.hide_accelerators_from_tensorflow()
  timing.emit({"kind": "header", "bench": "end_to_end", **timing.machine("jax", "grain"),
               "config": config_flags.get_config_filename(flags.FLAGS["config"]),
               "batch_size": config.batch_size, "input": config.input.to_dict()}, _OUT.value)
  step, state, batch_sharding = train_step_bench.make_step(config, jax.devices())
  source = datasets.get_source(config.dataset, config.train_split, config.data_dir,
                               features=transforms.TrainTransform.RECORD_KEYS)
  stream = iter(input_pipeline.make_train_dataset(
      source, config.input, per_process_batch_size=config.batch_size, seed=config.seed,
      num_points=config.model.get("num_points", 1)))
  fixed = sharding_lib.to_global(next(stream), batch_sharding)
  box = [state]

  def loop(n, real):
    metrics = None
    for _ in range(n):
      batch = sharding_lib.to_global(next(stream), batch_sharding) if real else fixed
      box[0], metrics = step(box[0], batch)
    jax.block_until_ready(metrics)

  loop(_WARMUP.value, real=True)  # Compiles, starts and fills the Grain workers.
  loop(_WARMUP.value, real=False)
  def images_per_s(kind):
    start = time.perf_counter()
    loop(_STEPS.value, real=kind == "real")
    return _STEPS.value * config.batch_size / (time.perf_counter() - start)

  stalls = []

  def on_round(r, rates):
    stalls.append(1 - rates["real"] / rates["synthetic"])
    timing.emit({"kind": "round", "round": r, "images_per_s": rates, "stall": stalls[-1]},
                _OUT.value)

  timing.alternating(images_per_s, ("real", "synthetic"), rounds=_ROUNDS.value,
                     on_round=on_round)
  timing.emit({"kind": "summary", "bench": "end_to_end", "median_stall": statistics.median(stalls),
               "rounds": _ROUNDS.value, "steps": _STEPS.value}, _OUT.value)


if __name__ == "__main__":
  app.run(main)
