"""Test set-up: 8 simulated CPU devices, and one tiny prepared benchmark shared by all tests."""

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

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

TINY = "luab_shapes/tiny"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long checks, run by hand with `-m slow`.")


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


def pytest_sessionstart(session):
  # Grain reads its (absl) flags when it starts worker processes; the tools parse them via
  # app.run, the tests have no command line of their own.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
