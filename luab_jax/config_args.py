"""The config on the command line: the string after the colon in `--config configs/NAME.py:ARGS`,
and the `--config.KEY=VALUE` overrides.

big_vision style: `configs/demo.py:lam=0,runlocal=True`. Every accepted key and its default is
declared by the config file, so a typo fails loudly instead of being ignored.
"""

import ast
import re
import sys

from absl import app
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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, for `app.run(main, flags_parser=config_args.parse_flags)`: an unknown
  `--config.KEY` override is named (ml_collections raises a bare AttributeError("'KEY'") for it,
  deep in a traceback)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    inner = e.args[0] if e.args and isinstance(e.args[0], KeyError) else e
    text = str(inner.args[0]) if inner.args else str(inner)  # "'KEY'", maybe a suggestion.
    leaf = re.search(r"'?([^'\n]*)", text).group(1)
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    overrides = [arg[2:].split("=")[0] for arg in argv[1:] if arg.startswith("--config.")]
    culprits = [key for key in overrides if leaf in key.split(".")]
    if not culprits:
      raise  # Not an override: an error inside the config file, with its own traceback.
    files = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    files += [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    source = f"{files[0].split(':')[0]}'s get_config()" if files else "the config file"
    sys.stderr.write(f"FATAL Flags parsing error: unknown config key {', '.join(culprits)}: "
                     f"{source} defines no such key"
                     f"{f' (did you mean {suggestion.group(1)!r}?)' if suggestion else ''}.\n")
    sys.exit(1)
