"""Several local processes joined by jax.distributed train exactly like one process.

Each worker is the real entry point (`python -m luab_jax.train`) started with the explicit
coordinator variables of `luab_jax/distributed.py` on localhost, its own simulated CPU devices
(XLA_FLAGS) and gloo CPU collectives (JAX's default). The reference is one process with the
same total number of devices and the same global batch: the per-step losses must agree to
float32 round-off (a different device/process layout changes only reduction orders).
"""

import glob
import os
import shutil

import jax
import numpy as np
import pytest

from luab_jax import distributed
from luab_jax import input_pipeline
from luab_jax import metric_logs
from luab_jax import train
from luab_jax.datasets import core as datasets
from ml_collections import config_flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = 4
# Relative tolerance of the per-step losses against the one-process run: float32 round-off of
# different all-reduce orders (measured differences are ~1e-7).
_RTOL = 2e-5


def _config(data_dir, **overrides):
  config = config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
      "demo", os.path.join(_ROOT, "configs", "demo.py")).get_config("runlocal")
  config.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  return config


def _run_workers(run_job, num_processes: int, devices_per_process: int, data_dir: str,
                 workdir: str, extra_args=None) -> list[str]:
  """Runs the trainer's workers (`run_job`, conftest.py; logs next to `workdir`, as
  worker{P}.log); returns the failures ("worker P exited RC: log tail"), [] if none.
  `extra_args`: {process id: more command-line arguments}."""
  commands = [["-m", "luab_jax.train",
               "--config", os.path.join(_ROOT, "configs", "demo.py:runlocal"),
               "--workdir", workdir, f"--config.data_dir={data_dir}",
               f"--config.total_steps={_STEPS}", "--config.log_training_steps=1",
               f"--config.ckpt_steps={_STEPS}", *(extra_args or {}).get(process_id, ())]
              for process_id in range(num_processes)]
  results = run_job(commands, devices=devices_per_process, timeout=300, name="worker",
                    log_dir=os.path.dirname(workdir))
  return [f"worker {process_id} exited {status}:\n{log[-4000:]}"
          for process_id, (status, log) in enumerate(results) if status]


def _check_against_one_process(run_job, num_processes, devices_per_process, data_dir,
                               tmp_path):
  workdir = str(tmp_path / "multi" / "work")
  os.makedirs(os.path.dirname(workdir))
  failed = _run_workers(run_job, num_processes, devices_per_process, data_dir, workdir)
  assert not failed, "\n".join(failed)

  config = _config(data_dir, total_steps=_STEPS, log_training_steps=1, ckpt_steps=_STEPS)
  config.evals = {}
  num_devices = num_processes * devices_per_process
  train.train_and_evaluate(config, str(tmp_path / "single"), devices=jax.devices()[:num_devices])

  multi = metric_logs.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  single = {r["step"]: r["loss"] for r in metric_logs.read_jsonl(
      os.path.join(tmp_path, "single", "metrics.jsonl")) if "loss" in r}
  multi_losses = {r["step"]: r["loss"] for r in multi if "loss" in r}
  # Only process 0 wrote the metrics: one line per step, not one per process.
  assert sorted(multi_losses) == sorted(single) == list(range(1, _STEPS + 1))
  assert len([r for r in multi if "loss" in r]) == _STEPS
  print(f"{num_processes} processes x {devices_per_process} devices vs 1 process x "
        f"{num_devices} devices, per-step loss:")
  for step in sorted(single):
    print(f"  step {step}: {multi_losses[step]:.8f} vs {single[step]:.8f} "
          f"(rel. diff {abs(multi_losses[step] - single[step]) / abs(single[step]):.1e})")
  np.testing.assert_allclose([multi_losses[s] for s in single], [single[s] for s in single],
                             rtol=_RTOL)
  # Every process took part in the checkpoint: one data-iterator state per process.
  iter_dir = os.path.join(workdir, "checkpoints", str(_STEPS), "data_iter")
  assert sorted(name for name in os.listdir(iter_dir) if name.startswith("process_")) == [
      f"process_{i}-of-{num_processes}.json" for i in range(num_processes)]
  # The final evaluation ran on all processes and process 0 wrote it.
  assert os.path.exists(os.path.join(workdir, "final_eval.json"))


def test_two_processes_match_one(tiny_data_dir, tmp_path, run_job):
  _check_against_one_process(run_job, 2, 4, tiny_data_dir, tmp_path)


def test_processes_given_different_configs_refuse_to_start(tiny_data_dir, tmp_path, run_job):
  """Process 1 with another seed: both stop before training, naming the difference."""
  workdir = str(tmp_path / "multi" / "work")
  os.makedirs(os.path.dirname(workdir))
  failed = _run_workers(run_job, 2, 2, tiny_data_dir, workdir,
                        extra_args={1: ["--config.seed=1"]})
  assert len(failed) == 2 and all("Processes [1] of this job were given another config" in f
                                  for f in failed), "\n".join(failed)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


@pytest.mark.slow
def test_an_iterator_file_damaged_on_one_process_resumes_all_by_position(tiny_data_dir,
                                                                         tmp_path, run_job):
  """Process 1's iterator state of the last step is cut short: both processes resume that
  step by its recorded data position (they once resumed from different steps and waited on
  each other until JAX's heartbeat killed them; then both gave the step up)."""
  workdir = str(tmp_path / "multi" / "work")
  os.makedirs(os.path.dirname(workdir))
  every_2 = ["--config.ckpt_steps=2"]
  failed = _run_workers(run_job, 2, 2, tiny_data_dir, workdir,
                        extra_args={0: every_2, 1: every_2})
  assert not failed, "\n".join(failed)
  with open(os.path.join(workdir, "checkpoints", str(_STEPS), "data_iter",
                         "process_1-of-2.json"), "w") as f:
    f.write('{"next_index": ')
  more = [*every_2, f"--config.total_steps={_STEPS + 2}"]
  failed = _run_workers(run_job, 2, 2, tiny_data_dir, workdir, extra_args={0: more, 1: more})
  assert not failed, "\n".join(failed)
  logs = [open(os.path.join(tmp_path, "multi", f"worker{i}.log")).read() for i in (0, 1)]
  assert f"Resumed from the checkpoint of step {_STEPS}" in logs[0]
  assert f"Resumed from the checkpoint of step {_STEPS}" in logs[1]
  assert "another process's iterator file is damaged" in logs[0]
  assert "process_1-of-2.json is damaged" in logs[1]
  assert not os.path.exists(os.path.join(workdir, "checkpoints_damaged"))
  losses = [r["step"] for r in metric_logs.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if "loss" in r]
  assert losses == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_four_processes_match_one(tiny_data_dir, tmp_path, run_job):
  _check_against_one_process(run_job, 4, 2, tiny_data_dir, tmp_path)


@pytest.mark.slow
def test_a_resume_on_another_process_count_continues_exactly(tiny_data_dir, tmp_path,
                                                            run_job):
  """2 processes -> 1 process, and 1 process -> 2 processes, each changing at step 2 of 4: the
  losses of the uninterrupted run of one process (4 devices throughout) to round-off."""
  config = _config(tiny_data_dir, total_steps=_STEPS, log_training_steps=1, ckpt_steps=2)
  config.evals = {}
  devices = jax.devices()[:4]
  train.train_and_evaluate(config, str(tmp_path / "single"), devices=devices)

  # 2 processes through step 4; its checkpoint deleted, one process resumes from step 2 (the
  # workers take no stop step, and a shorter total_steps would change the schedule).
  shrunk = str(tmp_path / "shrunk" / "work")
  os.makedirs(os.path.dirname(shrunk))
  every_2 = ["--config.ckpt_steps=2"]
  assert not (failed := _run_workers(run_job, 2, 2, tiny_data_dir, shrunk,
                                     {0: every_2, 1: every_2})), failed
  shutil.rmtree(os.path.join(shrunk, "checkpoints", str(_STEPS)))
  train.train_and_evaluate(config, shrunk, devices=devices)
  assert [r["step"] for r in metric_logs.read_jsonl(os.path.join(shrunk, "metrics.jsonl"))
          if "loss" in r] == [1, 2, 3, 4, 3, 4]  # The last value of a step counts.

  grown = str(tmp_path / "grown" / "work")
  os.makedirs(os.path.dirname(grown))
  train.train_and_evaluate(config, grown, stop_at_step=2, devices=devices)
  assert not (failed := _run_workers(run_job, 2, 2, tiny_data_dir, grown,
                                     {0: every_2, 1: every_2})), failed
  assert "continuing its stream" in open(os.path.join(tmp_path, "grown", "worker1.log")).read()

  def losses(work):
    return {r["step"]: r["loss"] for r in metric_logs.read_jsonl(
        os.path.join(work, "metrics.jsonl")) if "loss" in r}

  single = losses(str(tmp_path / "single"))
  assert sorted(single) == list(range(1, _STEPS + 1))
  for work in (shrunk, grown):
    assert sorted(losses(work)) == sorted(single)
    np.testing.assert_allclose([losses(work)[s] for s in single], list(single.values()),
                               rtol=_RTOL, err_msg=work)


class _RecordingSource:
  """A data source that remembers which records were read."""

  def __init__(self, source):
    self._source, self.read = source, set()

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    self.read.add(int(index))
    return self._source[index]


def test_each_process_reads_only_its_block_of_every_global_batch(tiny_data_dir, monkeypatch):
  config = _config(tiny_data_dir)
  source = datasets.get_source(config.dataset, config.train_split, tiny_data_dir)
  global_batch, num_batches = 16, 3

  def batches(process_index, process_count, first_batch=0, count=num_batches):
    monkeypatch.setattr(jax, "process_index", lambda: process_index)
    monkeypatch.setattr(jax, "process_count", lambda: process_count)
    recording = _RecordingSource(source)
    ds = input_pipeline.make_train_dataset(
        recording, config.input, per_process_batch_size=global_batch // process_count, seed=0,
        first_batch=first_batch)
    it = iter(ds)
    out = [next(it) for _ in range(count)]
    return out, recording.read

  def assert_global_batches(per_process, want):
    for step, want_batch in enumerate(want):
      for key in want_batch:
        np.testing.assert_array_equal(
            np.concatenate([batches_of_process[step][key] for batches_of_process in per_process]),
            want_batch[key], err_msg=f"batch {step}, {key}")

  one, _ = batches(0, 1)
  (first, read_first), (second, read_second) = batches(0, 2), batches(1, 2)
  # The shards really differ and each process read only its own examples ...
  assert read_first and read_second and not read_first & read_second
  # ... and together they are exactly the one-process global batches, in process order.
  assert_global_batches([first, second], one)
  # A stream started at global batch 2 (a resume on another process count) on 4, 2 and 1
  # processes: the one-process stream's batches from the third on, crops included.
  assert_global_batches([batches(p, 4, first_batch=2, count=1)[0] for p in range(4)], one[2:])
  assert_global_batches([batches(p, 2, first_batch=1, count=2)[0] for p in range(2)], one[1:])
  assert_global_batches([batches(0, 1, first_batch=1, count=2)[0]], one[1:])


@pytest.mark.parametrize("environ,expected", [
    ({}, None),
    ({"LUAB_DISTRIBUTED": "auto"}, {}),
    ({"LUAB_COORDINATOR": "10.0.0.1:1234", "LUAB_NUM_PROCESSES": "4", "LUAB_PROCESS_ID": "3"},
     dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3)),
    ({"LUAB_COORDINATOR": "h:1", "LUAB_NUM_PROCESSES": "2", "LUAB_PROCESS_ID": "0",
      "LUAB_LOCAL_DEVICE_IDS": "0,1"},
     dict(coordinator_address="h:1", num_processes=2, process_id=0, local_device_ids=[0, 1])),
])
def test_distributed_arguments_from_the_environment(environ, expected):
  assert distributed.initialize_args(environ) == expected


@pytest.mark.parametrize("environ,message", [
    ({"LUAB_COORDINATOR": "h:1", "LUAB_NUM_PROCESSES": "2"}, "LUAB_PROCESS_ID missing"),
    ({"LUAB_COORDINATOR": "h", "LUAB_NUM_PROCESSES": "2", "LUAB_PROCESS_ID": "0"}, "HOST:PORT"),
    ({"LUAB_COORDINATOR": "h:1", "LUAB_NUM_PROCESSES": "2", "LUAB_PROCESS_ID": "2"}, r"\[0, "),
    ({"LUAB_DISTRIBUTED": "auto", "LUAB_COORDINATOR": "h:1"}, "not both"),
    ({"LUAB_DISTRIBUTED": "slurm"}, "'auto'"),
    ({"LUAB_COORDINATOR": "h:1", "LUAB_NUM_PROCESSES": "2", "LUAB_PROCESS_ID": "0",
      "LUAB_LOCAL_DEVICE_IDS": "a,b"}, "LUAB_LOCAL_DEVICE_IDS='a,b'"),
])
def test_half_configured_distributed_start_up_is_an_error(environ, message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize_args(environ)


@pytest.mark.slow
def test_state_written_by_one_process_damaged_resumes_all_from_the_previous_step(
    tiny_data_dir, tmp_path, run_job):
  """The array data process 1 wrote into the last step's state are cut short (a failed copy of
  one host's writes): the processes give that step up together, move it aside once, and
  resume the step before it."""
  workdir = str(tmp_path / "multi" / "work")
  os.makedirs(os.path.dirname(workdir))
  every_2 = ["--config.ckpt_steps=2"]
  failed = _run_workers(run_job, 2, 2, tiny_data_dir, workdir,
                        extra_args={0: every_2, 1: every_2})
  assert not failed, "\n".join(failed)
  state = os.path.join(workdir, "checkpoints", str(_STEPS), "state")
  written_by_1 = glob.glob(os.path.join(state, "ocdbt.process_1", "d", "*"))
  assert written_by_1, os.listdir(state)
  for path in written_by_1:
    with open(path, "r+b") as f:
      f.truncate(16)
  more = [*every_2, f"--config.total_steps={_STEPS + 2}"]
  failed = _run_workers(run_job, 2, 2, tiny_data_dir, workdir, extra_args={0: more, 1: more})
  logs = [open(os.path.join(tmp_path, "multi", f"worker{i}.log")).read() for i in (0, 1)]
  assert not failed, "\n".join(failed)
  for log in logs:
    assert f"Resumed from the checkpoint of step {_STEPS - 2}" in log, log[-4000:]
  assert os.listdir(os.path.join(workdir, "checkpoints_damaged")) == [str(_STEPS)]
  losses = [r["step"] for r in metric_logs.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if "loss" in r]
  assert losses == [1, 2, 3, 4, 3, 4, 5, 6]


# One process of a two-process job (distributed.py's variables): `save` writes steps 2 and 4 of
# a small state sharded over both processes' devices, with a Grain iterator; `restore` runs the
# trainer's restore_latest on this process's copy of the work directory.
_CHECKPOINT_WORKER = """
import sys
import grain, jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from luab_jax import checkpointing, distributed
distributed.initialize()
mode, workdir = sys.argv[1], sys.argv[2]
mesh = jax.make_mesh((4,), ("data",), devices=jax.devices())
shardings = {"w": NamedSharding(mesh, P("data")), "b": NamedSharding(mesh, P())}
def state(step):
  return {"w": jax.device_put(np.full((8, 4), step, np.float32), shardings["w"]),
          "b": jax.device_put(np.full((4,), step, np.float32), shardings["b"])}
def data_iter(position):
  it = iter(grain.MapDataset.range(100).to_iter_dataset())
  for _ in range(position.next_batch):
    next(it)
  return it
manager = checkpointing.create_manager(workdir)
if mode == "save":
  for step in (2, 4):
    position = checkpointing.DataPosition(0, 0, step, 0)
    checkpointing.save(manager, step, state(step), data_iter(position), position=position,
                       force=True)
  manager.wait_until_finished()
else:
  restored = checkpointing.restore_latest(
      manager, workdir, checkpointing.abstract_like(state(0), shardings), data_iter,
      config_seed=0, num_workers=0)
  local = [float(np.asarray(s.data).mean()) for s in restored.state["w"].addressable_shards]
  print("RESTORED", restored.step, local, next(restored.data_iter), flush=True)
manager.close()
"""


def test_a_step_one_process_cannot_read_is_given_up_by_all(tmp_path, run_job):
  """Each process resumes from its own copy of the work directory (hosts with their own
  storage, or a read that fails on one host only), and process 1's copy of step 4 is damaged:
  both give step 4 up and resume step 2 together. A process failing inside Orbax's restore
  alone once went on to step 2 while the other waited at Orbax's barrier after its restore of
  step 4, pairing its collectives with that barrier's."""
  shared = str(tmp_path / "shared" / "run")
  for status, log in run_job([["-c", _CHECKPOINT_WORKER, "save", shared]] * 2, name="save"):
    assert status == 0, log[-6000:]
  copies = [str(shutil.copytree(shared, tmp_path / f"host{i}" / "run")) for i in range(2)]
  damaged = glob.glob(os.path.join(copies[1], "checkpoints", "4", "state", "**", "d", "*"),
                      recursive=True)
  assert damaged
  for path in damaged:
    with open(path, "r+b") as f:
      f.truncate(16)
  results = run_job([["-c", _CHECKPOINT_WORKER, "restore", copy] for copy in copies],
                    name="restore")
  logs = [log for _, log in results]
  for process_id, (status, log) in enumerate(results):
    assert status == 0, f"process {process_id} exited {status}:\n{log[-6000:]}"
    # Step 2's values on this process's shards, and its data iterator where step 2 left it.
    assert "RESTORED 2 [2.0, 2.0] 2" in log, f"process {process_id}:\n{log[-6000:]}"
  assert "damaged on another process" in logs[0] and "restore failed" in logs[1]
  # Process 0 moved the step aside, in the copy it reads (with shared storage, the only one).
  assert os.listdir(os.path.join(copies[0], "checkpoints_damaged")) == ["4"]
