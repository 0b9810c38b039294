"""benchmarks/gpu_hlo.py's reading of an optimized HLO module: kernels, bytes and FLOPs.

The GPU compile itself needs JAX's CUDA plugin (not in the test environment); the reader is
checked on XLA:CPU's optimized programs, which use the same HLO text.
"""

import math

import jax
import jax.numpy as jnp
import pytest

from benchmarks import gpu_hlo


def _optimized_text(fn, *shapes):
  args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
  return jax.jit(fn).lower(*args).compile().as_text()


def test_matmul_flops_and_bytes():
  text = _optimized_text(lambda a, b: jnp.tanh(a @ b), (64, 32), (32, 16))
  found = gpu_hlo.kernels(text)
  assert sum(k.flops for k in found) == 2 * 64 * 32 * 16
  # Every kernel reads its operands and writes its results: at least the inputs and output.
  assert sum(k.bytes for k in found) >= 4 * (64 * 32 + 32 * 16 + 64 * 16)
  assert all(k.kind and not k.kind[-1].isdigit() for k in found)


def test_batched_matmul_counts_the_batch():
  text = _optimized_text(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), (3, 8, 5), (3, 5, 7))
  assert sum(k.flops for k in gpu_hlo.kernels(text)) == 2 * 3 * 8 * 5 * 7


def test_floor_is_the_slower_of_bytes_and_flops():
  kernel = gpu_hlo.Kernel("k", "k", bytes=10 ** 9, flops=10 ** 12)
  assert math.isclose(gpu_hlo.floor_ms(kernel, 1e12, 1e15), 1.0)   # 1 GB at 1 TB/s.
  assert math.isclose(gpu_hlo.floor_ms(kernel, 1e12, 1e14), 10.0)  # 1 TFLOP at 100 TFLOP/s.


def test_text_without_entry_is_an_error():
  with pytest.raises(ValueError, match="ENTRY"):
    gpu_hlo.kernels("HloModule m\n")
