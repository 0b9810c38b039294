"""Preparing the real datasets: work units, a report of what was repaired or skipped, and
preparation sharded over processes.

A `UnitBuilder` produces its examples from independent work units (one ImageNet class, one chunk
of COCO image ids). TFDS's own `download_and_prepare` runs the units one after the other;
`prepare_sharded` runs them in N processes, each writing its own ArrayRecord shards, and then
writes the same dataset metadata TFDS would, so both paths give a dataset that
`tfds.builder(...).as_data_source(...)` reads the same way.

Bad records never stop preparation: the builder either repairs a record by a documented rule or
skips it, and tells the `PrepareReport`. The report (counts per reason with example file names)
is written next to the prepared files as `prepare_report.json` and printed at the end.
"""

from __future__ import annotations

import collections
from concurrent import futures
import dataclasses
import json
import multiprocessing
import os
from typing import Any, Iterator, Sequence

from absl import logging
from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_builder
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import file_adapters

from luab_jax import parent_watch

REPORT_FILE = "prepare_report.json"
FILE_FORMAT = file_adapters.FileFormat.ARRAY_RECORD
# How many file names to keep per reason: enough to find the files, small for 1.28M images.
EXAMPLES_PER_REASON = 10


@dataclasses.dataclass
class PrepareReport:
  """Counts of skipped and repaired records per (split, reason), with example names."""
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  repaired: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  written: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict = dataclasses.field(default_factory=dict)

  def _note(self, kind: str, split: str, reason: str, name: str) -> None:
    names = self.examples.setdefault(f"{kind}:{split}:{reason}", [])
    if len(names) < EXAMPLES_PER_REASON:
      names.append(name)

  def skip(self, split: str, reason: str, name: str) -> None:
    """Records that `name` was left out of `split` because of `reason`."""
    self.skipped[f"{split}:{reason}"] += 1
    self._note("skipped", split, reason, name)

  def repair(self, split: str, reason: str, name: str) -> None:
    """Records that `name` was kept in `split` after repairing `reason` by a documented rule."""
    self.repaired[f"{split}:{reason}"] += 1
    self._note("repaired", split, reason, name)

  def count_written(self, split: str, n: int = 1) -> None:
    self.written[split] += n

  def merge(self, other: "PrepareReport") -> "PrepareReport":
    self.skipped.update(other.skipped)
    self.repaired.update(other.repaired)
    self.written.update(other.written)
    for key, names in other.examples.items():
      mine = self.examples.setdefault(key, [])
      mine.extend(names[:max(0, EXAMPLES_PER_REASON - len(mine))])
    return self

  def to_json(self) -> dict[str, Any]:
    return {"written": dict(self.written), "skipped": dict(self.skipped),
            "repaired": dict(self.repaired), "examples": self.examples}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> "PrepareReport":
    return cls(skipped=collections.Counter(data["skipped"]),
               repaired=collections.Counter(data["repaired"]),
               written=collections.Counter(data["written"]), examples=dict(data["examples"]))

  def summary(self) -> str:
    lines = [f"written  {split}: {n}" for split, n in sorted(self.written.items())]
    for kind, counter in (("skipped", self.skipped), ("repaired", self.repaired)):
      for key, n in sorted(counter.items()):
        split, reason = key.split(":", 1)
        names = self.examples.get(f"{kind}:{key}", [])
        lines.append(f"{kind:8s} {split}: {n:7d}  {reason}  e.g. {', '.join(names[:3])}")
    return "\n".join(lines)

  def write(self, directory: str) -> str:
    path = os.path.join(directory, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.to_json(), f, indent=2, sort_keys=True)
    return path


def read_report(directory: str) -> PrepareReport | None:
  path = os.path.join(directory, REPORT_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return PrepareReport.from_json(json.load(f))


class UnitBuilder(tfds.core.GeneratorBasedBuilder):
  """A TFDS builder whose examples come from independent, picklable work units.

  Subclasses implement `_work_units(split)` (cheap: list class directories, tar members, id
  chunks) and `_unit_examples(split, unit, report)` (yields (key, example) and reports every
  repair and skip). Keys must be unique within a split.

  For `prepare_sharded`, `_work_units` runs in the parent and `_unit_examples` in workers that
  re-create the builder from its class, config, data_dir and manual_dir: a unit must be
  picklable and carry (or let the worker recompute) everything its examples need.
  """

  def _split_names(self) -> Sequence[str]:
    raise NotImplementedError

  def _work_units(self, split: str) -> Sequence[Any]:
    raise NotImplementedError

  def _unit_examples(self, split: str, unit: Any,
                     report: PrepareReport) -> Iterator[tuple[str, dict]]:
    raise NotImplementedError

  @property
  def prepare_report(self) -> PrepareReport:
    if not hasattr(self, "_prepare_report"):
      self._prepare_report = PrepareReport()
    return self._prepare_report

  @property
  def manual_dir(self) -> str:
    """Where the user put the released files (TFDS's manual directory)."""
    path = getattr(self, "_manual_dir", None)
    if not path:
      raise ValueError(f"Dataset {self.name!r} is prepared from files you download yourself: "
                       "pass --manual_dir (see the README).")
    return os.fspath(path)

  def set_manual_dir(self, path: str) -> None:
    self._manual_dir = os.fspath(path)

  def _split_generators(self, dl_manager):
    # Everything comes from the manual directory; nothing is downloaded.
    if getattr(self, "_manual_dir", None) is None:
      self.set_manual_dir(dl_manager.manual_dir)
    return {split: self._generate_split(split) for split in self._split_names()}

  def _generate_examples(self, split: str):
    # TFDS's abstract generator, defined here so that subclasses need not.
    return self._generate_split(split)

  def _generate_split(self, split: str):
    """TFDS's sequential path: every unit of `split`, one after the other, in this process."""
    report = self.prepare_report
    for unit in self._work_units(split):
      for key, example in self._unit_examples(split, unit, report):
        report.count_written(split)
        yield key, example


# ----------------------------------------------------------------------------------------------
# Sharded preparation: one ArrayRecord shard per work unit, written by a pool of processes.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _BuilderSpec:
  """What a worker process needs to re-create the parent's builder."""
  cls: type
  config: str | tfds.core.BuilderConfig | None
  version: str
  data_dir: str
  manual_dir: str

  @classmethod
  def of(cls, builder: UnitBuilder) -> "_BuilderSpec":
    config = builder.builder_config
    if config is not None and builder.builder_configs.get(config.name) is config:
      # A config of the class goes by name: TFDS refuses a copy named like one of its own.
      config = config.name
    return cls(type(builder), config, str(builder.version), os.fspath(builder.data_dir_root),
               builder.manual_dir)

  def make(self) -> UnitBuilder:
    builder = self.cls(data_dir=self.data_dir, config=self.config, version=self.version,
                       file_format=FILE_FORMAT)
    builder.set_manual_dir(self.manual_dir)
    return builder


@dataclasses.dataclass(frozen=True)
class _Task:
  split: str
  index: int    # Position of the unit in its split: the shard order.
  unit: Any
  path: str     # Where the worker writes the unit's shard.


@dataclasses.dataclass(frozen=True)
class _TaskResult:
  index: int
  path: str
  num_examples: int
  num_bytes: int  # Serialized example bytes, as TFDS counts a split's num_bytes.
  report: dict


_worker_builder: UnitBuilder | None = None


def _init_worker(spec: _BuilderSpec, parent: int) -> None:
  global _worker_builder
  parent_watch.exit_with_parent(parent)  # A killed preparation leaves no worker writing on.
  _worker_builder = spec.make()


def _write_unit(task: _Task) -> _TaskResult:
  """Encodes and serializes one unit's examples as TFDS does, into one ArrayRecord file."""
  builder = _worker_builder
  features = builder.info.features
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  report = PrepareReport()
  counts = {"examples": 0, "bytes": 0}

  def serialized():
    examples = builder._unit_examples(task.split, task.unit, report)  # pylint: disable=protected-access
    for key, example in examples:
      try:
        data = serializer.serialize_example(features.encode_example(example))
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"Failed to encode example {key!r} of {task.unit}") from e
      counts["examples"] += 1
      counts["bytes"] += len(data)
      report.count_written(task.split)
      yield key, data

  file_adapters.ADAPTER_FOR_FORMAT[FILE_FORMAT].write_examples(task.path, serialized())
  if not counts["examples"]:
    os.remove(task.path)  # An empty unit gets no shard.
  return _TaskResult(task.index, task.path, counts["examples"], counts["bytes"], report.to_json())


def _finish_split(builder: UnitBuilder, split: str, results: list[_TaskResult],
                  report: PrepareReport) -> tfds.core.SplitInfo:
  """Renames the non-empty unit files to TFDS's shard names, in unit order; the split's info."""
  results = [r for r in sorted(results, key=lambda r: r.index) if r.num_examples]
  if not results:
    raise ValueError(f"{builder.name}: no example was written for split {split!r}; see the "
                     f"report:\n{report.summary()}")
  template = builder._get_filename_template(split_name=split)  # pylint: disable=protected-access
  for shard_index, result in enumerate(results):
    os.rename(result.path, template.sharded_filepath(shard_index=shard_index,
                                                      num_shards=len(results)))
  return tfds.core.SplitInfo(name=split, shard_lengths=[r.num_examples for r in results],
                             num_bytes=sum(r.num_bytes for r in results),
                             filename_template=template)


def _run_tasks(pool: futures.Executor, tasks: list[_Task], what: str) -> list[_TaskResult]:
  """Results of all tasks, in completion order; the first failure cancels the rest."""
  pending = [pool.submit(_write_unit, task) for task in tasks]
  results = []
  try:
    for done in futures.as_completed(pending):
      results.append(done.result())
      logging.info("%s: unit %d/%d done (%d examples)", what, len(results), len(tasks),
                   results[-1].num_examples)
  except BaseException:
    for future in pending:
      future.cancel()  # Else the pool would finish every queued unit before the error shows.
    raise
  return results


def prepare_sharded(builder: UnitBuilder, num_processes: int) -> PrepareReport:
  """Prepares `builder` as ArrayRecord with its work units spread over `num_processes` processes.

  Each unit becomes one shard (units without examples get none), written by a worker that
  re-creates the builder; shards keep the units' order, so the files hold the same records in
  the same order as TFDS's sequential `download_and_prepare` when the builder disables
  shuffling. The parent then writes the dataset metadata exactly as TFDS does and moves the
  directory into place. Returns the merged report (also written into the dataset directory).
  """
  if num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
  if os.path.exists(builder.data_dir):
    logging.info("Reusing dataset %s (%s)", builder.name, builder.data_dir)
    return read_report(builder.data_dir) or PrepareReport()
  builder.info.set_file_format(FILE_FORMAT, override=True)
  if builder.BUILDER_CONFIGS:
    # What download_and_prepare records for `tfds.builder(name)` without a config.
    dataset_builder._save_default_config_name(  # pylint: disable=protected-access
        common_dir=epath.Path(builder.data_dir).parent.parent,
        default_config_name=builder.get_default_builder_config().name)
  report = builder.prepare_report
  spec = _BuilderSpec.of(builder)
  with tfds.core.utils.incomplete_dir(builder.data_dir) as tmp_dir:
    # As in download_and_prepare: the builder writes into the temporary directory.
    with tfds.core.utils.temporary_assignment(builder, "_data_dir", tmp_dir):
      units_dir = os.path.join(tmp_dir, "units.tmp")
      os.makedirs(units_dir)
      split_infos = []
      # An executor, not multiprocessing.Pool: a worker that dies (or fails to start) raises
      # BrokenProcessPool here instead of being replaced forever.
      with futures.ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context(
          "spawn"), initializer=_init_worker, initargs=(spec, os.getpid())) as pool:
        for split in builder._split_names():  # pylint: disable=protected-access
          units = builder._work_units(split)  # pylint: disable=protected-access
          tasks = [_Task(split, i, unit, os.path.join(units_dir, f"{split}-{i:06d}"))
                   for i, unit in enumerate(units)]
          results = _run_tasks(pool, tasks, f"{builder.name} {split}")
          for result in sorted(results, key=lambda r: r.index):
            report.merge(PrepareReport.from_json(result.report))
          split_infos.append(_finish_split(builder, split, results, report))
      os.rmdir(units_dir)
      builder.info.set_splits(tfds.core.SplitDict(split_infos))
      builder.info.write_to_directory(tmp_dir)
      report.write(tmp_dir)
  builder.info.update_data_dir(builder.data_dir)
  return report
