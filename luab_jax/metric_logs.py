"""Metric writers: clu's console + TensorBoard writer, plus a `metrics.jsonl` for machines.

Only process 0 writes files; other processes log to the console only, so a pod run produces one
TensorBoard log and one JSONL, not one per host.
"""

import json
import os

from absl import logging
import jax
import numpy as np
from clu import metric_writers


class JsonlWriter(metric_writers.MetricWriter):
  """Appends one JSON object per `write_scalars` call: {"step": N, "key": value, ...}.

  Images, histograms and other tensors are not meaningful as JSON lines and are skipped on
  purpose; TensorBoard receives them through the writer this one is combined with.
  """

  def __init__(self, path: str):
    self._path = path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _drop_partial_last_line(path)
    # Line-buffered: a kill -9 must not lose records of steps before the last checkpoint (a
    # resumed run logs again only the steps after it), and `tail -f` shows progress as it comes.
    self._file = open(path, "a", encoding="utf-8", buffering=1)

  def write_scalars(self, step, scalars):
    record = {"step": int(step)}
    record.update({key: _to_python(value) for key, value in scalars.items()})
    self._file.write(json.dumps(record) + "\n")

  def write_hparams(self, hparams):
    self._file.write(json.dumps({"hparams": {k: _to_python(v) for k, v in hparams.items()}}) + "\n")

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def flush(self):
    self._file.flush()

  def close(self):
    if not self._file.closed:
      self._file.close()


def _drop_partial_last_line(path: str) -> None:
  """A job killed mid-write leaves a last line without its newline; it is cut before appending.

  Steps logged after the last checkpoint are logged again by the resumed run (readers keep the
  last record of a step), so nothing is lost by dropping the fragment.
  """
  if not os.path.exists(path) or os.path.getsize(path) == 0:
    return
  with open(path, "rb+") as f:
    data = f.read()
    if not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def _to_python(value):
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()
  return value


def create_writer(workdir: str, *, jsonl_name: str = "metrics.jsonl",
                  tensorboard_subdir: str = "tensorboard") -> metric_writers.MetricWriter:
  """Console + TensorBoard (+ JSONL) on process 0; console only elsewhere."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  default = metric_writers.create_default_writer(
      os.path.join(workdir, tensorboard_subdir), asynchronous=True)
  return metric_writers.MultiWriter([default, JsonlWriter(os.path.join(workdir, jsonl_name))])


def read_jsonl(path: str, *, skip_cut_lines: bool = False) -> list[dict]:
  """Reads a metrics JSONL back. `skip_cut_lines`: a line that is not JSON (cut short by a
  kill mid-write) is logged and left out instead of raising."""
  records = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        if not skip_cut_lines:
          raise
        logging.warning("%s, line %d, is not JSON; ignored.", path, number)
  return records
