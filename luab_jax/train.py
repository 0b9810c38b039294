"""Trains a classifier with LUAB: classification + lambda * masked point regression.

  python -m luab_jax.train --config configs/demo.py --workdir workdirs/demo_luab
  python -m luab_jax.train --config configs/demo.py:lam=0 --workdir workdirs/demo_base \
      --config.total_steps=100

One trainer, in sections: setup, mesh, data, model and optimizer, checkpoint, train step,
evaluators, loop. A work directory that holds checkpoints is resumed from its latest complete
one: model, optimizer and the exact position of the data iterator (a damaged one is reported and
the previous one used; see checkpointing.py). SIGTERM / SIGINT save a checkpoint at the next
step boundary and exit with status 128 + signal (preemption.py). Non-finite losses or gradients
stop the run naming the step (`config.nan_policy = "stop"`, the default) or skip that step's
update (`"skip"`, counted as `nan_skipped_steps`); a checkpoint is written only after the steps
since the last check were found finite.

The train step itself (loss, gradient accumulation over `config.grad_accum_steps`
micro-batches, update, EMA of the weights with `config.ema_decay`) is in train_step.py. With an
EMA, the evaluators, the best checkpoint (`checkpoints_best/`) and `final_eval.json` use the
EMA parameters; `checkpoints/` holds both.
"""

import contextlib
import hashlib
import json
import math
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags
import numpy as np
from clu import periodic_actions

from luab_jax import checkpointing
from luab_jax import compilation_cache
from luab_jax import config_args
from luab_jax import config_schema
from luab_jax import distributed
from luab_jax import durations
from luab_jax import glibc_tunables
from luab_jax import input_pipeline
from luab_jax import losses
from luab_jax import metric_logs
from luab_jax import optim
from luab_jax import preemption
from luab_jax import run_config
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax import train_step as train_step_lib
from luab_jax import workdir as workdir_lib
from luab_jax import xla_flags
from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common as evaluators
from luab_jax.pp import image_ops
from luab_jax.pp import transforms

NAN_POLICIES = ("stop", "skip")
# Logged as sums over the logging interval (counts), not as means.
_SUMMED_METRICS = ("data/skipped_images", "data/bad_points", "nan_skipped_steps")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks that need no devices and no data; fails before anything is compiled."""
  config_schema.check_known_keys(config)
  train_state_lib.check_model_config(config)
  train_step_lib.check_config(config)
  evaluators.check_config_keys(config.evals)
  if config.get("nan_policy", "stop") not in NAN_POLICIES:
    raise ValueError(f"config.nan_policy={config.nan_policy!r}; use one of {NAN_POLICIES}.")
  if config.get("best_metric"):
    evaluator = config.best_metric.split("/")[0]
    if evaluator not in config.evals:
      raise ValueError(f"config.best_metric={config.best_metric!r} names evaluator "
                       f"{evaluator!r}, but config.evals has {sorted(config.evals)}.")
  if config.get("best_mode", "max") not in ("max", "min"):
    raise ValueError(f"config.best_mode={config.best_mode!r}; use 'max' or 'min'.")
  if config.loss.point_lambda < 0:
    raise ValueError(f"config.loss.point_lambda={config.loss.point_lambda} must be >= 0.")
  if config.loss.point_loss not in losses.POINT_LOSSES:
    raise ValueError(f"config.loss.point_loss={config.loss.point_loss!r}; use one of "
                     f"{losses.POINT_LOSSES}.")
  if not config.loss.point_smooth_l1_beta > 0:
    raise ValueError(f"config.loss.point_smooth_l1_beta={config.loss.point_smooth_l1_beta} must "
                     "be > 0 (the |error| below which smooth_l1 is quadratic; points are in "
                     "[0, 1] crop coordinates).")
  if config.loss.point_normalize not in losses.POINT_NORMALIZATIONS:
    raise ValueError(f"config.loss.point_normalize={config.loss.point_normalize!r}; use one of "
                     f"{losses.POINT_NORMALIZATIONS}.")
  if config.loss.classification not in ("softmax", "sigmoid"):
    raise ValueError(f"config.loss.classification={config.loss.classification!r}; use "
                     "'softmax' or 'sigmoid'.")
  if config.get("keep_ckpts") is not None and config.keep_ckpts < 1:
    # Orbax's max_to_keep=0 deletes every checkpoint it writes.
    raise ValueError(f"config.keep_ckpts={config.keep_ckpts} must be at least 1.")
  if config.model.get("image_size", config.input.image_size) != config.input.image_size:
    raise ValueError(f"config.input.image_size={config.input.image_size} (the crops) differs "
                     f"from config.model.image_size={config.model.image_size} (the ViT's).")
  if not 0 <= config.loss.get("label_smoothing", 0.0) < 1:
    raise ValueError(f"config.loss.label_smoothing={config.loss.label_smoothing} must be in "
                     "[0, 1).")
  if len(config.input.crop_scale) != 2 or len(config.input.crop_ratio) != 2:
    raise ValueError(f"config.input.crop_scale={tuple(config.input.crop_scale)} and "
                     f"config.input.crop_ratio={tuple(config.input.crop_ratio)}: two values each.")
  low, high = config.input.crop_scale
  if not 0 < low <= high <= 1:
    raise ValueError(f"config.input.crop_scale={tuple(config.input.crop_scale)}: the crop's "
                     "share of the image area, (low, high) with 0 < low <= high <= 1.")
  low, high = config.input.crop_ratio
  if not 0 < low <= high:
    raise ValueError(f"config.input.crop_ratio={tuple(config.input.crop_ratio)}: (low, high) "
                     "aspect ratios with 0 < low <= high.")
  for key in ("resize_method", "eval_resize_method"):
    if key in config.input:
      image_ops.check_resize_method(config.input[key], key=f"config.input.{key}")
  if config.data_dir and not os.path.isdir(os.path.expanduser(config.data_dir)):
    raise FileNotFoundError(f"config.data_dir={config.data_dir!r} does not exist.")


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a work directory written by an incompatible config (config_schema.INCOMPATIBLE);
  logs the compatible changes (schedule length, intervals, mesh, ...)."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    saved = run_config.load_json(path).to_dict()
    for change in config_schema.check_resume_compatible(saved, config, path=path):
      logging.warning("Config changed since the work directory was written: %s", change)
  elif os.path.isdir(checkpointing.checkpoint_dir(workdir)) and os.listdir(
      checkpointing.checkpoint_dir(workdir)):
    raise FileNotFoundError(f"{workdir} has checkpoints but no config.json to check this config "
                            f"against; restore {path} or use a new --workdir.")


def check_same_job(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Every process of a job must train one config in one work directory: a process given
  another seed would silently train another model, one given another step count would hang
  the others at a collective. Compared as digests gathered from every process."""
  text = config.to_json_best_effort(sort_keys=True) + "\n" + os.path.abspath(workdir)
  digest = np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest()[:16], np.uint32)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  differ = [p for p in range(len(digests)) if not np.array_equal(digests[p], digests[0])]
  if differ:
    raise ValueError(f"Processes {differ} of this job were given another config or --workdir "
                     f"than process 0 (this is process {jax.process_index()}); start every "
                     "process with the same command line.")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """(Re)writes config.json (after the first step: see the loop); atomically, since a kill
  mid-write must not leave a config.json that blocks resuming."""
  if jax.process_index() == 0:
    workdir_lib.write_atomically(os.path.join(workdir, "config.json"),
                                 config.to_json_best_effort(indent=2))


def _process_age() -> float:
  """Seconds since this process started (Linux /proc; else since this module was imported)."""
  try:
    with open("/proc/self/stat", encoding="ascii") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # Field 22: starttime.
    with open("/proc/uptime", encoding="ascii") as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return time.time() - _IMPORTED


_IMPORTED = time.time()


def _aggregate(pending: list[dict]) -> dict:
  """Per-step metrics -> means over the interval (counts summed, skipped steps left out)."""
  steps = jax.device_get(pending)
  finite = [m for m in steps if not m.get("nan_skipped_steps")]
  out = {key: float(np.mean([m[key] for m in finite])) for key in steps[0]
         if key not in _SUMMED_METRICS and finite}
  out.update({key: float(sum(m[key] for m in steps)) for key in _SUMMED_METRICS
              if key in steps[0]})
  return out


def unlogged_evaluations(workdir: str, step: int, names: list[str],
                         evaluators: list[str]) -> list[str]:
  """Those of `names` (evaluator entries) without a metric logged at `step` in metrics.jsonl.

  Only evaluation records count: those whose every metric is "EVALUATOR/..." for one of
  `evaluators` (all of the config's; an evaluator named like a training metric, "loss" or
  "data", is not taken for logged by the training record of that step). Decided on process 0,
  which writes the file, and broadcast: every process must run the same evaluations (they are
  collective)."""
  if not names:
    return []
  logged = set()
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() == 0 and os.path.exists(path):
    # A line cut by a kill is skipped: its evaluations count as not logged and run again.
    for record in metric_logs.read_jsonl(path, skip_cut_lines=True):
      if not isinstance(record, dict) or record.get("step") != step:
        continue
      keys = [key for key in record if key != "step"]
      owners = {next((name for name in evaluators if key.startswith(f"{name}/")), None)
                for key in keys}
      if keys and None not in owners:
        logged.update(owners)
  flags_logged = np.asarray([name in logged for name in names], np.int32)
  if jax.process_count() > 1:
    flags_logged = multihost_utils.broadcast_one_to_all(flags_logged)
  return [name for name, done in zip(names, flags_logged) if not done]


def check_decoded(skipped: float, config, first: int, last: int) -> None:
  """An image that does not decode trains nothing (weight 0, pp/transforms.py) and the run goes
  on; a logging interval of which no image decoded means the dataset's images are unreadable,
  not a few corrupt files: that stops the run."""
  if not skipped:
    return
  seen = (last - first) * config.batch_size
  where = f"{config.dataset!r} ({config.train_split})"
  if skipped >= seen:
    raise ValueError(f"None of the {seen:,} training images of steps {first + 1}..{last} "
                     f"decoded: check the `image` feature of {where}.")
  logging.warning("%d of the %d training images of steps %d..%d did not decode and were "
                  "skipped (data/skipped_images); dataset %s.", skipped, seen, first + 1, last,
                  where)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: int | None = None, devices=None) -> dict:
  """Runs (or resumes) training; returns the last evaluation metrics.

  `stop_at_step` ends the run early after saving a checkpoint there, as a preemption would;
  running again resumes. Tests use it to check that a resumed run matches an uninterrupted one.
  `devices` restricts the mesh to these devices (default: all devices of the job).
  """
  # ------------------------------------------------------------------ Setup.
  validate_config(config)
  workdir_lib.check_path(workdir)
  if jax.process_count() > 1:
    check_same_job(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _train_and_evaluate(config, workdir, stop_at_step=stop_at_step, devices=devices)


def _train_and_evaluate(config, workdir, *, stop_at_step, devices):
  check_workdir(config, workdir)
  compilation_cache.setup(config, workdir)  # Before anything compiles.
  writer = metric_logs.create_writer(workdir)
  nan_policy = config.get("nan_policy", "stop")

  # ------------------------------------------------------------------ Mesh.
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  glibc_tunables.warn_if_missing(mesh.devices.flat[0].platform)
  per_process_batch = sharding_lib.check_batch_size(config.batch_size, mesh)
  train_step_lib.check_config(
      config, config.batch_size // math.prod(mesh.shape[a] for a in sharding_lib.batch_axes(mesh)))
  batch_sharding = sharding_lib.batch_sharding(mesh)
  logging.info("Mesh %s over %d devices (%d processes), per-process batch %d.",
               dict(mesh.shape), mesh.size, jax.process_count(), per_process_batch)

  # ------------------------------------------------------------------ Data.
  train_source = datasets.get_source(config.dataset, config.train_split, config.data_dir,
                                     features=transforms.TrainTransform.RECORD_KEYS)
  dataset_classes = datasets.num_classes(config.dataset, config.data_dir)
  if dataset_classes is not None and dataset_classes != config.num_classes:
    raise ValueError(f"config.num_classes={config.num_classes}, but dataset "
                     f"{config.dataset!r} has {dataset_classes} classes.")
  num_train = len(train_source)
  total_steps = durations.steps("total", config, num_examples=num_train,
                                batch_size=config.batch_size, positive=True)
  if total_steps is None:
    raise ValueError("Set config.total_steps or config.total_epochs.")
  warmup_steps = durations.steps("warmup", config, num_examples=num_train,
                                 batch_size=config.batch_size, total_steps=total_steps, default=0)
  if warmup_steps >= total_steps:
    logging.warning("The warmup (%d steps) is not shorter than training (%d steps): the "
                    "learning rate never reaches config.optax.lr.", warmup_steps, total_steps)
  log_steps = durations.steps("log_training", config, num_examples=num_train,
                              batch_size=config.batch_size, total_steps=total_steps, default=50,
                              positive=True)
  ckpt_steps = durations.steps("ckpt", config, num_examples=num_train,
                               batch_size=config.batch_size, total_steps=total_steps,
                               default=total_steps, positive=True)

  def train_stream(position: checkpointing.DataPosition):
    """The training iterator over the shuffle of `position.seed` (config.seed, unless an older
    version restarted the data order: checkpointing's module docstring), from global batch
    `position.first_batch` on."""
    return iter(input_pipeline.make_train_dataset(
        train_source, config.input, per_process_batch_size=per_process_batch,
        seed=position.seed, first_batch=position.first_batch,
        num_points=config.model.get("num_points", 1)))

  # ------------------------------------------------------------------ Model and optimizer.
  spec = train_state_lib.model_spec(config, mesh)
  tx, schedule = optim.make_optimizer(config.optax, total_steps, warmup_steps)
  use_ema = config.get("ema_decay") is not None
  abstract_state = train_state_lib.abstract_train_state(spec, tx, ema=use_ema)
  state_shardings = train_state_lib.train_state_shardings(abstract_state, config, mesh)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  logging.info("Model %s%s: %s parameters.", config.model_name,
               f" {config.model.variant}" if "variant" in config.model else "", f"{num_params:,}")

  # ------------------------------------------------------------------ Checkpoint.
  manager = checkpointing.create_manager(workdir, keep=config.keep_ckpts)
  restored = checkpointing.restore_latest(
      manager, workdir, checkpointing.abstract_like(abstract_state, state_shardings),
      train_stream, config_seed=config.seed, num_workers=config.input.num_workers)
  state = restored.state
  # A new run, or a resume on another process or worker count: the iterator is built at the
  # next global batch (checkpointing docstring).
  train_iter = (restored.data_iter if restored.data_iter is not None
                else train_stream(restored.position))
  if state is None:
    state = train_state_lib.init_train_state(spec, tx, config.seed, state_shardings)
  else:
    logging.info("Resumed from the checkpoint of step %d in %s.", restored.step,
                 checkpointing.checkpoint_dir(workdir))
  first_step = int(jax.device_get(state["step"]))
  if first_step > total_steps:
    raise ValueError(f"The checkpoint of step {first_step} in {workdir} is past "
                     f"config.total_steps={total_steps}: nothing to train, and its evaluation "
                     "would be reported as the final one. Evaluate it with luab_jax.evaluate, "
                     "or use a new --workdir.")
  best_manager = None
  if config.get("best_metric"):
    best_manager = checkpointing.create_best_manager(workdir, config.best_metric,
                                                     config.get("best_mode", "max"))

  # ------------------------------------------------------------------ Train step.
  train_step = train_step_lib.jit_train_step(
      train_step_lib.make_train_step(config, spec, tx, schedule), state_shardings,
      batch_sharding, mesh)

  # ------------------------------------------------------------------ Evaluators.
  fns = evaluators.make_model_fns(spec.apply, mesh, state_shardings["params"],
                                  num_points=config.model.get("num_points", 1),
                                  num_classes=config.num_classes)
  evals = evaluators.from_config(config.evals, fns=fns, mesh=mesh,
                                 data_dir=config.data_dir, input_config=config.input)
  eval_every = {name: cfg.get("every_steps") for name, cfg in config.evals.items()}

  def eval_params():
    # With config.ema_decay the EMA is what gets evaluated, kept as best, and reported at the end.
    return state["ema_params"] if use_ema else state["params"]

  def save_best(step, results):
    if best_manager is None or not results:
      return
    metric = config.best_metric
    if metric not in results:
      if any(key.startswith(metric.split("/")[0] + "/") for key in results):
        raise ValueError(f"config.best_metric={metric!r} is not among the metrics of its "
                         f"evaluator: {sorted(results)}.")
      return  # Its evaluator did not run at this step.
    checkpointing.save_best(best_manager, step, eval_params(), metric, results[metric])

  def run_evals(step, names):
    results = {}
    for name in names:
      started = time.time()
      metrics = evals[name].run(eval_params())
      results.update({f"{name}/{key}": value for key, value in metrics.items()})
      logging.info("Evaluator %s at step %d took %.1fs.", name, step, time.time() - started)
    if results:
      writer.write_scalars(step, results)
      writer.flush()
    return results

  if config.get("best_metric") and first_step == 0:
    # A name its evaluator does not report would otherwise surface at the first evaluation,
    # which may be the end of the run: evaluate the initial model once (results not kept).
    name, started = config.best_metric.split("/")[0], time.time()
    reported = sorted(f"{name}/{key}" for key in evals[name].run(eval_params()))
    if config.best_metric not in reported:
      raise ValueError(f"config.best_metric={config.best_metric!r} is not among the metrics of "
                       f"its evaluator: {reported}.")
    logging.info("config.best_metric=%r is reported by evaluator %s (checked on the initial "
                 "model in %.1fs).", config.best_metric, name, time.time() - started)

  # ------------------------------------------------------------------ Loop.
  logging.info("Training steps %d..%d (warmup %d, log every %d, checkpoint every %d).",
               first_step + 1, total_steps, warmup_steps, log_steps, ckpt_steps)
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_secs=None, every_steps=log_steps)
  pending, last_log_time, last_log_step = [], time.time(), first_step
  unchecked = []  # (step, nan_skipped_steps) not yet fetched: checked before every save.
  last_saved = first_step
  last_results, last_results_step = {}, None
  step = first_step

  def check_finite():
    """Under nan_policy="stop": raises naming the first non-finite step since the last check."""
    bad = [s for s, flag in zip([s for s, _ in unchecked],
                                jax.device_get([f for _, f in unchecked])) if flag]
    if bad and nan_policy == "stop":
      raise FloatingPointError(
          f"Non-finite loss or gradients at step {bad[0]} ({len(bad)} of steps "
          f"{unchecked[0][0]}..{unchecked[-1][0]}). Nothing after step {last_saved} was "
          "saved; the checkpoints are intact. Lower config.optax.lr, or set "
          "config.nan_policy='skip' to skip such updates.")
    unchecked.clear()

  try:
    with preemption.Preemption() as preempt:
      if 0 < first_step < total_steps:
        # A run stopped (SIGTERM, kill -9) after saving a step but before that step's
        # evaluations were logged would otherwise never evaluate it.
        due = [name for name, every in eval_every.items() if every and first_step % every == 0]
        missing = unlogged_evaluations(workdir, first_step, due, list(evals))
        if missing:
          logging.info("Evaluations due at the restored step %d were not logged: running %s.",
                       first_step, missing)
          save_best(first_step, run_evals(first_step, missing))
      if (first_step == total_steps and evals
          and (workdir_lib.read_final_eval(workdir) or {}).get("step") != first_step):
        # A finished run started again whose final evaluation was interrupted (or is of fewer
        # steps, before total_steps grew): run it now.
        last_results, last_results_step = run_evals(first_step, list(evals)), first_step
        save_best(first_step, last_results)
      while step < total_steps:
        step += 1
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = sharding_lib.to_global(next(train_iter), batch_sharding)
          state, metrics = train_step(state, batch)
        pending.append(metrics)
        unchecked.append((step, metrics["nan_skipped_steps"]))
        if step == first_step + 1:  # Start-up, compilation included (benchmarks/startup.py).
          jax.block_until_ready(metrics)
          logging.info("First training step (%d) done, %.1f s after the process started.",
                       step, _process_age())
          # Only now, before any checkpoint: a config that fails its start (checks, tracing,
          # the first batch) does not make the work directory its own.
          write_config(config, workdir)
        progress(step)
        preempted = preempt.reached(step)
        stopping = step == total_steps or step == stop_at_step or preempted

        # At a stop too: the steps since the last log would not be logged by anyone.
        if step % log_steps == 0 or stopping:
          # Averaged over the steps since the last log; fetching forces a sync, hence only here.
          check_finite()
          means = _aggregate(pending)
          check_decoded(means.get("data/skipped_images", 0), config, last_log_step, step)
          now = time.time()
          images_per_sec = (step - last_log_step) * config.batch_size / max(now - last_log_time,
                                                                             1e-9)
          means["images_per_sec"] = images_per_sec
          means["images_per_sec_per_device"] = images_per_sec / mesh.size
          writer.write_scalars(step, means)
          if nan_policy == "stop" and not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"Non-finite training metrics between steps "
                                     f"{last_log_step + 1} and {step}: {means}")
          pending, last_log_time, last_log_step = [], now, step

        if step % ckpt_steps == 0 or stopping:
          check_finite()  # Never write a non-finite state over a good checkpoint.
          checkpointing.save(manager, step, state, train_iter,
                             position=restored.position.after(step - first_step), force=True)
          last_saved = step

        if preempted:
          break
        due = [name for name, every in eval_every.items()
               if (every and step % every == 0) or step == total_steps]
        if due:
          results = run_evals(step, due)
          last_results.update(results)
          last_results_step = step
          save_best(step, results)
        if step == stop_at_step:
          logging.info("Stopping at step %d as asked; run again to resume.", step)
          break
  finally:
    # Also on an exception (e.g. the NaN guard): an async save still being written must be
    # finished, or the last good checkpoint would be left as a temporary directory.
    manager.wait_until_finished()
    manager.close()
    if best_manager is not None:
      best_manager.wait_until_finished()
      best_manager.close()
    train_iter.close()  # Stops the prefetch worker processes and frees their shared memory.
    writer.flush()
  if preempt.signum is not None and (step < total_steps or (evals and last_results_step != step)):
    # Also at the last step when its final evaluation did not run: the run is not finished
    # (exit 128 + signal), and the rerun evaluates it (below).
    message = (f"Preempted by {preemption.signal_name(preempt.signum)}: saved the checkpoint "
               f"of step {step} in {checkpointing.checkpoint_dir(workdir)}; run the same "
               "command again to resume.")
    logging.warning(message)
    raise preemption.Preempted(preempt.exit_code, message)
  if step == first_step:  # A finished run started again: record its (compatible) config.
    write_config(config, workdir)
  if last_results_step != step:
    last_results = {}  # Evaluations of an earlier step are not the final ones.
  if last_results and jax.process_index() == 0:
    workdir_lib.write_atomically(os.path.join(workdir, workdir_lib.FINAL_EVAL),
                                 json.dumps({"step": step, **last_results}, indent=2))
  return last_results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if flags.FLAGS.workdir is None:
    raise app.UsageError("--workdir is required.")
  if flags.FLAGS.config is None:
    raise app.UsageError("--config is required, e.g. --config configs/demo.py:lam=4.")
  xla_flags.set_defaults()  # Before JAX starts a backend.
  distributed.initialize()  # Multi-host jobs: from LUAB_* variables, see distributed.py.
  datasets.hide_accelerators_from_tensorflow()
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Flags are defined here, not at import, so that tools and tests can import several
  # entry points (train, evaluate) into one process.
  config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Work directory (checkpoints, logs, results).")
  app.run(main, flags_parser=config_args.parse_flags)
