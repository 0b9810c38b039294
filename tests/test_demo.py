"""`python -m luab_jax.demo`: when a finished run is reused, and its errors before training."""

import json

from absl.testing import flagsaver
import pytest

from luab_jax import demo


def _finished_run(workdir, lam, results):
  run_dir = workdir / "luab"
  run_dir.mkdir(parents=True)
  (run_dir / "config.json").write_text(demo._config(lam).to_json_best_effort(), encoding="utf-8")  # pylint: disable=protected-access
  (run_dir / "final_eval.json").write_text(results, encoding="utf-8")


def test_finished_run_is_reused_only_with_the_same_config(tmp_path):
  _finished_run(tmp_path, 4.0, json.dumps({"step": 800, "bgc/bg_gap": 0.1}))
  results, seconds = demo._train("luab", 4.0, str(tmp_path))  # pylint: disable=protected-access
  assert results == {"step": 800, "bgc/bg_gap": 0.1} and seconds == 0.0
  with pytest.raises(ValueError, match=r"incompatible config .*config.loss.point_lambda: 4.0 -> 2.0"):
    demo._train("luab", 2.0, str(tmp_path))  # pylint: disable=protected-access


def test_unreadable_results_are_named(tmp_path):
  _finished_run(tmp_path, 4.0, '{"step": 8')
  with pytest.raises(ValueError, match=r"luab/final_eval.json is not valid JSON"):
    demo._train("luab", 4.0, str(tmp_path))  # pylint: disable=protected-access


def test_bad_config_args_fail_before_anything_runs(tmp_path):
  with flagsaver.flagsaver(config_args="runlocal,stepz=4", workdir=str(tmp_path / "demo")):
    with pytest.raises(ValueError, match="stepz"):
      demo.main(["demo"])
  assert not (tmp_path / "demo").exists()


def test_the_datasets_prepared_are_the_configs(tmp_path, monkeypatch):
  """`runlocal` trains and evaluates on luab_shapes/tiny: that is what gets prepared (the
  --dataset default, cpu64, took a minute to generate for nothing)."""
  prepared = []

  class Trained(Exception):
    pass

  def train(*args):
    raise Trained()

  monkeypatch.setattr(demo.datasets, "prepare", lambda name, data_dir: prepared.append(name))
  monkeypatch.setattr(demo, "_train", train)
  with flagsaver.flagsaver(config_args="runlocal", workdir=str(tmp_path / "demo")):
    with pytest.raises(Trained):
      demo.main(["demo"])
  assert prepared == ["luab_shapes/tiny"]
  prepared.clear()
  with flagsaver.flagsaver(dataset="luab_shapes/tiny", workdir=str(tmp_path / "demo")):
    with pytest.raises(Trained):
      demo.main(["demo"])
  assert prepared == ["luab_shapes/tiny"]
