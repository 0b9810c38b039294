"""Ours: images/s and MFU of the real train step (train_step.py), on synthetic batches.

    python -m benchmarks.train_step --cases Ti/16@224:32,Ti/16@64:64 --lams 4,0

On a GPU (bfloat16 compute, cuDNN's fused attention beside the written-out one):

    python -m benchmarks.train_step --cases B/16@224:256 --dtype bfloat16 \
        --attention cudnn,xla --steps_per_call 10 --repeats 10 --datasheet_gflops 989000

Per case VARIANT@IMAGE_SIZE:BATCH: the demo config (configs/demo.py: soft-argmax point head,
AdamW, gradient clipping) with that ViT, 1000 classes, `--dtype` compute, on one device; the
batch is random uint8 images already on the device, so only the step is timed. Compile and
first step, `--warmup` untimed calls, then `--repeats` timed calls of `--steps_per_call` steps
each (a call waits for its last step's result). MFU = analytic model FLOPs per step
(`luab_jax.flops.train_step_flops`: forward x 3, no recomputation) / step time / peak, where the
peak is `--peak_gflops`, or else the best `--dtype` matmul rate (float32 accumulation) measured
here over square and ViT-shaped matmuls (`PEAK_SHAPES` on CPU, `ACCELERATOR_PEAK_SHAPES`
elsewhere, each best of 5; printed); `--datasheet_gflops` adds MFU against a vendor's peak.
lam=0 is the same program with the point loss weighted 0 (the point head still runs), so the
lam=4 / lam=0 difference is the cost of the regression loss's gradient; the head's share of
the model FLOPs is printed too, and the process's minor page faults per step (warm-up and timed
calls). glibc reads GLIBC_TUNABLES only at start: run this from a shell that sourced
launch/env.sh, as `compare_train_step` does for it (luab_jax/glibc_tunables.py; the header
prints the value, and a warning says when it lacks the defaults on CPU).
"""

import argparse
import resource
import sys
import time
import traceback

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from configs import demo
from luab_jax import flops as flops_lib
from luab_jax import glibc_tunables
from luab_jax import optim
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax import train_step as train_step_lib
from luab_jax.models import vit


def case_config(variant: str, image_size: int, batch: int, lam: float, dtype: str,
                attention: str | None = None):
  """The demo config with this ViT; `attention` None keeps the demo's (the CPU kernel)."""
  config = demo.get_config(f"variant={variant},image_size={image_size},lam={lam}")
  config.num_classes = 1000
  config.batch_size = batch
  config.model.dtype = dtype
  if attention:
    config.model.attention = attention
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


def build_step(config, compiler_options=None):
  """(run, analytic FLOPs per step): `run(steps=1)` makes that many jitted steps on a fixed
  random batch (state donated), then waits for the last one's metrics. `compiler_options`
  ({XLA debug option: value}, e.g. {"xla_gpu_enable_triton_gemm": False}) compile this step
  alone with them, so programs that differ only in XLA's options can share a process."""
  step, state, batch_sharding = make_step(config)
  b, s = config.batch_size, config.input.image_size
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),  # What the pipeline ships.
      "label": rng.integers(0, config.num_classes, b).astype(np.int32),
      "points": rng.random((b, 1, 2), np.float32),
      "point_weight": np.ones((b, 1), np.float32), "weight": np.ones(b, np.float32),
      "bad_points": np.zeros(b, np.int32)}, batch_sharding)
  if compiler_options:
    step = step.lower(state, batch).compile(compiler_options)
  box = [state]

  def run(steps=1):
    for _ in range(steps):
      box[0], metrics = step(box[0], batch)
    jax.block_until_ready(metrics)
  return run, flops_lib.train_step_flops(config)


# Square and ViT-shaped float32 matmuls: oneDNN runs some rectangular shapes (e.g. ViT-Ti/16's
# MLP, 6272 x 192 x 768) faster than a square 2048^3, so the peak is the best of several shapes.
PEAK_SHAPES = ((2048, 2048, 2048), (4096, 4096, 4096), (6272, 192, 768), (6272, 768, 192),
               (1568, 768, 3072), (1568, 3072, 768))
# On accelerators: a matmul large enough to fill the chip, and ViT-B/16's MLP at batch 256
# (256 x 197 tokens); each timed call runs it 10 times so launch overhead does not count.
ACCELERATOR_PEAK_SHAPES = ((8192, 8192, 8192), (50432, 768, 3072), (50432, 3072, 768))


def matmul_peak_gflops(shapes=None, dtype="float32") -> tuple[float, dict]:
  """(best GFLOP/s, {shape: GFLOP/s}) of `dtype` matmuls on the default device (float32
  accumulation): each shape's best of 5 timed calls after 2 warm-ups, on random inputs."""
  on_cpu = jax.default_backend() == "cpu"
  shapes = shapes or (PEAK_SHAPES if on_cpu else ACCELERATOR_PEAK_SHAPES)
  calls = 1 if on_cpu else 10
  rng = np.random.default_rng(0)
  rates = {}
  for m, k, n in shapes:
    a = jnp.asarray(rng.standard_normal((m, k), np.float32), dtype)
    b = jnp.asarray(rng.standard_normal((k, n), np.float32), dtype)
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))

    def run():
      for _ in range(calls):
        out = matmul(a, b)
      jax.block_until_ready(out)
    stats = timing.repeat(run, warmup=2, repeats=5)
    rates[f"{m}x{k}x{n}"] = calls * 2 * m * k * n / min(stats.times) / 1e9
  return max(rates.values()), rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="Ti/16@224:32")
  parser.add_argument("--lams", default="4", help="comma-separated point_lambda values")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--attention", default="cpu_fused",
                      help="comma-separated config.model.attention values (cpu_fused, the "
                      "demo config's, on CPU; xla; cudnn on GPUs)")
  parser.add_argument("--steps_per_call", type=int, default=1,
                      help="steps dispatched per timed call before waiting for the last one "
                      "(the trainer's loop waits only when it logs; >1 on accelerators)")
  parser.add_argument("--peak_gflops", type=float, default=None,
                      help="peak for MFU instead of the measured matmul peak")
  parser.add_argument("--datasheet_gflops", type=float, default=None,
                      help="also report MFU against this peak (e.g. 989000 for an H100/H200 "
                      "SXM in dense bfloat16)")
  parser.add_argument("--peak_only", action="store_true", help="measure the peak and stop")
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()

  device = jax.devices()[0]
  glibc_tunables.warn_if_missing(device.platform)
  timing.emit({"kind": "header", "bench": "train_step", **timing.machine(
      "jax", "jaxlib", "flax", "optax", accelerator=f"{device.platform}:{device.device_kind}"),
      "xla_flags": xla_flags.set_defaults()}, args.out)
  if args.peak_gflops:
    peak, per_shape, source = args.peak_gflops, {}, "given"
  else:
    peak, per_shape = matmul_peak_gflops(dtype=args.dtype)
    source = f"best {args.dtype} matmul measured here (M x K x N)"
  timing.emit({"kind": "peak", "gflops": peak, "source": source, "per_shape": per_shape},
              args.out)
  if args.peak_only:
    return
  failures = 0
  for case in args.cases.split(","):
    for attention, lam in ((a, float(x)) for a in args.attention.split(",")
                           for x in args.lams.split(",")):
      try:
        result = measure_case(case, attention, lam, peak, args)
      except Exception as e:  # pylint: disable=broad-except
        # Reported, counted, and the exit status says so: one case's failure (say cuDNN's
        # attention on a GPU that lacks it) must not hide the other cases' figures.
        traceback.print_exc()
        failures += 1
        result = {"kind": "error", "case": case, "attention": attention, "lam": lam,
                  "error": f"{type(e).__name__}: {e}"}
      timing.emit(result, args.out)
  if failures:
    sys.exit(f"{failures} case(s) failed; see the 'error' lines above.")


def measure_case(case: str, attention: str, lam: float, peak: float, args) -> dict:
  variant, size, batch = timing.parse_case(case)
  config = case_config(variant, size, batch, lam, args.dtype, attention)
  run, step_flops = build_step(config)
  start = time.perf_counter()
  run()
  compile_s = time.perf_counter() - start
  faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  stats = timing.repeat(lambda: run(args.steps_per_call), warmup=args.warmup,
                        repeats=args.repeats, steps_per_call=args.steps_per_call)
  # Includes the warm-up calls; what it shows is whether the step's temporaries are mapped
  # in 4 KiB pages at every step (luab_jax/glibc_tunables.py).
  faults = ((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
            / ((args.warmup + args.repeats) * args.steps_per_call))
  model = vit.parse_variant(variant)
  patches, width = (size // model["patch_size"]) ** 2, model["width"]
  # The soft-argmax point head: one logit per patch token and point (flops.py's count).
  head_share = (2 * patches * width * config.model.num_points
                / flops_lib.vit_forward_flops(config.model, config.num_classes))
  extra = ({"mfu_datasheet": step_flops / stats.median / (args.datasheet_gflops * 1e9),
            "datasheet_gflops": args.datasheet_gflops} if args.datasheet_gflops else {})
  return {"kind": "result", "impl": "ours", "case": case, "lam": lam, "dtype": args.dtype,
          "attention": attention, "steps_per_call": args.steps_per_call,
          "compile_and_first_step_s": compile_s,
          "step_s": {"median": stats.median, "min": min(stats.times), "max": max(stats.times)},
          "images_per_s": stats.rate(batch),
          "gflops_per_step": step_flops / 1e9, "page_faults_per_step": faults,
          "mfu": step_flops / stats.median / (peak * 1e9),
          "point_head_flop_share": head_share, **extra}


if __name__ == "__main__":
  main()
