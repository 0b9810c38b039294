"""The model and the train state as pure pytrees, created directly with their shardings.

The model is a Flax NNX module, but the trainer works on its split form: a static `graphdef`
and a pytree of parameters. That keeps the train step a plain function of arrays with explicit
in/out shardings (jit-friendly, donatable, checkpointable by Orbax as any pytree).

Models are found by name, big_vision style: `config.model_name = "vit"` means the module
`luab_jax.models.vit`, which must define `Model(num_classes=..., **config.model, rngs=...)`.
"""

import dataclasses
import importlib
import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from luab_jax import sharding as sharding_lib

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Constructor arguments of a model that are not `config.model` keys.
_FILLED_BY_TRAINER = ("self", "num_classes", "rngs")


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


def _model_module(config):
  try:
    return importlib.import_module(f"luab_jax.models.{config.model_name}")
  except ModuleNotFoundError as e:
    if e.name != f"luab_jax.models.{config.model_name}":
      raise  # The model's module exists but imports something missing.
    raise ValueError(f"config.model_name={config.model_name!r} is not a module of "
                     "luab_jax.models.") from e


def check_model_config(config) -> None:
  """Rejects keys of `config.model` that the model's constructor does not take, and required
  arguments it lacks, naming them: at config validation, before anything is built."""
  module = _model_module(config)
  params = inspect.signature(module.Model.__init__).parameters
  if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return  # **kwargs: the model checks its own keys.
  given = set(config.model.keys())
  known = {name for name in params if name not in _FILLED_BY_TRAINER}
  required = {name for name in known if params[name].default is inspect.Parameter.empty
              and params[name].kind != inspect.Parameter.VAR_POSITIONAL}
  where = f"luab_jax.models.{config.model_name}.Model"
  if given - known:
    raise ValueError(f"Unknown config.model keys {sorted(given - known)}: {where} takes "
                     f"{sorted(known)} (num_classes and rngs come from the trainer).")
  if required - given:
    raise ValueError(f"config.model lacks {sorted(required - given)}, required by {where}.")


def check_model_outputs(spec: ModelSpec, config) -> None:
  """Checks what the model returns for an abstract batch (traced, not compiled): logits
  [B, num_classes] and points [B, num_points, 2] in float32 (models/__init__.py). Points of
  another shape would broadcast against the targets in the loss and train on a wrong loss
  without an error."""
  # Two images per batch shard: divisible by the mesh's batch axes, and B > 1.
  batch = 2 * (1 if spec.mesh is None else math.prod(
      spec.mesh.shape[axis] for axis in sharding_lib.batch_axes(spec.mesh)))
  size = config.input.image_size
  out = jax.eval_shape(spec.apply, spec.abstract_params,
                       jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8))
  expected = {"logits": (batch, config.num_classes),
              "points": (batch, config.model.get("num_points", 1), 2)}
  where = f"luab_jax.models.{config.model_name}.Model"
  if not isinstance(out, dict) or set(expected) - set(out):
    raise ValueError(f"{where} must return a dict with {sorted(expected)}; for a batch of "
                     f"{batch} images it returned {jax.tree.map(lambda x: x.shape, out)}.")
  for key, shape in expected.items():
    if out[key].shape != shape or out[key].dtype != jnp.float32:
      raise ValueError(
          f"{where} returned {key} of shape {out[key].shape} {out[key].dtype} for a batch of "
          f"{batch} images of {size}x{size}; expected {shape} float32 (logits [B, "
          "num_classes], points [B, num_points, 2] as (x, y)).")


def model_spec(config, mesh: jax.sharding.Mesh | None = None) -> ModelSpec:
  """The model's spec; checks its config keys and the shapes of what it returns."""
  check_model_config(config)
  module = _model_module(config)
  kwargs = dict(config.model)
  if "dtype" in kwargs:
    if kwargs["dtype"] not in _DTYPES:
      raise ValueError(f"config.model.dtype={kwargs['dtype']!r}; use one of {sorted(_DTYPES)}.")
    kwargs["dtype"] = _DTYPES[kwargs["dtype"]]

  def create(seed: int):
    return module.Model(num_classes=config.num_classes, **kwargs, rngs=nnx.Rngs(seed))

  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: create(0)))
  spec = ModelSpec(graphdef, abstract_params, create, mesh)
  check_model_outputs(spec, config)
  return spec


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
