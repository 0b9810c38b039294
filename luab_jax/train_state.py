"""The model and the train state as pure pytrees, created directly with their shardings.

The model is a Flax NNX module, but the trainer works on its split form: a static `graphdef`
and a pytree of parameters. That keeps the train step a plain function of arrays with explicit
in/out shardings (jit-friendly, donatable, checkpointable by Orbax as any pytree).

Models are found by name, big_vision style: `config.model_name = "vit"` means the module
`luab_jax.models.vit`, which must define `Model(num_classes=..., **config.model, rngs=...)`.
"""

import dataclasses
import importlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from luab_jax import sharding as sharding_lib

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The model's static structure, parameter shapes, constructor, and the mesh it runs on.

  `apply` runs the model inside the mesh's abstract context, so that the model's activation
  sharding constraints (logical axis names, see `models/vit.py`) resolve against it; without a
  mesh the model runs unconstrained.
  """
  graphdef: Any
  abstract_params: Any  # ShapeDtypeStructs.
  create: Callable[[int], nnx.Module]
  mesh: jax.sharding.Mesh | None = None

  def apply(self, params, images):
    if self.mesh is None:
      return nnx.merge(self.graphdef, params)(images)
    with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
      return nnx.merge(self.graphdef, params)(images)


def model_spec(config, mesh: jax.sharding.Mesh | None = None) -> ModelSpec:
  try:
    module = importlib.import_module(f"luab_jax.models.{config.model_name}")
  except ModuleNotFoundError as e:
    raise ValueError(f"config.model_name={config.model_name!r} is not a module of "
                     "luab_jax.models.") from e
  kwargs = dict(config.model)
  if "dtype" in kwargs:
    if kwargs["dtype"] not in _DTYPES:
      raise ValueError(f"config.model.dtype={kwargs['dtype']!r}; use one of {sorted(_DTYPES)}.")
    kwargs["dtype"] = _DTYPES[kwargs["dtype"]]

  def create(seed: int):
    return module.Model(num_classes=config.num_classes, **kwargs, rngs=nnx.Rngs(seed))

  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: create(0)))
  return ModelSpec(graphdef, abstract_params, create, mesh)


def init_params(spec: ModelSpec, seed: int, shardings):
  """Parameters materialised straight into their shardings (never whole on one device)."""
  return jax.jit(lambda: nnx.split(spec.create(seed))[1], out_shardings=shardings)()


def abstract_train_state(spec: ModelSpec, tx, *, ema: bool = False):
  """The state's shapes; `ema` adds `ema_params` (config.ema_decay, see train_step.py)."""
  params = spec.abstract_params
  state = {
      "params": params,
      "opt_state": jax.eval_shape(tx.init, params),
      "step": jax.ShapeDtypeStruct((), jnp.int32),
  }
  if ema:
    state["ema_params"] = params
  return state


def param_shardings(tree, config, mesh):
  """Shardings of a parameter-shaped tree from `config.sharding_rules`."""
  return sharding_lib.infer_shardings(tree, list(config.sharding_rules), mesh,
                                      fsdp_min_size_mb=config.get("fsdp_min_size_mb", 4.0))


def train_state_shardings(abstract_state, config, mesh):
  shardings = {
      "params": param_shardings(abstract_state["params"], config, mesh),
      # Optimizer moments mirror the parameters' paths and shapes, so the same rules apply;
      # counters and other scalars fall through to replication (too small to shard).
      "opt_state": param_shardings(abstract_state["opt_state"], config, mesh),
      "step": sharding_lib.replicated(mesh),
  }
  if "ema_params" in abstract_state:
    shardings["ema_params"] = shardings["params"]
  return shardings


def init_train_state(spec: ModelSpec, tx, seed: int, shardings):
  params = init_params(spec, seed, shardings["params"])
  opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
  step = jax.device_put(jnp.int32(0), shardings["step"])
  state = {"params": params, "opt_state": opt_state, "step": step}
  if "ema_params" in shardings:
    # A copy, not the same buffers: the train step donates the state.
    state["ema_params"] = jax.jit(lambda p: jax.tree.map(jnp.copy, p),
                                  out_shardings=shardings["ema_params"])(params)
  return state
