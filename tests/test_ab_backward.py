"""benchmarks/ab_backward.py's variants: which hand-written gradients are plain, and XLA's
options for the compile."""

import jax
import pytest

from benchmarks import ab_backward
from benchmarks import train_step as train_step_bench


def test_lever_variants():
  assert ab_backward.parse_variant("all") == ([], {})
  assert ab_backward.parse_variant("base") == (list(ab_backward.PLAIN), {})
  assert ab_backward.parse_variant("-pos-gpu") == (["pos", "gpu"], {})
  kept_only_gelu, _ = ab_backward.parse_variant("+gelu")
  assert "gelu" not in kept_only_gelu and set(kept_only_gelu) == set(ab_backward.PLAIN) - {"gelu"}


def test_compiler_options_are_typed_for_xla():
  """XLA refuses "false" for a boolean option: true/false and numbers are passed as such."""
  levers, options = ab_backward.parse_variant(
      "-pos[xla_gpu_enable_triton_gemm=false; xla_gpu_autotune_level=0;xla_dump_to=/tmp/x]")
  assert levers == ["pos"]
  assert options == {"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0,
                     "xla_dump_to": "/tmp/x"}


@pytest.mark.parametrize("variant", ["-nope", "fast", "all[", "all[flag]", "all[=1]", ""])
def test_bad_variants_are_named(variant):
  with pytest.raises(ValueError, match="(?i)variant"):
    ab_backward.parse_variant(variant)


def test_build_step_compiles_with_the_options():
  """The options reach XLA's compile: an option XLA lacks is XLA's error, not ignored."""
  config = train_step_bench.case_config("Ti/16", 32, 2, 4.0, "float32", "xla")
  with pytest.raises(jax.errors.JaxRuntimeError, match="xla_no_such_option"):
    train_step_bench.build_step(config, {"xla_no_such_option": True})
