"""Test set-up: 8 simulated CPU devices, one compilation cache per session, one tiny prepared
benchmark shared by all tests (per process: launch/test.sh runs two workers), and `run_job`,
commands run as one jax.distributed job of local processes."""

import os

# Must happen before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
# The trainer's own defaults (luab_jax/xla_flags.py), so that tests run what users run.
from luab_jax import xla_flags  # pylint: disable=g-import-not-at-top,wrong-import-position
xla_flags.set_defaults()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import shutil  # pylint: disable=g-import-not-at-top,wrong-import-position
import socket  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# One persistent compilation cache for every run in this pytest process, as a user's
# `JAX_COMPILATION_CACHE_DIR` would be: the many short training runs compile the same train
# step, state initialisation and evaluators, and would otherwise each compile them again into
# their own work directory's cache. Set before `luab_jax.compilation_cache` is imported, which
# takes it as the user's setting. Fresh per session (timings stay those of a cold start) and
# not inherited by subprocesses (multi-process and chaos runs keep their work directory's
# cache). tests/test_compilation_cache.py checks the default, per-work-directory cache.
_SESSION_COMPILATION_CACHE = tempfile.mkdtemp(prefix="luab_tests_jax_cache_")
jax.config.update("jax_compilation_cache_dir", _SESSION_COMPILATION_CACHE)

TINY = "luab_shapes/tiny"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long checks, run by hand with `-m slow`.")


def pytest_unconfigure(config):
  del config
  shutil.rmtree(_SESSION_COMPILATION_CACHE)


def pytest_collection_modifyitems(config, items):
  if config.getoption("-m"):
    return
  skip = pytest.mark.skip(reason="slow: run with `bash launch/test.sh -m slow`")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """luab_shapes/tiny prepared once as ArrayRecord for the whole session."""
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  core.prepare(TINY, data_dir)
  return data_dir


@pytest.fixture
def run_job(tmp_path):
  """Runs commands as the processes of one jax.distributed job on localhost, with the explicit
  coordinator variables of luab_jax/distributed.py and `devices` simulated CPU devices each;
  returns [(exit status, output)] per process (-9: killed, still running after `timeout`).
  Each process's output is also in `log_dir` (default: the test's tmp_path) as NAME{id}.log."""
  def run(commands, *, devices=2, timeout=240, name="process", log_dir=None):
    with socket.socket() as s:
      s.bind(("localhost", 0))
      port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = []
    for process_id, command in enumerate(commands):
      env = dict(os.environ, LUAB_COORDINATOR=f"localhost:{port}",
                 LUAB_NUM_PROCESSES=str(len(commands)), LUAB_PROCESS_ID=str(process_id),
                 JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                 PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
      log = open(os.path.join(log_dir or tmp_path, f"{name}{process_id}.log"), "w+",
                 encoding="utf-8")
      procs.append((subprocess.Popen([sys.executable, *command], env=env, cwd=root, stdout=log,
                                     stderr=subprocess.STDOUT), log))
    deadline, results = time.time() + timeout, []
    for proc, _ in procs:
      try:
        proc.wait(timeout=max(deadline - time.time(), 1))
      except subprocess.TimeoutExpired:
        break
    for proc, log in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      log.seek(0)
      results.append((proc.returncode, log.read()))
      log.close()
    return results
  return run


def pytest_sessionstart(session):
  # Grain reads its (absl) flags when it starts worker processes; the tools parse them via
  # app.run, the tests have no command line of their own.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
