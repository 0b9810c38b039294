"""The keys a training config may have, and which of them a resumed run may change.

`check_known_keys(config)` rejects a key nobody reads (a typo such as `config.log_trainig_steps`
would otherwise be silently ignored), before anything touches a device.

Where to extend: a new top-level key goes into `TOP_LEVEL`; a new key of `config.input`,
`config.loss` or `config.optax` into `NESTED`; a new key under an INCOMPATIBLE prefix also into
`ADDED_WITH_DEFAULT`, with the value that reproduces what the code did before it (or older work
directories no longer resume). `config.model` and `config.evals.NAME` are not
listed here: their keys are the keyword arguments of `luab_jax.models.{model_name}.Model` and
of `luab_jax.evaluators.{type}.Evaluator` (plus `type` and `every_steps`). The trainer checks
the evaluators' keys with `evaluators.common.check_config_keys` right after this schema; the
model rejects unknown keys by name when it is built (still before any compilation).

`run_options()` are the trainer's run options at its defaults, which every config declares
(`config.update(config_schema.run_options())`) so that `--config.KEY=VALUE` can set them.

`check_resume_compatible(saved, config)` compares the `config.json` of a work directory with
the config of the run about to resume it. Keys in `INCOMPATIBLE` define *what* is trained (the
model, its classes, the data, its order and augmentation, the loss, the optimizer's structure):
changing them would silently give a different run, so it is an error. Everything else (the
schedule length, logging, checkpoint and evaluation intervals, the mesh, the process and
worker counts, `nan_policy`, ...) may change; the changed keys are returned so the trainer can
log them.
"""

from typing import Any

import ml_collections

TOP_LEVEL = frozenset({
    "seed", "dataset", "data_dir", "train_split", "num_classes",
    "input", "batch_size",
    "total_steps", "total_epochs", "total_examples",
    "warmup_steps", "warmup_epochs", "warmup_examples", "warmup_percent",
    "log_training_steps", "log_training_epochs", "log_training_examples",
    "log_training_percent",
    "ckpt_steps", "ckpt_epochs", "ckpt_examples", "ckpt_percent", "keep_ckpts",
    "model_name", "model", "loss", "optax",
    "mesh", "sharding_rules", "fsdp_min_size_mb",
    "evals", "best_metric", "best_mode",
    "nan_policy",
    "grad_accum_steps", "ema_decay",
    "compilation_cache_dir",  # luab_jax/compilation_cache.py; may change on resume.
})

NESTED = {
    "input": frozenset({"image_size", "crop_scale", "crop_ratio", "flip", "eval_crop_fraction",
                        "eval_keep_aspect",
                        "num_workers", "eval_num_workers", "read_threads", "prefetch_buffer",
                        "ram_budget_mb", "resize_method", "eval_resize_method"}),
    "loss": frozenset({"classification", "label_smoothing", "point_lambda", "point_loss",
                       "point_normalize", "point_smooth_l1_beta"}),
    "optax": frozenset({"lr", "lr_min_ratio", "weight_decay", "grad_clip_norm", "b1", "b2"}),
}

# Dotted key prefixes; "model" covers every "model.*" key.
INCOMPATIBLE = (
    "model_name", "model", "num_classes", "dataset", "train_split", "seed", "batch_size",
    "input.image_size", "input.crop_scale", "input.crop_ratio", "input.flip",
    "loss", "optax.weight_decay", "optax.grad_clip_norm", "optax.b1", "optax.b2",
    # Switching the EMA on or off changes the checkpointed state's structure.
    "ema_decay",
)


# Keys added after work directories were written without them, with the value that reproduces
# those runs: a saved config lacking one counts as having it (so it still resumes).
ADDED_WITH_DEFAULT = {
    "loss.point_smooth_l1_beta": 0.1,  # Fixed in the code before it was a key.
}


def run_options() -> dict[str, Any]:
  """The trainer's run options at its defaults (README, "Robustness"). A locked config takes
  from the command line only keys it has, and a None only when it is typed: hence declared in
  every config, the Nones as typed `FieldReference`s (new ones per call: configs share none)."""
  none = ml_collections.FieldReference
  return {
      # None: WORKDIR/compilation_cache, so that a resumed run does not compile again; "": off
      # (luab_jax/compilation_cache.py).
      "compilation_cache_dir": none(None, field_type=str),
      "nan_policy": "stop",  # Or "skip" a step with a non-finite loss or gradient.
      "best_metric": none(None, field_type=str),  # "EVAL/METRIC": the best in checkpoints_best/.
      "best_mode": "max",
      "grad_accum_steps": 1,
      "ema_decay": none(None, field_type=float),  # E.g. 0.9999.
  }


# Keys of earlier versions, with why they are gone (a config that still sets one is told).
REMOVED = {
    "data_iter_on_process_change": "a resume on another process or worker count now continues "
                                   "the data order exactly (luab_jax/checkpointing.py)",
}


def check_known_keys(config) -> None:
  """Raises ValueError naming every key that is not in the schema."""
  removed = [f"config.{key}: {why}" for key, why in REMOVED.items() if key in config]
  if removed:
    raise ValueError(f"Config keys no longer read: {'; '.join(removed)}. Delete them.")
  unknown = sorted(f"config.{key}" for key in config.keys() if key not in TOP_LEVEL)
  for parent, known in NESTED.items():
    if parent in config and config[parent] is not None:
      unknown += sorted(f"config.{parent}.{key}" for key in config[parent].keys()
                        if key not in known)
  if unknown:
    raise ValueError(f"Unknown config keys: {', '.join(unknown)}. If a new key is intended, "
                     "add it to luab_jax/config_schema.py (TOP_LEVEL or NESTED).")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a.b": leaf} for nested dicts; lists and tuples are leaves (compared as lists)."""
  if hasattr(tree, "items"):
    flat = {}
    for key, value in tree.items():
      flat.update(flatten(value, f"{prefix}{key}."))
    return flat
  if isinstance(tree, tuple):
    tree = [list(x) if isinstance(x, tuple) else x for x in tree]
  elif isinstance(tree, list):
    tree = [list(x) if isinstance(x, tuple) else x for x in tree]
  return {prefix[:-1]: tree}


def _is_incompatible(key: str) -> bool:
  return any(key == p or key.startswith(p + ".") for p in INCOMPATIBLE)


def check_resume_compatible(saved: dict, config, *, path: str) -> list[str]:
  """Raises ValueError if `config` changes a key in INCOMPATIBLE; returns the other changes.

  `saved` is the parsed `config.json` at `path`; `config` the new ConfigDict (or dict). A key
  that one side lacks and the other has at None counts as unchanged: configs declare optional
  keys at None (e.g. `ema_decay`, so that the command line can set them) that older configs,
  and so older work directories, left out. A key of ADDED_WITH_DEFAULT that one side lacks
  counts as having its default.
  """
  old = {**ADDED_WITH_DEFAULT, **flatten(saved)}
  new = {**ADDED_WITH_DEFAULT,
         **flatten(config.to_dict() if hasattr(config, "to_dict") else config)}
  changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
  bad = [k for k in changed if _is_incompatible(k)]
  if bad:
    details = "; ".join(f"config.{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
                        for k in bad)
    raise ValueError(f"The work directory was written by an incompatible config ({path}): "
                     f"{details}. Use a new --workdir, or restore the old values.")
  return [f"config.{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
          for k in changed]
