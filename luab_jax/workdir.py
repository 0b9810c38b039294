"""A run's work directory: a path every process of the job sees, used by one trainer at a time.

The trainer and the evaluator write it with local file I/O (config.json, metrics, the Orbax
checkpoints under an absolute path), so a URL such as gs://BUCKET/x would silently become a
local `./gs:/BUCKET/x` on each host: it is refused. A bucket is used by mounting it on every
host (e.g. gcsfuse) and passing the mount's path.

Two trainers in one work directory would interleave their metrics and delete each other's
checkpoint writes in progress, so process 0 of a training job holds an exclusive lock on
`WORKDIR/.lock` (an OS lock: released when the process ends, however it ends). A file system
without locks (some network mounts) gets a warning and no lock. The same lock (`file_lock`)
serialises the writers of `WORKDIR/eval/` (eval_results.py).

Its small files (config.json, final_eval.json, the evaluation results) are written whole or
not at all (`write_atomically`); `read_final_eval` reads final_eval.json back.
"""

import contextlib
import fcntl
import json
import os
import re
import socket

from absl import logging

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
LOCK_FILE = ".lock"
FINAL_EVAL = "final_eval.json"


def check_path(path: str, *, flag: str = "--workdir") -> None:
  """A local path (module docstring), and a directory if it exists."""
  if _URL.match(path):
    raise ValueError(
        f"{flag} {path}: a URL. It must be a path that every process of the job sees (local, "
        "or a bucket mounted on every host, e.g. with gcsfuse): the trainer and the evaluator "
        "write it with local file I/O.")
  if os.path.exists(path) and not os.path.isdir(path):
    raise NotADirectoryError(f"{flag} {path} is a file, not a directory.")


# Paths already warned about as unlockable: one warning each, not one per write.
_UNLOCKABLE = set()


@contextlib.contextmanager
def file_lock(path: str, *, wait: bool, unprotected: str):
  """`with file_lock(path, ...) as f:` holds an exclusive OS lock (flock) on `path`, the file
  open for reading and writing; released when the block ends or the process dies. `wait=False`
  raises BlockingIOError while another process holds it. A file system without locks gets one
  warning per path, ending with `unprotected` (what may go wrong), and no lock."""
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
      raise
    except OSError as e:  # No locks on this file system.
      if path not in _UNLOCKABLE:
        _UNLOCKABLE.add(path)
        logging.warning("Cannot lock %s (%s): %s", path, e, unprotected)
    yield f


@contextlib.contextmanager
def lock(workdir: str):
  """`with lock(workdir):` holds WORKDIR/.lock exclusively, or raises naming its holder."""
  path = os.path.join(workdir, LOCK_FILE)
  with contextlib.ExitStack() as stack:
    try:
      f = stack.enter_context(file_lock(
          path, wait=False, unprotected="nothing stops a second trainer in this work directory."))
    except BlockingIOError:
      with open(path, encoding="utf-8") as held:
        holder = held.read().strip() or "unknown process"
      raise RuntimeError(f"{workdir} is in use by another trainer ({holder}); wait for it to "
                         "end, or use another --workdir.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    yield


def write_atomically(path: str, text: str) -> None:
  """Writes `path` through a temporary file and a rename: a kill mid-write leaves the old file
  or the new one, never a truncated one that would block a resume or a reader."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  os.replace(tmp, path)


def read_final_eval(workdir: str) -> dict | None:
  """WORKDIR/final_eval.json, the trainer's evaluation of its last step ({"step": N,
  "<evaluator>/<metric>": value, ...}); None if there is none."""
  path = os.path.join(workdir, FINAL_EVAL)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    try:
      results = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}); delete it to evaluate the run "
                       "again.") from e
  if not isinstance(results, dict) or "step" not in results:
    raise ValueError(f"{path} is not a trainer's final evaluation (no 'step'); delete it to "
                     "evaluate the run again.")
  return results
