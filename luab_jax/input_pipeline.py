"""Grain input pipelines: per-process shards of a random-access source -> global batches.

Train: record indices -> global shuffle -> repeat -> per-process batches of indices -> this
process's share of them -> one Grain map per batch (`ReadAndTransform`) that reads each record
and builds the batch with the seeded random crop/flip of image and points
(`TrainTransform.map_batch`: each image resized straight into the batch array, the points and
labels of all rows moved in one numpy pass) -> read threads or worker processes. Example j of
stream batch k sits at stream position k*b + j, and its crop is drawn from a generator seeded
by (seed, position) alone (`element_rng`), so it is the same whatever the number of threads,
workers or processes. The global stream, cut into global batches of
B = P * b examples, is the same whatever the number of processes P; process p takes rows
[p*b, (p+1)*b) of every global batch, i.e. every P-th batch of b examples starting at the p-th.
The datasets are lazy (Grain `MapDataset`), so a process reads and decodes only its own
examples, and a run on P processes sees exactly the batches of a run on one
(`sharding.check_batch_size` checks that process p's devices hold that block of the global
batch). The iterator is a Grain `DatasetIterator`, whose few-KB state goes into every
checkpoint so a resumed run continues at the exact next batch; a run resumed on another process
or worker count, whose Grain state does not apply, builds the stream at that global batch
instead (`first_batch`), which gives the same batches.

Why one map per batch rather than Grain's per-element `source -> random_map -> batch`: Grain
runs its stage bookkeeping (timing, byte-size estimates and read metrics of every record) for
every element, in Python, under the GIL that the read threads share. Per batch,
the same reads and transforms ran 1.09x as fast on one core and 1.04x on two (medians of 5
alternating rounds; BENCHMARKS.md, Input pipeline, 2026-11-30 sixth run). Building the batch in
place and moving the points of all its rows at once (`map_batch`) added 1.08x on one core and
on two (7 rounds; seventh run).

Eval: indices padded up to a whole number of global batches, so every process runs the same
number of steps; padding examples carry `_mask = False` and each real example counts once. Its
read-ahead is `read_threads` batches per process at most (`eval_read_options`), not
`prefetch_buffer`: a single pass read at the model's pace gains nothing from a deep buffer, and
a deep one makes host memory grow with the split (it only fills on splits long enough).
"""

import dataclasses
import functools
import math
import os
import threading
from typing import Any

import grain
import jax
import numpy as np

from luab_jax import parent_watch
from luab_jax.pp import transforms


# Batches each worker process keeps ready for the main process (Grain's default).
_PER_WORKER_BUFFER = 1


def batch_bytes(input_config, batch_size: int, num_points: int = 1) -> int:
  """Bytes of one batch's arrays: the uint8 image plus the small per-example fields."""
  image = input_config.image_size ** 2 * 3
  return batch_size * (image + num_points * 12 + 64)


def buffer_options(input_config, *, num_workers: int, batch_size: int,
                   num_points: int = 1, workers_key: str = "num_workers") -> grain.ReadOptions:
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
  for key, value in ((workers_key, num_workers), ("read_threads", threads),
                     ("prefetch_buffer", prefetch)):
    if value < 0:  # Grain would take some as 0 or fail without naming the key.
      raise ValueError(f"config.input.{key}={value} must not be negative.")
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
        num_workers=num_workers, per_worker_buffer_size=_PER_WORKER_BUFFER),
        # The pid is taken here, in the parent: a worker still starting when its parent dies
        # would otherwise take its new parent (init) for it.
        worker_init_fn=functools.partial(_grain_worker_init, parent=os.getpid()))
  return ds


def _grain_worker_init(worker_index: int, worker_count: int, *, parent: int) -> None:
  del worker_index, worker_count
  parent_watch.exit_with_parent(parent)


_THREAD_RNG = threading.local()


def element_rng(seed: int, position: int) -> np.random.Generator:
  """The generator of stream position `position`: Philox keyed by `seed`, counter at `position`.

  The same draws as `np.random.Generator(np.random.Philox(key=seed, counter=[0, 0, 0,
  position]))`, from one generator per thread whose state is reset (3 us instead of 9 to
  build one). Valid until the same thread's next call.
  """
  rng, rng_seed = getattr(_THREAD_RNG, "rng_and_seed", (None, None))
  if rng_seed != seed:  # Philox sets (and checks) the key; the counter is all that moves.
    rng = np.random.Generator(np.random.Philox(key=seed))
    _THREAD_RNG.rng_and_seed = rng, seed
  state = rng.bit_generator.state
  state["state"]["counter"] = np.array([0, 0, 0, position], np.uint64)
  state["buffer_pos"] = 4  # Philox's 4-word buffer: empty, so the next draw uses the counter.
  state["has_uint32"] = 0
  rng.bit_generator.state = state
  return rng


@dataclasses.dataclass(frozen=True)
class ReadAndTransform(grain.transforms.MapWithIndex):
  """Stream batch k of record indices -> the batch of examples (a dict of numpy batch arrays).

  Reads each record from `source` and applies `transform.map_batch`, row j drawing its crop
  from `element_rng(seed, k * batch_size + j)`.
  """
  source: Any
  transform: transforms.TrainTransform
  batch_size: int
  seed: int

  def map_with_index(self, index: int, record_indices: np.ndarray) -> dict:
    first = index * self.batch_size
    records = [self.source[int(record)] for record in record_indices]
    return self.transform.map_batch(
        records, (element_rng(self.seed, first + j) for j in range(len(records))))


def train_batches(source, input_config, *, per_process_batch_size: int, seed: int,
                  first_batch: int = 0, num_points: int = 1) -> grain.MapDataset:
  """This process's training batches (numpy dicts), lazily: batch i is read when indexed.

  Its block of global batches `first_batch`, `first_batch + 1`, ... of the stream of `seed`:
  a stream started at global batch n is the same examples with the same crops as the stream
  started at 0 after n batches, on any number of processes (how a resume on another process
  or worker count continues exactly: checkpointing's module docstring).
  """
  if first_batch < 0:
    raise ValueError(f"first_batch={first_batch} must be >= 0.")
  if len(source) == 0:
    raise ValueError("The training source is empty.")
  transform = transforms.TrainTransform(
      image_size=input_config.image_size,
      scale=tuple(input_config.crop_scale),
      ratio=tuple(input_config.crop_ratio),
      flip=input_config.flip,
      resize_method=input_config.get("resize_method", transforms.TrainTransform.resize_method),
      num_points=num_points)
  ds = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat(None)
  ds = ds.batch(per_process_batch_size, drop_remainder=True)
  ds = ds.map_with_index(ReadAndTransform(source, transform, per_process_batch_size, seed + 1))
  return ds[first_batch * jax.process_count() + jax.process_index()::jax.process_count()]


def make_train_dataset(source, input_config, *, per_process_batch_size: int, seed: int,
                       first_batch: int = 0, num_points: int = 1) -> grain.IterDataset:
  """The infinite training stream of per-process batches (numpy dicts), from global batch
  `first_batch` on."""
  ds = train_batches(source, input_config, per_process_batch_size=per_process_batch_size,
                     seed=seed, first_batch=first_batch, num_points=num_points)
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
                     num_points=transform.num_points, workers_key="eval_num_workers")))
  return _maybe_prefetch(ds, num_workers), num_batches
