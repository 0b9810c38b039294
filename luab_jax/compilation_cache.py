"""JAX's persistent compilation cache for the trainer and the evaluate tool.

A resumed job (preemption, crash, a longer schedule) compiles the same programs again: the
train step, the state's initialisation or restore, the evaluators. With the cache the second
run loads them from disk instead. `config.compilation_cache_dir` says where:

  unset / None   WORKDIR/compilation_cache (the run's own work directory), unless JAX's own
                 setting (`JAX_COMPILATION_CACHE_DIR` or `jax.config.jax_compilation_cache_dir`)
                 names a directory, which is then used as it is (e.g. one cache for many runs);
  "PATH"         that directory (local or anything JAX's cache can open, e.g. gs://);
  ""             no persistent cache.

The evaluate tool uses the cache of the first work directory it evaluates (by the same rule, on
that run's config).

Thresholds: JAX writes only programs that took at least
`jax_persistent_cache_min_compile_time_secs` (default 1 s) to compile. Here it is 0 unless the
`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` environment variable sets it: the evaluators' and
the state's small programs each take a fraction of a second, but there are dozens of them and
together they are a large part of a CPU run's start-up. The entry-size threshold is JAX's (no
minimum). JAX's in-memory caches still apply within one process.

The cache is trusted code: like JAX, do not point it at a directory others may write to.
"""

import os

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache
from absl import logging

DEFAULT_SUBDIR = "compilation_cache"
_MIN_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
# What JAX's own setting was before we first changed it (None: not set by the user).
_users_dir = [jax.config.jax_compilation_cache_dir]


def cache_dir(config, workdir: str) -> str | None:
  """The directory `config.compilation_cache_dir` selects for `workdir` (module docstring)."""
  value = config.get("compilation_cache_dir", None)
  if value is None:
    return _users_dir[0] or os.path.join(workdir, DEFAULT_SUBDIR)
  return os.path.expanduser(value) if value else None


def enable(path: str | None) -> None:
  """Points JAX's persistent cache at `path` (None: off) for the compilations that follow.

  JAX opens its cache once per process, at the first compilation; to switch directories within
  one process (tests, a tool run twice) it is reset here.
  """
  if _MIN_TIME_ENV not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  logging.info("Persistent compilation cache: %s.", path or "off")
  if path == jax.config.jax_compilation_cache_dir:
    return
  if path is not None and "://" not in path:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      raise OSError(f"config.compilation_cache_dir (or the work directory's cache) {path!r}: "
                    f"{e}") from e
  jax.config.update("jax_compilation_cache_dir", path)
  jax_cache.reset_cache()


def setup(config, workdir: str) -> str | None:
  """`enable(cache_dir(config, workdir))`; returns the directory (None: off)."""
  path = cache_dir(config, workdir)
  enable(path)
  return path
