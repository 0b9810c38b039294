"""Orbax checkpoints of the train state together with the Grain data iterator.

Layout: `{workdir}/checkpoints/{step}/{state,data_iter}`. Saves are asynchronous (the device to
host copy blocks, the write does not); the manager keeps the latest `keep` steps and writes each
step to a temporary directory that is renamed only when complete, so a partially written step is
never listed. Restore takes an abstract tree of `jax.ShapeDtypeStruct`s carrying the shardings
of the *current* mesh, so a checkpoint can be restored on any device layout.

The data iterator's state is one small JSON per process (`process_{i}-of-{n}.json`), so resuming
*training* needs the same number of processes (and `input.num_workers`) as the run that saved
it; parameters alone (`restore_params`, used by evaluation) restore on any process count.
"""

import os

import grain
import jax
import orbax.checkpoint as ocp

STATE = "state"
DATA_ITER = "data_iter"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, *, keep: int = 3) -> ocp.CheckpointManager:
  """The trainer's manager: async saves of state + data iterator, the latest `keep` kept.

  The trainer decides when to save (it passes `force=True`), so no save interval is set here.
  """
  item_handlers = {STATE: ocp.StandardCheckpointHandler(),
                   DATA_ITER: grain.checkpoint.CheckpointHandler()}
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_handlers=item_handlers)


def save(manager: ocp.CheckpointManager, step: int, state, data_iter=None, *,
         force: bool = False) -> bool:
  items = {STATE: ocp.args.StandardSave(state)}
  if data_iter is not None:
    items[DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def abstract_like(tree, shardings):
  """ShapeDtypeStructs of `tree` (arrays or structs) laid out with `shardings`."""
  return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      tree, shardings)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, data_iter=None):
  """Restores `step` onto the shardings in `abstract_state`; `data_iter` is updated in place."""
  items = {STATE: ocp.args.StandardRestore(abstract_state)}
  if data_iter is not None:
    items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored[STATE]


def _read_only_manager(workdir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers={STATE: ocp.PyTreeCheckpointHandler()})


def available_steps(workdir: str) -> list[int]:
  """Sorted steps of the complete checkpoints of `workdir` ([] while there are none yet).

  A step still being written lives in a temporary directory until it is committed, so it is
  not listed; reading again later (as `evaluate --follow` does) sees new steps.
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    return []
  manager = _read_only_manager(workdir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def restore_params(workdir: str, step: int | None, abstract_params):
  """Restores only the model parameters (no optimizer state, no data iterator).

  For evaluation: the optimizer moments, twice the size of the model, are never read. Returns
  (params, step); `step=None` means the latest checkpoint.
  """
  manager = _read_only_manager(workdir)
  try:
    if step is None:
      step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(workdir)}.")
    if step not in manager.all_steps():
      raise FileNotFoundError(f"No checkpoint of step {step} in {checkpoint_dir(workdir)}; "
                              f"there are {sorted(manager.all_steps())}.")
    target = {"params": abstract_params}
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)}))
    return restored[STATE]["params"], step
  finally:
    manager.close()
