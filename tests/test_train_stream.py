"""The training stream: each example follows from its stream position alone."""

import os
import subprocess
import sys
import time

import grain
import ml_collections
import numpy as np
import pytest

from luab_jax import input_pipeline
from luab_jax import parent_watch
from luab_jax.pp import transforms

SEED = 3
BATCH = 4


def _input(**overrides):
  values = dict(image_size=16, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=True,
                num_workers=0, read_threads=0, prefetch_buffer=0)
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def _records(count=10):
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 256, (20 + i, 30 - i, 3), dtype=np.uint8),
           "label": i, "point": rng.random(2).astype(np.float32), "has_point": i % 3 != 0,
           "file_name": f"image_{i}.JPEG"} for i in range(count)]


def _batches(records, count, **overrides):
  ds = input_pipeline.make_train_dataset(records, _input(**overrides),
                                         per_process_batch_size=BATCH, seed=SEED)
  iterator = iter(ds)
  return [next(iterator) for _ in range(count)]


def _assert_same_batches(got, want):
  assert len(got) == len(want)
  for got_batch, want_batch in zip(got, want):
    assert sorted(got_batch) == sorted(want_batch)
    for key in want_batch:
      np.testing.assert_array_equal(got_batch[key], want_batch[key], err_msg=key)


@pytest.mark.parametrize("previous_seed", [99, None])  # None: the same seed as the call tested.
@pytest.mark.parametrize("seed,position", [(0, 0), (1, 5), (SEED + 1, 123_456_789)])
def test_element_rng_draws_as_a_fresh_philox_at_that_counter(seed, position, previous_seed):
  # Leave the thread's generator mid-buffer (a 32-bit draw, a float) before the reset.
  used = input_pipeline.element_rng(seed if previous_seed is None else previous_seed, 7)
  used.integers(0, 10, dtype=np.uint32)
  used.random()
  rng = input_pipeline.element_rng(seed, position)
  fresh = np.random.Generator(np.random.Philox(key=seed, counter=[0, 0, 0, position]))
  for draw in (lambda g: g.random(3), lambda g: g.integers(0, 1000, 5, dtype=np.uint32),
               lambda g: g.uniform(0.08, 1.0), lambda g: g.integers(0, 500)):
    np.testing.assert_array_equal(draw(rng), draw(fresh))


def test_each_example_is_its_record_transformed_with_its_position_generator():
  records = _records()
  got = _batches(records, 5)  # 20 examples of 10 records: the stream goes into its second epoch.
  order = grain.MapDataset.range(len(records)).shuffle(seed=SEED).repeat(None)
  transform = transforms.TrainTransform(image_size=16)
  want = []
  for k in range(5):
    rows = []
    for position in range(k * BATCH, (k + 1) * BATCH):
      rng = np.random.Generator(np.random.Philox(key=SEED + 1, counter=[0, 0, 0, position]))
      rows.append(transform.random_map(records[order[position]], rng))
    want.append({key: np.stack([row[key] for row in rows]) for key in rows[0]})
  _assert_same_batches(got, want)
  # Not vacuous: the batches differ (identical images everywhere would pass the test above).
  assert not np.array_equal(got[0]["image"], got[2]["image"])


def test_read_threads_and_worker_processes_give_the_same_stream():
  records = _records()
  serial = _batches(records, 4)
  _assert_same_batches(_batches(records, 4, read_threads=3, prefetch_buffer=6), serial)
  _assert_same_batches(_batches(records, 4, num_workers=2, read_threads=1, prefetch_buffer=2),
                       serial)


def test_an_empty_training_source_is_an_error():
  with pytest.raises(ValueError, match="training source is empty"):
    input_pipeline.make_train_dataset([], _input(), per_process_batch_size=BATCH, seed=SEED)


_KILLED_TRAINER = """
import time
from absl import flags
import ml_collections
import numpy as np
from luab_jax import input_pipeline
flags.FLAGS(["trainer"])  # Grain's workers read absl flags, parsed in a real trainer.
records = [{"image": np.zeros((20, 24, 3), np.uint8), "label": 0,
            "point": np.float32([0.5, 0.5]), "has_point": True} for _ in range(16)]
config = ml_collections.ConfigDict(dict(
    image_size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, num_workers=2,
    read_threads=1, prefetch_buffer=2))
stream = iter(input_pipeline.make_train_dataset(records, config, per_process_batch_size=8,
                                                seed=0))
next(stream)
print("ready", flush=True)
time.sleep(600)
"""


def _grain_workers(parent: int) -> list[int]:
  """Live processes started by `parent` through multiprocessing's spawn (not its tracker)."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        spawned = b"spawn_main" in f.read()
    except (FileNotFoundError, ProcessLookupError):
      continue
    if int(ppid) == parent and spawned and state != "Z":
      found.append(int(pid))
  return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_processes_exit_when_the_trainer_is_killed():
  """A trainer killed with SIGKILL left its Grain workers running (and their shared memory)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  trainer = subprocess.Popen([sys.executable, "-c", _KILLED_TRAINER], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"})
  try:
    assert trainer.stdout.readline().strip() == b"ready"
    workers = _grain_workers(trainer.pid)
    assert len(workers) == 2
  finally:
    trainer.kill()
    trainer.wait()
  deadline = time.time() + 10 * parent_watch.POLL_SECONDS
  alive = workers
  while alive and time.time() < deadline:
    time.sleep(0.2)
    alive = [pid for pid in workers if _is_running(pid)]
  assert not alive, f"Grain workers {alive} outlived their killed parent"


def _is_running(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False
