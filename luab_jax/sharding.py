"""Device mesh, parameter shardings from ordered regex rules, and global batches.

Mesh config (big_vision style): `config.mesh = [("data", -1), ("fsdp", 1)]`, axes in order of
increasing communication; one size may be -1 ("all remaining devices").

Parameter sharding config: `config.sharding_rules = [(regex, rule), ...]` over parameter paths
such as "encoder/blocks/3/mlp/fc1/kernel"; the first regex that matches (re.search) decides:
  "replicate"            -> a full copy on every device;
  "fsdp" / "fsdp:AXIS"   -> split the largest dimension that the axis size divides (default axis
                            "fsdp"), if the tensor is at least `fsdp_min_size_mb`; else replicate.
A path no rule matches is an error, so a new parameter never silently gets a default.

The batch dimension of every input is split over all mesh axes: data parallel over "data" and,
inside each fsdp group, over "fsdp" (ZeRO-3 style).
"""

import math
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(mesh_config, devices=None) -> Mesh:
  """Builds a Mesh from [(axis_name, size), ...]; -1 takes the remaining devices."""
  devices = list(devices if devices is not None else jax.devices())
  names = tuple(str(name) for name, _ in mesh_config)
  sizes = [int(size) for _, size in mesh_config]
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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(mesh.axis_names))


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


def _fsdp_spec(shape, axis: str, mesh: Mesh, min_size_bytes: int, itemsize: int) -> P:
  axis_size = mesh.shape[axis]
  if axis_size == 1 or math.prod(shape) * itemsize < min_size_bytes:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % axis_size == 0:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def infer_shardings(tree, rules, mesh: Mesh, *, fsdp_min_size_mb: float = 4.0):
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs) from regex rules."""
  compiled = [(re.compile(pattern), rule) for pattern, rule in rules]
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
      return NamedSharding(mesh, _fsdp_spec(shape, axis, mesh, min_size_bytes, itemsize))
    raise ValueError(f"Unknown sharding rule {rule!r} for {name!r}; use 'replicate' or "
                     "'fsdp[:AXIS]'.")

  return jax.tree_util.tree_map_with_path(for_leaf, tree)


def check_batch_size(global_batch_size: int, mesh: Mesh, *, key: str = "config.batch_size"):
  """The batch must split evenly over devices and over processes; fail before compiling."""
  if global_batch_size % mesh.size:
    raise ValueError(f"{key}={global_batch_size} is not divisible by the {mesh.size} devices "
                     f"of the mesh {dict(mesh.shape)}.")
  if global_batch_size % jax.process_count():
    raise ValueError(f"{key}={global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes.")
  return global_batch_size // jax.process_count()


def to_global(host_batch, sharding: NamedSharding):
  """Per-process numpy batch -> global jax.Array batch laid out by `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)
