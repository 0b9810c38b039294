"""A run's work directory: a path every process of the job sees, used by one trainer at a time.

The trainer and the evaluator write it with local file I/O (config.json, metrics, the Orbax
checkpoints under an absolute path), so a URL such as gs://BUCKET/x would silently become a
local `./gs:/BUCKET/x` on each host: it is refused. A bucket is used by mounting it on every
host (e.g. gcsfuse) and passing the mount's path.

Two trainers in one work directory would interleave their metrics and delete each other's
checkpoint writes in progress, so process 0 of a training job holds an exclusive lock on
`WORKDIR/.lock` (an OS lock: released when the process ends, however it ends). A file system
without locks (some network mounts) gets a warning and no lock.
"""

import contextlib
import fcntl
import os
import re
import socket

from absl import logging

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
LOCK_FILE = ".lock"


def check_path(path: str, *, flag: str = "--workdir") -> None:
  """A local path (module docstring), and a directory if it exists."""
  if _URL.match(path):
    raise ValueError(
        f"{flag} {path}: a URL. It must be a path that every process of the job sees (local, "
        "or a bucket mounted on every host, e.g. with gcsfuse): the trainer and the evaluator "
        "write it with local file I/O.")
  if os.path.exists(path) and not os.path.isdir(path):
    raise NotADirectoryError(f"{flag} {path} is a file, not a directory.")


@contextlib.contextmanager
def lock(workdir: str):
  """`with lock(workdir):` holds WORKDIR/.lock exclusively, or raises naming its holder."""
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, "a+", encoding="utf-8") as f:  # Closing it releases the lock.
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "unknown process"
      raise RuntimeError(f"{workdir} is in use by another trainer ({holder}); wait for it to "
                         "end, or use another --workdir.") from None
    except OSError as e:  # No locks on this file system.
      logging.warning("Cannot lock %s (%s): nothing stops a second trainer in this work "
                      "directory.", path, e)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    yield
