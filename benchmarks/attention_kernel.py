"""One attention's forward + backward: the fused CPU kernel against the written-out attention.

    python -m benchmarks.attention_kernel --shape 32,197,3,64

Shape BATCH,TOKENS,HEADS,HEAD_DIM (the default is ViT-Ti/16 at 224 px, batch 32). Variants, each
jitted as value_and_grad of sum(attention(q, k, v) * w) with respect to q, k and v, from
[B, N, H, K] inputs as the projections produce them:
  cpu_fused  `luab_jax.models.cpu_attention.attention` (config.model.attention="cpu_fused");
  xla        what attention="xla" runs on one CPU device: q, k, v transposed to [B, H, N, K],
             `vit._attend_in_slices` (`CPU_ATTENTION_GROUPS` slices of the batch), transposed back.
Each round times `--calls` calls of each variant (median kept), rounds alternating; printed:
median over rounds (min, max) in ms. The outputs are compared once before timing.
"""

import argparse
import statistics
import time

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from luab_jax.models import cpu_attention
from luab_jax.models import vit


def written_out(q, k, v, scale):
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q * scale, k, v))
  mixed = vit._attend_in_slices(q, k, v, jnp.float32)  # pylint: disable=protected-access
  return mixed.transpose(0, 2, 1, 3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shape", default="32,197,3,64", help="BATCH,TOKENS,HEADS,HEAD_DIM")
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--calls", type=int, default=15)
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()
  shape = tuple(int(x) for x in args.shape.split(","))
  timing.emit({"kind": "header", "bench": "attention_kernel", **timing.machine("jax", "jaxlib")},
              args.out)
  q, k, v, w = (jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(0), 4))
  scale = shape[-1] ** -0.5
  variants = {
      name: jax.jit(jax.value_and_grad(lambda q, k, v, f=f: (f(q, k, v, scale) * w).sum(),
                                       argnums=(0, 1, 2)))
      for name, f in (("cpu_fused", cpu_attention.attention), ("xla", written_out))}
  (fused_loss, fused_grads), (xla_loss, xla_grads) = (f(q, k, v) for f in variants.values())
  np.testing.assert_allclose(fused_loss, xla_loss, rtol=1e-4)
  for got, want in zip(fused_grads, xla_grads):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)

  def median_call_s(name):
    calls = []
    for _ in range(args.calls):
      start = time.perf_counter()
      jax.block_until_ready(variants[name](q, k, v))
      calls.append(time.perf_counter() - start)
    return statistics.median(calls)

  times = timing.alternating(median_call_s, variants, rounds=args.rounds, warmup=1)
  for name, t in times.items():
    timing.emit({"kind": "result", "bench": "attention_kernel", "shape": list(shape),
                 "variant": name, "ms": {"median": statistics.median(t) * 1e3,
                                         "min": min(t) * 1e3, "max": max(t) * 1e3}}, args.out)


if __name__ == "__main__":
  main()
