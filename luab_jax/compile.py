"""Compiles the real train step for a TPU topology we do not have; reports memory and FLOPs.

  JAX_PLATFORMS=cpu python -m luab_jax.compile \
      --config configs/vit_b16_imagenet_ab.py --topology v5e:8x8 [--config.model.remat=full]

Needs libtpu (`pip install -r requirements.txt -r requirements-tpu.txt`, see README) but no TPU:
`jax.experimental.topologies.get_topology_desc` describes the topology's devices, the mesh of
`config.mesh` is built over them, and the train step of train_step.py is lowered on abstract
inputs (`jax.ShapeDtypeStruct` with the state's and the batch's shardings; no data is read and
no array is allocated) and compiled by XLA for that TPU generation. The report:

- memory per device from the compiled program (`memory_analysis()`): arguments (state and
  batch), outputs, temporaries, generated code, and their total (outputs that reuse the donated
  state's buffers counted once) against the chip's HBM (`HBM_GIB` below), and whether it fits;
- FLOPs per step from the compiler's `cost_analysis()` (per device, and times the devices)
  against the analytic model FLOPs of flops.py (3 x forward; remat adds a forward pass). XLA
  counts the body of a loop once, whatever its trip count: with `grad_accum_steps` > 1 or
  `model.scan_layers` the compiled figure is an undercount (the report says so).

The schedule's length does not change the compiled program, so durations given in epochs (which
need the dataset's size) are replaced by `config.total_steps` or, without it, 1000 steps.
"""

import dataclasses
import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

import jax
import jax.numpy as jnp

from luab_jax import config_args
from luab_jax import config_schema
from luab_jax import flops as flops_lib
from luab_jax import optim
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax import train_step as train_step_lib

# HBM per chip in GiB and peak bfloat16 TFLOP/s, from Google Cloud's TPU system-architecture
# pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e; checked 2026-11): v4 32 GiB, 275;
# v5e 16 GiB, 197; v5p 95 GiB, 459; v6e (Trillium) 32 GiB, 918. (Rechecked 2026-11-25: the pages
# say GB for v5e/v5p/v6e. What a program may use is less: the v4 compiler reports 30.75 GiB
# usable, and a program that needs more fails to compile with RESOURCE_EXHAUSTED.)
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
PEAK_TFLOPS = {"v4": 275, "v5e": 197, "v5p": 459, "v6e": 918}
_GIB = 2 ** 30


@dataclasses.dataclass
class Report:
  topology: str
  num_devices: int
  device_kind: str
  mesh: dict
  batch_size: int
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  total_bytes: int
  hbm_bytes: int
  fits: bool
  flops_per_device: float
  flops_per_step: float
  analytic_flops_per_step: float
  loops_counted_once: bool  # See `table`.

  def table(self) -> str:
    gib = lambda b: f"{b / _GIB:8.2f} GiB"
    lines = [
        f"topology {self.topology}: {self.num_devices} x {self.device_kind}, mesh {self.mesh}, "
        f"global batch {self.batch_size}",
        "memory per device (compiled):",
        f"  arguments        {gib(self.argument_bytes)}   (state + batch)",
        f"  outputs          {gib(self.output_bytes)}   ({gib(self.alias_bytes).strip()} "
        "reuse the donated state)",
        f"  temporaries      {gib(self.temp_bytes)}",
        f"  generated code   {gib(self.code_bytes)}",
        f"  total            {gib(self.total_bytes)}   of {gib(self.hbm_bytes).strip()} HBM "
        f"({100 * self.total_bytes / self.hbm_bytes:.0f}%): "
        f"{'FITS' if self.fits else 'DOES NOT FIT'}",
        "FLOPs per step:",
        f"  compiled         {self.flops_per_device:.3e} per device, "
        f"{self.flops_per_step:.3e} in all",
        f"  analytic model   {self.analytic_flops_per_step:.3e} (3 x forward; "
        f"compiled / analytic = {self.flops_per_step / self.analytic_flops_per_step:.2f})",
    ]
    if self.loops_counted_once:
      lines.append("  note: XLA's cost analysis counts a loop body once (grad_accum_steps > 1, "
                   "model.scan_layers): the compiled FLOPs are an undercount here")
    return "\n".join(lines)


def chip(topology: str) -> str:
  generation = topology.split(":")[0]
  if generation not in HBM_GIB:
    raise ValueError(f"--topology={topology!r}: the generation {generation!r} has no HBM entry; "
                     f"use one of {sorted(HBM_GIB)} as in 'v5e:4x4' (luab_jax/compile.py).")
  return generation


def _accelerator_type(topology: str) -> str:
  """"v5e:4x4" -> "v5litepod-16": Cloud TPU's name, which libtpu wants in TPU_ACCELERATOR_TYPE."""
  generation, _, dims = topology.partition(":")
  if not all(dim.isdigit() and int(dim) > 0 for dim in dims.split("x")):
    raise ValueError(f"--topology={topology!r}: expected GENERATION:AxB[xC], e.g. 'v5e:4x4'.")
  chips = 1
  for dim in dims.split("x"):
    chips *= int(dim)
  if generation in ("v4", "v5p"):  # Named by TensorCores: two per chip.
    return f"{generation}-{2 * chips}"
  return f"{'v5litepod' if generation == 'v5e' else generation}-{chips}"


def topology_devices(topology: str):
  """The devices of a TPU topology (no hardware needed; libtpu must be installed)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # Without these libtpu looks for a TPU VM's metadata and warns that it found none.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", _accelerator_type(topology))
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  kwargs = {}
  if chip(topology) in ("v4", "v5p"):
    # Two TensorCores per chip, used as one device ("megacore"), as jax.make_mesh requires and
    # as JAX runs on these chips; without it libtpu describes v4 as one device per core.
    kwargs["chip_config_name"] = "megacore"
  return topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs).devices


def abstract_batch(config, sharding):
  """The train batch's shapes (WORKSPACE.md, Conventions), laid out by `sharding`."""
  b, size, p = config.batch_size, config.input.image_size, config.model.get("num_points", 1)
  shapes = {"image": ((b, size, size, 3), jnp.uint8), "points": ((b, p, 2), jnp.float32),
            "point_weight": ((b, p), jnp.float32), "weight": ((b,), jnp.float32),
            "bad_points": ((b,), jnp.int32)}
  if config.loss.classification == "sigmoid":  # Multi-label data (COCO-AB) carries multi-hot.
    shapes["labels"] = ((b, config.num_classes), jnp.float32)
  else:
    shapes["label"] = ((b,), jnp.int32)
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for k, (shape, dtype) in shapes.items()}


def lower_train_step(config, mesh):
  """train_step.py's step for `config` on `mesh` (devices of any topology), lowered on abstract
  inputs: the state's and the batch's shapes with their shardings; nothing is allocated."""
  spec = train_state_lib.model_spec(config, mesh)
  tx, schedule = optim.make_optimizer(config.optax, config.get("total_steps") or 1000,
                                      config.get("warmup_steps") or 0)
  abstract = train_state_lib.abstract_train_state(spec, tx,
                                                  ema=config.get("ema_decay") is not None)
  shardings = train_state_lib.train_state_shardings(abstract, config, mesh)
  state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                       abstract, shardings)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  step = train_step_lib.jit_train_step(train_step_lib.make_train_step(config, spec, tx, schedule),
                                       shardings, batch_sharding, mesh)
  return step.lower(state, abstract_batch(config, batch_sharding))


def compile_report(config, topology: str) -> Report:
  """Lowers and compiles train_step.py's step for `topology`; see the module docstring."""
  config_schema.check_known_keys(config)
  generation = chip(topology)
  devices = topology_devices(topology)
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  shards = sharding_lib.check_batch_size(config.batch_size, mesh)  # Fails on divisibility.
  del shards
  per_device = config.batch_size // (mesh.size // mesh.shape[sharding_lib.MODEL_AXIS])
  train_step_lib.check_config(config, per_device)
  compiled = lower_train_step(config, mesh).compile()

  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0]
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           - memory.alias_size_in_bytes + memory.temp_size_in_bytes
           + memory.generated_code_size_in_bytes)
  hbm = HBM_GIB[generation] * _GIB
  per_device_flops = float(cost["flops"])
  return Report(
      topology=topology, num_devices=len(devices), device_kind=devices[0].device_kind,
      mesh=dict(mesh.shape), batch_size=config.batch_size,
      argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
      alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
      code_bytes=memory.generated_code_size_in_bytes, total_bytes=total, hbm_bytes=hbm,
      fits=total <= hbm, flops_per_device=per_device_flops,
      flops_per_step=per_device_flops * len(devices),
      analytic_flops_per_step=flops_lib.train_step_flops(config),
      loops_counted_once=(config.get("grad_accum_steps", 1) > 1
                          or bool(config.model.get("scan_layers", False))))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  report = compile_report(flags.FLAGS.config, flags.FLAGS.topology)
  print(report.table())
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "a", encoding="utf-8") as f:
      f.write(json.dumps(dataclasses.asdict(report)) + "\n")


if __name__ == "__main__":
  # A CPU host: JAX itself must not try to open a TPU; libtpu only compiles.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
  flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:4x4, v4:2x2x4, v5p:4x4x4.")
  flags.DEFINE_string("json", None, "Also append the report as one JSON line to this file.")
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main, flags_parser=config_args.parse_flags)
