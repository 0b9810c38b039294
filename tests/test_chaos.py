"""Chaos test: kill training at random moments (SIGKILL and SIGTERM), restart, compare.

Runs `python -m luab_jax.train --config configs/demo.py:runlocal` as subprocesses on the tiny
benchmark (one CPU device) with a checkpoint every 2 steps, the loss logged every step and the
evaluators every EVAL_EVERY steps. Kills land on observed progress: they are spread over the run
(kill i of n aims at a random step of the i-th n-th of it, or, every third one, at the next
evaluation step; never at a step the restarted run does not run again); the test waits until `metrics.jsonl` shows the run reached that step,
then sends the signal after a random delay of up to MAX_DELAY_S, so kills fall during steps,
during the asynchronous checkpoint write that follows every even step, and during evaluations. Signals alternate SIGKILL, SIGTERM.
After each kill the same command is started again; at the end the per-step losses of
`metrics.jsonl` (every record, repeated steps included) and the final parameters are compared
with an uninterrupted run: both must be equal bitwise (CPU, fixed seed).

  bash launch/test.sh -m slow -k chaos               # as a test (a few minutes on 2 cores)
  python tests/test_chaos.py --kills 8 --seed 1      # by hand
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 96
EVAL_EVERY = 24
# A step of the tiny model takes a few milliseconds, an evaluation far longer: a kill lands
# within a few steps of its target, or inside the evaluation when it aims at one.
MAX_DELAY_S = 0.02


def _command(workdir, data_dir):
  return [sys.executable, "-m", "luab_jax.train", "--config",
          os.path.join(_ROOT, "configs", "demo.py") + f":runlocal,eval_every={EVAL_EVERY}",
          "--workdir", workdir,
          f"--config.data_dir={data_dir}", f"--config.total_steps={TOTAL_STEPS}",
          "--config.ckpt_steps=2", "--config.log_training_steps=1", "--config.keep_ckpts=2"]


def _env():
  env = dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             CUDA_VISIBLE_DEVICES="")
  env.pop("XLA_FLAGS", None)  # One CPU device, the same for every run.
  return env


def _run_to_end(workdir, data_dir, log):
  proc = subprocess.run(_command(workdir, data_dir), env=_env(), stdout=log, stderr=log,
                        check=False)
  assert proc.returncode == 0, f"training failed ({proc.returncode}); see {log.name}"


def _losses(workdir):
  from luab_jax import metric_logs  # pylint: disable=g-import-not-at-top
  return [(r["step"], r["loss"]) for r in
          metric_logs.read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


def _final_params(workdir, data_dir):
  import jax  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from luab_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from luab_jax import train_state  # pylint: disable=g-import-not-at-top
  config = config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
      "demo", os.path.join(_ROOT, "configs", "demo.py")).get_config("runlocal")
  config.data_dir = data_dir
  spec = train_state.model_spec(config)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = jax.tree.map(lambda _: device, spec.abstract_params)
  params, step = checkpointing.restore_params(
      workdir, None, checkpointing.abstract_like(spec.abstract_params, shardings))
  return jax.device_get(params), step


def _records(path):
  """The records of metrics.jsonl so far (a line being written is left for the next look)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    complete = f.read().split("\n")[:-1]  # The text after the last newline may be partial.
  return [json.loads(line) for line in complete if line.strip()]


def _last_checkpoint(workdir):
  """The newest complete checkpoint step (0: none); in-progress writes are not counted."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return 0
  return max([int(name) for name in os.listdir(ckpt_dir) if name.isdigit()], default=0)


def _kill_on_progress(proc, metrics_path, target_step, delay, signum, log):
  """Waits until this process logs a step >= target_step, sleeps `delay`, signals it.

  Returns (exit code, what the run was doing) or (exit code, "finished") if it ended first.
  """
  seen = len(_records(metrics_path))
  while proc.poll() is None:
    new = _records(metrics_path)[seen:]
    if any(r.get("step", 0) >= target_step and "loss" in r for r in new):
      break
    time.sleep(0.01)
  else:
    assert proc.returncode == 0, f"training failed ({proc.returncode}); see {log.name}"
    return proc.returncode, "finished"
  time.sleep(delay)
  if proc.poll() is not None:
    assert proc.returncode == 0, f"training failed ({proc.returncode}); see {log.name}"
    return proc.returncode, "finished"
  proc.send_signal(signum)
  return proc.wait(timeout=600), f"step >= {target_step} + {delay:.2f}s"


def chaos(kills: int = 8, seed: int = 0, root: str | None = None) -> dict:
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  rng = random.Random(seed)
  root = root or tempfile.mkdtemp(prefix="luab_chaos_")
  data_dir = os.path.join(root, "tfds")
  core.prepare("luab_shapes/tiny", data_dir)
  # Kill i aims at a random step of the i-th of `kills` equal parts of the run.
  part = TOTAL_STEPS / kills
  with open(os.path.join(root, "log.txt"), "w", encoding="utf-8") as log:
    started = time.time()
    _run_to_end(os.path.join(root, "straight"), data_dir, log)
    run_secs = time.time() - started
    work = os.path.join(root, "chaos")
    metrics_path = os.path.join(work, "metrics.jsonl")
    survived = {"SIGKILL": 0, "SIGTERM": 0}
    finished_early = 0
    for i in range(kills):
      signum = (signal.SIGKILL, signal.SIGTERM)[i % 2]  # Both, always.
      # Past the step the restart resumes from, so that this process reaches the target.
      first = max(int(i * part), _last_checkpoint(work)) + 1
      if i % 3 == 1:  # The next evaluation step: the evaluators run right after it.
        target = min(-(-first // EVAL_EVERY) * EVAL_EVERY, TOTAL_STEPS)
      else:
        # Not the last steps: a kill overshooting the end of the run would not land.
        target = min(rng.randint(first, max(first, int((i + 1) * part))), TOTAL_STEPS - 4)
      proc = subprocess.Popen(_command(work, data_dir), env=_env(), stdout=log, stderr=log)
      try:
        code, moment = _kill_on_progress(proc, metrics_path, target,
                                         rng.uniform(0, MAX_DELAY_S), signum, log)
      finally:  # Interrupted (Ctrl-C, a failed check): leave no training process behind.
        if proc.poll() is None:
          proc.kill()
          proc.wait()
      if moment == "finished":  # Reached the end before the kill: no kill to count.
        finished_early += 1
        print(f"kill {i + 1}: run finished before step {target} was passed", flush=True)
        continue
      if signum == signal.SIGTERM:
        # 143: saved at the next step boundary and exited; 0: finished meanwhile; -15: hit
        # after the last step, once the trainer had handed the signal back (plain kill).
        assert code in (0, 128 + signal.SIGTERM, -signal.SIGTERM), (
            f"SIGTERM exit {code}; see {log.name}")
      else:
        assert code == -signal.SIGKILL, f"SIGKILL exit {code}; see {log.name}"
      survived[signal.Signals(signum).name] += 1
      ckpt_dir = os.path.join(work, "checkpoints")
      print(f"kill {i + 1}: {signal.Signals(signum).name} at {moment}, exit {code}, "
            f"checkpoints {sorted(os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir) else []}",
            flush=True)
    _run_to_end(work, data_dir, log)

  straight, chaotic = dict(_losses(os.path.join(root, "straight"))), _losses(work)
  assert sorted(straight) == list(range(1, TOTAL_STEPS + 1))
  assert {s for s, _ in chaotic} == set(straight)
  loss_diff = max(abs(loss - straight[s]) for s, loss in chaotic)
  (a, step_a), (b, step_b) = (_final_params(os.path.join(root, "straight"), data_dir),
                              _final_params(work, data_dir))
  import jax  # pylint: disable=g-import-not-at-top
  param_diff = max(float(np.max(np.abs(x - y))) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  figures = {"kills_planned": kills, "kills_survived": sum(survived.values()), **survived,
             "finished_before_kill": finished_early,
             "steps_repeated": len(chaotic) - len(straight),
             "max_loss_difference": loss_diff, "max_param_difference": param_diff,
             "final_steps": (step_a, step_b), "uninterrupted_run_secs": round(run_secs, 1),
             "workdir": root}
  print("chaos:", figures, flush=True)
  return figures


@pytest.mark.slow
def test_chaos(tmp_path):
  figures = chaos(kills=6, seed=0, root=str(tmp_path))
  assert figures["kills_survived"] == 6 and figures["SIGKILL"] == figures["SIGTERM"] == 3
  assert figures["final_steps"] == (TOTAL_STEPS, TOTAL_STEPS)
  assert figures["max_loss_difference"] == 0.0
  assert figures["max_param_difference"] == 0.0


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--root", default=None, help="Work directory (default: a new temp dir).")
  args = parser.parse_args()
  sys.path.insert(0, _ROOT)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  chaos(args.kills, args.seed, args.root)
