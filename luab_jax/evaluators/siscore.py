"""SI-Score (Yung et al., 2021): accuracy when only the object's rotation, size or location varies.

TFDS `siscore/{rotation,size,location}` (split "test", ImageNet labels): one classification
pass per group, reported as `{group}/accuracy` (+ top-5, loss) and `mean_accuracy`, the mean
over the groups evaluated.

Example: config.evals.siscore = dict(type="siscore", groups=("rotation", "size", "location")).
"""

import numpy as np

from luab_jax.evaluators import classification

GROUPS = ("rotation", "size", "location")


class Evaluator:

  def __init__(self, fns, *, mesh, data_dir, input_config, dataset: str = "siscore",
               split: str = "test", groups=GROUPS, batch_size: int = 256):
    unknown = set(groups) - set(GROUPS)
    if unknown or not groups:
      raise ValueError(f"siscore groups={tuple(groups)}; choose among {GROUPS}.")
    self._groups = {
        group: classification.Evaluator(fns, mesh=mesh, data_dir=data_dir,
                                        input_config=input_config, dataset=f"{dataset}/{group}",
                                        split=split, batch_size=batch_size)
        for group in groups}

  @property
  def num_examples(self) -> int:
    return sum(evaluator.num_examples for evaluator in self._groups.values())

  def run(self, params) -> dict[str, float]:
    metrics = {}
    for group, evaluator in self._groups.items():
      metrics.update({f"{group}/{key}": value for key, value in evaluator.run(params).items()
                      if not key.startswith("num_")})
    metrics["mean_accuracy"] = float(np.mean([metrics[f"{group}/accuracy"]
                                              for group in self._groups]))
    return metrics
