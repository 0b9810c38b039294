"""Grain input pipelines: per-process shards of a random-access source -> global batches.

Train: source -> global shuffle -> repeat -> seeded random crop/flip of image and points (one
`random_map`, seeded per element index) -> per-process batches -> this process's share of them
-> multiprocess prefetch. The global stream, cut into global batches of B = P * b examples, is
the same whatever the number of processes P; process p takes rows [p*b, (p+1)*b) of every
global batch, i.e. every P-th batch of b examples starting at the p-th. The datasets are lazy
(Grain `MapDataset`), so a process reads and decodes only its own examples, and a run on P
processes sees exactly the batches of a run on one (`sharding.check_batch_size` checks that
process p's devices hold that block of the global batch). The iterator is a Grain
`DatasetIterator`, whose few-KB state goes into every checkpoint so a resumed run continues at
the exact next batch.

Eval: indices padded up to a whole number of global batches, so every process runs the same
number of steps; padding examples carry `_mask = False` and each real example counts once. Its
read-ahead is `read_threads` batches per process at most (`eval_read_options`), not
`prefetch_buffer`: a single pass read at the model's pace gains nothing from a deep buffer, and
a deep one makes host memory grow with the split (it only fills on splits long enough).
"""

import math

import grain
import jax
import numpy as np

from luab_jax.pp import transforms


# Batches each worker process keeps ready for the main process (Grain's default).
_PER_WORKER_BUFFER = 1


def batch_bytes(input_config, batch_size: int, num_points: int = 1) -> int:
  """Bytes of one batch's arrays: the uint8 image plus the small per-example fields."""
  image = input_config.image_size ** 2 * 3
  return batch_size * (image + num_points * 12 + 64)


def buffer_options(input_config, *, num_workers: int, batch_size: int,
                   num_points: int = 1) -> grain.ReadOptions:
  """Grain read options, with the prefetch buffer bounded by `input.ram_budget_mb`.

  The elements Grain buffers here are whole batches. Each of max(1, num_workers) processes
  holds up to `prefetch_buffer` batches in its read buffer (built by `read_threads` threads)
  plus one more (the batch handed to the main process, or being consumed), so

      RAM ~ max(1, num_workers) * (prefetch_buffer + 1) * batch_bytes

  (decode scratch, Python objects and the trainer's own copies not counted). With
  `input.ram_budget_mb` set (None: unbounded), `prefetch_buffer` is lowered until that fits
  (at 0 a process builds one batch at a time) and `read_threads` to the buffer; a budget that
  cannot hold even one batch per process is an error naming the key.
  """
  threads = input_config.get("read_threads", 4)
  prefetch = input_config.get("prefetch_buffer", 64)
  budget_mb = input_config.get("ram_budget_mb", None)
  if budget_mb is not None:
    processes = max(1, num_workers)
    batch_mb = batch_bytes(input_config, batch_size, num_points) / 2 ** 20
    per_process = int(budget_mb // (batch_mb * processes))
    if per_process < 1:
      raise ValueError(
          f"config.input.ram_budget_mb={budget_mb} cannot hold one batch per input process: "
          f"{processes} process(es) x {batch_mb:.1f} MB per batch ({batch_size} images of "
          f"{input_config.image_size} px, uint8) needs at least {processes * batch_mb:.0f} MB. "
          "Raise config.input.ram_budget_mb, or lower input.num_workers or the batch size.")
    prefetch = min(prefetch, per_process - 1)
    threads = max(1, min(threads, prefetch)) if prefetch > 0 else threads
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)


def eval_read_options(options: grain.ReadOptions) -> grain.ReadOptions:
  """`options` with the read-ahead cut to one batch per reading thread, for evaluation.

  Grain keeps up to `prefetch_buffer_size` batches submitted to its `num_threads` threads; a
  thread builds one batch at a time, so `num_threads` batches keep every thread busy and more
  only wait in memory. Training wants the deep buffer (to ride out slow batches and the
  trainer's pauses); evaluation reads its split once, as fast as the model consumes it, and
  the reader outpaces the model, so a buffer of `prefetch_buffer` batches simply fills: the
  demo's 32 batches of 250 x 64 px images (12 MB each as the float32 they were then) added
  ~0.33 GiB of anonymous memory to `luab_jax.evaluate`, and only on splits long enough to fill
  them, hence a footprint that grew with the split (BENCHMARKS.md, Host memory). Evaluation
  speed on the demo was the same with 2, 4, 8 or 32 batches.
  """
  prefetch = min(options.prefetch_buffer_size, options.num_threads)
  return grain.ReadOptions(num_threads=options.num_threads, prefetch_buffer_size=prefetch)


def _maybe_prefetch(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=_PER_WORKER_BUFFER))
  return ds


def make_train_dataset(source, input_config, *, per_process_batch_size: int, seed: int,
                       num_points: int = 1) -> grain.IterDataset:
  """The infinite training stream of per-process batches (numpy dicts)."""
  ds = grain.MapDataset.source(source)
  ds = ds.shuffle(seed=seed).repeat(None)
  ds = ds.random_map(
      transforms.TrainTransform(
          image_size=input_config.image_size,
          scale=tuple(input_config.crop_scale),
          ratio=tuple(input_config.crop_ratio),
          flip=input_config.flip,
          resize_method=input_config.get("resize_method",
                                         transforms.TrainTransform.resize_method),
          num_points=num_points),
      seed=seed + 1)
  ds = ds.batch(per_process_batch_size, drop_remainder=True)
  ds = ds[jax.process_index()::jax.process_count()]
  ds = ds.to_iter_dataset(buffer_options(input_config, num_workers=input_config.num_workers,
                                         batch_size=per_process_batch_size,
                                         num_points=num_points))
  return _maybe_prefetch(ds, input_config.num_workers)


def _padding_like(example):
  pad = {key: np.zeros_like(value) for key, value in example.items()}
  pad["_mask"] = np.bool_(False)
  return pad


def make_eval_dataset(source, transform: transforms.EvalTransform, input_config, *,
                      per_process_batch_size: int) -> tuple[grain.IterDataset, int]:
  """Padded evaluation batches for this process and the number of batches every process runs.

  `transform` (central crop, labels, points, boxes) is chosen by the evaluator; `input_config`
  gives only the reading options (`read_threads`, `eval_num_workers`, `ram_budget_mb`, and
  `prefetch_buffer` as an upper bound: the read-ahead is at most `read_threads` batches per
  process, see `eval_read_options`), so what it holds is a few batches whatever the split's size.
  """
  num_examples = len(source)
  if num_examples == 0:
    raise ValueError("The evaluation source is empty.")
  global_batch_size = per_process_batch_size * jax.process_count()
  num_batches = math.ceil(num_examples / global_batch_size)
  padding = _padding_like(transform.map(source[0]))

  def load(index):
    return transform.map(source[index]) if index < num_examples else padding

  ds = grain.MapDataset.range(num_batches * global_batch_size)
  ds = ds[jax.process_index()::jax.process_count()].map(load)
  ds = ds.batch(per_process_batch_size, drop_remainder=True)
  num_workers = input_config.get("eval_num_workers", 0)
  ds = ds.to_iter_dataset(eval_read_options(
      buffer_options(input_config, num_workers=num_workers, batch_size=per_process_batch_size,
                     num_points=transform.num_points)))
  return _maybe_prefetch(ds, num_workers), num_batches
