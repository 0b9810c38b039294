"""Converts durations given as `{prefix}_steps`, `_epochs`, `_examples` or `_percent` to steps.

Configs may say `total_epochs=30` or `log_training_steps=50`; the trainer only thinks in steps.
Exactly one spelling per prefix may be set, so that a config never carries two contradicting
durations.
"""

_UNITS = ("steps", "epochs", "examples", "percent")


def steps(prefix: str, config, *, num_examples: int | None = None,
          batch_size: int | None = None, total_steps: int | None = None,
          default: int | None = None, positive: bool = False) -> int | None:
  """Returns the number of steps for `prefix` (e.g. "total", "warmup", "ckpt"). A negative
  duration is an error, and so is 0 with `positive` (an interval, or the length of training)."""
  given = {unit: config.get(f"{prefix}_{unit}") for unit in _UNITS}
  given = {unit: value for unit, value in given.items() if value is not None}
  if len(given) > 1:
    keys = ", ".join(f"config.{prefix}_{unit}" for unit in given)
    raise ValueError(f"Set only one of {keys}.")
  if not given:
    result, source = default, f"the default of config.{prefix}_steps"
  else:
    (unit, value), = given.items()
    result, source = _to_steps(prefix, unit, value, num_examples, batch_size, total_steps), (
        f"config.{prefix}_{unit}={value}")
  if result is not None and (result < 0 or (positive and result == 0)):
    raise ValueError(f"{source} is {result} steps; it must be at least {int(positive)}.")
  return result


def _to_steps(prefix, unit, value, num_examples, batch_size, total_steps) -> int:
  if unit == "steps":
    return int(value)
  if unit == "percent":
    if total_steps is None:
      raise ValueError(f"config.{prefix}_percent needs the total number of steps.")
    return int(round(value / 100 * total_steps))
  if batch_size is None or (unit == "epochs" and num_examples is None):
    raise ValueError(f"config.{prefix}_{unit} needs the dataset size and the batch size.")
  examples = value * num_examples if unit == "epochs" else value
  return int(round(examples / batch_size))
