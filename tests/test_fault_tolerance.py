"""Fault tolerance: damaged checkpoints, preemption, NaN policy, corrupt data, config checks.

The slow end-to-end check with real kill -9 / SIGTERM of subprocesses is tests/test_chaos.py.
"""

import glob
import io
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from PIL import Image

from luab_jax import checkpointing
from luab_jax import config_schema
from luab_jax import input_pipeline
from luab_jax import preemption
from luab_jax import sharding as sharding_lib
from luab_jax import train
from luab_jax import train_state as train_state_lib
from luab_jax.pp import transforms
from tests.test_train import _config, _losses

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


def _inject(monkeypatch, at_call: int, action):
  """Applies `action(host_batch)` to the `at_call`-th training batch (1-based)."""
  original, calls = sharding_lib.to_global, [0]

  def to_global(host_batch, sharding):
    if "weight" in host_batch:  # Training batches only (evaluation batches have none).
      calls[0] += 1
      if calls[0] == at_call:
        action(host_batch)
    return original(host_batch, sharding)

  monkeypatch.setattr(sharding_lib, "to_global", to_global)


def _abstract_state(config, mesh):
  spec = train_state_lib.model_spec(config)
  from luab_jax import optim  # pylint: disable=g-import-not-at-top
  tx, _ = optim.make_optimizer(config.optax, 4, 1)
  abstract = train_state_lib.abstract_train_state(spec, tx)
  shardings = train_state_lib.train_state_shardings(abstract, config, mesh)
  return checkpointing.abstract_like(abstract, shardings)


def test_damaged_latest_falls_back_and_resumes_on_fewer_devices(tiny_data_dir, tmp_path, caplog):
  # 8 devices, checkpoints at 2 and 4, the best by mixed_rand accuracy kept separately.
  config = _config(tiny_data_dir, total_steps=4, ckpt_steps=2, keep_ckpts=2, log_training_steps=1)
  config.best_metric = "bgc/mixed_rand/accuracy"
  config.evals.bgc.every_steps = 2
  work = str(tmp_path)
  train.train_and_evaluate(config, work)
  straight = _losses(work)
  assert sorted(os.listdir(checkpointing.checkpoint_dir(work))) == ["2", "4"]
  best = os.listdir(checkpointing.checkpoint_dir(work, kind="checkpoints_best"))
  assert len(best) == 1 and best[0] in ("2", "4")  # The best never evicted the latest.

  # Step 4 damaged (a data file truncated), plus the leftovers of a write killed mid-way.
  data_files = glob.glob(os.path.join(work, "checkpoints", "4", "state", "**", "d", "*"),
                         recursive=True)
  for path in data_files:
    with open(path, "r+b") as f:
      f.truncate(7)
  os.makedirs(os.path.join(work, "checkpoints", "6.orbax-checkpoint-tmp-1234", "state"))
  config.mesh = [("data", 4), ("fsdp", 1)]
  config.evals.bgc.every_steps = None
  train.train_and_evaluate(config, work, devices=jax.devices()[:4])
  assert "Checkpoint of step 4" in caplog.text and "cannot be restored" in caplog.text
  assert os.listdir(checkpointing.checkpoint_dir(work, kind="checkpoints_damaged")) == ["4"]
  assert not glob.glob(os.path.join(work, "checkpoints", "*tmp*"))
  resumed = _losses(work)
  # Steps 3 and 4 redone from step 2's parameters and data position, on another mesh.
  np.testing.assert_allclose([resumed[s] for s in (3, 4)], [straight[s] for s in (3, 4)],
                             rtol=2e-5)

  # ... and onto a single device, for one more step.
  config.mesh = [("data", 1), ("fsdp", 1)]
  config.total_steps = 5
  train.train_and_evaluate(config, work, devices=jax.devices()[:1])
  assert 5 in _losses(work)


def test_no_usable_checkpoint_fails_listing_them(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, total_steps=4, ckpt_steps=2, log_training_steps=2)
  config.evals = {}
  mesh = sharding_lib.make_mesh(config.mesh)
  # Fake two steps with a missing metadata file each: nothing may start from scratch over them.
  for step in (2, 4):
    os.makedirs(os.path.join(tmp_path, "checkpoints", str(step), "state"))
    os.makedirs(os.path.join(tmp_path, "checkpoints", str(step), "data_iter"))
    with open(os.path.join(tmp_path, "checkpoints", str(step), "_CHECKPOINT_METADATA"), "w") as f:
      f.write("{}")
  manager = checkpointing.create_manager(str(tmp_path))
  with pytest.raises(RuntimeError, match=r"step 4: missing or empty: commit_success.txt.*"
                                         r"step 2: missing"):
    checkpointing.restore_latest(manager, str(tmp_path), _abstract_state(config, mesh), None)
  manager.close()


def test_process_count_change_is_an_error_or_an_explicit_restart(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir, total_steps=2, ckpt_steps=2, log_training_steps=2)
  config.evals = {}
  work = str(tmp_path)
  train.train_and_evaluate(config, work)
  # Simulate a checkpoint written by 2 processes (real multi-process runs are too slow here).
  iter_dir = os.path.join(work, "checkpoints", "2", "data_iter")
  os.rename(os.path.join(iter_dir, "process_0-of-1.json"),
            os.path.join(iter_dir, "process_0-of-2.json"))
  mesh = sharding_lib.make_mesh(config.mesh)
  manager = checkpointing.create_manager(work)
  with pytest.raises(ValueError, match=r"step 2 .* data iterator of 2 processes, but this job "
                                       r"has 1.*data_iter_on_process_change"):
    checkpointing.restore_latest(manager, work, _abstract_state(config, mesh), None)
  state, step, iter_restored = checkpointing.restore_latest(
      manager, work, _abstract_state(config, mesh), None, on_process_change="restart")
  manager.close()
  assert step == 2 and int(state["step"]) == 2 and not iter_restored


def test_sigterm_saves_at_the_next_step_and_exits(tiny_data_dir, tmp_path, monkeypatch):
  config = _config(tiny_data_dir, total_steps=6, ckpt_steps=100, log_training_steps=1)
  config.evals = {}
  handler_before = signal.getsignal(signal.SIGTERM)
  _inject(monkeypatch, 3, lambda batch: signal.raise_signal(signal.SIGTERM))
  with pytest.raises(preemption.Preempted) as raised:
    train.train_and_evaluate(config, str(tmp_path))
  assert raised.value.code == 128 + signal.SIGTERM
  assert "step 3" in raised.value.message
  assert os.listdir(checkpointing.checkpoint_dir(str(tmp_path))) == ["3"]
  assert signal.getsignal(signal.SIGTERM) == handler_before


def _nan_image(batch):
  batch["image"][0, 0, 0, 0] = np.nan


def test_nan_stops_naming_the_step_and_keeps_the_good_checkpoint(tiny_data_dir, tmp_path,
                                                                 monkeypatch):
  config = _config(tiny_data_dir, total_steps=6, ckpt_steps=2, log_training_steps=6)
  config.evals = {}
  _inject(monkeypatch, 3, _nan_image)
  with pytest.raises(FloatingPointError, match=r"at step 3 .*steps 3\.\.4.*after step 2"):
    train.train_and_evaluate(config, str(tmp_path))
  # Step 4 (non-finite) was never saved over step 2.
  assert os.listdir(checkpointing.checkpoint_dir(str(tmp_path))) == ["2"]


def test_nan_skip_policy_and_skipped_images_are_counted(tiny_data_dir, tmp_path, monkeypatch):
  config = _config(tiny_data_dir, total_steps=4, ckpt_steps=4, log_training_steps=2)
  config.nan_policy = "skip"
  config.evals = {}

  def corrupt(batch):
    _nan_image(batch)
    batch["weight"][1] = 0.0  # As the transform marks an undecodable image.

  _inject(monkeypatch, 3, corrupt)
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    logged = {r["step"]: r for r in map(json.loads, f) if "loss" in r or "nan_skipped_steps" in r}
  assert logged[2]["nan_skipped_steps"] == 0 and logged[4]["nan_skipped_steps"] == 1
  assert logged[4]["data/skipped_images"] == 1 and logged[2]["data/skipped_images"] == 0
  assert np.isfinite(logged[4]["loss"])  # The mean leaves the skipped step out.


def _jpeg(mode="RGB", size=(40, 30)):
  buf = io.BytesIO()
  Image.new(mode, size, 128 if mode == "L" else (200, 10, 10, 0)[:len(mode)]).save(buf, "JPEG")
  return buf.getvalue()


def _png():
  buf = io.BytesIO()
  Image.new("RGBA", (30, 40), (1, 2, 3, 4)).save(buf, "PNG")
  return buf.getvalue()


def test_corrupt_records_never_stop_the_pipeline():
  good = _jpeg()
  cases = {  # name: (image bytes, point, expected weight, expected bad points)
      "truncated.JPEG": (good[:len(good) // 2], (0.5, 0.5), 0.0, 0),
      "empty.JPEG": (b"", (0.5, 0.5), 0.0, 0),
      "cmyk.JPEG": (_jpeg("CMYK"), (0.5, 0.5), 1.0, 0),
      "gray.JPEG": (_jpeg("L"), (0.5, 0.5), 1.0, 0),
      "png.JPEG": (_png(), (0.5, 0.5), 1.0, 0),
      "nan_point.JPEG": (good, (np.nan, 0.5), 1.0, 1),
      "outside_point.JPEG": (good, (1.5, 0.5), 1.0, 1),
      "good.JPEG": (good, (0.5, 0.5), 1.0, 0),
  }
  records = [{"image": image, "label": i % 4, "point": np.float32(point), "has_point": True,
              "file_name": name} for i, (name, (image, point, _, _)) in enumerate(cases.items())]
  transform = transforms.TrainTransform(image_size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  rng = np.random.default_rng(0)
  for record, (name, (_, _, weight, bad)) in zip(records, cases.items()):
    example = transform.random_map(record, rng)
    assert example["weight"] == weight, name
    assert example["bad_points"] == bad, name
    assert example["image"].shape == (16, 16, 3) and np.isfinite(example["image"]).all(), name
    if weight == 0 or bad:
      assert example["point_weight"].sum() == 0, name
  # Through the Grain pipeline: the batch carries the per-example flags the train step sums.
  input_config = _config("/tmp").input
  input_config.image_size = 16
  ds = input_pipeline.make_train_dataset(records, input_config, per_process_batch_size=8, seed=0)
  batch = next(iter(ds))
  assert batch["weight"].sum() == 6 and batch["bad_points"].sum() == 2


def test_config_keys_are_checked_against_the_schema(tiny_data_dir, tmp_path):
  for path in sorted(glob.glob(os.path.join(_CONFIGS, "*.py"))):
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
    module = config_flags.config_flags._LoadConfigModule("c", path)  # pylint: disable=protected-access
    for arg in (None, "runlocal"):
      try:
        config = module.get_config(arg)
      except ValueError:  # A config without a runlocal argument.
        continue
      config_schema.check_known_keys(config)
  config = _config(tiny_data_dir)
  config.log_trainig_steps = 3
  config.input.num_wokers = 2
  with pytest.raises(ValueError, match=r"config.log_trainig_steps, config.input.num_wokers"):
    train.train_and_evaluate(config, str(tmp_path))


def test_incompatible_workdir_is_refused_compatible_changes_pass(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir)
  saved = json.loads(config.to_json_best_effort())
  changed = config_schema.check_resume_compatible(saved, _config(tiny_data_dir, total_steps=99),
                                                  path="x")
  assert changed == ["config.total_steps: 6 -> 99"]
  assert not config_schema.check_resume_compatible(saved, config, path="x")
  with open(tmp_path / "config.json", "w") as f:
    json.dump(saved, f)
  for key, value in (("num_classes", 7), ("model.variant", "Ti/16"),
                     ("dataset", "luab_shapes/cpu64")):
    other = _config(tiny_data_dir, **{key: value})
    with pytest.raises(ValueError, match=rf"incompatible config .*config.{key}"):
      train.train_and_evaluate(other, str(tmp_path))


def test_missing_data_dir_and_indivisible_batch_fail_before_compiling(tmp_path):
  config = _config(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match=r"config.data_dir=.*nowhere.* does not exist"):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  shutil.rmtree(tmp_path / "work", ignore_errors=True)
