"""Parses the string after the colon in `--config configs/NAME.py:ARGS`.

big_vision style: `configs/demo.py:lam=0,runlocal=True`. Every accepted key and its default is
declared by the config file, so a typo fails loudly instead of being ignored.
"""

import ast

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Returns `defaults` updated from a "k1=v1,k2=v2" string; values are Python literals.

  A bare word `runlocal` means `runlocal=True`. Unknown keys raise a ValueError naming them.
  """
  parsed = ml_collections.ConfigDict(defaults)
  if not arg:
    return parsed
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f"Unknown config argument {key!r} in {arg!r}; this config accepts: "
          f"{', '.join(sorted(defaults))}.")
    if not sep:
      value = True
    else:
      try:
        value = ast.literal_eval(raw.strip())
      except (ValueError, SyntaxError):
        value = raw.strip()  # A bare string such as `variant=B/16`.
    default = defaults[key]
    if isinstance(default, bool) and not isinstance(value, bool):
      raise ValueError(f"Config argument {key!r} expects True/False, got {raw!r}.")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(default, str) and not isinstance(value, str):
      value = raw.strip()  # A name that reads as a number, e.g. dataset=123.
    if default is not None and not isinstance(value, type(default)):
      raise ValueError(f"Config argument {key!r} expects a {type(default).__name__} (default "
                       f"{default!r}), got {raw!r}.")
    parsed[key] = value
  return parsed
