"""Config files and command-line overrides: parsing, and loud failures on mistakes."""

import os
import sys
from unittest import mock

from absl import flags
import pytest
from ml_collections import config_flags

from luab_jax import config_args
from luab_jax import durations

_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "demo.py")


def _parse(*argv):
  """Parses argv like `python -m luab_jax.train` does (config_flags reads sys.argv early)."""
  argv = ["prog", *argv]
  with mock.patch.object(sys, "argv", argv):
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True)
    flag_values(argv)
    return flag_values.config


def test_overrides_reach_the_config():
  config = _parse(f"--config={_CONFIG}:lam=0,steps=7", "--config.batch_size=32",
                  "--config.optax.lr=0.01")
  assert config.loss.point_lambda == 0.0
  assert config.total_steps == 7 and config.batch_size == 32 and config.optax.lr == 0.01


def test_unknown_override_key_is_an_error_naming_it():
  with pytest.raises(Exception, match="batch_sise"):
    _parse(f"--config={_CONFIG}", "--config.batch_sise=32")


def test_the_command_line_names_an_unknown_override_key(capsys):
  """The trainer's flag parser (config_args.parse_flags): ml_collections' bare AttributeError
  becomes one line naming the key, the config file and the key it resembles."""
  with mock.patch.object(config_args.app, "parse_flags_with_usage",
                         lambda argv: _parse(*argv[1:])), pytest.raises(SystemExit) as exit:
    config_args.parse_flags(["prog", f"--config={_CONFIG}:runlocal", "--config.evals.loc.Radii=1"])
  assert exit.value.code == 1
  assert capsys.readouterr().err == (
      f"FATAL Flags parsing error: unknown config key config.evals.loc.Radii: {_CONFIG}'s "
      "get_config() defines no such key (did you mean 'radii'?).\n")
  with mock.patch.object(config_args.app, "parse_flags_with_usage",
                         lambda argv: _parse(*argv[1:])), pytest.raises(SystemExit):
    config_args.parse_flags(["prog", "--config", _CONFIG, "--config.model.no_such_key=1"])
  assert "unknown config key config.model.no_such_key: " in capsys.readouterr().err


def test_an_error_inside_a_config_file_keeps_its_traceback(tmp_path):
  """Only an unknown key of an override is rewritten: a bug in get_config is raised as is."""
  path = tmp_path / "buggy.py"
  path.write_text("import ml_collections\n\ndef get_config():\n"
                  "  config = ml_collections.ConfigDict()\n  config.model.variant = 'mu/8'\n"
                  "  return config\n", encoding="utf-8")
  with mock.patch.object(config_args.app, "parse_flags_with_usage",
                         lambda argv: _parse(*argv[1:])):
    with pytest.raises(AttributeError, match="model"):
      config_args.parse_flags(["prog", f"--config={path}", "--config.seed=1"])


def test_the_demo_config_takes_its_class_count_from_the_dataset():
  """luab_shapes/tiny has 4 classes, the others 10: `--dataset luab_shapes/tiny` trained a
  10-class model on 4 classes."""
  assert _parse(f"--config={_CONFIG}").num_classes == 10
  assert _parse(f"--config={_CONFIG}:dataset='luab_shapes/tiny'").num_classes == 4
  assert _parse(f"--config={_CONFIG}:runlocal").num_classes == 4


def test_unknown_config_argument_is_an_error_naming_it():
  with pytest.raises(ValueError, match="lamda"):
    config_args.parse_arg("lamda=1", lam=1.0, runlocal=False)


def test_config_arguments_of_another_type_are_refused():
  for arg, message in (("lam=None", "'lam' expects a float"), ("steps=8.5", "'steps' expects a int"),
                       ("steps=[1]", "'steps' expects a int")):
    with pytest.raises(ValueError, match=message):
      config_args.parse_arg(arg, lam=1.0, steps=800, dataset="x")
  assert config_args.parse_arg("dataset=123", lam=1.0, steps=800, dataset="x").dataset == "123"


def test_config_argument_types():
  args = config_args.parse_arg("lam=1,runlocal,variant=B/16", lam=0.5, runlocal=False,
                               variant="S/16")
  assert args.lam == 1.0 and isinstance(args.lam, float)
  assert args.runlocal is True and args.variant == "B/16"


def test_durations():
  cfg = {"total_epochs": 2, "warmup_percent": 10}
  assert durations.steps("total", cfg, num_examples=1000, batch_size=100) == 20
  assert durations.steps("warmup", cfg, total_steps=20) == 2
  assert durations.steps("ckpt", cfg, default=5) == 5
  with pytest.raises(ValueError, match="total_steps, config.total_epochs"):
    durations.steps("total", {"total_steps": 3, "total_epochs": 1})


_CONFIG_DIR = os.path.dirname(_CONFIG)
_CONFIG_FILES = sorted(f for f in os.listdir(_CONFIG_DIR) if f.endswith(".py"))


@pytest.mark.parametrize("arg", ["", "runlocal"])
@pytest.mark.parametrize("name", _CONFIG_FILES)
def test_every_config_passes_the_schema(name, arg):
  """Each config of configs/ (default and local mode) uses only keys the schema knows."""
  # pylint: disable=g-import-not-at-top
  from luab_jax import config_schema
  from luab_jax import train_state
  from luab_jax.evaluators import common as evaluators
  # pylint: enable=g-import-not-at-top
  path = os.path.join(_CONFIG_DIR, name)
  config = _parse(f"--config={path}:{arg}" if arg else f"--config={path}")
  config_schema.check_known_keys(config)
  evaluators.check_config_keys(config.evals)
  train_state.check_model_config(config)
  assert config.evals, f"{name}:{arg} has no evaluators"


def test_unknown_evaluator_key_is_an_error_naming_it():
  from luab_jax.evaluators import common as evaluators  # pylint: disable=g-import-not-at-top
  config = _parse(f"--config={_CONFIG}:runlocal")
  config.unlock()
  config.evals.loc.radiuses = (0.1,)
  with pytest.raises(ValueError, match=r"config\.evals\.loc\.radiuses"):
    evaluators.check_config_keys(config.evals)
  config.evals.loc = dict(type="no_such_evaluator")
  with pytest.raises(ValueError, match="no_such_evaluator"):
    evaluators.check_config_keys(config.evals)


# The trainer's options as the README shows them set on the command line; any config must take
# them (a locked config takes only keys it declares, and a None only when it is typed).
_RUN_OPTION_OVERRIDES = {
    "nan_policy": ("skip", "skip"),
    "best_metric": ("bgc/mixed_rand/accuracy", "bgc/mixed_rand/accuracy"),
    "best_mode": ("min", "min"),
    "grad_accum_steps": ("2", 2),
    "ema_decay": ("0.9999", 0.9999),
    "data_dir": ("/data/tfds", "/data/tfds"),
    "compilation_cache_dir": ("", ""),
}


@pytest.mark.parametrize("arg", ["", "runlocal"])
@pytest.mark.parametrize("name", _CONFIG_FILES)
def test_run_options_can_be_set_on_the_command_line(name, arg):
  path = os.path.join(_CONFIG_DIR, name)
  config = _parse(f"--config={path}:{arg}" if arg else f"--config={path}",
                  *(f"--config.{key}={text}" for key, (text, _) in _RUN_OPTION_OVERRIDES.items()))
  assert {key: config[key] for key in _RUN_OPTION_OVERRIDES} == {
      key: value for key, (_, value) in _RUN_OPTION_OVERRIDES.items()}


@pytest.mark.parametrize("name", _CONFIG_FILES)
def test_every_config_declares_every_input_loss_and_optimizer_key(name):
  """So that each can be set on the command line (the schema's NESTED keys)."""
  # pylint: disable=g-import-not-at-top
  from luab_jax import config_schema
  # pylint: enable=g-import-not-at-top
  config = _parse(f"--config={os.path.join(_CONFIG_DIR, name)}")
  missing = [f"config.{parent}.{key}" for parent, keys in config_schema.NESTED.items()
             for key in sorted(keys) if key not in config[parent]]
  assert not missing, f"{name} does not declare {missing}"


def _none_leaves(config, prefix=""):
  """Keys holding a plain None, which `--config.KEY=VALUE` cannot set (a typed
  ml_collections.FieldReference(None, field_type=...) it can)."""
  found = []
  for key, value in config.items(preserve_field_references=True):
    if hasattr(value, "items"):
      found += _none_leaves(value, f"{prefix}{key}.")
    elif value is None:
      found.append(prefix + key)
  return found


@pytest.mark.parametrize("arg", ["", "runlocal"])
@pytest.mark.parametrize("name", _CONFIG_FILES)
def test_no_config_key_is_an_untyped_none(name, arg):
  path = os.path.join(_CONFIG_DIR, name)
  config = _parse(f"--config={path}:{arg}" if arg else f"--config={path}")
  assert not _none_leaves(config), f"{name}:{arg}"


def test_demo_evaluators_every_steps_can_be_set():
  config = _parse(f"--config={_CONFIG}", "--config.evals.bgc.every_steps=100")
  assert config.evals.bgc.every_steps == 100 and config.evals.loc.every_steps is None


def test_a_removed_key_is_an_error_saying_why():
  from luab_jax import config_schema  # pylint: disable=g-import-not-at-top
  config = _parse(f"--config={_CONFIG}:runlocal")
  config.unlock()
  config.data_iter_on_process_change = "restart"
  with pytest.raises(ValueError, match=r"config\.data_iter_on_process_change: a resume on "
                                       r"another process or worker count now continues"):
    config_schema.check_known_keys(config)


def test_a_key_added_with_a_default_resumes_older_work_directories():
  """Work directories written before config.loss.point_smooth_l1_beta existed trained with the
  value that was fixed in the code: they resume at it, and refuse another."""
  from luab_jax import config_schema  # pylint: disable=g-import-not-at-top
  config = _parse(f"--config={_CONFIG}:runlocal")
  older = config.to_dict()
  del older["loss"]["point_smooth_l1_beta"]
  assert config_schema.check_resume_compatible(older, config, path="x") == []
  config.loss.point_smooth_l1_beta = 0.5
  with pytest.raises(ValueError, match=r"config\.loss\.point_smooth_l1_beta: 0\.1 -> 0\.5"):
    config_schema.check_resume_compatible(older, config, path="x")


def test_resume_treats_a_key_declared_at_none_as_the_same_as_a_missing_one():
  """Work directories written before a config declared `ema_decay` (at None) still resume; one
  that did use an EMA does not resume without it."""
  # pylint: disable=g-import-not-at-top
  from luab_jax import config_schema
  # pylint: enable=g-import-not-at-top
  config = _parse(f"--config={_CONFIG}:runlocal").to_dict()
  older = {key: value for key, value in config.items() if key != "ema_decay"}
  assert config_schema.check_resume_compatible(older, config, path="x") == []
  with pytest.raises(ValueError, match="config.ema_decay: 0.999 -> None"):
    config_schema.check_resume_compatible({**older, "ema_decay": 0.999}, config, path="x")


def test_mesh_and_sharding_rules_can_be_set_on_the_command_line():
  config = _parse(f"--config={_CONFIG}", '--config.mesh=[("data", 2), ("fsdp", 2), ("model", 2)]',
                  '--config.sharding_rules=((".*", "replicate"),)')
  assert config.mesh == (("data", 2), ("fsdp", 2), ("model", 2))
  assert config.sharding_rules == ((".*", "replicate"),)
