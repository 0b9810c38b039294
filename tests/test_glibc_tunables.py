"""glibc malloc tunables: added once, never overriding the user's; launch/env.sh sets the same;
and they do what they are there for (XLA:CPU's temporaries mapped in huge pages)."""

import os
import re
import subprocess
import sys
import textwrap
from unittest import mock

import pytest

from luab_jax import glibc_tunables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_added_to_the_users_tunables():
  assert glibc_tunables.with_defaults("") == ":".join(glibc_tunables.DEFAULTS)
  given = "glibc.malloc.arena_max=2"
  value = glibc_tunables.with_defaults(given)
  assert value.split(":") == [given, *glibc_tunables.DEFAULTS]
  assert glibc_tunables.with_defaults(value) == value  # Idempotent.


def test_a_tunable_the_user_set_is_kept():
  assert glibc_tunables.with_defaults("glibc.malloc.hugetlb=0") == "glibc.malloc.hugetlb=0"
  env = glibc_tunables.environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", "OTHER": "x"})
  assert env == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", "OTHER": "x"}
  assert glibc_tunables.missing(env) == []


def test_warning_only_on_cpu_and_only_when_missing():
  assert glibc_tunables.missing({}) == list(glibc_tunables.DEFAULTS)
  with mock.patch.object(glibc_tunables.logging, "warning") as warning:
    assert glibc_tunables.warn_if_missing("cpu", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  message = warning.call_args.args[0] % warning.call_args.args[1:]
  assert "export GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1" in message
  assert not glibc_tunables.warn_if_missing("tpu", {})
  assert not glibc_tunables.warn_if_missing("cpu", glibc_tunables.environ({}))


@pytest.mark.parametrize("given", [None, "", "glibc.malloc.arena_max=2",
                                   "glibc.malloc.hugetlb=0"])
def test_env_sh_sets_what_the_module_sets(given):
  """launch/env.sh's GLIBC_TUNABLES block (run by bash on its own: sourcing the whole file
  would install a virtual environment) gives what `with_defaults` gives."""
  with open(os.path.join(ROOT, "launch", "env.sh"), encoding="utf-8") as f:
    block, = re.findall(r'^case ":\$\{GLIBC_TUNABLES.*?^esac$', f.read(), re.M | re.S)
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if given is not None:
    env["GLIBC_TUNABLES"] = given
  out = subprocess.run(["bash", "-c", block + '\nprintf %s "$GLIBC_TUNABLES"'], env=env,
                       capture_output=True, text=True, check=True).stdout
  assert out == glibc_tunables.with_defaults(given or "")


_FAULTS_PER_CALL = textwrap.dedent("""
    import resource, jax, jax.numpy as jnp
    # The loop's carry is a 128 MiB temporary of the compiled program.
    f = jax.jit(lambda x: jax.lax.fori_loop(0, 2, lambda i, c: c * 1.5 + x, x).sum())
    x = jnp.ones((8192, 4096))
    f(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
      f(x).block_until_ready()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
""")


def _transparent_huge_pages_mode() -> str:
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="utf-8") as f:
      return re.search(r"\[(\w+)\]", f.read()).group(1)
  except (OSError, AttributeError):
    return "unavailable"


@pytest.mark.skipif(_transparent_huge_pages_mode() != "madvise",
                    reason="the tunable changes page faults only where THP is 'madvise' "
                    "('always' already gives huge pages, 'never' none)")
def test_the_defaults_map_xla_temporaries_in_huge_pages():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["XLA_FLAGS"] = ""  # One device: the program as the trainer runs it on a CPU host.

  def faults(environ):
    out = subprocess.run([sys.executable, "-c", _FAULTS_PER_CALL], env=environ,
                         capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])

  without, with_defaults = faults(env), faults(glibc_tunables.environ(env))
  assert without > 20_000  # 4 KiB pages: 128 MiB of fresh mappings per call.
  assert with_defaults < without / 10, (without, with_defaults)
