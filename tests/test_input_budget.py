"""`config.input.ram_budget_mb` bounds the batches Grain buffers, and fails clearly when it
cannot hold one batch per input process."""

import threading
import time

import ml_collections
import numpy as np
import pytest

from luab_jax import input_pipeline
from luab_jax.pp import transforms


def _input(**overrides):
  config = dict(image_size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False,
                num_workers=0, read_threads=4, prefetch_buffer=64)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def test_without_a_budget_the_configured_buffer_is_used():
  options = input_pipeline.buffer_options(_input(), num_workers=0, batch_size=8)
  assert (options.prefetch_buffer_size, options.num_threads) == (64, 4)


def test_budget_lowers_the_prefetch_buffer_and_threads():
  # 224 px uint8: 0.144 MB an image, 256 images = 36.8 MB a batch.
  config = _input(image_size=224, ram_budget_mb=1024, num_workers=4)
  batch_mb = input_pipeline.batch_bytes(config, 256) / 2 ** 20
  options = input_pipeline.buffer_options(config, num_workers=4, batch_size=256)
  per_process = int(1024 // (batch_mb * 4))  # 6 batches per process
  assert options.prefetch_buffer_size == per_process - 1 == 5
  assert options.num_threads == 4
  assert 4 * (options.prefetch_buffer_size + 1) * batch_mb <= 4096
  # Just one batch per process: no read-ahead at all.
  options = input_pipeline.buffer_options(_input(image_size=224, ram_budget_mb=150),
                                          num_workers=4, batch_size=256)
  assert options.prefetch_buffer_size == 0
  # A generous budget keeps the configured buffer.
  options = input_pipeline.buffer_options(_input(ram_budget_mb=10 ** 6), num_workers=2,
                                          batch_size=8)
  assert options.prefetch_buffer_size == 64


def test_budget_too_small_for_one_batch_per_worker_names_the_key():
  with pytest.raises(ValueError, match=r"config\.input\.ram_budget_mb=100 .*4 process"):
    input_pipeline.buffer_options(_input(image_size=224, ram_budget_mb=100), num_workers=4,
                                  batch_size=256)


def test_negative_reading_options_name_their_key():
  for overrides, workers, key in ((dict(read_threads=-1), 0, "read_threads=-1"),
                                  (dict(prefetch_buffer=-2), 0, "prefetch_buffer=-2"),
                                  ({}, -1, "eval_num_workers=-1")):
    with pytest.raises(ValueError, match=rf"config\.input\.{key} must not be negative"):
      input_pipeline.buffer_options(_input(**overrides), num_workers=workers, batch_size=8,
                                    workers_key="eval_num_workers")


def test_train_dataset_runs_under_a_tight_budget():
  rng = np.random.default_rng(0)
  records = [{"image": rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), "label": i % 3,
              "point": np.float32([0.5, 0.5]), "has_point": True} for i in range(16)]
  config = _input(ram_budget_mb=0.01)  # 8 x 16 px images = 0.0064 MB a batch: one batch
  batch = next(iter(input_pipeline.make_train_dataset(records, config,
                                                      per_process_batch_size=8, seed=0)))
  assert batch["image"].shape == (8, 16, 16, 3)
  with pytest.raises(ValueError, match="ram_budget_mb"):
    input_pipeline.make_train_dataset(records, _input(ram_budget_mb=0.005),
                                      per_process_batch_size=8, seed=0)


class _CountingSource:
  """A random-access source that counts the records read."""

  def __init__(self, records):
    self._records, self._lock, self.reads = records, threading.Lock(), 0

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    with self._lock:
      self.reads += 1
    return self._records[index]


def test_eval_read_ahead_is_one_batch_per_thread_whatever_the_split_size():
  """Evaluation memory must not grow with the split: Grain may run at most `read_threads`
  batches ahead of the consumer, not `prefetch_buffer` (64 here) batches."""
  rng = np.random.default_rng(0)
  records = [{"image": rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), "label": i % 3,
              "point": np.float32([0.5, 0.5]), "has_point": True} for i in range(8 * 80)]
  source = _CountingSource(records)
  config = _input(read_threads=2, prefetch_buffer=64)
  options = input_pipeline.eval_read_options(
      input_pipeline.buffer_options(config, num_workers=0, batch_size=8))
  assert (options.num_threads, options.prefetch_buffer_size) == (2, 2)
  dataset, num_batches = input_pipeline.make_eval_dataset(
      source, transforms.EvalTransform(image_size=16, crop_fraction=1.0), config,
      per_process_batch_size=8)
  assert num_batches == 80
  iterator = iter(dataset)
  next(iterator)
  time.sleep(1.0)  # Ample time for the reading threads to fill whatever buffer they have.
  # One padding template + the batch handed out + 2 read ahead; the old buffer read 65 batches.
  assert source.reads <= 1 + 8 * (1 + 2), source.reads
  assert sum(1 for _ in iterator) == 79  # Every batch still comes, once.
