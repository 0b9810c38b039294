"""ImageNet-C (Hendrycks & Dietterich, 2019): accuracy under common corruptions, averaged.

TFDS `imagenet2012_corrupted/{corruption}_{severity}` (split "validation"): one classification
pass per (corruption, severity) of the config, reported as `{corruption}_{severity}/accuracy`,
`{corruption}/accuracy` (mean over the severities) and `mean_accuracy` (mean over the
corruptions). mCE is not computed: it normalises by AlexNet's errors, which this project does
not ship.

Example: config.evals.in_c = dict(type="imagenet_corrupted",
corruptions=("gaussian_noise", "motion_blur", "fog"), severities=(1, 3, 5)).
"""

import numpy as np

from luab_jax.evaluators import classification


class Evaluator:

  def __init__(self, fns, *, mesh, data_dir, input_config, corruptions,
               severities=(1, 2, 3, 4, 5), dataset: str = "imagenet2012_corrupted",
               split: str = "validation", batch_size: int = 256):
    if isinstance(corruptions, str) or not corruptions:
      raise ValueError(f"imagenet_corrupted corruptions={corruptions!r}: give a non-empty "
                       "list of corruption names, e.g. ('gaussian_noise', 'fog').")
    bad = [s for s in severities if s not in (1, 2, 3, 4, 5)]
    if bad or not severities:
      raise ValueError(f"imagenet_corrupted severities={tuple(severities)}: use values in 1..5.")
    self._corruptions = tuple(corruptions)
    self._severities = tuple(severities)
    self._configs = {
        (c, s): classification.Evaluator(fns, mesh=mesh, data_dir=data_dir,
                                         input_config=input_config, dataset=f"{dataset}/{c}_{s}",
                                         split=split, batch_size=batch_size)
        for c in self._corruptions for s in self._severities}

  @property
  def num_examples(self) -> int:
    return sum(evaluator.num_examples for evaluator in self._configs.values())

  def run(self, params) -> dict[str, float]:
    metrics = {}
    for (corruption, severity), evaluator in self._configs.items():
      metrics.update({f"{corruption}_{severity}/{key}": value
                      for key, value in evaluator.run(params).items()
                      if not key.startswith("num_")})
    for corruption in self._corruptions:
      metrics[f"{corruption}/accuracy"] = float(np.mean(
          [metrics[f"{corruption}_{s}/accuracy"] for s in self._severities]))
    metrics["mean_accuracy"] = float(np.mean(
        [metrics[f"{c}/accuracy"] for c in self._corruptions]))
    return metrics
