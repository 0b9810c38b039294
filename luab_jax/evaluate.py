"""Evaluates checkpoints of training work directories in batch: checkpoints x evaluators.

  python -m luab_jax.evaluate --workdir workdirs/demo/baseline,workdirs/demo/luab
  python -m luab_jax.evaluate --workdir W --checkpoints 400,800 --evals bgc --data_dir data/tfds
  python -m luab_jax.evaluate --workdir W --follow          # evaluates W's checkpoints as it trains
  python -m luab_jax.evaluate --workdir W --config configs/demo.py --evals loc
  python -m luab_jax.evaluate --workdir W --checkpoints best   # checkpoints_best/ (best_metric)

For every work directory: the config is its `config.json` (what the trainer wrote), or
`--config` (then its model must be the one of `config.json`); the evaluators are
`config.evals` (all, or those named by `--evals`); the checkpoints are `--checkpoints`
(`all`, `latest`, or steps such as `400,800`), or `best`: the parameters kept in
`checkpoints_best/` by the trainer's `config.best_metric` (they are the parameters of that
training step, so their rows carry its step and count as that step's evaluation; the best step
may already be gone from the latest `keep_ckpts` checkpoints).

All of it runs in one job (one process, or several: below): the parameters of each checkpoint
are restored onto *this* job's mesh from an abstract sharded tree (a checkpoint written on a
pod evaluates on one GPU or a CPU), the evaluation step is compiled once per batch layout and
reused for every checkpoint (and for every work directory with the same model), the last batch
is padded and masked, and metrics are summed on the devices as batches stream by.

Outputs, per work directory (see eval_results.py): `eval/metrics.jsonl` and `eval/metrics.csv`
(one row per checkpoint, evaluator and metric), `eval/step_N.json`, TensorBoard scalars in
`eval/tensorboard/`; then a summary table (printed, and written to PLOT_DIR/summary.md) and PNG
plots of every metric against the step, the work directories overlaid, in `--plot_dir`
(default: WORKDIR/eval/plots for one work directory, PARENT/eval_plots for several, PARENT being
their common parent). A (checkpoint, evaluator) pair already in `eval/metrics.jsonl` is skipped
unless `--redo`.

`--follow` keeps polling for new checkpoints and evaluates them as they appear; it stops once
the last step of training (config.total_steps, or total_epochs converted) has been evaluated in
every work directory, or after `--follow_timeout` seconds without a new checkpoint.

A checkpoint deleted before it could be evaluated (the trainer keeps only config.keep_ckpts) is
skipped with a warning and left out of the table. A checkpoint that is listed but does not
restore (damaged) is logged as an error and the others are evaluated; once the table and plots
of those are written, the tool ends with an error (`CheckpointsNotRestored`) naming every
checkpoint it could not restore. `--follow` tries such a checkpoint again only once its
directory has been replaced (e.g. the trainer moved it to checkpoints_damaged/ and saved that
step again).

Several processes (`distributed.py`'s variables; not with `--follow`) evaluate together:
process 0's listing of the checkpoints and of the pairs already done is everyone's, and only
process 0 writes. Each process restores its own shards alone, then they agree: a checkpoint
that does not restore on some process (a read that fails on one host) is skipped, and
reported, by every process, which then go on to the next one together.
"""

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags
import numpy as np

from luab_jax import checkpointing
from luab_jax import compilation_cache
from luab_jax import config_args
from luab_jax import distributed
from luab_jax import durations
from luab_jax import eval_plots
from luab_jax import eval_results
from luab_jax import run_config
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax import workdir as workdir_lib
from luab_jax import xla_flags
from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common as evaluators

# Keys that define the model: a --config must agree with the run's config.json on them.
_MODEL_KEYS = ("model_name", "model", "num_classes")
# Everything that decides the compiled functions and the evaluators; runs equal on these share
# them (baseline and LUAB differ only in the loss).
_SETUP_KEYS = _MODEL_KEYS + ("mesh", "sharding_rules", "fsdp_min_size_mb", "data_dir", "input")
_MAX_STEPS = 4096  # Longest checkpoint list agreed between processes.


class CheckpointsNotRestored(RuntimeError):
  """Checkpoints that are listed but did not restore; `result` is `run`'s result for the rest."""

  def __init__(self, message: str, result: dict):
    super().__init__(message)
    self.result = result


class _RestoreFailed(Exception):
  """A listed checkpoint did not restore; the message names it and the cause."""


# ------------------------------------------------------------------ Configs and checkpoints.
def _plain(value):
  """A config value in comparable JSON form: ConfigDicts -> dicts, tuples -> lists."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def load_config(workdir: str, config=None, *, data_dir=None, mesh=None):
  """The config to evaluate `workdir` with: `config.json`, or `config` checked against it."""
  path = os.path.join(workdir, "config.json")
  saved = run_config.load_json(path) if os.path.exists(path) else None
  if config is None:
    if saved is None:
      raise FileNotFoundError(f"{path} does not exist (not a training work directory?); pass "
                              "--config.")
    config = saved
  elif saved is not None:
    for key in _MODEL_KEYS:
      if _plain(config.get(key)) != _plain(saved.get(key)):
        raise ValueError(f"--config has {key}={_plain(config.get(key))}, but {path} has "
                         f"{_plain(saved.get(key))}: the checkpoints are of another model.")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if data_dir is not None:
      config.data_dir = data_dir
    if mesh is not None:
      config.mesh = mesh
  if not config.get("evals"):
    raise ValueError(f"The config of {workdir} has no config.evals: nothing to evaluate.")
  return config


def parse_mesh(text: str):
  """'data:-1,fsdp:1' -> (("data", -1), ("fsdp", 1))."""
  axes = []
  for part in text.split(","):
    name, _, size = part.partition(":")
    if not name or not size.lstrip("-").isdigit():
      raise ValueError(f"--mesh={text!r}: use AXIS:SIZE pairs, e.g. data:-1,fsdp:1.")
    axes.append((name.strip(), int(size)))
  return tuple(axes)


def checkpoint_kind(spec: str) -> str:
  """The checkpoint directory --checkpoints reads: checkpoints_best for `best`."""
  return "checkpoints_best" if spec == "best" else "checkpoints"


def select_steps(spec: str, available: list[int], workdir: str) -> list[int]:
  """Steps of `available` chosen by --checkpoints: all, latest, best or a list of steps."""
  if spec in ("all", "best"):  # checkpoints_best/ holds the one best step.
    return list(available)
  if spec == "latest":
    return list(available[-1:])
  try:
    steps = sorted({int(s) for s in spec.split(",")})
  except ValueError as e:
    raise ValueError(f"--checkpoints={spec!r}: use all, latest, best or steps such as "
                     "400,800.") from e
  missing = sorted(set(steps) - set(available))
  if missing:
    raise FileNotFoundError(f"No checkpoint of steps {missing} in "
                            f"{checkpointing.checkpoint_dir(workdir)}; there are {available}.")
  return steps


def final_step(config) -> int | None:
  """The last step training will reach (config.total_steps, or total_epochs converted)."""
  if config.get("total_steps"):
    return int(config.total_steps)
  if not config.get("total_epochs"):
    return None
  num_train = len(datasets.get_source(config.dataset, config.train_split, config.data_dir))
  return durations.steps("total", config, num_examples=num_train, batch_size=config.batch_size)


def _agreed(steps: list[int]) -> list[int]:
  """Process 0's list on every process, so that all of them evaluate the same checkpoints."""
  if jax.process_count() == 1:
    return steps
  if len(steps) > _MAX_STEPS:
    raise ValueError(f"{len(steps)} checkpoints; at most {_MAX_STEPS} per work directory.")
  padded = np.full(_MAX_STEPS, -1, np.int64)
  padded[:len(steps)] = steps
  return [int(s) for s in multihost_utils.broadcast_one_to_all(padded) if s >= 0]


def _agreed_pending(pending: list[str], names: list[str]) -> list[str]:
  """Process 0's pending evaluators of a step on every process: process 0 writes the results,
  so its rows say what is done (another process may read other rows: its own copy of the
  run, or the rows on disk before a concurrent writer's)."""
  if jax.process_count() == 1:
    return pending
  mask = multihost_utils.broadcast_one_to_all(np.array([n in pending for n in names], np.int32))
  return [n for n, m in zip(names, mask) if m]


# ------------------------------------------------------------------ Setups and runs.
@dataclasses.dataclass
class _Setup:
  """What work directories with the same model, mesh, data and evaluators share."""
  abstract_params: object  # ShapeDtypeStructs with this mesh's shardings.
  evaluators: dict


def _make_setup(config, eval_names, devices) -> _Setup:
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  spec = train_state_lib.model_spec(config, mesh)
  shardings = train_state_lib.param_shardings(spec.abstract_params, config, mesh)
  fns = evaluators.make_model_fns(spec.apply, mesh, shardings,
                                  num_points=config.model.get("num_points", 1),
                                  num_classes=config.num_classes)
  evals = evaluators.from_config({name: config.evals[name] for name in eval_names}, fns=fns,
                                 mesh=mesh, data_dir=config.data_dir, input_config=config.input)
  logging.info("Evaluators %s on mesh %s.", list(evals), dict(mesh.shape))
  return _Setup(checkpointing.abstract_like(spec.abstract_params, shardings), evals)


@dataclasses.dataclass
class _Run:
  workdir: str
  label: str
  config: ml_collections.ConfigDict
  eval_names: list
  setup: _Setup
  store: eval_results.ResultStore
  writer: metric_writers.MetricWriter | None
  selected: list  # The steps --checkpoints chose at start, less those deleted unevaluated.
  known: set  # Every step listed at start; later ones are new (--follow).
  kind: str = "checkpoints"  # Or "checkpoints_best" (--checkpoints best).
  final_step: int | None = None
  # Steps that did not restore: {step: (_checkpoint_id when it failed, its _RestoreFailed)}.
  failed: dict = dataclasses.field(default_factory=dict)


def _labels(workdirs: list[str]) -> list[str]:
  """Run names for tables and legends: the directory names, or the paths if those clash."""
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  return names if len(set(names)) == len(names) else [os.path.normpath(w) for w in workdirs]


def default_plot_dir(workdirs: list[str]) -> str:
  if len(workdirs) == 1:
    return os.path.join(workdirs[0], "eval", "plots")
  parent = os.path.commonpath([os.path.dirname(os.path.abspath(w)) for w in workdirs])
  return os.path.join(parent, "eval_plots")


# ------------------------------------------------------------------ Evaluation.
@dataclasses.dataclass
class _Throughput:
  images: int = 0
  seconds: float = 0.0
  warm_images: int = 0  # Excluding each evaluator's first run, which includes compilation.
  warm_seconds: float = 0.0


def _checkpoint_id(run: _Run, step: int):
  """Identifies the directory of checkpoint `step` (None if absent): a re-save is another one.

  The inode with its ctime: an inode number may be reused after a deletion, and an mtime may
  be copied (`cp -a`), but a ctime is always the time of the last change.
  """
  try:
    stat = os.stat(os.path.join(checkpointing.checkpoint_dir(run.workdir, kind=run.kind),
                                str(step)))
  except FileNotFoundError:
    return None
  return stat.st_ino, stat.st_ctime_ns


def _evaluate_step(run: _Run, step: int, names: list[str], seen: set,
                   throughput: _Throughput) -> bool:
  """Evaluates `names` on checkpoint `step`; False if the checkpoint vanished before restore.

  Raises _RestoreFailed if the checkpoint is still listed but does not restore (damaged).
  """
  started = time.time()
  error = None
  try:
    # A run with an EMA of the weights is evaluated on the EMA, as its trainer did.
    ema = run.kind == "checkpoints" and run.config.get("ema_decay") is not None
    params, _ = checkpointing.restore_params(run.workdir, step, run.setup.abstract_params,
                                             kind=run.kind,
                                             key="ema_params" if ema else "params")
  except Exception as e:  # pylint: disable=broad-except
    error = e
  # The evaluation after it is collective: every process evaluates this checkpoint, or none
  # does (a process whose copy is damaged must not go on to its next checkpoint alone).
  if not distributed.on_every_process(error is None):
    # The trainer's retention (keep_ckpts) may delete a checkpoint between listing and
    # restoring it; that is skipped. Any other failure is reported (run() goes on with the
    # other checkpoints and raises at the end).
    listed = step in checkpointing.available_steps(run.workdir, kind=run.kind)
    if not distributed.on_every_process(not listed):
      cause = (f"{type(error).__name__}: {error}" if error is not None else
               "it restored here but not on another process (that process's log says why)")
      raise _RestoreFailed(f"Checkpoint {step} of {run.workdir} ({run.kind}) could not be "
                           f"restored: {cause}") from error
    logging.warning("Checkpoint %d of %s was deleted before it could be evaluated (the "
                    "trainer keeps only config.keep_ckpts, and one best); skipping it.", step,
                    run.workdir)
    return False
  logging.info("Restored step %d of %s in %.1fs.", step, run.workdir, time.time() - started)
  for name in names:
    evaluator = run.setup.evaluators[name]
    started = time.time()
    metrics = evaluator.run(params)
    seconds = time.time() - started
    examples = evaluator.num_examples
    run.store.put(step, name, metrics, seconds=seconds, examples=examples)
    if run.writer is not None:
      run.writer.write_scalars(step, {f"{name}/{key}": value for key, value in metrics.items()})
      run.writer.flush()
    throughput.images += examples
    throughput.seconds += seconds
    key = (id(run.setup), name)
    if key in seen:
      throughput.warm_images += examples
      throughput.warm_seconds += seconds
    seen.add(key)
    logging.info("%s step %d %s: %d images in %.1fs (%.0f images/s).", run.label, step, name,
                 examples, seconds, examples / max(seconds, 1e-9))
  return True


def run(workdirs: list[str], *, config=None, checkpoints: str = "all", evals=None,
        data_dir: str | None = None, mesh=None, follow: bool = False,
        follow_timeout: float | None = None, poll_seconds: float = 30.0, redo: bool = False,
        plot_dir: str | None = None, plots: bool = True, devices=None,
        sleep=time.sleep) -> dict:
  """Evaluates the checkpoints of `workdirs`; returns {"table", "plots", "rows", "throughput"}.

  A checkpoint that is listed but does not restore raises CheckpointsNotRestored once the rest
  is evaluated and written; its `result` is this dict, with "not_restored" naming them.

  `plots=False` skips the PNGs and summary.md; `devices` restricts the mesh (default: all of
  this job's); `sleep` is how --follow waits between polls (tests pass their own).
  """
  if follow and checkpoints not in ("all", "latest"):
    raise ValueError("--follow evaluates new checkpoints as they appear; combine it with "
                     "--checkpoints all or latest, not a list of steps.")
  if follow and jax.process_count() > 1:
    raise ValueError("--follow runs in a single process; evaluate a multi-host run's "
                     "checkpoints after training, or follow it from one host.")
  if poll_seconds < 0 or (follow_timeout is not None and follow_timeout < 0):
    raise ValueError(f"--poll_seconds={poll_seconds} and --follow_timeout={follow_timeout} "
                     "must not be negative.")
  seen = {}
  for workdir in workdirs:  # One run named twice (W and W/, or a link) would race itself.
    workdir_lib.check_path(workdir)
    real = os.path.realpath(workdir)
    if real in seen:
      raise ValueError(f"--workdir names {real} twice ({seen[real]!r} and {workdir!r}).")
    seen[real] = workdir
  plot_dir = plot_dir or default_plot_dir(workdirs)
  if plots:
    workdir_lib.check_path(plot_dir, flag="--plot_dir")
  is_writer = jax.process_index() == 0
  setups, runs = {}, []
  for workdir, label in zip(workdirs, _labels(workdirs)):
    cfg = load_config(workdir, config, data_dir=data_dir, mesh=mesh)
    if not runs:  # The first run's cache serves the whole job (compilation_cache.py).
      compilation_cache.setup(cfg, workdir)
    names = list(cfg.evals) if evals is None else list(evals)
    unknown = [n for n in names if n not in cfg.evals]
    if unknown:
      raise ValueError(f"--evals {unknown} not in config.evals of {workdir}: it has "
                       f"{sorted(cfg.evals)}.")
    key = json.dumps({**{k: _plain(cfg.get(k)) for k in _SETUP_KEYS},
                      "evals": {n: _plain(cfg.evals[n]) for n in names}}, sort_keys=True)
    if key not in setups:
      setups[key] = _make_setup(cfg, names, devices)
    kind = checkpoint_kind(checkpoints)
    available = _agreed(checkpointing.available_steps(workdir, kind=kind))
    if not available and not follow:
      hint = (" (the trainer keeps a best checkpoint when config.best_metric is set)"
              if kind == "checkpoints_best" else "")
      raise FileNotFoundError(f"No checkpoint in {checkpointing.checkpoint_dir(workdir, kind=kind)}"
                              f"{hint}.")
    writer = (metric_writers.SummaryWriter(os.path.join(workdir, "eval", "tensorboard"))
              if is_writer else None)
    runs.append(_Run(workdir, label, cfg, names, setups[key],
                     eval_results.ResultStore(workdir, write=is_writer), writer,
                     select_steps(checkpoints, available, workdir), set(available), kind=kind))
  if follow:
    for r in runs:
      r.final_step = final_step(r.config)
      if r.final_step is None and follow_timeout is None:
        raise ValueError(f"The config of {r.workdir} sets neither total_steps nor total_epochs: "
                         "--follow cannot know when training ends; pass --follow_timeout.")

  throughput, seen = _Throughput(), set()
  redone = {r.label: set() for r in runs}  # Pairs evaluated by this invocation.
  last_progress = time.time()
  while True:
    for r in runs:
      steps = list(r.selected)
      if follow:
        listed = _agreed(checkpointing.available_steps(r.workdir))
        steps += [s for s in listed if s not in r.known]
      done = redone[r.label] if redo else r.store.done() | redone[r.label]
      for step in sorted(set(steps)):
        pending = _agreed_pending([n for n in r.eval_names if (step, n) not in done],
                                  r.eval_names)
        if not pending:
          continue
        # A checkpoint that did not restore is tried again (--follow) only once it has been
        # saved anew; the same damaged files would fail, and be logged, at every poll.
        if step in r.failed and r.failed[step][0] == _checkpoint_id(r, step):
          continue
        try:
          evaluated = _evaluate_step(r, step, pending, seen, throughput)
        except _RestoreFailed as e:
          logging.error("%s Going on with the other checkpoints; the tool ends with an error "
                        "naming it.", e)
          r.failed[step] = (_checkpoint_id(r, step), e)
          continue
        if evaluated:
          r.failed.pop(step, None)  # Saved anew since it failed, and evaluated.
          redone[r.label].update((step, n) for n in pending)
          last_progress = time.time()
          if step not in r.selected:
            r.selected.append(step)
        elif step in r.selected:  # Deleted: warned about once, not tried again, not tabled.
          r.selected.remove(step)
    if not follow:
      break
    # A final step that does not restore ends the wait too: it is reported at the end.
    finished = [r.final_step is not None and (r.final_step in r.failed or all(
        (r.final_step, n) in r.store.done() | redone[r.label] for n in r.eval_names))
                for r in runs]
    if all(finished):
      logging.info("Every work directory's final step is evaluated (or could not be "
                   "restored); stopping.")
      break
    if follow_timeout is not None and time.time() - last_progress > follow_timeout:
      logging.info("No new checkpoint for %.0fs (--follow_timeout); stopping.", follow_timeout)
      break
    sleep(poll_seconds)

  table_rows = {r.label: r.store.rows(steps=set(r.selected), evaluators=set(r.eval_names))
                for r in runs}
  table = eval_results.summary_table(table_rows)
  plot_paths = []
  if plots and is_writer:
    # Plots show every evaluated step of the chosen evaluators, not only this selection.
    plot_paths = eval_plots.plot_metrics(
        {r.label: r.store.rows(evaluators=set(r.eval_names)) for r in runs}, plot_dir)
    with open(os.path.join(plot_dir, "summary.md"), "w", encoding="utf-8") as f:
      f.write(table + "\n")
  for r in runs:
    if r.writer is not None:
      r.writer.close()
  failures = [r.failed[step][1] for r in runs for step in sorted(r.failed)]
  result = {"table": table, "plots": plot_paths, "plot_dir": plot_dir, "rows": table_rows,
            "throughput": throughput, "not_restored": [str(e) for e in failures]}
  if failures:
    # After the results of everything else are written: nothing lost, and nothing silent.
    # Orbax's causes quote whole TensorStore specs (kilobytes); each is in full in the log.
    lines = [f"  {e}" if len(str(e)) <= 400 else f"  {str(e)[:400]} ... (in full in the log)"
             for e in failures]
    raise CheckpointsNotRestored(
        f"{len(failures)} checkpoint(s) could not be restored; the others were evaluated and "
        "their results written:\n" + "\n".join(lines), result) from failures[0]
  return result


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> dict:
  """One checkpoint (default: the latest), re-evaluated: {"step": N, "<eval>/<metric>": value}."""
  available = checkpointing.available_steps(workdir)
  if step is None and not available:
    raise FileNotFoundError(f"No checkpoint in {checkpointing.checkpoint_dir(workdir)}.")
  step = available[-1] if step is None else step
  result = run([workdir], config=config, checkpoints=str(step), redo=True, plots=False)
  label = next(iter(result["rows"]))
  return {"step": step, **{f"{row['evaluator']}/{row['metric']}": row["value"]
                           for row in result["rows"][label] if row["step"] == step}}


def _throughput_line(t: _Throughput, not_restored: int = 0) -> str:
  if not t.images and not_restored:
    return f"Nothing evaluated: {not_restored} checkpoint(s) could not be restored (below)."
  if not t.images:
    return "Nothing evaluated: every (checkpoint, evaluator) pair asked for was already done."
  line = (f"Evaluation speed: {t.images} images in {t.seconds:.1f}s = "
          f"{t.images / max(t.seconds, 1e-9):.0f} images/s")
  if t.warm_seconds > 0:
    line += (f"; without each evaluator's first run (compilation): "
             f"{t.warm_images / t.warm_seconds:.0f} images/s")
  return line + f" on {jax.device_count()} {jax.devices()[0].platform} device(s)."


def _print_result(result: dict) -> None:
  print(result["table"])
  print(_throughput_line(result["throughput"], len(result["not_restored"])))
  print(f"Table: {os.path.join(result['plot_dir'], 'summary.md')}; "
        f"{len(result['plots'])} plots in {result['plot_dir']}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.workdir:
    raise app.UsageError("--workdir is required.")
  xla_flags.set_defaults()  # Before JAX starts a backend.
  distributed.initialize()  # Multi-host jobs: from LUAB_* variables, see distributed.py.
  datasets.hide_accelerators_from_tensorflow()
  try:
    result = run([w for w in f.workdir.split(",") if w], config=f.config,
                 checkpoints=f.checkpoints, evals=f.evals.split(",") if f.evals else None,
                 data_dir=f.data_dir, mesh=parse_mesh(f.mesh) if f.mesh else None,
                 follow=f.follow, follow_timeout=f.follow_timeout, poll_seconds=f.poll_seconds,
                 redo=f.redo, plot_dir=f.plot_dir)
  except CheckpointsNotRestored as e:
    _print_result(e.result)  # What did work, then the error (exit status 1).
    raise
  _print_result(result)


if __name__ == "__main__":
  # Defined here, not at import, so that this module can be imported next to luab_jax.train.
  config_flags.DEFINE_config_file("config", None, "Config file; default: each work "
                                  "directory's config.json.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Training work directories, comma-separated.")
  flags.DEFINE_string("checkpoints", "all", "all, latest, best (checkpoints_best/), or steps "
                      "such as 400,800.")
  flags.DEFINE_string("evals", None, "Names in config.evals, comma-separated; default: all.")
  flags.DEFINE_string("data_dir", None, "Overrides config.data_dir.")
  flags.DEFINE_string("mesh", None, "Overrides config.mesh, e.g. data:-1,fsdp:1.")
  flags.DEFINE_bool("follow", False, "Keep evaluating new checkpoints until training ends.")
  flags.DEFINE_float("follow_timeout", None, "With --follow: stop after this many seconds "
                     "without a new checkpoint.")
  flags.DEFINE_float("poll_seconds", 30.0, "With --follow: seconds between looks for new "
                     "checkpoints.")
  flags.DEFINE_bool("redo", False, "Re-evaluate (checkpoint, evaluator) pairs already done.")
  flags.DEFINE_string("plot_dir", None, "Where the plots and summary.md go (default: see the "
                      "module docstring).")
  app.run(main, flags_parser=config_args.parse_flags)
