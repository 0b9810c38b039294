"""Fused multi-head attention for XLA:CPU (config.model.attention="cpu_fused").

XLA:CPU runs the attention's batched matmuls ([B x H] products of N x K by K x N) on one thread
each, transposes q, k and v into [B, H, N, K] first, and runs the softmax as separate passes;
on ViT-Ti/16 at 224 px that was the largest share of the gap to PyTorch, whose CPU attention is
one fused kernel (BENCHMARKS.md, Train step). `attention` here is such a kernel:
`cpu_attention.cc`, called through the XLA FFI, computes softmax(scale q k^T) v for every
(batch, head) pair as one task on XLA's own thread pool, reading q, k and v in the projections'
[B, N, H, K] layout, with single-threaded OpenBLAS sgemm calls (the scipy-openblas32 wheel) and a
vectorised softmax; the backward pass is a second handler. One ViT-Ti/16 attention's forward +
backward at batch 32: 22.6 ms vs 51.4 ms for the written-out attention in four batch slices
(`python -m benchmarks.attention_kernel`); the train step 1.07x faster (BENCHMARKS.md).

The library is compiled on first use in a process (about 3 s, `$CXX` or g++, -O3
-march=native) into a cache directory, `$LUAB_KERNEL_CACHE` or ~/.cache/luab_jax, under a name
that hashes the source, the flags, jaxlib's version, the OpenBLAS wheel and this CPU's feature
flags, so a shared home directory serves machines of different CPUs; concurrent processes
wait on a file lock. A missing compiler is an error that says which config key to change.

float32 only, programs for CPU only; `SelfAttention` checks both. On a mesh of several CPU
devices it runs per shard under `jax.shard_map` (batch over the data axes, heads over "model":
each (batch, head) pair is independent).
"""

import ctypes
import fcntl
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = pathlib.Path(__file__).with_name("cpu_attention.cc")
_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-std=c++17", "-shared",
          "-fPIC")
_FORWARD, _BACKWARD = "luab_cpu_attention_forward", "luab_cpu_attention_backward"


def _cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("LUAB_KERNEL_CACHE")
                      or pathlib.Path.home() / ".cache" / "luab_jax")


def _cpu_features() -> str:
  """This CPU's feature flags (what -march=native compiles for) from /proc/cpuinfo; where there
  is no /proc (macOS), the processor's name."""
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  return platform.processor() or platform.machine()


def _openblas():
  import scipy_openblas32  # pylint: disable=g-import-not-at-top
  return scipy_openblas32


def library_path() -> pathlib.Path:
  """The compiled library for this source, toolchain and CPU, built if not cached yet."""
  compiler = os.environ.get("CXX", "g++")
  blas = _openblas()
  key = hashlib.sha256("\n".join([
      SOURCE.read_text(), compiler, " ".join(_FLAGS), jaxlib.__version__, blas.__version__,
      _cpu_features()]).encode()).hexdigest()[:16]
  cache = _cache_dir()
  target = cache / f"cpu_attention-{key}.so"
  if target.exists():
    return target
  if shutil.which(compiler) is None:
    raise RuntimeError(
        f"config.model.attention='cpu_fused' compiles {SOURCE.name} on first use and needs a "
        f"C++ compiler: {compiler!r} (the CXX environment variable) was not found. Install g++ "
        f"or set config.model.attention='xla'.")
  cache.mkdir(parents=True, exist_ok=True)
  with open(cache / "build.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Another process may be building the same library.
    if target.exists():
      return target
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
      built = pathlib.Path(tmp) / target.name
      command = [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(built),
                 f"-L{blas.get_lib_dir()}", f"-l{blas.get_library()}",
                 f"-Wl,-rpath,{blas.get_lib_dir()}"]
      result = subprocess.run(command, capture_output=True, text=True, check=False)
      if result.returncode != 0:
        raise RuntimeError(f"Compiling {SOURCE} failed (config.model.attention='cpu_fused'):\n"
                           f"{' '.join(command)}\n{result.stderr}")
      os.replace(built, target)
  return target


@functools.cache
def _register() -> None:
  library = ctypes.cdll.LoadLibrary(str(library_path()))
  for name, symbol in ((_FORWARD, library.LuabAttentionForward),
                       (_BACKWARD, library.LuabAttentionBackward)):
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")


def _call(target: str, out_types, *operands, scale: float):
  """One call of a handler of the library (registered on first use)."""
  _register()
  return jax.ffi.ffi_call(target, out_types)(*operands, scale=np.float32(scale))


def _forward(q, k, v, scale):
  batch, length, heads, _ = q.shape
  out_types = (jax.ShapeDtypeStruct(q.shape, q.dtype),
               jax.ShapeDtypeStruct((batch, heads, length, length), q.dtype))
  return _call(_FORWARD, out_types, q, k, v, scale=scale)


def attention(q, k, v, scale: float, spec: jax.sharding.PartitionSpec | None = None):
  """softmax(scale * q k^T) v per (batch, head); q, k, v and the result float32 [B, N, H, K].

  `spec`: how q, k, v and the result are sharded over the mesh in context (batch and heads
  axes only); with a mesh of several devices the kernel runs per shard under `jax.shard_map`.
  """
  for name, x in (("q", q), ("k", k), ("v", v)):
    if x.dtype != jnp.float32 or x.ndim != 4 or x.shape != q.shape:
      raise ValueError(f"The cpu_fused attention takes float32 [B, N, H, K] q, k and v of one "
                       f"shape; {name} is {x.dtype} {x.shape} (q: {q.shape}).")
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1 or spec is None:
    return _attention(q, k, v, scale)
  # check_vma=False: the FFI call has no rule for which mesh axes its result varies over.
  return jax.shard_map(lambda q, k, v: _attention(q, k, v, scale), mesh=mesh,
                       in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(q, k, v, scale):
  return _forward(q, k, v, scale)[0]


def _attention_fwd(q, k, v, scale):
  out, probs = _forward(q, k, v, scale)
  return out, (q, k, v, probs)


def _attention_bwd(scale, residuals, grad_out):
  q, k, v, probs = residuals
  out_types = (jax.ShapeDtypeStruct(q.shape, q.dtype),) * 3
  return tuple(_call(_BACKWARD, out_types, q, k, v, probs, grad_out, scale=scale))


_attention.defvjp(_attention_fwd, _attention_bwd)

