"""JAX's persistent compilation cache: a resumed run loads its programs instead of compiling."""

import logging
import os

import jax
import pytest

from luab_jax import compilation_cache
from luab_jax import train
from tests.test_train import _config


class _Hits(logging.Handler):
  """Module names of JAX's "Persistent compilation cache hit for 'NAME'" debug records."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.names = []

  def emit(self, record):
    message = record.getMessage()
    if message.startswith("Persistent compilation cache hit"):
      self.names.append(message.split("'")[1])


@pytest.fixture
def cache_hits():
  logger = logging.getLogger("jax._src.compiler")
  handler, level = _Hits(), logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.DEBUG)
  yield handler.names
  logger.removeHandler(handler)
  logger.setLevel(level)


@pytest.fixture
def no_users_cache_dir(monkeypatch):
  """The defaults of a user who has not set JAX's cache directory (conftest.py sets one)."""
  session_dir = compilation_cache._users_dir[0]  # pylint: disable=protected-access
  monkeypatch.setattr(compilation_cache, "_users_dir", [None])
  yield
  compilation_cache.enable(session_dir)  # Later tests use the session's cache again.


def test_resumed_run_loads_the_train_step_from_the_workdir_cache(tiny_data_dir, tmp_path,
                                                                 cache_hits, no_users_cache_dir):
  workdir = str(tmp_path)
  cache = os.path.join(workdir, compilation_cache.DEFAULT_SUBDIR)
  config = _config(tiny_data_dir)
  config.evals = {}  # The train step is what a resume compiles again; evaluators add seconds.
  train.train_and_evaluate(config, workdir, stop_at_step=3)
  entries = set(os.listdir(cache))
  assert entries, "the first run wrote nothing to the cache"
  assert not any("train_step" in n for n in cache_hits)
  jax.clear_caches()  # As a new process would: nothing compiled in memory.
  train.train_and_evaluate(config, workdir)  # Resumes at step 3.
  assert any("train_step" in n for n in cache_hits), cache_hits


@pytest.mark.parametrize("users_dir", [None, "users"], ids=["default", "users_jax_setting"])
def test_cache_dir_from_config(tmp_path, monkeypatch, users_dir):
  # Unset, the work directory's own cache, unless JAX's setting (JAX_COMPILATION_CACHE_DIR)
  # names one, which then serves every work directory.
  users = users_dir and str(tmp_path / users_dir)
  monkeypatch.setattr(compilation_cache, "_users_dir", [users])
  config = _config(str(tmp_path))
  assert compilation_cache.cache_dir(config, "W") == (
      users or os.path.join("W", "compilation_cache"))
  config.compilation_cache_dir = ""
  assert compilation_cache.cache_dir(config, "W") is None
  config.compilation_cache_dir = str(tmp_path / "shared")
  assert compilation_cache.cache_dir(config, "W") == str(tmp_path / "shared")
