"""Fault tolerance: damaged checkpoints, preemption, NaN policy, corrupt data, config checks.

The slow end-to-end check with real kill -9 / SIGTERM of subprocesses is tests/test_chaos.py.
"""

import glob
import io
import json
import logging
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from PIL import Image

from luab_jax import checkpointing
from luab_jax import config_schema
from luab_jax import evaluate
from luab_jax import input_pipeline
from luab_jax import metric_logs
from luab_jax import optim
from luab_jax import preemption
from luab_jax import sharding as sharding_lib
from luab_jax import train
from luab_jax import train_state as train_state_lib
from luab_jax import train_step
from luab_jax.pp import transforms
from tests.test_train import _config

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
  tx, _ = optim.make_optimizer(config.optax, 4, 1)
  abstract = train_state_lib.abstract_train_state(spec, tx)
  shardings = train_state_lib.train_state_shardings(abstract, config, mesh)
  return checkpointing.abstract_like(abstract, shardings)


def _restore_latest(work, config, mesh, num_workers):
  """checkpointing.restore_latest on `work` (no data iterator built), its manager closed."""
  manager = checkpointing.create_manager(work)
  try:
    return checkpointing.restore_latest(manager, work, _abstract_state(config, mesh), None,
                                        config_seed=config.seed, num_workers=num_workers)
  finally:
    manager.close()


def _records(workdir):
  return list(metric_logs.read_jsonl(os.path.join(workdir, "metrics.jsonl")))


def test_preempt_damage_fall_back_resume_on_fewer_devices_evaluate_best(tiny_data_dir, tmp_path,
                                                                       caplog, monkeypatch):
  """One work directory through SIGTERM, a damaged latest step, resume on 4 devices, the best
  checkpoint evaluated on 1 device, and a process-count change."""
  config = _config(tiny_data_dir, total_steps=6, ckpt_steps=2, keep_ckpts=2, log_training_steps=1)
  del config.evals["loc"]
  config.evals.bgc.every_steps = 2
  config.best_metric = "bgc/mixed_rand/accuracy"
  work = str(tmp_path)

  # 1. SIGTERM during step 3 (8 devices): saved at the step boundary, exit status 143.
  handler_before = signal.getsignal(signal.SIGTERM)
  _inject(monkeypatch, 3, lambda batch: signal.raise_signal(signal.SIGTERM))
  with pytest.raises(preemption.Preempted) as raised:
    train.train_and_evaluate(config, work)
  monkeypatch.undo()
  assert raised.value.code == 128 + signal.SIGTERM and "step 3" in raised.value.message
  assert signal.getsignal(signal.SIGTERM) == handler_before
  assert sorted(os.listdir(checkpointing.checkpoint_dir(work))) == ["2", "3"]
  assert os.listdir(checkpointing.checkpoint_dir(work, kind="checkpoints_best")) == ["2"]
  first = {r["step"]: r["loss"] for r in _records(work) if "loss" in r}
  assert sorted(first) == [1, 2, 3]

  # 2. Step 3 damaged (data files truncated), plus the leftovers of a write killed mid-way;
  # resumed on 4 devices: step 2 is used, step 3 moved aside, steps 3.. redone.
  for path in glob.glob(os.path.join(work, "checkpoints", "3", "state", "**", "d", "*"),
                        recursive=True):
    with open(path, "r+b") as f:
      f.truncate(7)
  os.makedirs(os.path.join(work, "checkpoints", "8.orbax-checkpoint-tmp-1234", "state"))
  config.mesh = [("data", 4), ("fsdp", 1)]
  train.train_and_evaluate(config, work, devices=jax.devices()[:4])
  assert "Checkpoint of step 3" in caplog.text and "cannot be restored" in caplog.text
  assert os.listdir(checkpointing.checkpoint_dir(work, kind="checkpoints_damaged")) == ["3"]
  assert not glob.glob(os.path.join(work, "checkpoints", "*tmp*"))
  assert sorted(os.listdir(checkpointing.checkpoint_dir(work))) == ["4", "6"]
  records = _records(work)
  assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 3, 4, 5, 6]
  # Step 3 again, from step 2's parameters and data position, on another mesh: float32
  # round-off of another reduction order only.
  np.testing.assert_allclose([r["loss"] for r in records if r.get("step") == 3 and "loss" in r],
                             [first[3]] * 2, rtol=2e-5)

  # 3. The best checkpoint (never evicted by keep_ckpts=2) evaluated on 1 device: the same
  # metrics as the trainer's evaluation of that step.
  best = os.listdir(checkpointing.checkpoint_dir(work, kind="checkpoints_best"))
  assert len(best) == 1 and best[0] in ("2", "4", "6")
  best_step = int(best[0])
  logged = {}
  for r in records:
    if r["step"] == best_step:
      logged.update({k: v for k, v in r.items() if k.startswith("bgc/")})
  result = evaluate.run([work], checkpoints="best", mesh=(("data", 1), ("fsdp", 1)),
                        devices=jax.devices()[:1], plots=False)
  rows = next(iter(result["rows"].values()))
  assert {row["step"] for row in rows} == {best_step}
  evaluated = {f"bgc/{row['metric']}": row["value"] for row in rows}
  assert evaluated.keys() == logged.keys()
  for key, value in logged.items():
    np.testing.assert_allclose(evaluated[key], value, rtol=1e-5, atol=1e-6, err_msg=key)

  # 4. The data iterator as if written by a job of 2 processes (its file renamed; real
  # multi-process runs are in test_multiprocess): this job of 1 process does not restore
  # Grain's state of 2 but starts the same stream at the checkpoint's next global batch.
  iter_dir = os.path.join(work, "checkpoints", "6", "data_iter")
  os.rename(os.path.join(iter_dir, "process_0-of-1.json"),
            os.path.join(iter_dir, "process_0-of-2.json"))
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:4])
  restored = _restore_latest(work, config, mesh, config.input.num_workers)
  assert restored.step == 6 and int(restored.state["step"]) == 6
  assert restored.data_iter is None and restored.position == checkpointing.DataPosition(
      config.seed, 6, 6, config.input.num_workers)


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
  with pytest.raises(RuntimeError, match=r"step 4: missing or empty: commit_success.txt.*"
                                         r"step 2: missing"):
    _restore_latest(str(tmp_path), config, mesh, 0)


def _nan_image(batch):
  # uint8 pixels cannot hold a NaN: the model also takes float images in [-1, 1].
  image = batch["image"].astype(np.float32) * np.float32(2 / 255) - 1
  image[0, 0, 0, 0] = np.nan
  batch["image"] = image


def test_nan_stops_keeping_the_good_checkpoint_then_skip_policy_counts(tiny_data_dir, tmp_path,
                                                                      monkeypatch, caplog):
  # One device: the policy does not depend on the mesh, and one device compiles fastest.
  config = _config(tiny_data_dir, total_steps=6, ckpt_steps=2, log_training_steps=1)
  config.mesh = [("data", 1), ("fsdp", 1)]
  config.evals = {}
  work, one_device = str(tmp_path), jax.devices()[:1]
  _inject(monkeypatch, 3, _nan_image)
  with pytest.raises(FloatingPointError, match=r"at step 3 .*after step 2"):
    train.train_and_evaluate(config, work, devices=one_device)
  monkeypatch.undo()
  # Step 3 (non-finite) was never saved over step 2.
  assert os.listdir(checkpointing.checkpoint_dir(work)) == ["2"]

  # The same work directory resumed under nan_policy="skip" (a compatible change): step 3 is
  # non-finite again and skipped, and an undecodable image in it is counted.
  config.nan_policy = "skip"
  config.total_steps = 4

  def corrupt(batch):
    _nan_image(batch)
    batch["weight"][1] = 0.0  # As the transform marks an undecodable image.

  _inject(monkeypatch, 1, corrupt)  # The first batch of the resumed run is step 3's.
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, work, devices=one_device)
  assert ("1 of the 16 training images of steps 3..3 did not decode and were skipped "
          "(data/skipped_images); dataset 'luab_shapes/tiny' (train).") in caplog.messages
  logged = {r["step"]: r for r in _records(work) if "nan_skipped_steps" in r}
  assert [logged[s]["nan_skipped_steps"] for s in (1, 2, 3, 4)] == [0, 0, 1, 0]
  assert [logged[s]["data/skipped_images"] for s in (1, 2, 3, 4)] == [0, 0, 1, 0]
  assert np.isfinite(logged[4]["loss"])
  assert "loss" not in logged[3]  # The mean over the interval leaves the skipped step out.
  # The skipped step did not advance the optimizer's schedule: step 4 applied (and logs) the
  # rate of schedule step 2, the one step 3 would have applied (steps 1 and 2 applied 0, 1).
  schedule = optim.make_schedule(config.optax, config.total_steps, config.warmup_steps)
  np.testing.assert_allclose(logged[4]["learning_rate"], float(schedule(2)), rtol=1e-6)
  assert float(schedule(2)) != float(schedule(3))


def test_a_stop_never_loses_an_evaluation_nor_reports_an_earlier_one_as_final(
    tiny_data_dir, tmp_path, monkeypatch):
  """SIGTERM before a step's evaluations ran: the resumed run runs them first. SIGTERM at the
  last step: the run is not finished (exit 143, no final_eval.json of an earlier step), and
  the rerun evaluates it and offers it to the best checkpoint."""
  config = _config(tiny_data_dir, total_steps=2, ckpt_steps=100, log_training_steps=100)
  config.mesh = [("data", 1), ("fsdp", 1)]
  del config.evals["loc"]
  config.evals.bgc.every_steps = 1
  config.best_metric = "bgc/original/accuracy"
  work, one_device = str(tmp_path), jax.devices()[:1]
  best_offered = []
  save_best = checkpointing.save_best
  monkeypatch.setattr(checkpointing, "save_best", lambda manager, step, *args: (
      best_offered.append(step), save_best(manager, step, *args)))

  def run_stopped_during(batch):
    _inject(monkeypatch, batch, lambda _: signal.raise_signal(signal.SIGTERM))
    with pytest.raises(preemption.Preempted) as raised:
      train.train_and_evaluate(config, work, devices=one_device)
    return raised.value

  def evaluated_steps():
    return sorted({r["step"] for r in _records(work) if "bgc/original/accuracy" in r})

  # Step 1 saved, its evaluation not run; the steps since the last log are logged at the stop.
  assert "step 1" in run_stopped_during(1).message
  assert evaluated_steps() == [] and [r["step"] for r in _records(work) if "loss" in r] == [1]
  # Resumed: step 1 evaluated first. Then stopped during step 2, the last: saved, but its
  # final evaluation did not run, so the run is not finished.
  preempted = run_stopped_during(1)
  assert preempted.code == 128 + signal.SIGTERM and "step 2" in preempted.message
  assert evaluated_steps() == [1] and best_offered == [1]
  assert not os.path.exists(os.path.join(work, "final_eval.json"))
  # Run again: the final evaluation, reported and offered to the best checkpoint.
  monkeypatch.undo()
  monkeypatch.setattr(checkpointing, "save_best", lambda manager, step, *args: (
      best_offered.append(step), save_best(manager, step, *args)))
  final = train.train_and_evaluate(config, work, devices=one_device)
  assert evaluated_steps() == [1, 2] and best_offered == [1, 2]
  with open(os.path.join(work, "final_eval.json"), encoding="utf-8") as f:
    assert json.load(f) == {"step": 2, **final}
  # A total below the checkpoint's step is refused, not reported as finished.
  config.total_steps = 1
  with pytest.raises(ValueError, match=r"checkpoint of step 2 .* past config.total_steps=1"):
    train.train_and_evaluate(config, work, devices=one_device)
  # An input config error on resume is itself, not "no checkpoint can be restored".
  config.total_steps = 2
  config.input.ram_budget_mb = 0
  with pytest.raises(ValueError, match=r"config.input.ram_budget_mb=0 cannot hold"):
    train.train_and_evaluate(config, work, devices=one_device)
  config.input.ram_budget_mb = None
  # One step more, stopped during it: final_eval.json (step 2's) is not taken for step 3's.
  config.total_steps = 3
  assert "step 3" in run_stopped_during(1).message
  monkeypatch.undo()
  final = train.train_and_evaluate(config, work, devices=one_device)
  with open(os.path.join(work, "final_eval.json"), encoding="utf-8") as f:
    assert json.load(f) == {"step": 3, **final}


def test_without_evaluators_a_stop_at_the_last_step_finishes_the_run(tiny_data_dir, tmp_path,
                                                                      monkeypatch):
  config = _config(tiny_data_dir, total_steps=1, ckpt_steps=100, log_training_steps=100)
  config.mesh = [("data", 1), ("fsdp", 1)]
  config.evals = {}
  _inject(monkeypatch, 1, lambda _: signal.raise_signal(signal.SIGTERM))
  assert train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1]) == {}
  assert os.listdir(checkpointing.checkpoint_dir(str(tmp_path))) == ["1"]


def test_only_evaluation_records_count_as_logged_evaluations(tmp_path):
  """An evaluator named like a training metric ("accuracy", "data/...") is not taken for
  logged by the training record of its step; a line cut by a kill counts as nothing."""
  records = [{"step": 4, "loss": 1.0, "accuracy": 0.5, "data/skipped_images": 0.0},
             {"step": 4, "uptime": 9.0},
             {"step": 4, "bgc/original/accuracy": 0.25, "loc/point_l1": 0.1},
             {"step": 2, "accuracy/top1": 0.1}]
  lines = [json.dumps(record) for record in records] + ['{"step": 4, "data/x']
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines), encoding="utf-8")
  evaluators = ["accuracy", "data", "bgc", "loc"]
  assert train.unlogged_evaluations(str(tmp_path), 4, evaluators, evaluators) == [
      "accuracy", "data"]
  assert train.unlogged_evaluations(str(tmp_path), 2, ["accuracy"], evaluators) == []


def _data_order(work, step):
  manager = checkpointing.create_manager(work)
  try:
    step_dir = os.path.join(checkpointing.checkpoint_dir(work), str(step))
    return checkpointing.data_position(manager, step, step_dir, config_seed=-1)
  finally:
    manager.close()


def test_a_resume_on_another_process_or_worker_count_continues_the_data_order_exactly(
    tiny_data_dir, tmp_path, caplog):
  """The iterator of another process count (simulated) or worker count is not restored; the
  stream continues at the checkpoint's global batch: every step trains on the batch it trains
  on in an uninterrupted run (an earlier version restarted the data order instead)."""
  config = _config(tiny_data_dir, total_steps=8, ckpt_steps=2, log_training_steps=1)
  config.mesh = [("data", 1), ("fsdp", 1)]
  config.evals = {}
  one_device = jax.devices()[:1]
  uninterrupted, resumed = str(tmp_path / "uninterrupted"), str(tmp_path / "resumed")
  train.train_and_evaluate(config, uninterrupted, devices=one_device)
  train.train_and_evaluate(config, resumed, stop_at_step=2, devices=one_device)
  assert _data_order(resumed, 2) == checkpointing.DataPosition(config.seed, 0, 2, 0)
  # As if a job of 2 processes had written step 2.
  iter_dir = os.path.join(resumed, "checkpoints", "2", "data_iter")
  os.rename(os.path.join(iter_dir, "process_0-of-1.json"),
            os.path.join(iter_dir, "process_0-of-2.json"))
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, resumed, stop_at_step=4, devices=one_device)
  assert ("Step 2: data iterator of 2 processes, 0 workers; continuing its stream (seed "
          f"{config.seed}) at global batch 2 with this job's 1 process(es) and 0 worker(s).") in caplog.messages
  assert _data_order(resumed, 4) == checkpointing.DataPosition(config.seed, 2, 4, 0)
  # Grain's state of step 4 restored (the same counts) onto the stream built at batch 2.
  train.train_and_evaluate(config, resumed, stop_at_step=5, devices=one_device)
  assert _data_order(resumed, 5) == checkpointing.DataPosition(config.seed, 2, 5, 0)
  # Another worker count (a compatible config change).
  config.input.num_workers = 1
  train.train_and_evaluate(config, resumed, devices=one_device)
  assert _data_order(resumed, 8) == checkpointing.DataPosition(config.seed, 5, 8, 1)

  def losses(work):
    return {r["step"]: r["loss"] for r in _records(work) if "loss" in r}

  assert sorted(losses(resumed)) == list(range(1, 9))
  assert losses(resumed) == losses(uninterrupted)

  # A damaged iterator file is never a reason to give up a step: of other counts it is not
  # read, of the same counts the step resumes by position too, with a warning.
  with open(os.path.join(resumed, "checkpoints", "8", "data_iter", "process_0-of-1.json"),
            "w", encoding="utf-8") as f:
    f.write('{"next_index_in_cycle": ')
  mesh = sharding_lib.make_mesh(config.mesh, one_device)

  assert _restore_latest(resumed, config, mesh, num_workers=0).step == 8
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert _restore_latest(resumed, config, mesh, num_workers=1).step == 8
  assert "data_iter/process_0-of-1.json is damaged (JSONDecodeError" in caplog.text
  assert "resuming it by its recorded data position instead" in caplog.text
  assert not os.path.exists(checkpointing.checkpoint_dir(resumed, kind="checkpoints_damaged"))
  # ... and the run resumed there trains step 9 on the uninterrupted run's batch 9.
  config.total_steps = 9
  train.train_and_evaluate(config, resumed, devices=one_device)
  train.train_and_evaluate(config, uninterrupted, devices=one_device)
  assert losses(resumed)[9] == losses(uninterrupted)[9]


def test_steps_written_before_the_data_position_was_recorded_resume_by_position(
    tiny_data_dir, tmp_path):
  """No data_order (config.seed's stream from the start), or {"seed": S} only (S = config.seed
  + R for an order an earlier version restarted at step R): the next batch follows from them."""
  config = _config(tiny_data_dir, total_steps=2, ckpt_steps=2, log_training_steps=2)
  config.mesh = [("data", 1), ("fsdp", 1)]
  config.evals = {}
  work = str(tmp_path)
  train.train_and_evaluate(config, work, devices=jax.devices()[:1])
  order_dir = os.path.join(work, "checkpoints", "2", checkpointing.DATA_ORDER)
  order_file = "metadata"  # Orbax JsonCheckpointHandler's file.
  assert os.path.isfile(os.path.join(order_dir, order_file))
  mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:1])

  def restored_position(order):
    if order is None:
      shutil.rmtree(order_dir, ignore_errors=True)
    else:
      os.makedirs(order_dir, exist_ok=True)
      with open(os.path.join(order_dir, order_file), "w", encoding="utf-8") as f:
        json.dump(order, f)
    return _restore_latest(work, config, mesh, num_workers=0).position

  # Every resume by position: its iterator is built at the next batch.
  assert restored_position({"seed": config.seed + 1}) == checkpointing.DataPosition(
      config.seed + 1, 1, 1, 0)
  with pytest.raises(RuntimeError, match=r"step 2: restore failed: ValueError: .*data_order "
                                         r"holds .*'first_batch': 3.*first_batch <= next_batch"):
    restored_position({"seed": config.seed, "first_batch": 3, "next_batch": 2, "num_workers": 0})
  assert restored_position(None) == checkpointing.DataPosition(config.seed, 2, 2, 0)


def test_a_logging_interval_of_undecodable_images_stops_the_run(tiny_data_dir, tmp_path,
                                                                monkeypatch):
  """One undecodable image is skipped and counted; a whole interval of them means the dataset's
  images are unreadable (a builder storing them wrongly), and training on nothing stops."""
  config = _config(tiny_data_dir, total_steps=4, ckpt_steps=4, log_training_steps=2)
  config.mesh = [("data", 1), ("fsdp", 1)]
  config.evals = {}

  def undecodable(batch):
    batch["weight"][:] = 0.0  # As the transform marks images that do not decode.

  _inject(monkeypatch, 3, undecodable)
  train.train_and_evaluate(config, str(tmp_path / "one_batch"), devices=jax.devices()[:1])
  monkeypatch.undo()
  original = sharding_lib.to_global
  monkeypatch.setattr(sharding_lib, "to_global", lambda batch, sharding: original(
      {**batch, "weight": batch["weight"] * 0} if "weight" in batch else batch, sharding))
  with pytest.raises(ValueError, match=r"None of the 32 training images of steps 1..2 decoded: "
                                       r"check the `image` feature of 'luab_shapes/tiny' "
                                       r"\(train\)"):
    train.train_and_evaluate(config, str(tmp_path / "every_batch"), devices=jax.devices()[:1])


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


def test_bad_multilabel_records_train_nothing_of_theirs():
  good, truncated = _jpeg(), _jpeg()[:200]
  labels = np.array([1, 0, 1, 0], bool)
  points = np.array([[0.5, 0.5], [-1, -1], [0.4, 0.6], [-1, -1]], np.float32)
  has_points = np.array([True, False, True, False])
  transform = transforms.TrainTransform(image_size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                        flip=False, num_points=4)
  rng = np.random.default_rng(0)
  skipped = transform.random_map({"image": truncated, "labels": labels, "points": points,
                                  "has_points": has_points, "file_name": "bad.jpg"}, rng)
  assert skipped["weight"] == 0 and skipped["bad_points"] == 0
  np.testing.assert_array_equal(skipped["point_weight"], np.zeros(4))
  np.testing.assert_array_equal(skipped["labels"], np.zeros(4))
  # A NaN click and one outside the image: dropped and counted; their classes keep the label
  # (present but without a usable click, like a class never clicked).
  bad_clicks = points.copy()
  bad_clicks[0], bad_clicks[2] = (np.nan, 0.5), (0.4, 1.7)
  example = transform.random_map({"image": good, "labels": labels, "points": bad_clicks,
                                  "has_points": has_points, "file_name": "clicks.jpg"}, rng)
  assert example["weight"] == 1 and example["bad_points"] == 2
  np.testing.assert_array_equal(example["point_weight"], np.zeros(4))
  np.testing.assert_array_equal(example["labels"], labels.astype(np.float32))
  assert np.isfinite(example["points"]).all()


@pytest.mark.parametrize("classification", ["softmax", "sigmoid"])
@pytest.mark.parametrize("normalize", ["valid", "batch"])
def test_weight_zero_example_adds_nothing_to_any_loss(classification, normalize):
  """A batch with a skipped example trains exactly like the batch without it."""
  config = _config("/tmp")
  config.loss.classification, config.loss.point_normalize = classification, normalize
  rng = np.random.default_rng(0)
  b, c, p = 4, 5, 3
  out = {"logits": rng.normal(size=(b, c)).astype(np.float32),
         "points": rng.uniform(size=(b, p, 2)).astype(np.float32)}
  batch = {"points": rng.uniform(size=(b, p, 2)).astype(np.float32),
           "point_weight": np.ones((b, p), np.float32),
           "weight": np.array([1, 0, 1, 1], np.float32)}
  if classification == "softmax":
    batch["label"] = np.array([0, 3, 2, 4], np.int32)
  else:
    batch["labels"] = rng.integers(0, 2, size=(b, c)).astype(np.float32)
  # The skipped example carries garbage: far-off targets and a confident wrong logit.
  batch["points"][1] = 50.0
  out["logits"][1] = 30.0 * np.eye(c)[1]
  kept = [0, 2, 3]
  without = train_step.weighted_losses(config, {k: v[kept] for k, v in out.items()},
                                       {k: v[kept] for k, v in batch.items()})
  with_skipped = train_step.weighted_losses(config, out, batch)
  assert without.keys() == with_skipped.keys()
  for key in without:
    np.testing.assert_allclose(with_skipped[key], without[key], rtol=1e-6, err_msg=key)


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


@pytest.mark.parametrize("overrides, message", [
    ({"num_classes": 3}, r"config.num_classes=3, but dataset 'luab_shapes/tiny' has 4 classes"),
    ({"evals.bgc.batch_size": 0}, r"config.evals.bgc.batch_size=0 must be a positive integer"),
    ({"total_steps": -5}, r"config.total_steps=-5 is -5 steps; it must be at least 1"),
    ({"log_training_steps": 0}, r"config.log_training_steps=0 is 0 steps; it must be at least 1"),
    ({"ckpt_steps": -3}, r"config.ckpt_steps=-3 is -3 steps; it must be at least 1"),
    ({"best_mode": "up"}, r"config.best_mode='up'"),
    ({"best_metric": "bgc/no_such_metric"},
     r"config.best_metric='bgc/no_such_metric' is not among the metrics of its evaluator"),
    ({"input.crop_scale": (1.5, 0.2)}, r"config.input.crop_scale=\(1.5, 0.2\)"),
    ({"input.crop_ratio": (0.0, 1.0)}, r"config.input.crop_ratio=\(0.0, 1.0\)"),
    ({"loss.label_smoothing": 5.0}, r"config.loss.label_smoothing=5.0 must be in \[0, 1\)"),
    ({"loss.point_smooth_l1_beta": 0.0}, r"config.loss.point_smooth_l1_beta=0.0 must be > 0"),
    ({"keep_ckpts": 0}, r"config.keep_ckpts=0 must be at least 1"),
    ({"input.image_size": 40},
     r"config.input.image_size=40 \(the crops\) differs from config.model.image_size=32"),
    ({"optax.lr": -1.0}, r"config.optax.lr=-1.0 must be >= 0"),
    ({"optax.grad_clip_norm": -1.0}, r"config.optax.grad_clip_norm=-1.0 must be >= 0"),
    ({"evals.bgc.every_steps": -2}, r"config.evals.bgc.every_steps=-2"),
    ({"input.eval_crop_fraction": 1.5}, r"config.input.eval_crop_fraction=1.5"),
    # Found only by the first batch (the records have one point each): still no config.json.
    ({"model.num_points": 2}, r"num_points"),
    ({"input.crop_scale": (0.2, 1.0, 3.0)}, r"two values each"),
    ({"model.attention": "cudnn"}, r"config.model.attention='cudnn' is cuDNN's attention for GPUs"),
    ({"train_split": "train[:0]"}, r"Split 'train\[:0\]' of dataset 'luab_shapes/tiny' selects no"),
])
def test_bad_values_fail_at_start_and_leave_the_workdir_usable(tiny_data_dir, tmp_path,
                                                               overrides, message):
  """Each fails before anything compiles or trains, and writes no config.json: the corrected
  command then runs in the same work directory."""
  workdir = str(tmp_path / "work")
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(_config(tiny_data_dir, **overrides), workdir)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  assert not glob.glob(os.path.join(checkpointing.checkpoint_dir(workdir), "*"))


def test_evaluator_batch_indivisible_by_devices_fails_at_start(tiny_data_dir, tmp_path):
  if jax.device_count() < 2:
    pytest.skip("needs 2 devices")
  config = _config(tiny_data_dir, **{"evals.bgc.batch_size": 33})
  with pytest.raises(ValueError, match=r"config.evals.bgc.batch_size=33 is not divisible"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not glob.glob(os.path.join(checkpointing.checkpoint_dir(str(tmp_path)), "*"))


def test_unreadable_config_json_is_an_error_naming_it(tiny_data_dir, tmp_path):
  (tmp_path / "config.json").write_text('{"seed": 0, "dataset": "luab_sha', encoding="utf-8")
  with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
    train.train_and_evaluate(_config(tiny_data_dir), str(tmp_path))


def test_one_trainer_per_work_directory_and_no_urls(tiny_data_dir, tmp_path):
  from luab_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = _config(tiny_data_dir)
  with workdir_lib.lock(str(tmp_path)):  # Another trainer holds the work directory.
    with pytest.raises(RuntimeError, match=rf"{tmp_path} is in use by another trainer \(pid "):
      train.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(ValueError, match="--workdir gs://bucket/run: a URL"):
    train.train_and_evaluate(config, "gs://bucket/run")
  (tmp_path / "a_file").write_text("", encoding="utf-8")
  with pytest.raises(NotADirectoryError, match="a_file is a file, not a directory"):
    train.train_and_evaluate(config, str(tmp_path / "a_file"))


def test_an_interrupted_final_evaluation_is_run_again(tiny_data_dir, tmp_path):
  config = _config(tiny_data_dir)
  first = train.train_and_evaluate(config, str(tmp_path))
  os.remove(tmp_path / "final_eval.json")  # As if killed during the final evaluation.
  again = train.train_and_evaluate(_config(tiny_data_dir), str(tmp_path))
  assert again == first and os.path.exists(tmp_path / "final_eval.json")
