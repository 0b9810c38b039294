"""Background-reliance metrics in the style of the Background Challenge (Xiao et al., 2020).

Per split accuracy on original, mixed_same, mixed_rand, mixed_next, only_fg, no_fg and only_bg;
BG-gap = acc(mixed_same) - acc(mixed_rand), the accuracy lost when the background stops
agreeing with the class; and worst-group accuracy, the lowest accuracy over the groups
(class x background matches class), pooled over original and mixed_rand so that both kinds of
group are well populated.
"""

import numpy as np

from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common

SPLITS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg", "only_bg")
_WORST_GROUP_SPLITS = ("original", "mixed_rand")


class Evaluator:

  def __init__(self, fns, *, mesh, data_dir, input_config, dataset: str,
               splits=SPLITS, batch_size: int = 256):
    missing = {"mixed_same", "mixed_rand"} - set(splits)
    if missing:
      raise ValueError(f"background_challenge needs the splits {sorted(missing)} for BG-gap.")
    self._fns = fns
    self._mesh = mesh
    self._input_config = input_config
    self._batch_size = batch_size
    self._sources = {split: datasets.get_source(dataset, split, data_dir) for split in splits}

  def run(self, params) -> dict[str, float]:
    metrics = {}
    group_count = group_correct = 0
    for split, source in self._sources.items():
      totals = common.summed_stats(self._fns, params, self._mesh, source,
                                   self._input_config, batch_size=self._batch_size,
                                   keep_keys=("bg_label",))
      for key, value in common.classification_metrics(totals).items():
        if key != "num_examples":
          metrics[f"{split}/{key}"] = value
      if split in _WORST_GROUP_SPLITS:
        group_count = group_count + totals["group_count"]
        group_correct = group_correct + totals["group_correct"]
    metrics["bg_gap"] = metrics["mixed_same/accuracy"] - metrics["mixed_rand/accuracy"]
    if np.any(np.asarray(group_count) > 0):
      populated = np.asarray(group_count) > 0
      metrics["worst_group_accuracy"] = float(
          np.min(np.asarray(group_correct)[populated] / np.asarray(group_count)[populated]))
    return metrics
