"""One batched matmul against the same FLOPs as independent slices, on the CPU backend.

    python -m benchmarks.batched_matmul --shape 96,197,64 --groups 1,2,4

ViT-Ti/16's attention logits at batch 32 are a [96, 197, 64] x [96, 64, 197] float32 matmul
(batch x heads = 96). XLA:CPU runs a matmul with batch dimensions on one thread; its runtime
runs independent operations side by side. So the same matmul is timed as one batched matmul
(groups 1) and as G independent matmuls over slices of the batch, returned separately (no
concatenation, which would make them one buffer). Each variant: median of `--calls` calls per
round, rounds alternating between the variants; printed: median over rounds (min, max) and
GFLOP/s. `luab_jax/models/vit.py` (`CPU_ATTENTION_GROUPS`) uses the result.
"""

import argparse
import statistics
import time

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

from benchmarks import timing


def sliced_matmul(groups: int):
  def fn(a, b):
    size = a.shape[0] // groups
    return tuple(jnp.matmul(a[i:i + size], b[i:i + size]) for i in range(0, a.shape[0], size))
  return jax.jit(fn)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shape", default="96,197,64", help="BATCH,ROWS,CONTRACTION")
  parser.add_argument("--groups", default="1,2,4")
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--calls", type=int, default=15)
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()
  batch, rows, depth = (int(x) for x in args.shape.split(","))
  timing.emit({"kind": "header", "bench": "batched_matmul", **timing.machine("jax", "jaxlib")},
              args.out)
  a = jax.random.normal(jax.random.key(0), (batch, rows, depth))
  b = jax.random.normal(jax.random.key(1), (batch, depth, rows))
  variants = {int(g): sliced_matmul(int(g)) for g in args.groups.split(",")}
  for groups, fn in variants.items():
    if batch % groups:
      raise ValueError(f"--groups {groups} does not divide the batch {batch}.")
    jax.block_until_ready(fn(a, b))
  def median_call_s(groups):
    calls = []
    for _ in range(args.calls):
      start = time.perf_counter()
      jax.block_until_ready(variants[groups](a, b))
      calls.append(time.perf_counter() - start)
    return statistics.median(calls)

  times = timing.alternating(median_call_s, variants, rounds=args.rounds)
  flops = 2 * batch * rows * depth * rows
  for groups, t in times.items():
    median = statistics.median(t)
    timing.emit({"kind": "result", "bench": "batched_matmul", "shape": [batch, rows, depth],
                 "groups": groups, "ms": {"median": median * 1e3, "min": min(t) * 1e3,
                                          "max": max(t) * 1e3},
                 "gflops": flops / median / 1e9}, args.out)


if __name__ == "__main__":
  main()
