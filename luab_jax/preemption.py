"""Stopping at a step boundary on SIGTERM / SIGINT (preemption notices), agreed by all processes.

Schedulers announce an eviction with SIGTERM (Cloud TPU maintenance events, SLURM's
`--signal`, Kubernetes), and a user presses Ctrl-C (SIGINT). Killing the job in the middle of a
step would lose everything since the last checkpoint, so instead the handler only records the
signal; the trainer asks `Preemption.reached(step)` after every step, saves a checkpoint at the
first step where it is True, and exits with status 128 + the signal number.

Single process: `reached` is True at the first step boundary after the signal.

Several processes: every process must save the *same* step, or the checkpoint is inconsistent.
JAX's preemption sync manager (started by `jax.distributed.initialize`, on by default through
`jax_enable_preemption_service`) catches SIGTERM on any process, agrees through the coordination
service on a step every process has not yet passed, and
`multihost_utils.reached_preemption_sync_point(step)` turns True on all of them at that step.
A local SIGINT on one host is not propagated that way; it is folded in by an all-reduce of the
local flags every `sync_every` steps (default 1; a scalar all-gather per step is negligible next
to a training step). A second signal while the first is pending restores the default handler
and re-raises it, so a stuck job can still be killed with a second Ctrl-C.
"""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
  """Raised by the trainer after the preemption checkpoint is saved; exits with 128 + signal."""

  def __init__(self, code: int, message: str):
    super().__init__(code)
    self.message = message


def signal_name(signum: int) -> str:
  return signal.Signals(signum).name


class Preemption:
  """Records SIGTERM/SIGINT; `reached(step)` says when to save and stop. Use as a context."""

  def __init__(self, *, sync_every: int = 1):
    self.signum: int | None = None
    self._sync_every = sync_every
    self._previous = {}

  def __enter__(self):
    # Signal handlers can only be installed from the main thread; a trainer called from
    # another thread (e.g. a notebook's worker) runs without preemption handling, and says so.
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Not on the main thread: SIGTERM/SIGINT will not trigger a checkpoint.")
      return self
    signums = _SIGNALS
    if jax.process_count() > 1:
      # JAX's preemption notifier owns SIGTERM there; replacing its handler would hide the
      # notice from the sync manager.
      signums = (signal.SIGINT,)
    for signum in signums:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # Second signal: give up on the graceful stop.
      previous = self._previous.get(signum, signal.SIG_DFL)
      # A process started in the background inherits SIGINT ignored: the default ends it.
      signal.signal(signum, signal.SIG_DFL if previous == signal.SIG_IGN else previous)
      signal.raise_signal(signum)
      return
    self.signum = signum
    logging.warning("Received %s: will save a checkpoint at the next step boundary and exit.",
                    signal.Signals(signum).name)

  @property
  def exit_code(self) -> int:
    return 128 + (self.signum or signal.SIGTERM)

  def reached(self, step: int) -> bool:
    """True at the step where every process should save and stop."""
    if jax.process_count() == 1:
      return self.signum is not None
    if multihost_utils.reached_preemption_sync_point(step):
      self.signum = self.signum or signal.SIGTERM
      return True
    if step % self._sync_every:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
    if np.any(flags):
      self.signum = self.signum or int(np.max(flags))
      return True
    return False
