"""glibc malloc tunables for luab_jax processes on CPU hosts.

XLA:CPU allocates a compiled program's temporaries as one buffer per execution and frees it
when the execution ends: 1.07 GiB for the ViT-Ti/16 train step at batch 32. glibc serves an
allocation that large with a fresh anonymous mmap, so every step first-touches ~282,000 new
4 KiB pages: 0.5 s of kernel time per 1.7 s step on 2 cores (`benchmarks/train_step.py`
prints the page faults per step). With `glibc.malloc.hugetlb=1` glibc asks for transparent huge
pages on those mappings (madvise), and the same step faults ~1,000 times: ViT-Ti/16 train
steps 1.13x faster on 2 cores, median of 4 alternating rounds (BENCHMARKS.md, Train step);
timm's step gains nothing from it. Where the kernel's transparent huge pages are `never`,
or glibc is older than 2.35, the tunable does nothing.

glibc reads GLIBC_TUNABLES only when a process starts, so it cannot be set from Python inside
the process that needs it: `launch/env.sh` exports it for the launch scripts (and
everything started from them: Grain workers, tests, benchmarks), the benchmark drivers pass it
to the subprocesses they start (`with_defaults`, `environ`), and the trainer logs a warning on CPU when it is
missing (`warn_if_missing`). A tunable the user already set wins.
"""

import os

from absl import logging

DEFAULTS = ("glibc.malloc.hugetlb=1",)


def _absent(value: str) -> list[str]:
  """The defaults whose name GLIBC_TUNABLES `value` (colon-separated NAME=VALUE) lacks."""
  named = {item.split("=", 1)[0] for item in value.split(":") if item}
  return [d for d in DEFAULTS if d.split("=", 1)[0] not in named]


def with_defaults(value: str) -> str:
  """GLIBC_TUNABLES `value` plus each default it does not name."""
  return ":".join([item for item in value.split(":") if item] + _absent(value))


def environ(base=None) -> dict:
  """A copy of `base` (default os.environ) whose GLIBC_TUNABLES includes the defaults."""
  env = dict(os.environ if base is None else base)
  env["GLIBC_TUNABLES"] = with_defaults(env.get("GLIBC_TUNABLES", ""))
  return env


def missing(base=None) -> list[str]:
  """The defaults that GLIBC_TUNABLES (of `base`, default os.environ) does not name."""
  return _absent((os.environ if base is None else base).get("GLIBC_TUNABLES", ""))


def warn_if_missing(platform: str, base=None) -> bool:
  """On CPU, logs a warning naming the tunables this process started without; returns whether
  it warned."""
  absent = missing(base)
  if platform != "cpu" or not absent:
    return False
  logging.warning(
      "GLIBC_TUNABLES lacks %s: XLA:CPU maps each step's temporaries anew in 4 KiB pages "
      "(ViT-Ti/16 train steps ran 1.13x faster with it, BENCHMARKS.md). glibc reads it "
      "only at process start: launch through launch/env.sh, or export GLIBC_TUNABLES=%s.",
      ":".join(absent), environ(base)["GLIBC_TUNABLES"])
  return True
