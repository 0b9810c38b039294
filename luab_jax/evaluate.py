"""Evaluates a checkpoint of a training work directory on the config's evaluators.

  python -m luab_jax.evaluate --config configs/demo.py --workdir workdirs/demo_luab [--step N]

Restores only the parameters, onto the mesh of *this* job (a checkpoint written by a sharded run
evaluates on one CPU), runs every entry of `config.evals`, prints the metrics and writes them to
`{workdir}/eval/step_{N}.json` and to `{workdir}/eval_metrics.jsonl`.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from luab_jax import checkpointing
from luab_jax import metric_logs
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common as evaluators



def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> dict:
  """Returns {"step": N, "<evaluator>/<metric>": value, ...} and writes it to the workdir."""
  mesh = sharding_lib.make_mesh(config.mesh)
  spec = train_state_lib.model_spec(config)
  shardings = train_state_lib.param_shardings(spec.abstract_params, config, mesh)
  params, step = checkpointing.restore_params(
      workdir, step, checkpointing.abstract_like(spec.abstract_params, shardings))
  logging.info("Restored the parameters of step %d from %s.", step, workdir)
  fns = evaluators.make_model_fns(spec.apply, mesh, shardings,
                                  num_points=config.model.get("num_points", 1))
  evals = evaluators.from_config(config.evals, fns=fns, mesh=mesh,
                                 data_dir=config.data_dir, input_config=config.input)
  results = {}
  for name, evaluator in evals.items():
    results.update({f"{name}/{k}": v for k, v in evaluator.run(params).items()})
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    with open(os.path.join(workdir, "eval", f"step_{step}.json"), "w", encoding="utf-8") as f:
      json.dump({"step": step, **results}, f, indent=2)
    writer = metric_logs.JsonlWriter(os.path.join(workdir, "eval_metrics.jsonl"))
    writer.write_scalars(step, results)
    writer.close()
  return {"step": step, **results}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if flags.FLAGS.workdir is None:
    raise app.UsageError("--workdir is required.")
  datasets.hide_accelerators_from_tensorflow()
  results = evaluate_checkpoint(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.step)
  width = max(len(k) for k in results)
  for key, value in results.items():
    shown = f"{value:.4f}" if isinstance(value, float) else value
    print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
  # Defined here, not at import, so that this module can be imported next to luab_jax.train.
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Training work directory with checkpoints.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  app.run(main)
