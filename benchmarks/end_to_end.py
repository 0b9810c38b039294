"""The input stall: train-loop images/s with the real Grain pipeline vs synthetic batches.

    python -m benchmarks.end_to_end --config configs/demo.py --data_dir data/tfds --rounds 3

Runs the trainer's loop body (batch -> `sharding.to_global` -> jitted train step, no host sync
until the end, as train.py between logging steps) for `--steps` steps after `--warmup` steps,
once pulling batches from `input_pipeline.make_train_dataset` over the config's dataset (its
Grain workers already running and warm) and once re-feeding one batch that is already on the
device. The two alternate for `--rounds` rounds; stall = 1 - real / synthetic, per round, and
the median. The config's own input settings (workers, threads, prefetch) are used.
"""

import argparse
import importlib.util
import statistics
import time

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax

from benchmarks import timing
from benchmarks import train_step as train_step_bench
from luab_jax import input_pipeline
from luab_jax import sharding as sharding_lib
from luab_jax.datasets import core as datasets


def load_config(text: str):
  """"configs/demo.py:lam=0" -> that file's get_config("lam=0"), as --config does."""
  path, _, arg = text.partition(":")
  spec = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/demo.py",
                      help="config file, optionally with ':ARGS'")
  parser.add_argument("--data_dir", default=None, help="overrides config.data_dir")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags (their defaults).

  config = load_config(args.config)
  if args.data_dir:
    config.data_dir = args.data_dir
  datasets.hide_accelerators_from_tensorflow()
  timing.emit({"kind": "header", "bench": "end_to_end", **timing.machine("jax", "grain"),
               "config": args.config, "batch_size": config.batch_size,
               "input": config.input.to_dict()}, args.out)
  step, state, batch_sharding = train_step_bench.make_step(config, jax.devices())
  source = datasets.get_source(config.dataset, config.train_split, config.data_dir)
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

  loop(args.warmup, real=True)  # Compiles, starts and fills the Grain workers.
  loop(args.warmup, real=False)
  stalls = []
  for r in range(args.rounds):
    rates = {}
    for real in ((True, False) if r % 2 == 0 else (False, True)):
      start = time.perf_counter()
      loop(args.steps, real)
      rates["real" if real else "synthetic"] = (args.steps * config.batch_size
                                                / (time.perf_counter() - start))
    stalls.append(1 - rates["real"] / rates["synthetic"])
    timing.emit({"kind": "round", "round": r, "images_per_s": rates, "stall": stalls[-1]},
                args.out)
  timing.emit({"kind": "summary", "bench": "end_to_end", "median_stall": statistics.median(stalls),
               "rounds": args.rounds, "steps": args.steps}, args.out)


if __name__ == "__main__":
  main()
