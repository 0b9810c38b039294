"""Top-1 / top-5 accuracy, cross-entropy and point metrics (where there are clicks) on one split.

Covers the ImageNet family through its options:
  imagenet2012:validation, imagenet_v2:test, imagenet_sketch:test   plain (the defaults);
  imagenet_a:test, imagenet_r:test   label_subset="imagenet_a" / "imagenet_r": the logits are
      restricted to the set's 200 classes before argmax, top-5 and softmax (official protocol);
  imagenet2012_real:validation   label_key="original_label", label_set_key="real_label":
      `real_accuracy` counts the top-1 prediction correct if it is any of the ReaL labels, over
      the examples that have at least one (the others are excluded, as in Beyer et al. 2020);
  any split with boxes   box_key=...: adds `point_in_box` (see localization.py).

Example: config.evals.in_a = dict(type="classification", dataset="imagenet_a", split="test",
label_subset="imagenet_a").
"""

from luab_jax.datasets import core as datasets
from luab_jax.datasets import imagenet_subsets
from luab_jax.evaluators import common


class Evaluator:

  def __init__(self, fns, *, mesh, data_dir, input_config, dataset: str, split: str,
               batch_size: int = 256, label_key: str | None = "label",
               label_set_key: str | None = None, label_subset=None, box_key: str | None = None,
               max_boxes: int = 1, radii=()):
    if label_key is None and label_set_key is None:
      raise ValueError("classification needs label_key, label_set_key or both.")
    common.check_box_key(fns, box_key)
    self._fns = fns
    self._mesh = mesh
    self._radii = tuple(radii)
    subset = None if label_subset is None else imagenet_subsets.label_subset(label_subset)
    # Top-5 only means something with more than 5 classes to choose from.
    self._top_k = (fns.num_classes if subset is None else len(subset)) > common.TOP_K
    self._options = common.stats_options(fns, mesh, label_subset=subset, radii=self._radii)
    source = datasets.get_source(dataset, split, data_dir)
    common.check_classes(fns, dataset, data_dir, where=f"classification on {dataset}:{split}")
    self.data = common.eval_data(
        fns, f"{dataset}:{split}", source, input_config,
        batch_size=batch_size, label_key=label_key, label_set_key=label_set_key,
        box_key=box_key, max_boxes=max_boxes)

  @property
  def num_examples(self) -> int:
    return self.data.num_examples

  def run(self, params) -> dict[str, float]:
    totals = common.summed_stats(self._fns, params, self._mesh, self.data, self._options)
    return {**common.classification_metrics(totals, top_k=self._top_k),
            **common.localization_metrics(totals, self._radii)}
