"""The README's main job: LUAB vs a baseline on the embedded benchmark, end to end on a CPU.

  python -m luab_jax.demo --workdir workdirs/demo

Prepares `luab_shapes/cpu64` (once), trains a baseline (lambda = 0) and a LUAB model
(lambda = 4) with configs/demo.py, each evaluated at its last step by the background-challenge
and localization evaluators, then prints the comparison and writes it to `{workdir}/comparison.md` and `comparison.json`.
A finished model is not trained again; an interrupted one resumes from its checkpoint.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from luab_jax import config_schema
from luab_jax import run_config
from luab_jax import workdir as workdir_lib
from luab_jax.datasets import core as datasets

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "Where both runs and the table go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data directory.")
_DATASET = flags.DEFINE_string("dataset", "luab_shapes/cpu64", "Benchmark dataset config.")
_CONFIG_ARGS = flags.DEFINE_string("config_args", "", "Extra configs/demo.py arguments, "
                                   "e.g. 'steps=200'.")
_LUAB_LAMBDA = flags.DEFINE_float("lam", 4.0, "Point-regression weight of the LUAB model.")

_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                       "demo.py")

_ROWS = (
    ("original", "bgc/original/accuracy"),
    ("mixed_same", "bgc/mixed_same/accuracy"),
    ("mixed_rand", "bgc/mixed_rand/accuracy"),
    ("mixed_next", "bgc/mixed_next/accuracy"),
    ("only_fg", "bgc/only_fg/accuracy"),
    ("no_fg", "bgc/no_fg/accuracy"),
    ("only_bg", "bgc/only_bg/accuracy"),
    ("BG-gap (same - rand), lower is better", "bgc/bg_gap"),
    ("worst-group accuracy", "bgc/worst_group_accuracy"),
    ("point L1 error on original (crop units)", "bgc/original/point_l1"),
)


def _config_args(lam: float) -> str:
  args = f"lam={lam},dataset='{_DATASET.value}',data_dir='{_DATA_DIR.value}'"
  return args + ("," + _CONFIG_ARGS.value if _CONFIG_ARGS.value else "")


def _config(lam: float):
  """The config the trainer will build from `_config_args(lam)`; a bad argument fails here,
  before anything is prepared or trained."""
  spec = importlib.util.spec_from_file_location("demo_config", _CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(_config_args(lam))


def _read_results(run_dir: str) -> dict:
  results = workdir_lib.read_final_eval(run_dir)
  if results is None:
    raise FileNotFoundError(f"The trainer wrote no {workdir_lib.FINAL_EVAL} in {run_dir}.")
  return results


def _train(name: str, lam: float, workdir: str) -> tuple[dict, float]:
  run_dir = os.path.join(workdir, name)
  result_file = os.path.join(run_dir, workdir_lib.FINAL_EVAL)
  config_file = os.path.join(run_dir, "config.json")
  if os.path.exists(result_file) and os.path.exists(config_file):
    # Reused only if trained with this very config: an incompatible one (another lambda) is
    # refused here naming the keys; after compatible changes (more steps) the trainer resumes.
    changes = config_schema.check_resume_compatible(
        run_config.load_json(config_file).to_dict(), _config(lam), path=config_file)
    if not changes:
      print(f"[demo] {name}: already trained with this config, reusing {result_file}",
            flush=True)
      return _read_results(run_dir), 0.0
    print(f"[demo] {name}: trained with another config ({'; '.join(changes)}); resuming",
          flush=True)
  command = [sys.executable, "-m", "luab_jax.train", f"--config={_CONFIG}:{_config_args(lam)}",
             f"--workdir={run_dir}"]
  print(f"[demo] {name}: {' '.join(command)}", flush=True)
  started = time.time()
  subprocess.run(command, check=True)
  return _read_results(run_dir), time.time() - started


def comparison_table(baseline: dict, luab: dict, lam: float) -> str:
  lines = [f"| metric | baseline (lambda=0) | LUAB (lambda={lam:g}) | LUAB - baseline |",
           "|---|---:|---:|---:|"]
  for label, key in _ROWS:
    if key in baseline and key in luab:
      b, l = baseline[key], luab[key]
      lines.append(f"| {label} | {b:.4f} | {l:.4f} | {l - b:+.4f} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  started = time.time()
  workdir = _WORKDIR.value
  # Bad --config_args fail now, not after the dataset is prepared. The datasets are the
  # configs' (`runlocal` trains on luab_shapes/tiny whatever --dataset says).
  configs = [_config(lam) for lam in (0.0, _LUAB_LAMBDA.value)]
  needed = sorted({config.dataset for config in configs}
                  | {entry.dataset for config in configs for entry in config.evals.values()})
  os.makedirs(workdir, exist_ok=True)
  datasets.hide_accelerators_from_tensorflow()

  print(f"[demo] 1/3 preparing {', '.join(needed)} in {_DATA_DIR.value}", flush=True)
  prepared_at = time.time()
  for name in needed:
    datasets.prepare(name, _DATA_DIR.value)
  print(f"[demo] dataset ready ({time.time() - prepared_at:.0f}s)", flush=True)

  print("[demo] 2/3 training the baseline (lambda = 0)", flush=True)
  baseline, baseline_secs = _train("baseline", 0.0, workdir)
  print(f"[demo] 3/3 training LUAB (lambda = {_LUAB_LAMBDA.value:g})", flush=True)
  luab, luab_secs = _train("luab", _LUAB_LAMBDA.value, workdir)

  table = comparison_table(baseline, luab, _LUAB_LAMBDA.value)
  wall = time.time() - started
  summary = (f"{table}\n\nSteps: baseline {baseline['step']}, LUAB {luab['step']}. "
             f"Training + evaluation: baseline {baseline_secs:.0f}s, LUAB {luab_secs:.0f}s; "
             f"demo wall time {wall:.0f}s.\n")
  with open(os.path.join(workdir, "comparison.md"), "w", encoding="utf-8") as f:
    f.write(summary)
  with open(os.path.join(workdir, "comparison.json"), "w", encoding="utf-8") as f:
    json.dump({"baseline": baseline, "luab": luab, "wall_seconds": wall}, f, indent=2)
  print("\n" + summary, flush=True)
  print(f"[demo] written to {os.path.join(workdir, 'comparison.md')}", flush=True)


if __name__ == "__main__":
  app.run(main)
