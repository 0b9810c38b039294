"""Ours: images/s and MFU of the real train step (train_step.py), on synthetic batches.

    python -m benchmarks.train_step --cases Ti/16@224:32,Ti/16@64:64 --lams 4,0

Per case VARIANT@IMAGE_SIZE:BATCH: the demo config (configs/demo.py: soft-argmax point head,
AdamW, gradient clipping, float32) with that ViT, 1000 classes, on one device; the batch is
random and already on the device, so only the step is timed. Compile, `--warmup` untimed steps,
then `--repeats` timed steps (each waits for its result). MFU = analytic model FLOPs per step
(`luab_jax.flops.train_step_flops`: forward x 3, no recomputation) / step time / peak, where the
peak is `--peak_gflops`, or else the best float32 matmul rate measured here over square and
ViT-shaped matmuls (`PEAK_SHAPES`, each best of 5; printed). lam=0 is the same program with the point loss weighted 0 (the point head
still runs), so the lam=4 / lam=0 difference is the cost of the regression loss's gradient;
the head's share of the model FLOPs is printed too.
"""

import argparse
import time

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from configs import demo
from luab_jax import flops as flops_lib
from luab_jax import optim
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax import train_step as train_step_lib
from luab_jax.models import vit


def case_config(variant: str, image_size: int, batch: int, lam: float, dtype: str):
  config = demo.get_config(f"variant={variant},image_size={image_size},lam={lam}")
  config.num_classes = 1000
  config.batch_size = batch
  config.model.dtype = dtype
  config.mesh = [("data", 1), ("fsdp", 1), ("model", 1)]
  return config


def make_step(config, devices=None):
  """(jitted step, initial state, batch sharding) on a mesh of `devices` (default: one)."""
  mesh = sharding_lib.make_mesh(config.mesh, devices or jax.devices()[:1])
  spec = train_state_lib.model_spec(config, mesh)
  tx, schedule = optim.make_optimizer(config.optax, 1000, 10)
  abstract = train_state_lib.abstract_train_state(spec, tx)
  shardings = train_state_lib.train_state_shardings(abstract, config, mesh)
  state = train_state_lib.init_train_state(spec, tx, 0, shardings)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  step = train_step_lib.jit_train_step(
      train_step_lib.make_train_step(config, spec, tx, schedule), shardings, batch_sharding, mesh)
  return step, state, batch_sharding


def build_step(config):
  """(run_one_step, analytic FLOPs): the jitted step on a fixed random batch, state donated."""
  step, state, batch_sharding = make_step(config)
  b, s = config.batch_size, config.input.image_size
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),  # What the pipeline ships.
      "label": rng.integers(0, config.num_classes, b).astype(np.int32),
      "points": rng.random((b, 1, 2), np.float32),
      "point_weight": np.ones((b, 1), np.float32), "weight": np.ones(b, np.float32),
      "bad_points": np.zeros(b, np.int32)}, batch_sharding)
  box = [state]

  def run():
    box[0], metrics = step(box[0], batch)
    jax.block_until_ready(metrics)
  return run, flops_lib.train_step_flops(config)


# Square and ViT-shaped float32 matmuls: oneDNN runs some rectangular shapes (e.g. ViT-Ti/16's
# MLP, 6272 x 192 x 768) faster than a square 2048^3, so the peak is the best of several shapes.
PEAK_SHAPES = ((2048, 2048, 2048), (4096, 4096, 4096), (6272, 192, 768), (6272, 768, 192),
               (1568, 768, 3072), (1568, 3072, 768))


def matmul_peak_gflops(shapes=PEAK_SHAPES) -> tuple[float, dict]:
  """(best GFLOP/s, {shape: GFLOP/s}): each shape's best of 5 runs after 2 warm-ups."""
  rng = np.random.default_rng(0)
  rates = {}
  for m, k, n in shapes:
    a = jnp.asarray(rng.standard_normal((m, k), np.float32))
    b = jnp.asarray(rng.standard_normal((k, n), np.float32))
    matmul = jax.jit(jnp.matmul)
    stats = timing.repeat(lambda: jax.block_until_ready(matmul(a, b)), warmup=2, repeats=5)
    rates[f"{m}x{k}x{n}"] = 2 * m * k * n / min(stats.times) / 1e9
  return max(rates.values()), rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="Ti/16@224:32")
  parser.add_argument("--lams", default="4", help="comma-separated point_lambda values")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--peak_gflops", type=float, default=None)
  parser.add_argument("--peak_only", action="store_true", help="measure the peak and stop")
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()

  device = jax.devices()[0]
  timing.emit({"kind": "header", "bench": "train_step", **timing.machine(
      "jax", "jaxlib", "flax", "optax", accelerator=f"{device.platform}:{device.device_kind}"),
      "xla_flags": xla_flags.set_defaults()}, args.out)
  if args.peak_gflops:
    peak, per_shape, source = args.peak_gflops, {}, "given"
  else:
    peak, per_shape = matmul_peak_gflops()
    source = "best float32 matmul measured here (M x K x N)"
  timing.emit({"kind": "peak", "gflops": peak, "source": source, "per_shape": per_shape},
              args.out)
  if args.peak_only:
    return
  for case in args.cases.split(","):
    variant, size, batch = timing.parse_case(case)
    for lam in (float(x) for x in args.lams.split(",")):
      config = case_config(variant, size, batch, lam, args.dtype)
      run, step_flops = build_step(config)
      start = time.perf_counter()
      run()
      compile_s = time.perf_counter() - start
      stats = timing.repeat(run, warmup=args.warmup, repeats=args.repeats)
      patches = (size // vit.parse_variant(variant)["patch_size"]) ** 2
      width = vit.parse_variant(variant)["width"]
      # The soft-argmax point head: one logit per patch token and point (flops.py's count).
      head_share = (2 * patches * width * config.model.num_points
                    / flops_lib.vit_forward_flops(config.model, config.num_classes))
      timing.emit({"kind": "result", "impl": "ours", "case": case, "lam": lam,
                   "dtype": args.dtype, "compile_and_first_step_s": compile_s,
                   "step_s": {"median": stats.median, "min": min(stats.times),
                              "max": max(stats.times)},
                   "images_per_s": stats.rate(batch),
                   "gflops_per_step": step_flops / 1e9,
                   "mfu": step_flops / stats.median / (peak * 1e9),
                   "point_head_flop_share": head_share}, args.out)


if __name__ == "__main__":
  main()
