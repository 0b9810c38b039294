"""A run's `config.json` (written by the trainer) read back into an ml_collections ConfigDict.

JSON has no tuples, so every JSON array comes back as a tuple: `config.mesh` becomes
(("data", -1), ("fsdp", 1)) and `config.input.crop_scale` (0.35, 1.0), which every consumer
accepts (they iterate or call tuple()/list() on them). Lists written as lists come back as
tuples too; nothing in a config depends on the difference. `None` stays None.
"""

import json

import ml_collections


def _tuples(value):
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {key: _tuples(v) for key, v in value.items()}
  return value


def load_json(path: str) -> ml_collections.ConfigDict:
  with open(path, encoding="utf-8") as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(raw, dict):
    raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not a config object.")
  return ml_collections.ConfigDict(_tuples(raw))
