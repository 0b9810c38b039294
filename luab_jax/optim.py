"""Optimizer from config: AdamW, linear warmup + cosine decay, global-norm gradient clipping."""

import jax
import optax


def make_schedule(config, total_steps: int, warmup_steps: int):
  """Peak `config.lr` after `warmup_steps`, cosine down to `config.lr * config.lr_min_ratio`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1),
      end_value=config.lr * config.get("lr_min_ratio", 0.0))


def decay_mask(params):
  """True for the parameters weight decay applies to: those named `kernel` (dense, attention,
  patch-embedding and head weights), as in big_vision (`.*/kernel$`) and timm/DeiT. Biases,
  LayerNorm scales, the position embedding and the class token are not decayed. By name, not by
  rank: scanned layers stack every block parameter on a layer axis (a LayerNorm scale becomes
  [depth, D]), and the query/key/value biases are [H, K]."""
  def is_kernel(path, _):
    # The parameter's name is the last dict key (an NNX state's leaves add `.value` after it).
    names = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
    return bool(names) and names[-1] == "kernel"
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def check_config(config) -> None:
  """Values optax would take and train wrongly with (a negative rate ascends the loss, a
  negative clipping norm flips the gradient), named as `config.optax.KEY`."""
  bounds = {"lr": (0, None), "lr_min_ratio": (0, 1), "weight_decay": (0, None),
            "grad_clip_norm": (0, None), "b1": (0, 1), "b2": (0, 1)}
  for key, (low, high) in bounds.items():
    value = config.get(key)
    if value is not None and not (value >= low and (high is None or value <= high)):
      raise ValueError(f"config.optax.{key}={value} must be "
                       + (f"in [{low}, {high}]." if high is not None else f">= {low}."))


def make_optimizer(config, total_steps: int, warmup_steps: int):
  """Returns (optax transformation, learning-rate schedule)."""
  check_config(config)
  schedule = make_schedule(config, total_steps, warmup_steps)
  chain = []
  if config.get("grad_clip_norm"):
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain.append(optax.adamw(schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999),
                           weight_decay=config.get("weight_decay", 0.0), mask=decay_mask))
  return optax.chain(*chain), schedule
