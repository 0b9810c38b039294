"""`python -m luab_jax.evaluate` over several checkpoints of tiny training runs (baseline + LUAB)."""

import csv
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from ml_collections import config_flags

from luab_jax import checkpointing
from luab_jax import eval_results
from luab_jax import evaluate
from luab_jax import run_config
from luab_jax import train

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = os.path.join(_ROOT, "configs", "demo.py")
_STEPS = [2, 4, 6]
_EVALS = ["cls", "loc"]


def _config(data_dir, lam):
  config = config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
      "demo", _CONFIG).get_config(f"runlocal=True,lam={lam}")
  config.data_dir = data_dir
  config.update_from_flattened_dict(dict(total_steps=6, ckpt_steps=2, keep_ckpts=3,
                                         log_training_steps=2, fsdp_min_size_mb=0.0))
  # Trained on a 4 x 2 mesh with real FSDP sharding; evaluated on other meshes below.
  config.mesh = [("data", 4), ("fsdp", 2)]
  # One 64-image split per evaluator keeps the test short; test_evaluators.py covers the
  # background challenge's seven splits.
  del config.evals["bgc"]
  config.evals.cls = dict(type="classification", dataset="luab_shapes/tiny", split="mixed_rand",
                          batch_size=32, every_steps=None)
  return config


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory):
  """{name: (workdir, trainer's final evaluation)}: checkpoints at steps 2, 4 and 6.

  One tiny run is trained (lambda = 0); "luab" is a copy of it whose config.json says
  lambda = 4: the tool only reads config.json and the checkpoints, and training a second
  model would double the test's time for nothing the tool can tell apart.
  """
  root = tmp_path_factory.mktemp("runs")
  baseline = str(root / "baseline")
  final = train.train_and_evaluate(_config(tiny_data_dir, 0.0), baseline)
  assert checkpointing.available_steps(baseline) == _STEPS
  luab = shutil.copytree(baseline, root / "luab")
  with open(luab / "config.json", "w", encoding="utf-8") as f:
    f.write(_config(tiny_data_dir, 4.0).to_json_best_effort(indent=2))
  return {"baseline": (baseline, final), "luab": (str(luab), final)}


def _copy(runs, tmp_path):
  """Fresh copies of both runs, so that tests do not share evaluation outputs."""
  return [shutil.copytree(runs[name][0], tmp_path / name) for name in ("baseline", "luab")]


class _Counts:
  """Counts checkpoint restores and keeps the ModelFns the tool builds."""

  def __init__(self, monkeypatch):
    self.restores, self.fns = [], []
    restore, make = checkpointing.restore_params, evaluate.evaluators.make_model_fns

    def counted_restore(workdir, step, abstract, **kwargs):
      self.restores.append((os.path.basename(workdir), step))
      return restore(workdir, step, abstract, **kwargs)

    def kept_fns(*args, **kwargs):
      self.fns.append(make(*args, **kwargs))
      return self.fns[-1]

    monkeypatch.setattr(checkpointing, "restore_params", counted_restore)
    monkeypatch.setattr(evaluate.evaluators, "make_model_fns", kept_fns)


def _damage(workdir, step, how):
  """Damages checkpoint `step` in place, as a full disk or a bad copy would: still listed."""
  state = os.path.join(workdir, "checkpoints", str(step), "state")
  if how == "data":
    paths = glob.glob(os.path.join(state, "**", "d", "*"), recursive=True)
    assert paths, f"no data files under {state}"
    for path in paths:
      with open(path, "r+b") as f:
        f.truncate(16)
  else:  # `: > manifest.ocdbt`
    path = os.path.join(state, "manifest.ocdbt")
    assert os.path.exists(path), path
    open(path, "w", encoding="utf-8").close()
  assert step in checkpointing.available_steps(workdir)


def test_config_json_round_trips(runs, tiny_data_dir):
  loaded = run_config.load_json(os.path.join(runs["luab"][0], "config.json"))
  original = _config(tiny_data_dir, 4.0)
  assert json.loads(loaded.to_json()) == json.loads(original.to_json_best_effort())
  assert loaded.mesh == (("data", 4), ("fsdp", 2))  # JSON arrays come back as tuples.
  assert loaded.input.crop_scale == (0.35, 1.0) and loaded.evals.cls.every_steps is None
  assert loaded.loss.point_lambda == 4.0 and loaded.evals.loc.radii == (0.05, 0.1, 0.2)


def test_batch_over_checkpoints_and_runs(runs, tmp_path, monkeypatch):
  baseline, luab = _copy(runs, tmp_path)
  counts = _Counts(monkeypatch)
  # The runs' config.json say mesh 4 x 2; evaluate on 8 x 1 instead.
  result = evaluate.run([str(baseline), str(luab)], mesh=(("data", 8), ("fsdp", 1)))
  assert sorted(counts.restores) == [(n, s) for n in ("baseline", "luab") for s in _STEPS]
  # One model and evaluators for both runs (they differ only in the loss); the statistics
  # function compiled once per batch layout (cls's and loc's), not once per checkpoint.
  assert len(counts.fns) == 1 and counts.fns[0].stats._cache_size() == 2  # pylint: disable=protected-access

  for name, workdir in (("baseline", baseline), ("luab", luab)):
    rows = eval_results.ResultStore(str(workdir)).rows()
    assert {(r["step"], r["evaluator"]) for r in rows} == {(s, e) for s in _STEPS for e in _EVALS}
    # The last checkpoint, restored from the 4 x 2 training mesh onto 8 x 1, gives the
    # trainer's own final evaluation.
    final = {f"{r['evaluator']}/{r['metric']}": r["value"] for r in rows if r["step"] == 6}
    trained = runs[name][1]
    assert set(final) == set(trained)
    for key, value in trained.items():
      np.testing.assert_allclose(final[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    with open(workdir / "eval" / "metrics.csv", newline="") as f:
      table = list(csv.DictReader(f))
    assert [r["metric"] for r in table] == [r["metric"] for r in rows]
    assert [float(r["value"]) for r in table] == [r["value"] for r in rows]
    assert set(table[0]) == set(eval_results.COLUMNS)
    assert int(table[0]["eval_examples"]) == 64 and float(table[0]["eval_seconds"]) > 0
    with open(workdir / "eval" / "step_4.json") as f:
      assert json.load(f)["loc/point_distance"] == next(
          r["value"] for r in rows if r["step"] == 4 and r["metric"] == "point_distance")
    assert os.listdir(workdir / "eval" / "tensorboard")

  # Table: a column per run and step; plots of every metric, both runs overlaid.
  assert "| metric | baseline@2 | baseline@4 | baseline@6 | luab@2 | luab@4 | luab@6 |" in \
      result["table"]
  assert "| loc/point_in_box |" in result["table"]
  assert result["plot_dir"] == str(tmp_path / "eval_plots")
  names = sorted(os.path.basename(p) for p in result["plots"])
  assert {"accuracy.png", "loss.png", "point_in_box.png",
          "point_within_0.1.png"} <= set(names)
  for path in result["plots"]:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.exists(tmp_path / "eval_plots" / "summary.md")
  assert result["throughput"].images == 2 * 3 * (64 + 64)


def test_skips_done_pairs_unless_redo(runs, tmp_path, monkeypatch):
  baseline, _ = _copy(runs, tmp_path)
  counts = _Counts(monkeypatch)
  evaluate.run([str(baseline)], checkpoints="2,6", evals=["loc"], plots=False)
  assert counts.restores == [("baseline", 2), ("baseline", 6)]
  before = eval_results.ResultStore(str(baseline)).rows()
  # Step 6 with every evaluator: loc is done there, so only cls runs; step 2 is not asked for.
  result = evaluate.run([str(baseline)], checkpoints="latest", plots=False)
  assert counts.restores[2:] == [("baseline", 6)]
  assert "| loc/point_distance |" in result["table"] and "baseline@2" not in result["table"]
  rows = eval_results.ResultStore(str(baseline)).rows()
  assert {(r["step"], r["evaluator"]) for r in rows} == {(2, "loc"), (6, "loc"), (6, "cls")}
  # --redo re-evaluates and replaces the rows of the pairs, here restored onto one device
  # (trained on 4 x 2): the same values, and no duplicate rows.
  evaluate.run([str(baseline)], checkpoints="2,6", evals=["loc"], redo=True, plots=False,
               mesh=(("data", 1), ("fsdp", 1)), devices=jax.devices()[:1])
  assert counts.restores[3:] == [("baseline", 2), ("baseline", 6)]
  again = [r for r in eval_results.ResultStore(str(baseline)).rows() if r["evaluator"] == "loc"]
  assert [(r["step"], r["metric"]) for r in again] == [(r["step"], r["metric"]) for r in before]
  np.testing.assert_allclose([r["value"] for r in again], [r["value"] for r in before],
                             rtol=1e-5, atol=1e-6)


def test_follow_evaluates_new_checkpoints_until_the_last_step(runs, tmp_path):
  baseline, _ = _copy(runs, tmp_path)
  saved = tmp_path / "saved6"
  shutil.move(str(baseline / "checkpoints" / "6"), str(saved))
  waits = []

  def sleep(seconds):
    # Training "writes" its last checkpoint while the tool waits.
    waits.append(seconds)
    if len(waits) == 1:
      shutil.move(str(saved), str(baseline / "checkpoints" / "6"))

  evaluate.run([str(baseline)], evals=["loc"], follow=True, poll_seconds=5, sleep=sleep,
               plots=False)
  assert waits == [5]  # Stopped by itself once step 6 == config.total_steps was evaluated.
  steps = {r["step"] for r in eval_results.ResultStore(str(baseline)).rows()}
  assert steps == {2, 4, 6}


def test_follow_timeout_stops_without_the_last_step(runs, tmp_path):
  baseline, _ = _copy(runs, tmp_path)
  shutil.rmtree(baseline / "checkpoints" / "6")
  waits = []
  evaluate.run([str(baseline)], checkpoints="latest", evals=["loc"], follow=True,
               follow_timeout=0.0, sleep=waits.append, plots=False)
  assert waits == [] and {r["step"] for r in eval_results.ResultStore(str(baseline)).rows()} == {4}


def test_follow_tries_deleted_and_damaged_checkpoints_once(runs, tmp_path, monkeypatch):
  """--follow: a checkpoint pruned by the trainer before its evaluation is warned about once
  and dropped; a damaged one is not tried again until it is saved anew."""
  baseline, _ = _copy(runs, tmp_path)
  counts = _Counts(monkeypatch)
  counted = checkpointing.restore_params

  def pruned_first(workdir, step, abstract, **kwargs):
    # The trainer's keep_ckpts deletes step 2 between the listing and its restore.
    if step == 2 and os.path.isdir(os.path.join(workdir, "checkpoints", "2")):
      shutil.rmtree(os.path.join(workdir, "checkpoints", "2"))
    return counted(workdir, step, abstract, **kwargs)

  monkeypatch.setattr(checkpointing, "restore_params", pruned_first)
  _damage(str(baseline), 4, "manifest")
  saved = tmp_path / "saved6"
  shutil.move(str(baseline / "checkpoints" / "6"), str(saved))
  waits = []

  def sleep(seconds):
    waits.append(seconds)
    assert len(waits) <= 2, "still polling"
    if len(waits) == 2:  # The trainer saves step 4 again (after a restart) and then step 6.
      shutil.rmtree(baseline / "checkpoints" / "4")
      shutil.copytree(os.path.join(runs["baseline"][0], "checkpoints", "4"),
                      baseline / "checkpoints" / "4")
      shutil.move(str(saved), str(baseline / "checkpoints" / "6"))

  result = evaluate.run([str(baseline)], evals=["loc"], follow=True, poll_seconds=5,
                        sleep=sleep, plots=False)
  assert waits == [5, 5]
  assert counts.restores == [("baseline", 2), ("baseline", 4), ("baseline", 4), ("baseline", 6)]
  assert {r["step"] for r in eval_results.ResultStore(str(baseline)).rows()} == {4, 6}
  assert "| metric | baseline@4 | baseline@6 |" in result["table"]
  assert result["not_restored"] == []


def test_follow_stops_at_a_damaged_final_step(runs, tmp_path):
  """--follow waits for the final step; one that does not restore ends the wait (reported)."""
  baseline, _ = _copy(runs, tmp_path)
  _damage(str(baseline), 6, "data")
  waits = []

  def sleep(seconds):
    waits.append(seconds)
    assert len(waits) <= 2, "still polling"

  with pytest.raises(evaluate.CheckpointsNotRestored,
                     match=r"^1 checkpoint\(s\).*\n  Checkpoint 6 of \S*baseline "):
    evaluate.run([str(baseline)], evals=["loc"], follow=True, sleep=sleep, plots=False)
  assert waits == []
  assert {r["step"] for r in eval_results.ResultStore(str(baseline)).rows()} == {2, 4}


def test_clear_errors(runs, tmp_path, tiny_data_dir):
  baseline, _ = _copy(runs, tmp_path)
  with pytest.raises(FileNotFoundError, match=r"No checkpoint of steps \[5\].*\[2, 4, 6\]"):
    evaluate.run([str(baseline)], checkpoints="4,5")
  with pytest.raises(ValueError, match=r"--evals \['nope'\] not in config.evals"):
    evaluate.run([str(baseline)], evals=["nope"])
  other = _config(tiny_data_dir, 0.0)
  other.model.variant = "Ti/8"
  with pytest.raises(ValueError, match="--config has model=.*the checkpoints are of another"):
    evaluate.run([str(baseline)], config=other)
  with pytest.raises(ValueError, match="--follow .* not a list of steps"):
    evaluate.run([str(baseline)], checkpoints="2", follow=True)
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    evaluate.run([str(tmp_path)])
  with pytest.raises(ValueError, match="names .*baseline twice"):
    evaluate.run([str(baseline), str(baseline) + "/"])
  with pytest.raises(ValueError, match="--poll_seconds=-1"):
    evaluate.run([str(baseline)], follow=True, poll_seconds=-1)
  (tmp_path / "plots_file").write_text("", encoding="utf-8")
  with pytest.raises(NotADirectoryError, match="plots_file is a file"):
    evaluate.run([str(baseline)], plot_dir=str(tmp_path / "plots_file"))
  assert evaluate.parse_mesh("data:-1,fsdp:2") == (("data", -1), ("fsdp", 2))


def test_damaged_checkpoints_are_reported_after_the_others_are_evaluated(runs, tmp_path,
                                                                        caplog):
  """A listed checkpoint that does not restore is logged, the batch goes on, and the tool ends
  with an error naming every such step (a missing one is skipped: the trainer's retention
  deletes them)."""
  baseline, luab = _copy(runs, tmp_path)
  _damage(str(baseline), 4, "data")
  _damage(str(luab), 2, "manifest")
  with pytest.raises(RuntimeError) as raised:
    evaluate.run([str(baseline), str(luab)], evals=["loc"])
  message = str(raised.value)
  assert message.startswith("2 checkpoint(s) could not be restored"), message
  assert len(re.findall(r"Checkpoint 4 of \S*baseline \(checkpoints\) could not be restored: "
                        r"\w+", message)) == 1, message
  assert len(re.findall(r"Checkpoint 2 of \S*luab \(checkpoints\) could not be restored: "
                        r"\w+", message)) == 1, message
  # Ours only: Orbax and asyncio log errors of their own about the failed reads.
  errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"
            and "Going on with the other checkpoints" in r.getMessage()]
  assert len(errors) == 2 and "baseline" in errors[0] and "Checkpoint 4" in errors[0], errors
  # Everything else was evaluated and written: rows, the table and the plots.
  for workdir, steps in ((baseline, {2, 6}), (luab, {4, 6})):
    rows = eval_results.ResultStore(str(workdir)).rows()
    assert {(r["step"], r["evaluator"]) for r in rows} == {(s, "loc") for s in steps}
  table = (tmp_path / "eval_plots" / "summary.md").read_text(encoding="utf-8")
  assert "| metric | baseline@2 | baseline@6 | luab@4 | luab@6 |" in table
  result = raised.value.result
  assert result["table"] + "\n" == table and len(result["not_restored"]) == 2
  assert result["plots"] and all(os.path.exists(path) for path in result["plots"])
  # Run again: the done pairs are skipped, the damaged ones are tried (and reported) again.
  with pytest.raises(RuntimeError, match=r"^1 checkpoint\(s\).*\n  Checkpoint 4 of "):
    evaluate.run([str(baseline)], evals=["loc"], plots=False)


def _put(store, step, evaluator, value):
  store.put(step, evaluator, {"metric": value}, seconds=1.0, examples=8)


def test_result_stores_of_one_workdir_keep_each_others_rows(tmp_path):
  """Two evaluators of one work directory (`--follow` next to a manual run), each with its own
  store read at start: both keep their rows, on disk and in step_N.json."""
  first, second = eval_results.ResultStore(str(tmp_path)), eval_results.ResultStore(str(tmp_path))
  _put(first, 2, "cls", 0.5)
  _put(second, 2, "loc", 0.25)
  _put(second, 4, "loc", 0.75)
  _put(first, 2, "cls", 0.125)  # A redo replaces its own pair only.
  pairs = {(2, "cls"), (2, "loc"), (4, "loc")}
  assert eval_results.ResultStore(str(tmp_path)).done() == pairs
  assert first.done() == pairs  # What it wrote is what it holds.
  rows = eval_results.ResultStore(str(tmp_path)).rows(steps={2})
  assert [(r["evaluator"], r["value"]) for r in rows] == [("loc", 0.25), ("cls", 0.125)]
  with open(tmp_path / "eval" / "step_2.json", encoding="utf-8") as f:
    assert json.load(f) == {"step": 2, "cls/metric": 0.125, "loc/metric": 0.25}
  with open(tmp_path / "eval" / eval_results.CSV, newline="", encoding="utf-8") as f:
    assert len(list(csv.DictReader(f))) == 3


def test_result_store_waits_for_another_writer(tmp_path):
  """`put` holds eval/.lock while it reads, merges and rewrites: a writer holding it is waited
  for, and its rows are kept."""
  store = eval_results.ResultStore(str(tmp_path))
  _put(store, 2, "cls", 0.5)
  with open(tmp_path / "eval" / eval_results.LOCK, "a", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Another process in the middle of its rewrite.
    writer = threading.Thread(target=_put, args=(store, 4, "cls", 0.25))
    writer.start()
    time.sleep(0.5)
    assert writer.is_alive(), "put did not wait for eval/.lock"
    # The lock holder writes its row (as its put would, under the lock).
    rows = eval_results.ResultStore(str(tmp_path)).rows()
    rows.append(dict(rows[0], evaluator="loc", value=0.125))
    (tmp_path / "eval" / eval_results.JSONL).write_text(
        "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    fcntl.flock(lock, fcntl.LOCK_UN)
  writer.join(timeout=30)
  assert not writer.is_alive()
  assert eval_results.ResultStore(str(tmp_path)).done() == {(2, "cls"), (4, "cls"), (2, "loc")}


def test_result_rows_of_the_wrong_shape_are_named(runs, tmp_path):
  baseline, _ = _copy(runs, tmp_path)
  path = baseline / "eval" / eval_results.JSONL
  path.parent.mkdir(exist_ok=True)
  for line in ('{"foo": 1}', "[1, 2]", '{"step": "3", "evaluator": "cls", "metric": "m", "value": 1}'):
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1, is not a result row"):
      eval_results.ResultStore(str(baseline))


_WRITER = """
import sys, time
from luab_jax import eval_results
store = eval_results.ResultStore(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # Both start writing together.
for step in range(150):
  store.put(step, sys.argv[2], {"metric": float(step)}, seconds=1.0, examples=8)
"""


def test_two_processes_writing_one_workdir_keep_all_rows(tmp_path):
  """Two processes putting pairs into one work directory at the same time lose none."""
  start = str(time.time() + 2.0)
  writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), name, start],
                              cwd=_ROOT, env={**os.environ, "PYTHONPATH": _ROOT})
             for name in ("cls", "loc")]
  assert [w.wait(timeout=120) for w in writers] == [0, 0]
  done = eval_results.ResultStore(str(tmp_path)).done()
  assert done == {(step, name) for step in range(150) for name in ("cls", "loc")}


def test_two_processes_evaluate_like_one_and_skip_a_step_one_of_them_cannot_restore(
    runs, tmp_path, run_job):
  """`python -m luab_jax.evaluate` in two processes joined by jax.distributed (two CPU devices
  each, an FSDP mesh over both) gives the results of one process, written once. Each process reads
  its own copy of the run, as hosts with their own storage would, and process 1's step 4 is
  damaged: both processes skip it (it is reported by both) and evaluate the other steps
  together; one process going on with its next step while the other evaluates step 4 would pair
  their collectives across different checkpoints."""
  copies = [shutil.copytree(runs["baseline"][0], tmp_path / f"host{i}" / "baseline")
            for i in range(2)]
  _damage(str(copies[1]), 4, "data")
  # Process 1's copy says step 2's cls is done; process 0 writes the rows, its copy decides.
  eval_results.ResultStore(str(copies[1])).put(2, "cls", {"accuracy": -1.0}, seconds=1.0,
                                               examples=64)
  results = run_job([["-m", "luab_jax.evaluate", "--workdir", str(copy), "--mesh",
                       "data:-1,fsdp:2", "--plot_dir", str(tmp_path / f"plots{process_id}")]
                      for process_id, copy in enumerate(copies)])
  logs = [log for _, log in results]
  for process_id, (status, log) in enumerate(results):
    # Both end with the error naming the step, after evaluating the others.
    assert status == 1, f"process {process_id} exited {status}:\n{log[-6000:]}"
    assert "1 checkpoint(s) could not be restored" in log, f"process {process_id}:\n{log[-6000:]}"
    assert re.search(r"Checkpoint 4 of \S*baseline \(checkpoints\) could not be restored", log)
  assert "it restored here but not on another process" in logs[0], logs[0][-6000:]
  # Process 0 wrote the rows, the table and the plots; process 1 wrote nothing.
  rows = eval_results.ResultStore(str(copies[0])).rows()
  assert len(eval_results.ResultStore(str(copies[1])).rows()) == 1
  assert {(r["step"], r["evaluator"]) for r in rows} == {(s, e) for s in (2, 6) for e in _EVALS}
  assert os.path.exists(tmp_path / "plots0" / "summary.md")
  assert not os.path.exists(tmp_path / "plots1")
  # Step 6, restored from the 4 x 2 training mesh onto 2 processes x 2 devices, gives the
  # trainer's own final evaluation.
  final = {f"{r['evaluator']}/{r['metric']}": r["value"] for r in rows if r["step"] == 6}
  for key, value in runs["baseline"][1].items():
    np.testing.assert_allclose(final[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
