"""Background-reliance metrics in the style of the Background Challenge (Xiao et al., 2020).

Per split accuracy (original, mixed_same, mixed_rand, mixed_next, only_fg, no_fg, only_bg, ...);
BG-gap = acc(mixed_same) - acc(mixed_rand), the accuracy lost when the background stops
agreeing with the class; and, where records carry `bg_label` (luab_shapes), worst-group
accuracy, the lowest accuracy over the groups (class x background matches class), pooled over
original and mixed_rand so that both kinds of group are well populated.

Two kinds of data:
- `dataset=`: a TFDS dataset whose splits are the variants (the embedded luab_shapes);
- `folder=`: the official release's layout `FOLDER/<variant>/val/<class>/<image>` (variants
  original, mixed_same, mixed_rand, mixed_next, only_fg, no_fg, only_bg_b, only_bg_t; classes
  00_dog ... 08_fish). A model with 1000 ImageNet outputs is scored through the official
  ImageNet -> ImageNet-9 mapping with `class_map="imagenet_to_in9"` (see
  datasets/imagenet_subsets.py): the argmax over the 1000 classes is mapped to its IN-9 class,
  and a class outside the nine counts as wrong.
`box_key`/`radii` add the localisation metrics (localization.py) per split.
"""

import os

import numpy as np

from luab_jax.datasets import core as datasets
from luab_jax.datasets import image_folder
from luab_jax.datasets import imagenet_subsets
from luab_jax.evaluators import common

SPLITS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg", "only_bg")
_WORST_GROUP_SPLITS = ("original", "mixed_rand")


def _folder_sources(folder: str, splits):
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"background_challenge folder={folder!r} does not exist.")
  if splits is None:
    splits = sorted(name for name in os.listdir(folder)
                    if os.path.isdir(os.path.join(folder, name, "val")))
  sources = {split: image_folder.ImageFolderSource(os.path.join(folder, split, "val"))
             for split in splits}
  names = {split: source.class_names for split, source in sources.items()}
  if len(set(names.values())) > 1:
    raise ValueError(f"background_challenge folder={folder!r}: the variants have different "
                     f"class folders: {names}.")
  return sources


class Evaluator:

  def __init__(self, fns, *, mesh, data_dir, input_config, dataset: str | None = None,
               folder: str | None = None, splits=None, class_map: str | None = None,
               batch_size: int = 256, box_key: str | None = None, max_boxes: int = 1,
               radii=()):
    if (dataset is None) == (folder is None):
      raise ValueError("background_challenge needs exactly one of dataset= (TFDS splits) and "
                       "folder= (<variant>/val/<class>/*).")
    common.check_box_key(fns, box_key)
    if folder is not None:
      sources = _folder_sources(folder, splits)
      keep_keys = ()
    else:
      splits = SPLITS if splits is None else splits
      sources = {split: datasets.get_source(dataset, split, data_dir) for split in splits}
      # Groups need the background's class; datasets without it get no worst-group accuracy.
      keep_keys = ("bg_label",) if "bg_label" in datasets.builder(
          dataset, data_dir).info.features else ()
    missing = {"mixed_same", "mixed_rand"} - set(sources)
    if missing:
      raise ValueError(f"background_challenge needs the splits {sorted(missing)} for BG-gap; "
                       f"it has {sorted(sources)}.")
    if class_map is not None and class_map not in imagenet_subsets.CLASS_MAPS:
      raise ValueError(f"background_challenge class_map={class_map!r}; use one of "
                       f"{sorted(imagenet_subsets.CLASS_MAPS)} or None.")
    table = None if class_map is None else imagenet_subsets.CLASS_MAPS[class_map]()
    if table is not None and len(table) != fns.num_classes:
      raise ValueError(f"class_map={class_map!r} maps {len(table)} classes; the model has "
                       f"{fns.num_classes} (config.num_classes).")
    if dataset is not None:
      common.check_classes(
          fns, dataset, data_dir, where="background_challenge",
          evaluated=None if table is None else int(table.max()) + 1,
          how="config.num_classes" if table is None else f"class_map={class_map!r}")
    if folder is not None:
      # Folder labels are positions of the class folders: they must be the evaluation classes.
      num_folders = len(next(iter(sources.values())).class_names)
      num_eval = fns.num_classes if table is None else int(table.max()) + 1
      if num_folders != num_eval:
        raise ValueError(f"background_challenge folder={folder!r} has {num_folders} class "
                         f"folders, but the predictions have {num_eval} classes (model "
                         f"{fns.num_classes}, class_map={class_map!r}).")
    self._fns = fns
    self._mesh = mesh
    self._radii = tuple(radii)
    self._options = common.stats_options(fns, mesh, class_map=table, radii=self._radii)
    where = folder if folder is not None else dataset
    self.data = {split: common.eval_data(fns, f"{where}:{split}", source, input_config,
                                         batch_size=batch_size, keep_keys=keep_keys,
                                         box_key=box_key, max_boxes=max_boxes)
                 for split, source in sources.items()}

  @property
  def num_examples(self) -> int:
    return sum(data.num_examples for data in self.data.values())

  def run(self, params) -> dict[str, float]:
    metrics = {}
    group_count = group_correct = 0
    for split, data in self.data.items():
      totals = common.summed_stats(self._fns, params, self._mesh, data, self._options)
      split_metrics = {**common.classification_metrics(totals),
                       **common.localization_metrics(totals, self._radii)}
      for key, value in split_metrics.items():
        if not key.startswith("num_"):
          metrics[f"{split}/{key}"] = value
      if split in _WORST_GROUP_SPLITS and "group_count" in totals:
        group_count = group_count + totals["group_count"]
        group_correct = group_correct + totals["group_correct"]
    metrics["bg_gap"] = metrics["mixed_same/accuracy"] - metrics["mixed_rand/accuracy"]
    if np.any(np.asarray(group_count) > 0):
      populated = np.asarray(group_count) > 0
      metrics["worst_group_accuracy"] = float(
          np.min(np.asarray(group_correct)[populated] / np.asarray(group_count)[populated]))
    return metrics
