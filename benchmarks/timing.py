"""Shared by every benchmark: the machine description, timed repetitions and the printout.

Depends on the standard library only, so that the peer scripts (which run in `.venv-bench`,
without JAX) print the same header and statistics as ours.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata


@dataclasses.dataclass
class Stats:
  """Seconds per repetition after warm-up."""
  times: list[float]

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  def rate(self, items: float) -> dict:
    """items per second: median (from the median time), min and max over the repetitions."""
    return {"median": items / self.median, "min": items / max(self.times),
            "max": items / min(self.times)}


def parse_case(text: str) -> tuple[str, int, int]:
  """A train-step benchmark case "VARIANT@IMAGE_SIZE:BATCH", e.g. "Ti/16@224:32"."""
  variant, _, rest = text.partition("@")
  size, _, batch = rest.partition(":")
  if not (variant and size.isdigit() and batch.isdigit()):
    raise ValueError(f"Benchmark case {text!r}: expected VARIANT@IMAGE_SIZE:BATCH, "
                     "e.g. 'Ti/16@224:32'.")
  return variant, int(size), int(batch)


def repeat(fn, *, warmup: int, repeats: int, steps_per_call: int = 1) -> Stats:
  """Calls fn() warmup times untimed, then `repeats` times timed; fn must block until done.

  When one call makes `steps_per_call` steps (dispatched back to back, one wait at the end, as
  on accelerators), the times are per step: each call's time / steps_per_call.
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) / steps_per_call)
  return Stats(times)


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def usable_cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def versions(*packages: str) -> dict:
  found = {"python": platform.python_version()}
  for name in packages:
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return found


def command_line() -> str:
  """How this process was started, as one would type it from the repository root."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
  return " ".join(shlex.quote(a) for a in [*head, *sys.argv[1:]])


def machine(*packages: str, accelerator: str | None = None) -> dict:
  """The header every benchmark prints: what ran, where, with which versions."""
  return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
          "command": command_line(),
          "cpu": cpu_model(), "cpu_cores": usable_cores(),
          "accelerator": accelerator or "none", "versions": versions(*packages),
          # glibc's malloc settings change XLA:CPU step times (luab_jax/glibc_tunables.py).
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def alternating(measure, names, *, rounds: int, warmup: int = 0,
                on_round=None) -> dict[str, list[float]]:
  """{name: [measure(name) of each timed round]}, the names taken in alternating order.

  Round r measures every name, in `names` order when r is even and reversed when odd, so that
  drift of a shared machine falls on all of them; the first `warmup` rounds are not kept.
  `measure(name)` returns the figure (e.g. seconds); `on_round(r, {name: figure})` is called
  after each kept round, so a run stopped at a time limit keeps what it printed.
  """
  names = list(names)
  kept = {name: [] for name in names}
  for r in range(warmup + rounds):
    figures = {name: measure(name) for name in (names if r % 2 == 0 else names[::-1])}
    if r < warmup:
      continue
    for name in names:
      kept[name].append(figures[name])
    if on_round is not None:
      on_round(r - warmup, figures)
  return kept


def emit(record: dict, out: str | None = None) -> None:
  """Prints one JSON line (what the drivers parse) and appends it to `out` if given."""
  line = json.dumps(record, sort_keys=True)
  print(line, flush=True)
  if out:
    with open(out, "a") as f:
      f.write(line + "\n")


@contextlib.contextmanager
def locked(path: str | None):
  """Holds the flock on `path` (the one every benchmark on a shared machine takes); no-op if ''."""
  if not path:
    yield
    return
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def subprocess_env(root: str, glibc_tunables: str) -> dict:
  """The environment of a benchmark subprocess run from the repository at `root`: this one's,
  with `root` on PYTHONPATH, TensorFlow quiet, and GLIBC_TUNABLES exactly `glibc_tunables`
  (unset when empty), whatever the calling shell exported: it changes XLA:CPU step times
  (luab_jax/glibc_tunables.py), so each side of a comparison gets its own on purpose."""
  env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("GLIBC_TUNABLES", None)
  if glibc_tunables:
    env["GLIBC_TUNABLES"] = glibc_tunables
  return env


def run_json(cmd: list[str], env: dict, cwd: str) -> list[dict]:
  """Runs a benchmark subprocess and returns the JSON lines it printed; fails loudly."""
  done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
  if done.returncode:
    sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
    raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
  return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
