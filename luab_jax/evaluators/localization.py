"""Localisation by the point head: how close the predicted point is to the annotators' point.

On one split whose records carry points (`point`/`has_point` or `points`/`has_points`) and/or
boxes (`box_key`: [M, 4] or [4], (x_min, y_min, x_max, y_max) in [0, 1] over the image, -1 for
none; luab_shapes has `object_box`):
  point_l1          mean |dx|, |dy| to the annotators' point (the training loss's units);
  point_distance    mean Euclidean distance to it;
  point_within_R    share of points predicted within R of it, for each R of `radii`;
  point_in_box      share of images with a box whose predicted point lies inside a box
                    (the pointing game); needs a model with one point (config.model.num_points).
All in the coordinates of the evaluation crop (the central `input.eval_crop_fraction` crop;
squashed to the square with `input.eval_keep_aspect=False`, where x and y units differ):
the model predicts points there, and the record's points and boxes are moved into it by
pp/geometry.py (boxes are not clipped, so a box reaching out of the crop is still exact). A
click that falls outside the crop is not counted (the model predicts inside it), as in training.

Example: config.evals.loc = dict(type="localization", dataset="luab_shapes/cpu64",
split="original", box_key="object_box", radii=(0.05, 0.1, 0.2)).
"""

from luab_jax.datasets import core as datasets
from luab_jax.evaluators import common

DEFAULT_RADII = (0.05, 0.1, 0.2)


class Evaluator:

  def __init__(self, fns, *, mesh, data_dir, input_config, dataset: str, split: str,
               batch_size: int = 256, box_key: str | None = None, max_boxes: int = 1,
               radii=DEFAULT_RADII):
    common.check_box_key(fns, box_key)
    source = datasets.get_source(dataset, split, data_dir)
    fields = set(source[0])
    if not fields & {"point", "points"} and box_key is None:
      raise ValueError(f"localization on {dataset}:{split}: the records have neither points "
                       f"nor a box_key (fields: {sorted(fields)}).")
    self._fns = fns
    self._mesh = mesh
    self._radii = tuple(radii)
    self._options = common.stats_options(fns, mesh, radii=self._radii)
    # label_key=None: localisation reads no label, so splits without one work too.
    self.data = common.eval_data(fns, f"{dataset}:{split}", source, input_config,
                                 batch_size=batch_size, label_key=None, box_key=box_key,
                                 max_boxes=max_boxes)

  @property
  def num_examples(self) -> int:
    return self.data.num_examples

  def run(self, params) -> dict[str, float]:
    totals = common.summed_stats(self._fns, params, self._mesh, self.data, self._options)
    return {**common.localization_metrics(totals, self._radii),
            "num_examples": float(totals["count"])}
