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


def test_loop_kernels_count_once_per_iteration():
  """A scan's body (model.scan_layers) runs once per iteration: its FLOPs count that often."""
  loop = lambda a, b: jax.lax.fori_loop(0, 5, lambda i, x: jnp.tanh(x @ b), a)
  found = gpu_hlo.kernels(_optimized_text(loop, (64, 32), (32, 32)))
  assert sum(k.flops * k.launches for k in found) == 5 * 2 * 64 * 32 * 32
  assert max(k.launches for k in found) == 5


def test_updating_a_slice_moves_the_slice_not_the_array():
  """A scan writing one row per iteration of a [1000, 256] buffer (as a scan's stacked
  gradients are written): each launch moves about a row, not the buffer."""
  def rows(buffer, row):
    return jax.lax.fori_loop(
        0, 8, lambda i, b: jax.lax.dynamic_update_slice(b, jnp.tanh(row) * i, (i, 0)), buffer)
  found = gpu_hlo.kernels(_optimized_text(rows, (1000, 256), (1, 256)))
  in_loop = [k for k in found if k.launches == 8]
  assert in_loop and all(k.bytes < 1000 * 256 * 4 / 10 for k in in_loop), in_loop


def test_loop_without_known_trip_count_is_an_error():
  def loop(a, b):
    bound = (b.sum() > 0).astype(jnp.int32) + 3  # Known only at run time.
    return jax.lax.while_loop(lambda c: c[0] < bound, lambda c: (c[0] + 1, jnp.tanh(c[1] @ b)),
                              (0, a))[1]
  with pytest.raises(ValueError, match="trip count"):
    gpu_hlo.kernels(_optimized_text(loop, (8, 4), (4, 4)))


def test_floor_is_the_slower_of_bytes_and_flops():
  kernel = gpu_hlo.Kernel("k", "k", bytes=10 ** 9, flops=10 ** 12)
  assert math.isclose(gpu_hlo.floor_ms(kernel, 1e12, 1e15), 1.0)   # 1 GB at 1 TB/s.
  assert math.isclose(gpu_hlo.floor_ms(kernel, 1e12, 1e14), 10.0)  # 1 TFLOP at 100 TFLOP/s.
  kernel.launches = 3
  assert math.isclose(gpu_hlo.floor_ms(kernel, 1e12, 1e14), 30.0)


def test_text_without_entry_is_an_error():
  with pytest.raises(ValueError, match="ENTRY"):
    gpu_hlo.kernels("HloModule m\n")


# A cuBLAS GEMM as XLA:GPU writes it (from benchmarks.gpu_hlo's H200 program, shapes shrunk):
# a tuple of the result and a workspace, the contraction in its backend config.
_CUBLAS_MODULE = """HloModule m

ENTRY %main (a: bf16[4,64,32], b: bf16[4,32,16]) -> bf16[4,64,16] {
  %a = bf16[4,64,32]{2,1,0} parameter(0)
  %b = bf16[4,32,16]{2,1,0} parameter(1)
  %cublas-lt-matmul.7 = (bf16[4,64,16]{2,1,0}, s8[4194304]{0}) custom-call(%a, %b), \
custom_call_target="__cublas$lt$matmul", backend_config={"operation_queue_id":"0",\
"gemm_backend_config":{"selected_algorithm":"0","alpha_real":1,"beta":0,"dot_dimension_numbers":\
{"lhs_contracting_dimensions":["2"],"rhs_contracting_dimensions":["1"],\
"lhs_batch_dimensions":["0"],"rhs_batch_dimensions":["0"]},"epilogue":"DEFAULT"}}
  ROOT %get-tuple-element.1 = bf16[4,64,16]{2,1,0} get-tuple-element(%cublas-lt-matmul.7), index=0
}
"""


def test_cublas_gemm_flops_and_bytes_without_workspace():
  """XLA's cuBLAS calls (Triton's GEMMs off) are GEMMs too: their FLOPs count, and their
  bytes are the operands and the result, not the scratch workspace."""
  (gemm,) = gpu_hlo.kernels(_CUBLAS_MODULE)
  assert gemm.kind == "__cublas$lt$matmul"
  assert gemm.flops == 2 * 4 * 64 * 16 * 32
  assert gemm.bytes == 2 * 4 * (64 * 32 + 32 * 16 + 64 * 16)
