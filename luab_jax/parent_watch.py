"""Worker processes that exit when the process that started them is gone.

Grain's prefetch workers and the processes of a sharded dataset preparation are stopped by
their parent when it exits normally; a parent killed with SIGKILL (the OOM killer, a
scheduler's hard stop) left them running, holding their memory and, for preparation, still
writing. Each worker calls `exit_with_parent` at start-up: a thread polls the parent's pid and
exits the worker once it has been reparented. Not Linux's PR_SET_PDEATHSIG, which fires when
the *thread* that started the worker ends, and workers may be started from helper threads.
"""

import os
import threading
import time

# How often a worker looks for its parent; it outlives a killed parent by at most this.
POLL_SECONDS = 1.0


def exit_with_parent(parent: int) -> None:
  """Exits this process once its parent is no longer `parent` (a pid the parent passed: a
  worker still starting when its parent dies would take its new parent for it)."""

  def watch():
    while os.getppid() == parent:
      time.sleep(POLL_SECONDS)
    os._exit(1)  # Reparented: the parent is gone. Nothing here is worth flushing.

  threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()
