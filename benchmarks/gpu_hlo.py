"""The train step compiled for a GPU we do not have, and a floor on its time from its kernels.

    python -m benchmarks.gpu_hlo --cases B/16@224:256 --attention cudnn \
        --variants all,-pos,-gpu,-pos-gpu
    python -m benchmarks.gpu_hlo --set model.scan_layers=True    # config overrides
    python -m benchmarks.gpu_hlo --variants "all,all[xla_gpu_enable_triton_gemm=false]"

Needs JAX's CUDA plugin but no GPU (nor driver): a venv with requirements-gpu.txt, e.g.
`LUAB_VENV=.venv-gpu LUAB_REQUIREMENTS="requirements.txt requirements-gpu.txt" source
launch/env.sh`. The device is described by `TARGETS` (an H200 by default), the train step of
`benchmarks/train_step.py`'s cases (demo recipe, 1000 classes, `--dtype` compute) is lowered on
abstract inputs (`luab_jax.compile.lower_train_step`) and XLA:GPU compiles it as it would on
that GPU, except for autotuning, which needs the device (GEMM tilings are XLA's defaults).
Variants are `benchmarks/ab_backward.py`'s (its hand-written backward passes replaced by the
plain formulas, and XLA's options).

From the optimized program (`compiled.as_text()`), each kernel the step launches (a fusion, a
library call, a copy; a loop's, as with `model.scan_layers`, once per iteration) with the bytes
it reads and writes (its operands and results, each once, except that slicing an array or
updating a slice of it in place counts the slice, and a cuBLAS GEMM's workspace does not count)
and its FLOPs (the dots it contains, or the cuBLAS GEMM's; cuDNN attention 4 B H N^2 K forward,
10 B H N^2 K backward, which recomputes the logits). Its floor is
max(bytes / `--bandwidth_gbps`, FLOPs / `--matmul_tflops`); the step's floor is their sum (no two
kernels overlap, none faster than its roofline). A model, not a measurement: BENCHMARKS.md
(GPU) compares it with step times measured on an H200.
"""

import argparse
import ast
import collections
import dataclasses
import math
import os
import re
import time
import typing

import jax

from benchmarks import ab_backward
from benchmarks import timing
from benchmarks import train_step as train_step_bench
from luab_jax import compile as compile_lib
from luab_jax import flops as flops_lib
from luab_jax import sharding as sharding_lib

# XLA's GpuTargetConfig (text proto) of an H200 SXM: Hopper (compute capability 9.0), 132
# multiprocessors, 1.98 GHz, 50 MiB of L2, 4.8 TB/s (datasheet), 143,771 MiB of memory (what
# nvidia-smi reported on the H200 of BENCHMARKS.md, GPU); cuDNN 9.28 and CUDA 13.0, what pip
# installs with jax[cuda13]. H100 SXM: the same chip with 80 GB at 3.35 TB/s.
_HOPPER = """
gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: {bandwidth} l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: {memory} shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 minor: 0 }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 28 }}
runtime_version {{ major: 13 minor: 0 }}
device_description_str: "{name}"
"""
TARGETS = {
    "h200": _HOPPER.format(bandwidth=4_800_000_000_000, memory=143_771 * 2 ** 20,
                           name="NVIDIA H200"),
    "h100": _HOPPER.format(bandwidth=3_352_320_000_000, memory=84_929_347_584,
                           name="NVIDIA H100 80GB HBM3"),
}

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2,
                "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^\s+(ROOT )?%([\w.\-]+) = (.*?) ([a-z][a-z\-]*)\((.*?)\)(, .*)?$")
# Instructions that launch nothing: they name or regroup buffers.
_NOT_KERNELS = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast")
# cuBLAS's GEMMs (XLA's choice where Triton's are off or slower): a tuple of the result and a
# workspace.
_CUBLAS = r'custom_call_target="__cublas\$(gemm|lt\$matmul)"'
# Inside a fusion: operations that touch only part of their first operand.
_SLICES = ("slice", "dynamic-slice", "dynamic-update-slice")


@dataclasses.dataclass
class Kernel:
  name: str
  kind: str      # The name without its number (e.g. `loop_add_fusion`) or the library call.
  bytes: int     # Per launch, as are the FLOPs.
  flops: int
  launches: int = 1  # Per step: a loop body's kernels run once per iteration.


def _dims(array_text: str) -> list[int]:
  return [int(d) for d in _ARRAY.search(array_text).group(2).split(",") if d]


def _array_bytes(shape_text: str) -> int:
  """Bytes of every array in an HLO shape (tuples included)."""
  return sum(_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
             for dtype, dims in _ARRAY.findall(shape_text))


class _Instruction(typing.NamedTuple):
  root: bool
  name: str
  shape: str
  op: str
  operands: list[str]
  attributes: str


def _parse(hlo_text: str) -> tuple[dict, str]:
  """({computation name: [instructions]}, the entry computation's name)."""
  computations, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    match = _COMPUTATION.match(line)
    if match:
      current = match.group(2)
      computations[current] = []
      entry = current if match.group(1) else entry
    elif current and (match := _INSTRUCTION.match(line)):
      root, name, shape, op, operands, attributes = match.groups()
      computations[current].append(_Instruction(
          bool(root), name, shape, op, re.findall(r"%([\w.\-]+)", operands), attributes or ""))
  if entry is None:
    raise ValueError("No ENTRY computation in the HLO text.")
  return computations, entry


def kernels(hlo_text: str) -> list[Kernel]:
  """The kernels an optimized HLO module launches (module docstring)."""
  computations, entry = _parse(hlo_text)
  by_name = {i.name: i for body in computations.values() for i in body}

  def flops(instruction):
    if instruction.op == "dot":
      lhs = by_name[instruction.operands[0]].shape
      contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", instruction.attributes)
      depth = math.prod(_dims(lhs)[int(d)] for d in contracting.group(1).split(",") if d)
      return 2 * math.prod(_dims(instruction.shape)) * depth
    if instruction.op == "custom-call" and re.search(_CUBLAS, instruction.attributes):
      contracting = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]',
                              instruction.attributes)
      lhs = _dims(by_name[instruction.operands[0]].shape)
      depth = math.prod(lhs[int(d)] for d in re.findall(r"\d+", contracting.group(1)))
      return 2 * math.prod(_dims(instruction.shape)) * depth  # The result, not the workspace.
    if instruction.op == "custom-call" and "__cudnn$fmha" in instruction.attributes:
      batch, length, heads, head_dim = _dims(by_name[instruction.operands[0]].shape)
      forward = 4 * batch * heads * length * length * head_dim
      return forward * 10 // 4 if "Backward" in instruction.attributes else forward
    called = re.search(r"calls=%([\w.\-]+)", instruction.attributes)
    return sum(map(flops, computations[called.group(1)])) if called else 0

  def moved(instruction):
    """Bytes read and written: each operand and result once; but a fusion that only slices an
    operand reads the slices, and one that updates a slice of an operand in place (a scan's
    stacked parameters and gradients) writes the update, not the whole array."""
    called = re.search(r"calls=%([\w.\-]+)", instruction.attributes)
    if instruction.op == "dynamic-update-slice":
      return 2 * _array_bytes(by_name[instruction.operands[1]].shape)
    if instruction.op in _SLICES:
      return 2 * _array_bytes(instruction.shape)
    if re.search(_CUBLAS, instruction.attributes):  # Its scratch workspace is not traffic.
      return _array_bytes(_ARRAY.search(instruction.shape).group(0)) + sum(
          _array_bytes(by_name[name].shape) for name in instruction.operands)
    if not called:
      return _array_bytes(instruction.shape) + sum(
          _array_bytes(by_name[name].shape) for name in instruction.operands)
    body = computations[called.group(1)]
    users = collections.defaultdict(list)
    for inner in body:
      for position, operand in enumerate(inner.operands):
        users[operand].append((inner, position))
    read = 0
    for parameter in (inner for inner in body if inner.op == "parameter"):
      uses = users[parameter.name]
      if uses and all(user.op in _SLICES and position == 0 for user, position in uses):
        read += sum(_array_bytes(user.shape) for user, _ in uses
                    if user.op != "dynamic-update-slice")
      else:
        read += _array_bytes(parameter.shape)
    root = next(inner for inner in body if inner.root)
    results = [by_name[name] for name in root.operands] if root.op == "tuple" else [root]
    written = sum(_array_bytes(by_name[result.operands[1]].shape)
                  if result.op == "dynamic-update-slice" else _array_bytes(result.shape)
                  for result in results)
    return read + written

  found = []

  def launch(computation, repeats):
    for instruction in computations[computation]:
      attributes = instruction.attributes
      if instruction.op == "while":  # `model.scan_layers`: its body runs once per layer.
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', attributes)
        if trips is None:
          raise ValueError(f"The while loop {instruction.name} has no known trip count: its "
                           "kernels' repetitions are unknown.")
        for part in ("condition", "body"):
          launch(re.search(part + r"=%([\w.\-]+)", attributes).group(1),
                 repeats * int(trips.group(1)))
        continue
      if instruction.op == "call":  # Not a kernel: the called computation's instructions are.
        launch(re.search(r"to_apply=%([\w.\-]+)", attributes).group(1), repeats)
        continue
      if instruction.op in _NOT_KERNELS or instruction.op.endswith("-done"):
        continue  # An asynchronous operation is launched by its "-start".
      kind = re.sub(r"[._0-9]*$", "", instruction.name)
      target = re.search(r'custom_call_target="([^"]*)"', attributes)
      if target:
        kind = target.group(1)
      found.append(Kernel(instruction.name, kind, moved(instruction), flops(instruction),
                          repeats))

  launch(entry, 1)
  return found


def floor_ms(kernel: Kernel, bandwidth: float, matmul_rate: float) -> float:
  """The kernel's floor per step: all its launches."""
  return 1e3 * kernel.launches * max(kernel.bytes / bandwidth, kernel.flops / matmul_rate)


def apply_overrides(config, overrides):
  """`config` with each "KEY=VALUE" of `overrides` set (VALUE a Python literal, else a string;
  KEY dotted, e.g. model.scan_layers=True)."""
  for item in overrides:
    key, equals, value = item.partition("=")
    if not equals:
      raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. model.scan_layers=True.")
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # A plain string, e.g. model.remat=full.
    *path, last = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[last] = value
  return config


def target_devices(target: str):
  """One GPU of `target`, described to the CUDA plugin (no GPU needed)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  return topologies.get_topology_desc(platform="cuda", target_config=TARGETS[target],
                                      topology="1x1x1").devices


def compile_case(config, devices, levers, compiler_options=None):
  """The optimized HLO text of the train step for `config` on `devices` (`target_devices`),
  compiled with XLA's `compiler_options` ({option: value}) if any."""
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  with ab_backward.plain(levers):  # The model is traced inside `lower`.
    lowered = compile_lib.lower_train_step(config, mesh)
  return lowered.compile(compiler_options or None).as_text()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="B/16@224:256", help="VARIANT@SIZE:BATCH,...")
  parser.add_argument("--attention", default="cudnn", help="comma-separated")
  parser.add_argument("--variants", default="all",
                      help="benchmarks/ab_backward.py's variants, comma-separated, XLA options "
                      "included, e.g. all,all[xla_gpu_enable_triton_gemm=false]")
  parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override, repeatable, e.g. --set model.scan_layers=True")
  parser.add_argument("--target", default="h200", choices=sorted(TARGETS))
  # Measured on H200s: a device-to-device copy at 4.3 TB/s (bytes read + written); ViT-B/16's
  # MLP matmuls at batch 256 at 670-713 TFLOP/s in bfloat16 (BENCHMARKS.md, GPU).
  parser.add_argument("--bandwidth_gbps", type=float, default=4300)
  parser.add_argument("--matmul_tflops", type=float, default=700)
  parser.add_argument("--top", type=int, default=12, help="kernel kinds listed per program")
  parser.add_argument("--hlo_dir", default=None, help="also write each program's HLO here")
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()
  for variant in args.variants.split(","):
    try:
      ab_backward.parse_variant(variant)
    except ValueError as error:
      parser.error(str(error))
  # A CPU host: JAX runs on the CPU and the CUDA plugin only compiles (on this platform list
  # the plugin also skips its check of the CUDA libraries against a driver this host lacks).
  jax.config.update("jax_platforms", "cpu")
  bandwidth, matmul_rate = args.bandwidth_gbps * 1e9, args.matmul_tflops * 1e12
  devices = target_devices(args.target)
  timing.emit({"kind": "header", "bench": "gpu_hlo", "target": args.target,
               "bandwidth_gbps": args.bandwidth_gbps, "matmul_tflops": args.matmul_tflops,
               **timing.machine("jax", "jaxlib", "jax-cuda13-plugin", "flax")}, args.out)
  for case in args.cases.split(","):
    variant_name, size, batch = timing.parse_case(case)
    for attention in args.attention.split(","):
      config = apply_overrides(train_step_bench.case_config(
          variant_name, size, batch, 4.0, args.dtype, attention), args.set)
      for variant in args.variants.split(","):
        started = time.perf_counter()
        levers, options = ab_backward.parse_variant(variant)
        text = compile_case(config, devices, levers, options)
        seconds = time.perf_counter() - started
        if args.hlo_dir:
          os.makedirs(args.hlo_dir, exist_ok=True)
          name = re.sub(r"[^\w.=+-]+", "_", f"{case}_{attention}_{variant}").strip("_")
          with open(os.path.join(args.hlo_dir, name + ".hlo"), "w", encoding="utf-8") as f:
            f.write(text)
        found = kernels(text)
        by_kind = collections.defaultdict(lambda: [0, 0, 0, 0.0])
        for kernel in found:
          row = by_kind[kernel.kind]
          row[0] += kernel.launches
          row[1] += kernel.launches * kernel.bytes
          row[2] += kernel.launches * kernel.flops
          row[3] += floor_ms(kernel, bandwidth, matmul_rate)
        total_ms = sum(row[3] for row in by_kind.values())
        kinds = sorted(by_kind.items(), key=lambda item: -item[1][3])
        timing.emit({
            "kind": "result", "case": case, "attention": attention, "variant": variant,
            "overrides": args.set,
            "plain": levers, "compiler_options": options, "dtype": args.dtype,
            "compile_s": round(seconds, 1), "kernels": sum(row[0] for row in by_kind.values()),
            "gbytes": sum(row[1] for row in by_kind.values()) / 1e9,
            "matmul_tflop": sum(row[2] for row in by_kind.values()) / 1e12,
            "analytic_tflop": flops_lib.train_step_flops(config) / 1e12,
            "floor_ms": total_ms, "while_loops": text.count(" while("),
            "by_kind": [{"kind": kind, "count": n, "gbytes": b / 1e9, "tflop": f / 1e12,
                         "floor_ms": ms} for kind, (n, b, f, ms) in kinds[:args.top]],
        }, args.out)


if __name__ == "__main__":
  main()
