"""Short training runs on the tiny benchmark: learning, mesh equivalence, exact resume, eval."""

import json
import os

import jax
import numpy as np
import pytest
from ml_collections import config_flags

from luab_jax import evaluate
from luab_jax import metric_logs
from luab_jax import train

_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "demo.py")


def _config(data_dir, **overrides):
  config = config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
      "demo", _CONFIG).get_config("runlocal")
  config.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  return config


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metric_logs.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "loss" in r}


def test_short_run_lowers_the_loss(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, total_steps=40, warmup_steps=5, log_training_steps=1,
                   ckpt_steps=40)
  config.optax.lr = 3e-3
  results = train.train_and_evaluate(config, str(tmp_path))
  losses = _losses(str(tmp_path))
  assert sorted(losses) == list(range(1, 41))
  first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (38, 39, 40)])
  assert last < 0.8 * first, (first, last)
  # The final evaluation ran on every background-challenge split and was written out.
  assert 0.0 <= results["bgc/original/accuracy"] <= 1.0
  assert "bgc/bg_gap" in results and "bgc/worst_group_accuracy" in results
  with open(tmp_path / "final_eval.json") as f:
    assert json.load(f)["step"] == 40
  assert os.path.isdir(tmp_path / "tensorboard")


# fsdp_min_size_mb=0 so that every divisible tensor really is split over the fsdp axis; the
# demo config's rules split attention heads and MLP units over "model".
_MESH_RUN = dict(total_steps=5, log_training_steps=1, fsdp_min_size_mb=0.0)


@pytest.fixture(scope="module")
def one_device_losses(tiny_data_dir, tmp_path_factory):
  """The 1-device reference run, shared by every mesh shape below."""
  workdir = str(tmp_path_factory.mktemp("one_device"))
  config = _config(tiny_data_dir, **_MESH_RUN)
  config.mesh = [("data", 1), ("fsdp", 1), ("model", 1)]
  config.evals = {}
  train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return _losses(workdir)


# 2x2x2 (every axis at once) runs by default; the others with -m slow, to keep the default run
# near ten minutes on two cores.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("mesh", [
    pytest.param([("data", 8), ("fsdp", 1), ("model", 1)], marks=_SLOW),
    pytest.param([("data", 2), ("fsdp", 4), ("model", 1)], marks=_SLOW),
    [("data", 2), ("fsdp", 2), ("model", 2)],
    pytest.param([("data", 1), ("fsdp", 8), ("model", 1)], marks=_SLOW),
    # A two-axis config of before the "model" axis.
    pytest.param([("data", 4), ("fsdp", 2)], marks=_SLOW),
], ids=lambda mesh: "x".join(str(size) for _, size in mesh))
def test_eight_device_mesh_matches_one_device(tiny_data_dir, tmp_path, mesh, one_device_losses):
  many = _config(tiny_data_dir, **_MESH_RUN)
  many.mesh = mesh
  many.evals = {}
  train.train_and_evaluate(many, str(tmp_path / "many"))
  a, b = one_device_losses, _losses(str(tmp_path / "many"))
  assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
  # Same math, different reduction order across devices: float32 round-off only.
  np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=2e-5)


# Slow: test_vit.py already checks that each option computes the same function.
@pytest.mark.slow
@pytest.mark.parametrize("model", [dict(remat="dots_saveable"),
                                   dict(scan_layers=True, remat="full")],
                         ids=lambda model: ",".join(f"{k}={v}" for k, v in model.items()))
def test_big_model_options_train_like_the_default(tiny_data_dir, tmp_path, model,
                                                   one_device_losses):
  # On a 2x2x2 mesh. Remat recomputes the same function: the reference losses within float32
  # round-off. Scan draws its per-layer initialisation differently (equivalence for equal
  # parameters is in test_vit.py); here it must train, its stacked parameters matched by the
  # tensor-parallel rules.
  config = _config(tiny_data_dir, **_MESH_RUN)
  config.mesh = [("data", 2), ("fsdp", 2), ("model", 2)]
  config.model.update(model)
  config.evals = {}
  train.train_and_evaluate(config, str(tmp_path))
  losses = _losses(str(tmp_path))
  assert sorted(losses) == [1, 2, 3, 4, 5] and all(np.isfinite(v) for v in losses.values())
  if not model.get("scan_layers"):
    np.testing.assert_allclose([losses[s] for s in range(1, 6)],
                               [one_device_losses[s] for s in range(1, 6)], rtol=2e-5)


# The EMA of the weights is checkpointed and restored; gradient accumulation changes nothing.
# The plain case runs with -m slow: the EMA + accumulation case checks the same bitwise resume
# with more state, and the chaos test (slow) resumes the plain config many times.
@pytest.mark.parametrize("options", [pytest.param({}, marks=_SLOW),
                                     {"ema_decay": 0.9, "grad_accum_steps": 2}],
                         ids=["plain", "ema_accum"])
def test_resume_continues_with_identical_losses(tiny_data_dir, tmp_path, options):
  config = _config(tiny_data_dir, total_steps=6, log_training_steps=1, ckpt_steps=100,
                   **options)
  config.evals = {}
  train.train_and_evaluate(config, str(tmp_path / "straight"))
  train.train_and_evaluate(config, str(tmp_path / "resumed"), stop_at_step=3)
  assert sorted(_losses(str(tmp_path / "resumed"))) == [1, 2, 3]
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  straight, resumed = _losses(str(tmp_path / "straight")), _losses(str(tmp_path / "resumed"))
  assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
  # Bitwise: same data order (restored Grain iterator), same parameters, same programs.
  assert [resumed[s] for s in (4, 5, 6)] == [straight[s] for s in (4, 5, 6)]


# With an EMA, training evaluates the EMA and so must the batch evaluation of its checkpoint.
# Slow: test_batch_eval.py and test_fault_tolerance.py restore onto other meshes by default.
@pytest.mark.parametrize("options", [pytest.param({}, marks=_SLOW),
                                     pytest.param({"ema_decay": 0.5}, marks=_SLOW)],
                         ids=["plain", "ema"])
def test_evaluate_restores_on_another_mesh_and_matches_training(tiny_data_dir, tmp_path,
                                                                 options):
  config = _config(tiny_data_dir, total_steps=3, **options)
  config.mesh = [("data", 4), ("fsdp", 2)]
  config.fsdp_min_size_mb = 0.0
  trained = train.train_and_evaluate(config, str(tmp_path))
  config.mesh = [("data", 8), ("fsdp", 1)]
  evaluated = evaluate.evaluate_checkpoint(config, str(tmp_path))
  assert evaluated["step"] == 3
  for key, value in trained.items():
    np.testing.assert_allclose(evaluated[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert os.path.exists(tmp_path / "eval" / "step_3.json")


def test_batch_size_not_divisible_by_devices_fails_before_compiling(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, batch_size=12)
  with pytest.raises(ValueError, match=r"config.batch_size=12 is not divisible by the 8 devices"):
    train.train_and_evaluate(config, str(tmp_path))


def test_missing_dataset_names_the_data_dir(tmp_path):
  config = _config(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="not prepared"):
    train.train_and_evaluate(config, str(tmp_path / "work"))


def test_bfloat16_compute_trains_with_float32_params(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, total_steps=3, log_training_steps=1)
  config.model.dtype = "bfloat16"
  config.model.attention = "xla"  # The demo's CPU attention kernel is float32 only.
  config.evals = {}
  train.train_and_evaluate(config, str(tmp_path))
  losses = _losses(str(tmp_path))
  assert sorted(losses) == [1, 2, 3] and all(np.isfinite(v) for v in losses.values())
