"""Top-1 accuracy, cross-entropy and point error (where the split has clicks) on one split."""

from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common


class Evaluator:

  def __init__(self, fns, *, mesh, data_dir, input_config, dataset: str, split: str,
               batch_size: int = 256):
    self._fns = fns
    self._mesh = mesh
    self._input_config = input_config
    self._batch_size = batch_size
    self._source = datasets.get_source(dataset, split, data_dir)

  def run(self, params) -> dict[str, float]:
    totals = common.summed_stats(self._fns, params, self._mesh, self._source,
                                 self._input_config, batch_size=self._batch_size)
    return common.classification_metrics(totals)
