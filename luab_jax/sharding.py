"""Device mesh, parameter shardings from ordered regex rules, and global batches.

Mesh config (big_vision style): `config.mesh = [("data", -1), ("fsdp", 1), ("model", 1)]`, axes
in order of increasing communication; one size may be -1 ("all remaining devices"). The axis
names are fixed: "data" (data parallel), "fsdp" (data parallel whose groups also split the
parameters, ZeRO-3 style) and "model" (tensor parallel). An axis left out has size 1: the
two-axis configs `[("data", -1), ("fsdp", 1)]` keep working. The mesh comes from
`jax.make_mesh`, which orders the devices by the physical topology (TPU ICI rings, GPU
NVLink islands), so the last axes, the most talkative, get the nearest devices.

Parameter sharding config: `config.sharding_rules = [(regex, rule), ...]` over parameter paths
such as "encoder/blocks/3/mlp/fc1/kernel"; the first regex that matches (re.search) decides:
  "replicate"            -> a full copy on every device;
  "fsdp" / "fsdp:AXIS"   -> split the largest dimension that the axis size divides (default axis
                            "fsdp"), if the tensor is at least `fsdp_min_size_mb`; else replicate.
  "tp:DIM"               -> tensor parallel: split dimension DIM (negative counts from the end,
                            so a leading scan-over-layers axis changes nothing) over "model", and
                            then, as "fsdp", the largest other dimension over "fsdp". DIM must be
                            divisible by the "model" size: a tensor-parallel layout that cannot
                            be honoured is an error, not a silent replica.
A path no rule matches is an error, so a new parameter never silently gets a default. The ViT's
tensor-parallel rules are `luab_jax.models.vit.TENSOR_PARALLEL_RULES`.

The batch dimension of every input is split over the batch axes, "data" and "fsdp"; it is
replicated over "model", whose devices work together on the same examples.
"""

import math
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")
MODEL_AXIS = "model"


def make_mesh(mesh_config, devices=None) -> Mesh:
  """Builds a Mesh from [(axis_name, size), ...]; -1 takes the remaining devices.

  The mesh always has the three axes of `AXES`, in that order; those the config leaves out get
  size 1.
  """
  devices = list(devices if devices is not None else jax.devices())
  given = {}
  for entry in mesh_config:
    if len(entry) != 2:
      raise ValueError(f"config.mesh={list(mesh_config)}: each entry is (axis_name, size).")
    name, size = str(entry[0]), int(entry[1])
    if name not in AXES:
      raise ValueError(f"config.mesh={list(mesh_config)}: unknown axis {name!r}; the axes are "
                       f"{AXES}.")
    if name in given:
      raise ValueError(f"config.mesh={list(mesh_config)}: axis {name!r} appears twice.")
    if size == 0 or size < -1:
      raise ValueError(f"config.mesh={list(mesh_config)}: axis {name!r} has size {size}; use a "
                       "positive size or -1.")
    given[name] = size
  if [name for name in AXES if name in given] != list(given):
    raise ValueError(f"config.mesh={list(mesh_config)}: give the axes in the order {AXES}.")
  names = AXES
  sizes = [given.get(name, 1) for name in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh={list(mesh_config)}: at most one axis may have size -1.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if known <= 0 or len(devices) % known:
      raise ValueError(f"config.mesh={list(mesh_config)} does not divide the {len(devices)} "
                       "devices of this job.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"config.mesh={list(mesh_config)} needs {math.prod(sizes)} devices, but "
                     f"this job has {len(devices)}.")
  axis_types = (jax.sharding.AxisType.Auto,) * len(names)
  return jax.make_mesh(tuple(sizes), names, axis_types=axis_types, devices=devices)


def batch_axes(mesh) -> tuple[str, ...]:
  """The mesh axes that split the batch (all but "model")."""
  return tuple(name for name in mesh.axis_names if name != MODEL_AXIS)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def path_name(path) -> str:
  """"a/b/0/c" from a jax key path (dict keys, attributes and sequence indices).

  The trailing ".value" that NNX variables add is left out: "head/kernel", not
  "head/kernel/value".
  """
  parts = []
  for key in path:
    if getattr(key, "name", None) == "value" and key is path[-1]:
      continue
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _fsdp_spec(shape, axis: str, mesh: Mesh, min_size_bytes: int, itemsize: int, *,
               skip_dim: int | None = None) -> list:
  spec = [None] * len(shape)
  axis_size = mesh.shape[axis]
  if axis_size == 1 or math.prod(shape) * itemsize < min_size_bytes:
    return spec
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if dim != skip_dim and shape[dim] % axis_size == 0:
      spec[dim] = axis
      return spec
  return spec


def _tp_spec(name, shape, dim_text: str, mesh: Mesh, min_size_bytes: int, itemsize: int) -> P:
  try:
    dim = int(dim_text)
  except ValueError:
    raise ValueError(f"Sharding rule 'tp:{dim_text}' for {name!r}: DIM must be an integer, as "
                     "in 'tp:-1'.") from None
  if not -len(shape) <= dim < len(shape):
    raise ValueError(f"Sharding rule 'tp:{dim_text}' for {name!r} of shape {shape}: no such "
                     "dimension.")
  dim %= len(shape)
  model_size = mesh.shape.get(MODEL_AXIS, 1)
  if shape[dim] % model_size:
    raise ValueError(f"Parameter {name!r} of shape {shape}: dimension {dim} ({shape[dim]}) is "
                     f"not divisible by the 'model' axis of config.mesh ({model_size}).")
  # FSDP over the other dimensions, as the "fsdp" rule would do on its own.
  spec = _fsdp_spec(shape, "fsdp", mesh, min_size_bytes, itemsize, skip_dim=dim)
  if model_size > 1:
    spec[dim] = MODEL_AXIS
  return P(*spec)


def infer_shardings(tree, rules, mesh: Mesh, *, fsdp_min_size_mb: float = 4.0):
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs) from regex rules."""
  compiled = []
  for pattern, rule in rules:
    try:
      compiled.append((re.compile(pattern), rule))
    except re.error as e:
      raise ValueError(f"config.sharding_rules: {pattern!r} is not a regular expression "
                       f"({e}).") from e
  min_size_bytes = int(fsdp_min_size_mb * 2**20)

  def for_leaf(path, leaf):
    name = path_name(path)
    shape = tuple(getattr(leaf, "shape", ()))
    for pattern, rule in compiled:
      if pattern.search(name):
        break
    else:
      raise ValueError(f"No entry of config.sharding_rules matches parameter {name!r}.")
    kind, _, axis = rule.partition(":")
    if kind == "replicate":
      return NamedSharding(mesh, P())
    if kind == "fsdp":
      axis = axis or "fsdp"
      if axis not in mesh.shape:
        raise ValueError(f"Sharding rule {rule!r} names axis {axis!r}, not in the mesh "
                         f"{dict(mesh.shape)}.")
      itemsize = np.dtype(getattr(leaf, "dtype", np.float32)).itemsize
      return NamedSharding(mesh, P(*_fsdp_spec(shape, axis, mesh, min_size_bytes, itemsize)))
    if kind == "tp":
      itemsize = np.dtype(getattr(leaf, "dtype", np.float32)).itemsize
      return NamedSharding(mesh, _tp_spec(name, shape, axis, mesh, min_size_bytes, itemsize))
    raise ValueError(f"Unknown sharding rule {rule!r} for {name!r}; use 'replicate', "
                     "'fsdp[:AXIS]' or 'tp:DIM'.")

  return jax.tree_util.tree_map_with_path(for_leaf, tree)


def check_batch_size(global_batch_size: int, mesh: Mesh, *, key: str = "config.batch_size"):
  """The batch must split evenly over devices and over processes; fail before compiling.

  Returns the per-process batch size. Process p must hold the p-th contiguous block of the
  global batch: the input pipeline reads exactly that block (see `input_pipeline`), so that
  the global batches do not depend on the number of processes.
  """
  if not isinstance(global_batch_size, int) or global_batch_size <= 0:
    raise ValueError(f"{key}={global_batch_size!r} must be a positive integer.")
  shards = math.prod(mesh.shape[name] for name in batch_axes(mesh))
  if global_batch_size % shards:
    axes = " x ".join(f"{name}={mesh.shape[name]}" for name in batch_axes(mesh))
    raise ValueError(f"{key}={global_batch_size} is not divisible by the {shards} devices "
                     f"of the mesh {dict(mesh.shape)} that split the batch ({axes}; "
                     "config.mesh).")
  num_processes = jax.process_count()
  if global_batch_size % num_processes:
    raise ValueError(f"{key}={global_batch_size} is not divisible by the "
                     f"{num_processes} processes.")
  per_process = global_batch_size // num_processes
  if num_processes > 1:
    rows = {}
    indices = batch_sharding(mesh).devices_indices_map((global_batch_size,))
    for device, (index,) in indices.items():
      start, stop, _ = index.indices(global_batch_size)
      rows.setdefault(device.process_index, set()).update(range(start, stop))
    for process, held in sorted(rows.items()):
      block = set(range(process * per_process, (process + 1) * per_process))
      if held != block:
        raise ValueError(
            f"config.mesh={dict(mesh.shape)}: process {process} would hold rows "
            f"{min(held)}..{max(held)} ({len(held)} rows) of the global batch, not its own "
            f"block {min(block)}..{max(block)}; the batch axes (data, fsdp) must split the "
            "processes evenly and the 'model' axis must not span processes.")
  return per_process


def to_global(host_batch, sharding: NamedSharding):
  """Per-process numpy batch -> global jax.Array batch laid out by `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)
