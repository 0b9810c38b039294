"""Trains a classifier with LUAB: classification + lambda * masked point regression.

  python -m luab_jax.train --config configs/demo.py --workdir workdirs/demo_luab
  python -m luab_jax.train --config configs/demo.py:lam=0 --workdir workdirs/demo_base \
      --config.total_steps=100

One trainer, in sections: setup, mesh, data, model and optimizer, checkpoint, train step,
evaluators, loop. A work directory that holds checkpoints is resumed from its latest one: model,
optimizer and the exact position of the data iterator.
"""

import json
import math
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import optax
from clu import periodic_actions

from luab_jax import checkpointing
from luab_jax import distributed
from luab_jax import durations
from luab_jax import input_pipeline
from luab_jax import losses
from luab_jax import metric_logs
from luab_jax import optim
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common as evaluators



def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks that need no devices and no data; fails before anything is compiled."""
  if config.loss.point_lambda < 0:
    raise ValueError(f"config.loss.point_lambda={config.loss.point_lambda} must be >= 0.")
  if config.loss.point_loss not in losses.POINT_LOSSES:
    raise ValueError(f"config.loss.point_loss={config.loss.point_loss!r}; use one of "
                     f"{losses.POINT_LOSSES}.")
  if config.loss.point_normalize not in losses.POINT_NORMALIZATIONS:
    raise ValueError(f"config.loss.point_normalize={config.loss.point_normalize!r}; use one of "
                     f"{losses.POINT_NORMALIZATIONS}.")
  if config.loss.classification not in ("softmax", "sigmoid"):
    raise ValueError(f"config.loss.classification={config.loss.classification!r}; use "
                     "'softmax' or 'sigmoid'.")
  if config.batch_size <= 0:
    raise ValueError(f"config.batch_size={config.batch_size} must be positive.")
  if config.data_dir and not os.path.isdir(os.path.expanduser(config.data_dir)):
    raise FileNotFoundError(f"config.data_dir={config.data_dir!r} does not exist.")


def _classification_loss(config, logits, batch):
  """Per-example loss; multi-label batches carry `labels` (multi-hot), others `label`."""
  if config.loss.classification == "softmax":
    if "label" not in batch:
      raise ValueError("config.loss.classification='softmax' needs single-label data, but the "
                       "batches carry multi-hot `labels`: use 'sigmoid'.")
    return losses.softmax_xent(logits, batch["label"], label_smoothing=config.loss.label_smoothing)
  multi_hot = batch["labels"] if "labels" in batch else jax.nn.one_hot(batch["label"],
                                                                       logits.shape[-1])
  return losses.sigmoid_xent(logits, multi_hot)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: int | None = None, devices=None) -> dict:
  """Runs (or resumes) training; returns the last evaluation metrics.

  `stop_at_step` ends the run early after saving a checkpoint there, as a preemption would;
  running again resumes. Tests use it to check that a resumed run matches an uninterrupted one.
  `devices` restricts the mesh to these devices (default: all devices of the job).
  """
  # ------------------------------------------------------------------ Setup.
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  writer = metric_logs.create_writer(workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))

  # ------------------------------------------------------------------ Mesh.
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  per_process_batch = sharding_lib.check_batch_size(config.batch_size, mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  logging.info("Mesh %s over %d devices (%d processes), per-process batch %d.",
               dict(mesh.shape), mesh.size, jax.process_count(), per_process_batch)

  # ------------------------------------------------------------------ Data.
  train_source = datasets.get_source(config.dataset, config.train_split, config.data_dir)
  num_train = len(train_source)
  total_steps = durations.steps("total", config, num_examples=num_train,
                                batch_size=config.batch_size)
  if not total_steps:
    raise ValueError("Set config.total_steps or config.total_epochs.")
  warmup_steps = durations.steps("warmup", config, num_examples=num_train,
                                 batch_size=config.batch_size, total_steps=total_steps, default=0)
  log_steps = durations.steps("log_training", config, num_examples=num_train,
                              batch_size=config.batch_size, total_steps=total_steps, default=50)
  ckpt_steps = durations.steps("ckpt", config, num_examples=num_train,
                               batch_size=config.batch_size, total_steps=total_steps,
                               default=total_steps)
  train_data = input_pipeline.make_train_dataset(
      train_source, config.input, per_process_batch_size=per_process_batch, seed=config.seed,
      num_points=config.model.get("num_points", 1))
  train_iter = iter(train_data)

  # ------------------------------------------------------------------ Model and optimizer.
  spec = train_state_lib.model_spec(config, mesh)
  tx, schedule = optim.make_optimizer(config.optax, total_steps, warmup_steps)
  abstract_state = train_state_lib.abstract_train_state(spec, tx)
  state_shardings = train_state_lib.train_state_shardings(abstract_state, config, mesh)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  logging.info("Model %s %s: %.2fM parameters.", config.model_name, config.model.get("variant"),
               num_params / 1e6)

  # ------------------------------------------------------------------ Checkpoint.
  manager = checkpointing.create_manager(workdir, keep=config.keep_ckpts)
  latest = manager.latest_step()
  if latest is not None:
    logging.info("Resuming from the checkpoint of step %d in %s.", latest,
                 checkpointing.checkpoint_dir(workdir))
    state = checkpointing.restore(
        manager, latest, checkpointing.abstract_like(abstract_state, state_shardings),
        train_iter)
  else:
    state = train_state_lib.init_train_state(spec, tx, config.seed, state_shardings)
  first_step = int(jax.device_get(state["step"]))

  # ------------------------------------------------------------------ Train step.
  lam = float(config.loss.point_lambda)

  def train_step(state, batch):
    def loss_fn(params):
      out = spec.apply(params, batch["image"])
      cls_loss = _classification_loss(config, out["logits"], batch).mean()
      point_loss = losses.masked_point_loss(
          out["points"], batch["points"], batch["point_weight"],
          kind=config.loss.point_loss, normalize=config.loss.point_normalize)
      aux = {"classification_loss": cls_loss, "point_loss": point_loss}
      if "label" in batch:
        aux["accuracy"] = (jnp.argmax(out["logits"], -1) == batch["label"]).mean()
      else:  # Multi-label: is the top-scored class one of the (crop's) positives?
        top = jnp.argmax(out["logits"], -1)
        aux["precision_at_1"] = jnp.take_along_axis(batch["labels"], top[:, None], -1).mean()
      return cls_loss + lam * point_loss, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state["step"]),
               "points_per_image": batch["point_weight"].sum(-1).mean()}
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

  train_step = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, sharding_lib.replicated(mesh)),
                       donate_argnums=(0,))

  # ------------------------------------------------------------------ Evaluators.
  fns = evaluators.make_model_fns(spec.apply, mesh, state_shardings["params"],
                                  num_points=config.model.get("num_points", 1),
                                  num_classes=config.num_classes)
  evals = evaluators.from_config(config.evals, fns=fns, mesh=mesh,
                                 data_dir=config.data_dir, input_config=config.input)
  eval_every = {name: cfg.get("every_steps") for name, cfg in config.evals.items()}

  def run_evals(step, names):
    results = {}
    for name in names:
      started = time.time()
      metrics = evals[name].run(state["params"])
      results.update({f"{name}/{key}": value for key, value in metrics.items()})
      logging.info("Evaluator %s at step %d took %.1fs.", name, step, time.time() - started)
    if results:
      writer.write_scalars(step, results)
      writer.flush()
    return results

  # ------------------------------------------------------------------ Loop.
  logging.info("Training steps %d..%d (warmup %d, log every %d, checkpoint every %d).",
               first_step + 1, total_steps, warmup_steps, log_steps, ckpt_steps)
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_secs=None, every_steps=log_steps)
  pending, last_log_time, last_log_step = [], time.time(), first_step
  last_results = {}
  step = first_step
  while step < total_steps:
    step += 1
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = sharding_lib.to_global(next(train_iter), batch_sharding)
      state, metrics = train_step(state, batch)
    pending.append(metrics)
    progress(step)

    if step % log_steps == 0 or step == total_steps:
      # Averaged over the steps since the last log; fetching forces a sync, hence only here.
      means = jax.tree.map(lambda *xs: float(sum(xs)) / len(xs), *jax.device_get(pending))
      now = time.time()
      images_per_sec = (step - last_log_step) * config.batch_size / max(now - last_log_time, 1e-9)
      means["images_per_sec"] = images_per_sec
      means["images_per_sec_per_device"] = images_per_sec / mesh.size
      writer.write_scalars(step, means)
      if not all(math.isfinite(v) for v in means.values()):
        raise FloatingPointError(f"Non-finite training metrics between steps {last_log_step + 1} "
                                 f"and {step}: {means}")
      pending, last_log_time, last_log_step = [], now, step

    if step % ckpt_steps == 0 or step == total_steps or step == stop_at_step:
      checkpointing.save(manager, step, state, train_iter, force=True)

    due = [name for name, every in eval_every.items()
           if (every and step % every == 0) or step == total_steps]
    if due:
      last_results.update(run_evals(step, due))
    if step == stop_at_step:
      logging.info("Stopping at step %d as asked; run again to resume.", step)
      break

  manager.wait_until_finished()
  manager.close()
  train_iter.close()  # Stops the prefetch worker processes and frees their shared memory.
  writer.flush()
  if last_results and jax.process_index() == 0:
    with open(os.path.join(workdir, "final_eval.json"), "w", encoding="utf-8") as f:
      json.dump({"step": step, **last_results}, f, indent=2)
  return last_results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if flags.FLAGS.workdir is None:
    raise app.UsageError("--workdir is required.")
  distributed.initialize()  # Multi-host jobs: from LUAB_* variables, see distributed.py.
  datasets.hide_accelerators_from_tensorflow()
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Flags are defined here, not at import, so that tools and tests can import several
  # entry points (train, evaluate) into one process.
  config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Work directory (checkpoints, logs, results).")
  app.run(main)
