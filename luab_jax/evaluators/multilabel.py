"""Multi-label classification (COCO): mean average precision over classes, and point error.

AP of a class is the mean, over its positive examples, of the precision among all examples
scored at least as high (non-interpolated AP, as in scikit-learn's average_precision_score and
the multi-label COCO literature); mAP averages it over the classes with at least one positive.
Scores are the logits (any increasing function ranks alike). precision@1 is over the examples
with at least one label: an image without any (the COCO validation split keeps every image of
its annotation file, labelled or not) cannot have a correct top class;
`num_examples_without_labels` counts them.
Exact AP needs every score, so the [N, C] float32 scores of the split are kept on the host:
13 MB for COCO val2014 (40,504 x 80), and the only per-example state any evaluator keeps.
"""

import jax
import numpy as np

from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """Non-interpolated AP of one class; NaN when the class has no positive example."""
  positives = np.asarray(positives, bool)
  num_positives = int(positives.sum())
  if num_positives == 0:
    return float("nan")
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  hits = positives[order]
  # Ties share the precision of the end of their run (what a threshold at that score gives).
  sorted_scores = np.asarray(scores, np.float64)[order]
  run_end = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(sorted_scores) - 1]
  run_end_of = np.repeat(run_end, np.diff(np.r_[-1, run_end]))
  cumulative_hits = np.cumsum(hits)
  precision = cumulative_hits[run_end_of] / (run_end_of + 1)
  return float(precision[hits].sum() / num_positives)


def multilabel_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """mAP, per-class AP (`class_ap/NN`), and the share of labelled examples whose top class is
  positive (module docstring)."""
  labels = np.asarray(labels) > 0
  per_class = np.array([average_precision(scores[:, c], labels[:, c])
                        for c in range(labels.shape[1])])
  labelled = labels.any(-1)
  top_is_positive = labels[np.arange(len(labels)), np.argmax(scores, -1)]
  metrics = {"map": float(np.nanmean(per_class)) if np.any(~np.isnan(per_class)) else 0.0,
             "precision_at_1": (float(np.mean(top_is_positive[labelled])) if labelled.any()
                                else 0.0),
             "num_examples": float(len(labels)),
             "num_examples_without_labels": float(np.sum(~labelled)),
             "num_classes_with_positives": float(np.sum(~np.isnan(per_class)))}
  width = len(str(labels.shape[1] - 1))
  metrics.update({f"class_ap/{c:0{width}d}": float(ap) for c, ap in enumerate(per_class)
                  if not np.isnan(ap)})
  return metrics


class Evaluator:
  """mAP on one split of a multi-label dataset whose records carry `labels` (multi-hot)."""

  def __init__(self, fns, *, mesh, data_dir, input_config, dataset: str, split: str,
               batch_size: int = 256):
    self._fns = fns
    self._mesh = mesh
    source = datasets.get_source(dataset, split, data_dir)
    if "labels" not in source[0]:
      raise ValueError(f"{dataset}:{split} has single-label records; the multilabel evaluator "
                       "needs multi-hot `labels` (use type='classification').")
    common.check_classes(fns, dataset, data_dir, where=f"multilabel on {dataset}:{split}")
    self.data = common.eval_data(fns, f"{dataset}:{split}", source, input_config,
                                 batch_size=batch_size)

  @property
  def num_examples(self) -> int:
    return self.data.num_examples

  def run(self, params) -> dict[str, float]:
    scores, labels = [], []
    point_err = point_count = 0.0
    for batch in common.global_batches(self._mesh, self.data):
      out = jax.device_get(self._fns.predict(params, batch))
      mask = out["batch"]["_mask"].astype(bool)
      weights = out["batch"]["point_weight"] * mask[:, None]
      # Ranked on the logits: AP needs only the order, and float32 sigmoids of logits from
      # 16.64 up are all 1.0, which would tie confident examples. (A bfloat16 head's logits
      # carry 8 bits and tie far earlier: configs/vit_s16_coco_ab.py.)
      scores.append(out["logits"][mask].astype(np.float32))
      labels.append(out["batch"]["labels"][mask])
      point_err += float((np.abs(out["points"] - out["batch"]["points"]).mean(-1)
                          * weights).sum())
      point_count += float(weights.sum())
    metrics = multilabel_metrics(np.concatenate(scores), np.concatenate(labels))
    if point_count > 0:
      metrics["point_l1"] = point_err / point_count
    return metrics
