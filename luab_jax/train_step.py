"""The train step: LUAB loss, gradients (optionally accumulated over micro-batches), update, EMA.

  step_fn = make_train_step(config, spec, tx, schedule)      # (state, batch) -> (state, metrics)
  step_fn = jit_train_step(step_fn, state_shardings, batch_sharding, mesh)

The trainer (train.py) runs it on real batches; the AOT compiler (compile.py) lowers the very
same function on abstract ones for a TPU topology it does not have.

Loss = classification + config.loss.point_lambda * point regression, as means over the batch
in which weight-0 (undecodable) examples count for nothing (`weighted_losses`).

Gradient accumulation (`config.grad_accum_steps = k`, default 1): the global batch is split
into k micro-batches that run one after another (`jax.lax.scan`), so activations are held for
B / k examples only. Every batch mean is written as a sum over the examples divided by a count
of the WHOLE batch (`batch_counts`: used examples, and the point loss's valid points or
examples x points), computed before the scan; the micro-batch losses and their float32
gradients then simply add up to the whole batch's loss and gradient (equal up to the order of
float additions). Micro-batch m takes examples m, m + k, m + 2k, ... so that each device
keeps its own examples (the batch is split over devices in contiguous blocks).

EMA (`config.ema_decay = d`, None = off): the state carries `ema_params`, updated after every
step as ema <- d_t * ema + (1 - d_t) * params, starting from the initial parameters, with
d_t = min(d, (1 + t) / (10 + t)) after t steps (`ema_decay_at`, TensorFlow's
ExponentialMovingAverage with num_updates): without the warm-up, d = 0.9999 would leave 92 % of
the random initialisation in the EMA after 800 steps and 6 % after 28k. Skipped (non-finite)
steps leave it unchanged like the parameters.

Non-finite loss or gradients: `config.nan_policy="skip"` keeps the old parameters and optimizer
state (the step still counts in `step`, the data and the logs; the optimizer's schedule does not
advance, so each skip delays the rest of the schedule by one step, and the logged
`learning_rate` is the rate each step applied: `applied_learning_rate`); under "stop" the
trainer raises, from the returned `nan_skipped_steps` flag.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from luab_jax import losses
from luab_jax import sharding as sharding_lib

def _classification_loss(config, logits, batch):
  """Per-example loss; multi-label batches carry `labels` (multi-hot), others `label`."""
  if config.loss.classification == "softmax":
    if "label" not in batch:
      raise ValueError("config.loss.classification='softmax' needs single-label data, but the "
                       "batches carry multi-hot `labels`: use 'sigmoid'.")
    return losses.softmax_xent(logits, batch["label"], label_smoothing=config.loss.label_smoothing)
  multi_hot = batch["labels"] if "labels" in batch else jax.nn.one_hot(batch["label"],
                                                                       logits.shape[-1])
  return losses.sigmoid_xent(logits, multi_hot)


def batch_counts(config, batch) -> dict:
  """The denominators of the batch means: used examples, and the point loss's count."""
  weight = batch["weight"]
  point_weight = batch["point_weight"].astype(jnp.float32) * weight.astype(jnp.float32)[:, None]
  return {"examples": jnp.maximum(weight.sum(), 1.0),
          "points": losses.point_denominator(point_weight, normalize=config.loss.point_normalize,
                                             example_weight=weight)}


def weighted_losses(config, out, batch, counts=None) -> dict:
  """Classification and point losses of a train batch, and its accuracy, as batch means.

  Undecodable images come as weight-0 examples (pp/transforms.py): they are left out of every
  mean, so a batch with skipped examples trains exactly like the batch without them. This holds
  for both classification losses (softmax and sigmoid are per-example sums before weighting)
  and for the point loss (the example weight multiplies every point weight).

  `counts` (from `batch_counts`) are the denominators; given those of a larger batch that
  `batch` is a micro-batch of, the results are this micro-batch's share of the larger batch's
  means (gradient accumulation). Default: this batch's own.
  """
  weight = batch["weight"]
  if counts is None:
    counts = batch_counts(config, batch)
  num_used = counts["examples"]
  cls_loss = (_classification_loss(config, out["logits"], batch) * weight).sum() / num_used
  point_loss = losses.masked_point_loss(
      out["points"], batch["points"], batch["point_weight"], example_weight=weight,
      kind=config.loss.point_loss, normalize=config.loss.point_normalize,
      smooth_l1_beta=config.loss.point_smooth_l1_beta, denominator=counts["points"])
  aux = {"classification_loss": cls_loss, "point_loss": point_loss}
  if "label" in batch:
    correct = jnp.argmax(out["logits"], -1) == batch["label"]
    aux["accuracy"] = (correct * weight).sum() / num_used
  else:  # Multi-label: is the top-scored class one of the (crop's) positives?
    top = jnp.argmax(out["logits"], -1)
    hit = jnp.take_along_axis(batch["labels"], top[:, None], -1)[:, 0]
    aux["precision_at_1"] = (hit * weight).sum() / num_used
  return aux


def check_config(config, batch_size_per_device: int | None = None) -> None:
  """Fails on a bad `grad_accum_steps` / `ema_decay` before anything is compiled."""
  k = config.get("grad_accum_steps", 1)
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"config.grad_accum_steps={k!r} must be a positive integer.")
  if batch_size_per_device is not None and batch_size_per_device % k:
    raise ValueError(f"config.grad_accum_steps={k} must divide the batch per device "
                     f"({batch_size_per_device} = config.batch_size / number of devices on the "
                     "batch axes), so that every device gets an equal share of each micro-batch.")
  decay = config.get("ema_decay")
  if decay is not None and not 0.0 <= decay < 1.0:
    raise ValueError(f"config.ema_decay={decay!r} must be in [0, 1), or None for no EMA.")


def _split_micro_batches(batch, k: int, mesh):
  """[B, ...] -> [k, B / k, ...]; micro-batch m holds examples m, m + k, ... (module docstring)."""
  def split(x):
    x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    if mesh is None:
      return x
    spec = P(None, sharding_lib.batch_axes(mesh), *([None] * (x.ndim - 2)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
  return jax.tree.map(split, batch)


def make_train_step(config, spec, tx, schedule):
  """(state, batch) -> (state, metrics) for the train state of train_state.py; not jitted."""
  check_config(config)
  lam = float(config.loss.point_lambda)
  nan_policy = config.get("nan_policy", "stop")
  accum_steps = config.get("grad_accum_steps", 1)
  ema_decay = config.get("ema_decay")

  def loss_fn(params, batch, counts):
    aux = weighted_losses(config, spec.apply(params, batch["image"]), batch, counts)
    return aux["classification_loss"] + lam * aux["point_loss"], aux

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulated_grads(params, batch):
    """The whole batch's (loss, aux) and gradient, as sums over k micro-batches."""
    counts = batch_counts(config, batch)
    micro = _split_micro_batches(batch, accum_steps, spec.mesh)
    # Each micro-batch's outputs are shares of the whole batch's means: they add up.
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

    def body(carry, micro_batch):
      (loss, aux), grads = grad_fn(params, micro_batch, counts)
      grad_sum, loss_sum, aux_sum = carry
      grad_sum = jax.tree.map(lambda s, g: s + g.astype(jnp.float32), grad_sum, grads)
      return (grad_sum, loss_sum + loss, jax.tree.map(jnp.add, aux_sum, aux)), None

    aux_zeros = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro),
                                               counts)[0][1])
    aux_zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_zeros)
    (grads, loss, aux), _ = jax.lax.scan(body, (zeros, jnp.float32(0.0), aux_zeros), micro)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    return (loss, aux), grads

  def train_step(state, batch):
    if accum_steps == 1:
      (loss, aux), grads = grad_fn(state["params"], batch, None)
    else:
      (loss, aux), grads = accumulated_grads(state["params"], batch)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if nan_policy == "skip":  # Keep the old parameters and moments; the step still counts.
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
      params = keep(params, state["params"])
      opt_state = keep(opt_state, state["opt_state"])
    metrics = {"loss": loss, **aux, "grad_norm": grad_norm,
               "learning_rate": applied_learning_rate(schedule, state["opt_state"]),
               "points_per_image": batch["point_weight"].sum(-1).mean(),
               "data/skipped_images": batch["weight"].shape[0] - batch["weight"].sum(),
               "data/bad_points": batch["bad_points"].sum(),
               "nan_skipped_steps": 1 - finite.astype(jnp.int32)}
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    if ema_decay is not None:
      # A skipped step must leave the EMA as it was too (not move it towards the kept params).
      ema = optax.incremental_update(params, state["ema_params"],
                                     step_size=1.0 - ema_decay_at(ema_decay, state["step"]))
      if nan_policy == "skip":
        ema = keep(ema, state["ema_params"])
      new_state["ema_params"] = ema
    return new_state, metrics

  return train_step


def ema_decay_at(ema_decay, step):
  """The EMA decay of the update after `step` steps (module docstring)."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(ema_decay), (1.0 + step) / (10.0 + step))


def applied_learning_rate(schedule, opt_state):
  """The rate the update from `opt_state` applies: the schedule at the optimizer's own count
  (optax's ScaleByScheduleState), which skipped steps do not advance."""
  state = optax.tree_utils.tree_get(opt_state, "ScaleByScheduleState")  # KeyError if several.
  if state is None:
    raise ValueError("The optimizer state holds no learning-rate schedule (optim.make_optimizer).")
  return schedule(state.count)


def jit_train_step(step_fn, state_shardings, batch_sharding, mesh):
  """Jits with the state's shardings in and out, replicated metrics, and the state donated."""
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, sharding_lib.replicated(mesh)),
                 donate_argnums=(0,))
