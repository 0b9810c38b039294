"""Orbax checkpoints of the train state together with the Grain data iterator.

Layout: `{workdir}/checkpoints/{step}/{state,data_iter}`. Saves are asynchronous (the device to
host copy blocks, the write does not); the manager keeps the latest `keep` steps and writes each
step to a temporary directory (`{step}.orbax-checkpoint-tmp-*`) that is renamed only when
complete, so a step killed mid-write is never listed (and its leftovers are deleted by the next
manager). Restore takes an abstract tree of `jax.ShapeDtypeStruct`s carrying the shardings of
the *current* mesh, so a checkpoint can be restored on any device layout.

Damaged checkpoints (`restore_latest`): a listed step can still be damaged afterwards (a disk
that filled up, a file truncated or deleted by hand or by a broken sync). Each step is first
checked for the files a complete Orbax step always has (`REQUIRED_FILES`), then restored; a step
that fails either is logged with the step and the missing file or the error, and the next older
one is tried. Once an older one restores, the damaged newer ones are moved to
`{workdir}/checkpoints_damaged/` (kept for inspection, out of the manager's way). If none
restores, the run fails listing every step and its problem: a work directory with checkpoints
never silently starts from scratch.

In a job of several processes every process checks every step and they agree (a step is
used only if it is complete and restores on all of them), so one process's damaged file cannot
make the processes resume from different steps and wait on each other forever. Each process
reads through a manager of its own (`_process_reader`), without Orbax's barrier after a
restore: a process whose read failed alone would skip that barrier and pair its next
collective with the others' barrier. A damaged data iterator file is not a damaged step: the
step resumes by its recorded data position (below), on every process, with a warning.

The data iterator's state is one small JSON per process (`process_{i}-of-{n}.json`), valid only
for the same number of processes `n` and `input.num_workers`. Every step therefore also records
where that iterator is in the training stream (`data_order`, a `DataPosition`): the stream of
shuffle seed S, the iterator built to start at global batch F, the next step reading global
batch N, and the worker count W. A global batch holds the same examples with the same crops
whatever the number of processes or workers (`input_pipeline`), so a resume on another process
or worker count builds the iterator at global batch N and continues exactly where the run
stopped (logged); with the same counts, Grain's own state is restored onto an iterator built at
F. Steps written before all four were recorded ({"seed": S} only, or no `data_order`: the stream
of config.seed) resume by position too: their next batch is the step minus S - config.seed (a
restarted data order, which earlier versions offered on a process-count change, was seeded
config.seed + the step it started at). A `data_order` that is not such a position (damaged, or
written by a newer version with more fields) makes its step a damaged one, like any other
unreadable part. Parameters alone (`restore_params`, used by evaluation)
restore on any process count, each process alone too (its caller agrees on the outcome).

Best checkpoints (`create_best_manager`): `{workdir}/checkpoints_best/{step}/params`, the
parameters only, of the single best evaluation by `config.best_metric`. A separate manager, so
keeping the best can never evict the latest checkpoints that resuming needs.
"""

import dataclasses
import json
import os
import re
import shutil
from typing import Any, Callable

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from luab_jax import distributed

STATE = "state"
DATA_ITER = "data_iter"
DATA_ORDER = "data_order"
PARAMS = "params"
# Files every complete step of `create_manager` holds (relative to the step directory).
REQUIRED_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt", f"{STATE}/_METADATA",
                  f"{STATE}/manifest.ocdbt", f"{STATE}/commit_success.txt",
                  f"{DATA_ITER}/commit_success.txt")
_ITER_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


def checkpoint_dir(workdir: str, *, kind: str = "checkpoints") -> str:
  """`kind`: "checkpoints" (resume), "checkpoints_best" or "checkpoints_damaged"."""
  return os.path.join(os.path.abspath(workdir), kind)


def create_manager(workdir: str, *, keep: int = 3) -> ocp.CheckpointManager:
  """The trainer's manager: async saves of state + data iterator, the latest `keep` kept.

  The trainer decides when to save (it passes `force=True`), so no save interval is set here.
  """
  # cleanup_tmp_directories: a job killed during an async write leaves `N.orbax-checkpoint-tmp-*`;
  # it is never listed as a step, and is deleted here.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_handlers=_train_item_handlers())


def _train_item_handlers() -> dict:
  return {STATE: ocp.StandardCheckpointHandler(),
          DATA_ITER: grain.checkpoint.CheckpointHandler(),
          DATA_ORDER: ocp.JsonCheckpointHandler()}


def _process_reader(directory: str, item_handlers: dict) -> ocp.CheckpointManager:
  """A read-only manager of this process alone: it skips Orbax's barriers (one after every
  restore). Each process reads only its own shards, so a read needs no other process; and a
  process whose read fails alone would go on while the others waited at that barrier, pairing
  its next collective with the barrier's. The callers agree on the outcome instead
  (distributed.on_every_process)."""
  this_process = jax.process_index()
  return ocp.CheckpointManager(
      directory, item_handlers=item_handlers,
      options=ocp.CheckpointManagerOptions(
          read_only=True, create=False,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              primary_host=this_process, active_processes={this_process})))


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """Where a checkpoint's data iterator is: the stream of shuffle `seed`, the iterator built at
  global batch `first_batch` (input_pipeline.make_train_dataset), the next step reading global
  batch `next_batch`; `num_workers` (input.num_workers) None where not recorded."""
  seed: int
  first_batch: int
  next_batch: int
  num_workers: int | None = None

  def after(self, steps: int) -> "DataPosition":
    """The position `steps` training steps (one global batch each) later."""
    return dataclasses.replace(self, next_batch=self.next_batch + steps)

  def started_at_next_batch(self) -> "DataPosition":
    """The same stream, its iterator built at the next batch (a resume by position)."""
    return dataclasses.replace(self, first_batch=self.next_batch)


_POSITION_RULE = "integers seed, first_batch, next_batch, num_workers; first_batch <= next_batch"


def _is_position_record(record) -> bool:
  """Whether `record` (a dict) is a whole DataPosition as `data_order` records it."""
  fields = {field.name for field in dataclasses.fields(DataPosition)}
  return (isinstance(record, dict) and set(record) == fields
          and all(type(record[name]) is int for name in fields)  # Not bool, not None.
          and 0 <= record["first_batch"] <= record["next_batch"])


def save(manager: ocp.CheckpointManager, step: int, state, data_iter=None, *,
         position: DataPosition | None = None, force: bool = False) -> bool:
  """Saves the state, and the data iterator with its position in the stream."""
  items = {STATE: ocp.args.StandardSave(state)}
  if data_iter is not None:
    items[DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
  if position is not None:
    record = dataclasses.asdict(position)
    if not _is_position_record(record):
      raise ValueError(f"{position} is not a data position to record ({_POSITION_RULE}).")
    items[DATA_ORDER] = ocp.args.JsonSave(record)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def abstract_like(tree, shardings):
  """ShapeDtypeStructs of `tree` (arrays or structs) laid out with `shardings`."""
  return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      tree, shardings)


def data_iter_process_count(step_dir: str) -> int | None:
  """The process count that wrote the data iterator state of a step directory (None: none)."""
  counts = {int(m.group(2)) for name in os.listdir(os.path.join(step_dir, DATA_ITER))
            if (m := _ITER_FILE.fullmatch(name))}
  if len(counts) > 1:
    raise ValueError(f"{step_dir}/{DATA_ITER} mixes iterator states of process counts {counts}.")
  return counts.pop() if counts else None


def missing_files(step_dir: str) -> list[str]:
  """Files of REQUIRED_FILES absent or empty in a step, or no iterator state at all."""
  missing = [name for name in REQUIRED_FILES
             if not os.path.isfile(os.path.join(step_dir, name))
             or os.path.getsize(os.path.join(step_dir, name)) == 0]
  if not missing and data_iter_process_count(step_dir) is None:
    missing = [f"{DATA_ITER}/process_*-of-*.json"]
  return missing


def iterator_state_problem(step_dir: str) -> str | None:
  """What is wrong with this process's iterator state (absent or not JSON), or None. Checked
  before the collective restore: a process failing inside it would leave the others waiting."""
  name = f"{DATA_ITER}/process_{jax.process_index()}-of-{jax.process_count()}.json"
  try:
    with open(os.path.join(step_dir, name), encoding="utf-8") as f:
      json.load(f)
  except (OSError, ValueError) as e:
    return f"{step_dir}/{name} is damaged ({type(e).__name__}: {e})"
  return None


def data_position(manager: ocp.CheckpointManager, step: int, step_dir: str,
                  config_seed: int) -> DataPosition:
  """The position of a step's data iterator (`config_seed`, for steps that lack it)."""
  if not os.path.isdir(os.path.join(step_dir, DATA_ORDER)):
    # Written before it was recorded: config.seed's stream.
    return DataPosition(config_seed, 0, step)
  order = manager.restore(step, args=ocp.args.Composite(
      **{DATA_ORDER: ocp.args.JsonRestore()}))[DATA_ORDER]
  if not isinstance(order, dict) or type(order.get("seed")) is not int:
    raise ValueError(f"{step_dir}/{DATA_ORDER} holds {order!r}, not a data position "
                     "{'seed': INT, ...}.")
  if set(order) == {"seed"}:  # Recorded the seed only: see the module docstring.
    if not 0 <= order["seed"] - config_seed <= step:
      raise ValueError(f"{step_dir}/{DATA_ORDER} holds {order!r}: not config.seed="
                       f"{config_seed}'s stream, nor one restarted at a step up to {step} "
                       "(seeded config.seed + that step).")
    return DataPosition(order["seed"], 0, step - (order["seed"] - config_seed))
  if not _is_position_record(order):
    raise ValueError(f"{step_dir}/{DATA_ORDER} holds {order!r}, not a data position "
                     f"({_POSITION_RULE}).")
  return DataPosition(**order)


@dataclasses.dataclass
class Restored:
  """What `restore_latest` found: the state and step (None without checkpoints), the data
  iterator (None if none was restored: build it at `position.first_batch`) and its position."""
  state: Any
  step: int | None
  data_iter: Any
  position: DataPosition


def restore_latest(manager: ocp.CheckpointManager, workdir: str, abstract_state,
                   make_data_iter: Callable[[DataPosition], Any] | None, *, config_seed: int,
                   num_workers: int) -> Restored:
  """Restores the newest step that is complete and readable; see the module docstring.

  `make_data_iter(position)` builds the data iterator of `position.seed`'s stream at global
  batch `position.first_batch` (None: restore no iterator); `config_seed` is config.seed and
  `num_workers` config.input.num_workers. A damaged iterator file (on any process) does not
  make its step a damaged one: the step resumes by position, with a warning. Without
  checkpoints: Restored(None, None, None, the start of config.seed's stream). Where Grain's
  state does not apply (another process or worker count, a damaged iterator file, or an older
  step), `data_iter` is None and `position` starts at its next batch.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return Restored(None, None, None, DataPosition(config_seed, 0, 0, num_workers))
  problems = {}
  # Reads through a manager of this process alone (_process_reader); `manager` lists the steps
  # and is reloaded after damaged ones are moved aside.
  reader = _process_reader(checkpoint_dir(workdir), _train_item_handlers())
  try:
    for step in steps:
      step_dir = os.path.join(checkpoint_dir(workdir), str(step))
      missing = missing_files(step_dir)
      if not distributed.on_every_process(not missing):
        problems[step] = (f"missing or empty: {', '.join(missing)}" if missing else
                          "damaged on another process (its log names the file)")
        logging.error("Checkpoint of step %d (%s) is damaged, %s; trying the previous one.",
                      step, step_dir, problems[step])
        continue
      items = {STATE: ocp.args.StandardRestore(abstract_state)}
      data_iter, error, iterator_problem = None, None, None
      try:
        saved_processes = data_iter_process_count(step_dir)
        position = data_position(reader, step, step_dir, config_seed)
        same_layout = (saved_processes, position.num_workers) == (jax.process_count(),
                                                                  num_workers)
        if same_layout:  # Otherwise the iterator files are not read: their damage costs nothing.
          iterator_problem = iterator_state_problem(step_dir)
      except Exception as e:  # pylint: disable=broad-except
        error = f"restore failed: {type(e).__name__}: {e}"
      restored = distributed.on_every_process(error is None)
      if restored:
        # Every process restores Grain's state, or none does: one way of resuming for the job.
        restore_iter = distributed.on_every_process(same_layout and iterator_problem is None)
        if same_layout and not restore_iter:
          logging.warning("Step %d: %s; resuming it by its recorded data position instead (the "
                          "same batches).", step,
                          iterator_problem or "another process's iterator file is damaged")
        if restore_iter and make_data_iter is not None:
          # Outside the try: an error of the input config is not a damaged checkpoint.
          data_iter = make_data_iter(position)
          items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
          state = reader.restore(step, args=ocp.args.Composite(**items))[STATE]
        except Exception as e:  # pylint: disable=broad-except
          # Orbax/TensorStore raise many types for damaged data; each is reported, and the run
          # fails below if no step restores.
          error = f"restore failed: {type(e).__name__}: {e}"
        restored = distributed.on_every_process(error is None)
      if not restored:
        problems[step] = error or "damaged on another process (its log says why)"
        logging.error("Checkpoint of step %d (%s) cannot be restored (%s); trying the previous "
                      "one.", step, step_dir, problems[step])
        if data_iter is not None:
          data_iter.close()
        continue
      if not same_layout:
        was = (f"{saved_processes} processes, "
               + (f"{position.num_workers} workers" if position.num_workers is not None
                  else "its worker count not recorded"))
        logging.info("Step %d: data iterator of %s; continuing its stream (seed %d) at global "
                     "batch %d with this job's %d process(es) and %d worker(s).", step, was,
                     position.seed, position.next_batch, jax.process_count(), num_workers)
      if data_iter is None:
        position = position.started_at_next_batch()
      _move_aside(manager, workdir, [s for s in problems if s > step])
      return Restored(state, step, data_iter, dataclasses.replace(position,
                                                                  num_workers=num_workers))
    listing = "; ".join(f"step {s}: {problems[s]}" for s in steps)
    raise RuntimeError(f"No checkpoint in {checkpoint_dir(workdir)} can be restored ({listing}). "
                       "Refusing to start from scratch over them: fix or move them away.")
  finally:
    reader.close()


def _move_aside(manager, workdir: str, steps) -> None:
  """Moves damaged steps to checkpoints_damaged/ so that new saves of those steps succeed."""
  if not steps:
    return
  if jax.process_index() == 0:
    target_root = checkpoint_dir(workdir, kind="checkpoints_damaged")
    os.makedirs(target_root, exist_ok=True)
    for step in steps:
      target = os.path.join(target_root, str(step))
      suffix = 1
      while os.path.exists(target):
        target, suffix = os.path.join(target_root, f"{step}.{suffix}"), suffix + 1
      shutil.move(os.path.join(checkpoint_dir(workdir), str(step)), target)
      logging.warning("Moved the damaged checkpoint of step %d to %s.", step, target)
  multihost_utils.sync_global_devices("luab_jax: damaged checkpoints moved")
  manager.reload()


def create_best_manager(workdir: str, metric: str, mode: str) -> ocp.CheckpointManager:
  """Keeps the parameters of the single best step by `metric` ("max" or "min")."""
  if mode not in ("max", "min"):
    raise ValueError(f"config.best_mode={mode!r}; use 'max' or 'min'.")
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda metrics: metrics[metric], best_mode=mode,
      keep_checkpoints_without_metrics=False, enable_async_checkpointing=False,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir, kind="checkpoints_best"), options=options,
                               item_handlers={PARAMS: ocp.StandardCheckpointHandler()})


def save_best(manager: ocp.CheckpointManager, step: int, params, metric: str, value: float):
  """Offers `params` of `step` as the best; the manager keeps it only if it beats the kept one."""
  if step in manager.all_steps():  # Re-evaluated after a resume: the kept one stands.
    logging.info("The best-checkpoint manager already holds step %d; not saved again.", step)
    return
  manager.save(step, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardSave(params)}),
               metrics={metric: float(value)}, force=True)


def _read_only_manager(workdir: str, kind: str) -> ocp.CheckpointManager:
  item = PARAMS if kind == "checkpoints_best" else STATE
  handler = (ocp.StandardCheckpointHandler() if kind == "checkpoints_best"
             else ocp.PyTreeCheckpointHandler())
  return _process_reader(checkpoint_dir(workdir, kind=kind), {item: handler})


def available_steps(workdir: str, *, kind: str = "checkpoints") -> list[int]:
  """Sorted steps of the complete checkpoints of `workdir` ([] while there are none yet).

  A step still being written lives in a temporary directory until it is committed, so it is
  not listed; reading again later (as `evaluate --follow` does) sees new steps. `kind` is
  "checkpoints" (the trainer's latest N) or "checkpoints_best" (the best by a metric).
  """
  if kind not in ("checkpoints", "checkpoints_best"):
    raise ValueError(f"kind={kind!r}; use 'checkpoints' or 'checkpoints_best'.")
  if not os.path.isdir(checkpoint_dir(workdir, kind=kind)):
    return []
  manager = _read_only_manager(workdir, kind)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def restore_params(workdir: str, step: int | None, abstract_params, *,
                   kind: str = "checkpoints", key: str = "params"):
  """Restores only the model parameters (no optimizer state, no data iterator).

  For evaluation: the optimizer moments, twice the size of the model, are never read. Returns
  (params, step); `step=None` means the latest checkpoint. `kind="checkpoints_best"` reads the
  best checkpoint (`create_best_manager`), which holds the parameters of its step.
  `key="ema_params"` reads the EMA of the weights from a run with `config.ema_decay` (its best
  checkpoints already hold the EMA, under "params").
  """
  if kind not in ("checkpoints", "checkpoints_best"):
    raise ValueError(f"kind={kind!r}; use 'checkpoints' or 'checkpoints_best'.")
  directory = checkpoint_dir(workdir, kind=kind)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No checkpoint in {directory}.")
  manager = _read_only_manager(workdir, kind)
  try:
    if step is None:
      step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {directory}.")
    if step not in manager.all_steps():
      raise FileNotFoundError(f"No checkpoint of step {step} in {directory}; "
                              f"there are {sorted(manager.all_steps())}.")
    if kind == "checkpoints_best":
      restored = manager.restore(step, args=ocp.args.Composite(
          **{PARAMS: ocp.args.StandardRestore(abstract_params)}))
      return restored[PARAMS], step
    target = {key: abstract_params}
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)}))
    return restored[STATE][key], step
  finally:
    manager.close()
