"""`python -m luab_jax.evaluate` over several checkpoints of tiny training runs (baseline + LUAB)."""

import csv
import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest
from ml_collections import config_flags

from luab_jax import checkpointing
from luab_jax import eval_results
from luab_jax import evaluate
from luab_jax import run_config
from luab_jax import train

_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "demo.py")
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


def test_damaged_checkpoint_is_an_error_naming_its_step(runs, tmp_path):
  """A checkpoint that is listed but does not restore stops the tool with its step named (a
  missing one is skipped: the trainer's retention deletes them)."""
  baseline, _ = _copy(runs, tmp_path)
  for path in glob.glob(str(baseline / "checkpoints" / "4" / "state" / "**" / "d" / "*"),
                        recursive=True):
    with open(path, "r+b") as f:
      f.truncate(16)
  with pytest.raises(RuntimeError, match=r"Checkpoint 4 of .*baseline \(checkpoints\) could "
                     "not be restored"):
    evaluate.run([str(baseline)], checkpoints="4")


def test_result_rows_of_the_wrong_shape_are_named(runs, tmp_path):
  baseline, _ = _copy(runs, tmp_path)
  path = baseline / "eval" / eval_results.JSONL
  path.parent.mkdir(exist_ok=True)
  for line in ('{"foo": 1}', "[1, 2]", '{"step": "3", "evaluator": "cls", "metric": "m", "value": 1}'):
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1, is not a result row"):
      eval_results.ResultStore(str(baseline))
