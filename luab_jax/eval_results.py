"""Batch-evaluation results of one work directory: one row per (checkpoint, evaluator, metric).

    WORKDIR/eval/
      metrics.jsonl   one JSON object per row (COLUMNS below)
      metrics.csv     the same rows, as CSV with a header
      step_N.json     {"step": N, "<evaluator>/<metric>": value, ...}: all metrics of step N

A (step, evaluator) pair is *done* once it has rows. `put` replaces the rows of one pair as a
whole and rewrites the files through a temporary file and a rename, so an interrupted run
leaves the old or the new file, never half a pair, and a redo never duplicates rows. The files
are small (a few hundred rows per checkpoint), so rewriting them is cheap.

Several evaluators may write one work directory at once (`evaluate --follow` next to a manual
`evaluate --evals ...`), so `put` holds an OS lock on `eval/.lock` (flock; released when the
process ends, however it ends) while it re-reads the rows on disk, replaces its pair in them and
rewrites the files: each writer's pairs survive the others'. A file system without locks gets
a warning and no lock.

Also here, because the tool and the tests share them: the summary table over several work
directories, and which metrics are per-class details kept out of tables and plots.
"""

import csv
import io
import json
import os
import time

from luab_jax import workdir as workdir_lib

COLUMNS = ("workdir", "step", "evaluator", "metric", "value", "eval_seconds", "eval_examples",
           "time")
JSONL = "metrics.jsonl"
CSV = "metrics.csv"
LOCK = ".lock"


def is_per_class(metric: str) -> bool:
  """Per-class details such as multilabel's `class_ap/07`: in the files, not in tables/plots."""
  return metric.rsplit("/", 1)[-1].isdigit()


def _read_rows(path: str) -> list[dict]:
  """The rows of a metrics.jsonl ([] if there is none), each checked to be a result row."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}, line {number}, is not JSON ({e}); fix or delete it.") from e
        if not (isinstance(row, dict) and isinstance(row.get("step"), int)
                and isinstance(row.get("evaluator"), str)
                and isinstance(row.get("metric"), str) and "value" in row):
          raise ValueError(f"{path}, line {number}, is not a result row (an object with an "
                           "integer step, evaluator, metric and value); fix or delete it.")
        rows.append(row)
  return rows


def _with_pair(rows: list[dict], step: int, evaluator: str, new: list[dict]) -> list[dict]:
  """`rows` with the rows of (step, evaluator) replaced by `new`, sorted by step."""
  rows = [row for row in rows if (row["step"], row["evaluator"]) != (step, evaluator)] + new
  rows.sort(key=lambda row: row["step"])  # Stable: metric order within a pair stays.
  return rows


class ResultStore:
  """The rows of `WORKDIR/eval/`; `write=False` keeps them in memory only (non-zero processes)."""

  def __init__(self, workdir: str, *, write: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.dir = os.path.join(self.workdir, "eval")
    self._write = write
    self._rows = _read_rows(os.path.join(self.dir, JSONL))

  def done(self) -> set[tuple[int, str]]:
    return {(row["step"], row["evaluator"]) for row in self._rows}

  def rows(self, *, steps=None, evaluators=None) -> list[dict]:
    return [row for row in self._rows
            if (steps is None or row["step"] in steps)
            and (evaluators is None or row["evaluator"] in evaluators)]

  def put(self, step: int, evaluator: str, metrics: dict[str, float], *, seconds: float,
          examples: int) -> None:
    """Stores (or replaces) the metrics of one (step, evaluator) pair and rewrites the files.

    The rows written (and kept here) are those on disk at this moment with this pair replaced,
    so they include what other evaluators of this work directory wrote since this store read
    them. A store with `write=False` keeps its own rows only.
    """
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    new = [{"workdir": self.workdir, "step": int(step), "evaluator": evaluator,
            "metric": metric, "value": float(value), "eval_seconds": round(float(seconds), 3),
            "eval_examples": int(examples), "time": now} for metric, value in metrics.items()]
    if not self._write:
      self._rows = _with_pair(self._rows, step, evaluator, new)
      return
    os.makedirs(self.dir, exist_ok=True)
    with workdir_lib.file_lock(
        os.path.join(self.dir, LOCK), wait=True,
        unprotected=f"two evaluators writing the results of {self.workdir} at the same moment "
        "may lose one's rows."):
      self._rows = _with_pair(_read_rows(os.path.join(self.dir, JSONL)), step, evaluator, new)
      self._flush(step)

  def _flush(self, step: int) -> None:
    workdir_lib.write_atomically(os.path.join(self.dir, JSONL),
                                 "".join(json.dumps(row) + "\n" for row in self._rows))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(self._rows)
    workdir_lib.write_atomically(os.path.join(self.dir, CSV), text.getvalue())
    merged = {"step": step}
    merged.update({f"{row['evaluator']}/{row['metric']}": row["value"]
                   for row in self._rows if row["step"] == step})
    workdir_lib.write_atomically(os.path.join(self.dir, f"step_{step}.json"),
                                 json.dumps(merged, indent=2) + "\n")


def summary_table(runs: dict[str, list[dict]]) -> str:
  """Markdown table: a row per `evaluator/metric`, a column per `run@step`."""
  columns, keys, values = [], [], {}
  for label, rows in runs.items():
    for row in rows:
      if is_per_class(row["metric"]):
        continue
      column, key = f"{label}@{row['step']}", f"{row['evaluator']}/{row['metric']}"
      if column not in columns:
        columns.append(column)
      if key not in keys:
        keys.append(key)
      values[column, key] = row["value"]
  if not columns:
    return "(no results)"
  lines = ["| metric | " + " | ".join(columns) + " |",
           "|---|" + "---:|" * len(columns)]
  for key in keys:
    # Counts print as counts ("num_examples", "real_num_examples", ...).
    digits = 0 if "num_" in key.rsplit("/", 1)[-1] else 4
    cells = [f"{values[c, key]:.{digits}f}" if (c, key) in values else "" for c in columns]
    lines.append(f"| {key} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
