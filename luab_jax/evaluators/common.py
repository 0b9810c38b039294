"""Shared evaluation machinery: one jitted statistics function, padded streaming over a split.

Statistics are summed on the devices batch by batch (correct predictions, losses, point errors,
per-group counts), so nothing per-example is ever kept on the host: memory does not grow with
the size of the evaluation set, and every process only moves a few scalars.
"""

import dataclasses
import importlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from luab_jax import losses
from luab_jax import input_pipeline
from luab_jax import sharding as sharding_lib


@dataclasses.dataclass(frozen=True)
class ModelFns:
  """What evaluators call: jitted functions of (params, batch), compiled on first use.

  `stats` sums single-label statistics on the devices; `predict` returns the (replicated)
  float32 logits and points of a batch for metrics that need every score, such as mAP.
  """
  stats: Callable
  predict: Callable
  num_points: int


def make_model_fns(apply_fn, mesh, param_shardings, *, num_points: int) -> ModelFns:
  return ModelFns(stats=make_stats_fn(apply_fn, mesh, param_shardings),
                  predict=make_predict_fn(apply_fn, mesh, param_shardings),
                  num_points=num_points)


def make_predict_fn(apply_fn, mesh, param_shardings):
  """Jitted (params, batch) -> {"logits", "points", "batch"}, replicated on every device.

  `batch` echoes the batch's fields other than the image (labels, targets, `_mask`), so that
  every process can read the whole global batch on the host, on one host or many.
  """

  def predict(params, batch):
    out = apply_fn(params, batch["image"])
    return {"logits": out["logits"].astype(jnp.float32),
            "points": out["points"].astype(jnp.float32),
            "batch": {key: value for key, value in batch.items() if key != "image"}}

  return jax.jit(predict, in_shardings=(param_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def make_stats_fn(apply_fn, mesh, param_shardings):
  """Jitted (params, batch) -> sums over the batch's real (`_mask`) examples.

  Groups are (class, background matches class) pairs for datasets that carry `bg_label`.
  """

  def stats(params, batch):
    out = apply_fn(params, batch["image"])
    logits = out["logits"].astype(jnp.float32)
    num_classes = logits.shape[-1]
    mask = batch["_mask"].astype(jnp.float32)
    label = batch["label"]
    correct = (jnp.argmax(logits, -1) == label).astype(jnp.float32) * mask
    xent = losses.softmax_xent(logits, label) * mask
    point_weight = batch["point_weight"] * mask[:, None]
    point_abs_err = jnp.abs(out["points"] - batch["points"]).mean(-1) * point_weight
    result = {
        "count": mask.sum(),
        "correct": correct.sum(),
        "loss": xent.sum(),
        "point_count": point_weight.sum(),
        "point_abs_err": point_abs_err.sum(),
    }
    if "bg_label" in batch:
      group = label * 2 + (batch["bg_label"] == label).astype(label.dtype)
      result["group_count"] = jnp.zeros(2 * num_classes).at[group].add(mask)
      result["group_correct"] = jnp.zeros(2 * num_classes).at[group].add(correct)
    return result

  return jax.jit(stats, in_shardings=(param_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def global_batches(fns: ModelFns, mesh, source, input_config, *, batch_size: int, keep_keys=()):
  """Yields every example of `source` once, as padded global batches on `mesh`."""
  per_process = sharding_lib.check_batch_size(batch_size, mesh, key="evaluation batch_size")
  dataset, num_batches = input_pipeline.make_eval_dataset(
      source, input_config, per_process_batch_size=per_process, keep_keys=keep_keys,
      num_points=fns.num_points)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  iterator = iter(dataset)
  for _ in range(num_batches):
    yield sharding_lib.to_global(next(iterator), batch_sharding)


def summed_stats(fns: ModelFns, params, mesh, source, input_config, *, batch_size: int,
                 keep_keys=()) -> dict[str, np.ndarray]:
  """Runs `fns.stats` over every example of `source` once; returns the summed statistics."""
  totals = None
  for batch in global_batches(fns, mesh, source, input_config, batch_size=batch_size,
                              keep_keys=keep_keys):
    stats = fns.stats(params, batch)
    totals = stats if totals is None else jax.tree.map(jnp.add, totals, stats)
  return jax.tree.map(np.asarray, jax.device_get(totals))


def classification_metrics(totals) -> dict[str, float]:
  count = max(float(totals["count"]), 1.0)
  metrics = {
      "accuracy": float(totals["correct"]) / count,
      "loss": float(totals["loss"]) / count,
      "num_examples": float(totals["count"]),
  }
  if float(totals["point_count"]) > 0:
    metrics["point_l1"] = float(totals["point_abs_err"]) / float(totals["point_count"])
  return metrics


def from_config(evals_config, *, fns: ModelFns, mesh, data_dir, input_config):
  """{name: Evaluator} from `config.evals`; evaluator modules are found by their `type`."""
  evaluators = {}
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind is None:
      raise ValueError(f"config.evals.{name} has no `type`.")
    cfg.pop("every_steps", None)  # Scheduling belongs to the trainer.
    try:
      module = importlib.import_module(f"luab_jax.evaluators.{kind}")
    except ModuleNotFoundError as e:
      raise ValueError(f"config.evals.{name}.type={kind!r} is not an evaluator module of "
                       "luab_jax.evaluators.") from e
    try:
      evaluators[name] = module.Evaluator(fns, mesh=mesh, data_dir=data_dir,
                                          input_config=input_config, **cfg)
    except TypeError as e:
      raise ValueError(f"config.evals.{name}: {e}") from e
  return evaluators

