"""Batch-evaluation results of one work directory: one row per (checkpoint, evaluator, metric).

    WORKDIR/eval/
      metrics.jsonl   one JSON object per row (COLUMNS below)
      metrics.csv     the same rows, as CSV with a header
      step_N.json     {"step": N, "<evaluator>/<metric>": value, ...}: all metrics of step N

A (step, evaluator) pair is *done* once it has rows. `put` replaces the rows of one pair as a
whole and rewrites the files through a temporary file and a rename, so an interrupted run
leaves the old or the new file, never half a pair, and a redo never duplicates rows. The files
are small (a few hundred rows per checkpoint), so rewriting them is cheap.

Also here, because the tool and the tests share them: the summary table over several work
directories, and which metrics are per-class details kept out of tables and plots.
"""

import csv
import io
import json
import os
import time

COLUMNS = ("workdir", "step", "evaluator", "metric", "value", "eval_seconds", "eval_examples",
           "time")
JSONL = "metrics.jsonl"
CSV = "metrics.csv"


def is_per_class(metric: str) -> bool:
  """Per-class details such as multilabel's `class_ap/07`: in the files, not in tables/plots."""
  return metric.rsplit("/", 1)[-1].isdigit()


def _replace_file(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  os.replace(tmp, path)


class ResultStore:
  """The rows of `WORKDIR/eval/`; `write=False` keeps them in memory only (non-zero processes)."""

  def __init__(self, workdir: str, *, write: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.dir = os.path.join(self.workdir, "eval")
    self._write = write
    self._rows = []
    path = os.path.join(self.dir, JSONL)
    if os.path.exists(path):
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
            self._rows.append(row)

  def done(self) -> set[tuple[int, str]]:
    return {(row["step"], row["evaluator"]) for row in self._rows}

  def rows(self, *, steps=None, evaluators=None) -> list[dict]:
    return [row for row in self._rows
            if (steps is None or row["step"] in steps)
            and (evaluators is None or row["evaluator"] in evaluators)]

  def put(self, step: int, evaluator: str, metrics: dict[str, float], *, seconds: float,
          examples: int) -> None:
    """Stores (or replaces) the metrics of one (step, evaluator) pair and rewrites the files."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    self._rows = [row for row in self._rows
                  if (row["step"], row["evaluator"]) != (step, evaluator)]
    self._rows.extend({"workdir": self.workdir, "step": int(step), "evaluator": evaluator,
                       "metric": metric, "value": float(value),
                       "eval_seconds": round(float(seconds), 3), "eval_examples": int(examples),
                       "time": now} for metric, value in metrics.items())
    self._rows.sort(key=lambda row: row["step"])  # Stable: metric order within a pair stays.
    if self._write:
      self._flush(step)

  def _flush(self, step: int) -> None:
    os.makedirs(self.dir, exist_ok=True)
    _replace_file(os.path.join(self.dir, JSONL),
                  "".join(json.dumps(row) + "\n" for row in self._rows))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(self._rows)
    _replace_file(os.path.join(self.dir, CSV), text.getvalue())
    merged = {"step": step}
    merged.update({f"{row['evaluator']}/{row['metric']}": row["value"]
                   for row in self._rows if row["step"] == step})
    _replace_file(os.path.join(self.dir, f"step_{step}.json"), json.dumps(merged, indent=2) + "\n")


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
    digits = 0 if key.rsplit("/", 1)[-1].startswith("num_") else 4  # Counts print as counts.
    cells = [f"{values[c, key]:.{digits}f}" if (c, key) in values else "" for c in columns]
    lines.append(f"| {key} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
