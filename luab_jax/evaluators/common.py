"""Shared evaluation machinery: one jitted statistics function, padded streaming over a split.

Statistics are summed on the devices batch by batch (correct predictions, losses, point
distances, per-group counts), so nothing per-example is ever kept on the host: memory does not
grow with the size of the evaluation set, and every process only moves a few scalars.

One `stats` function serves every evaluator. What differs between evaluation sets is passed as
*arrays*, not Python constants, so it never causes a recompilation:
  logit_mask [C] bool   classes the prediction may choose (ImageNet-A/R: their 200 classes);
  class_map  [C] int32  model class -> evaluation class, -1 for none (ImageNet -> ImageNet-9);
  radii      [R] f32    radii (crop units) of the "predicted point within r" shares.
The function is compiled once per batch layout (batch size, image size, which fields the
batch carries) and reused for every checkpoint and every split of that layout.
"""

import dataclasses
import importlib
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from luab_jax import input_pipeline
from luab_jax import sharding as sharding_lib
from luab_jax.datasets import core as datasets
from luab_jax.pp import transforms

TOP_K = 5


@dataclasses.dataclass(frozen=True)
class ModelFns:
  """What evaluators call: jitted functions of (params, batch), compiled on first use.

  `stats(params, batch, options)` sums statistics on the devices (see the module docstring);
  `predict(params, batch)` returns the (replicated) float32 logits and points of a batch for
  metrics that need every score, such as mAP.
  """
  stats: Callable
  predict: Callable
  num_points: int
  num_classes: int


def make_model_fns(apply_fn, mesh, param_shardings, *, num_points: int,
                   num_classes: int) -> ModelFns:
  return ModelFns(stats=make_stats_fn(apply_fn, mesh, param_shardings),
                  predict=make_predict_fn(apply_fn, mesh, param_shardings),
                  num_points=num_points, num_classes=num_classes)


def make_predict_fn(apply_fn, mesh, param_shardings):
  """Jitted (params, batch) -> {"logits", "points", "batch"}, replicated on every device.

  `batch` echoes the batch's fields other than the image (labels, targets, `_mask`), so that
  every process can read the whole global batch on the host, on one host or many.
  """

  def predict(params, batch):
    out = apply_fn(params, batch["image"])
    return {"logits": out["logits"].astype(jnp.float32),
            "points": out["points"].astype(jnp.float32),
            "batch": {key: value for key, value in batch.items() if key != "image"}}

  return jax.jit(predict, in_shardings=(param_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def _label_stats(logits, label, mask, class_map):
  """Top-1 / top-k correct and cross-entropy of single labels in the evaluation class space."""
  pred = class_map[jnp.argmax(logits, -1)]
  correct = (pred == label).astype(jnp.float32) * mask
  _, top = jax.lax.top_k(logits, min(TOP_K, logits.shape[-1]))
  top_correct = jnp.any(class_map[top] == label[:, None], -1).astype(jnp.float32) * mask
  # -log of the probability the (masked) softmax puts on the model classes that map to the
  # label: the usual cross-entropy for an identity map, the merged-class one for ImageNet-9.
  on_label = class_map[None, :] == label[:, None]
  xent = (jax.nn.logsumexp(logits, -1)
          - jax.nn.logsumexp(jnp.where(on_label, logits, -jnp.inf), -1))
  # Padding rows may carry a label outside the subset (xent = inf): drop them, not multiply.
  xent = jnp.where(mask > 0, xent, 0.0)
  return correct, top_correct, xent


def _point_stats(points, batch, mask, radii):
  """Sums of L1 error, Euclidean distance and within-radius hits over the usable points."""
  weight = batch["point_weight"] * mask[:, None]
  diff = points - batch["points"]
  distance = jnp.sqrt(jnp.sum(diff * diff, -1))
  within = (distance[..., None] <= radii).astype(jnp.float32) * weight[..., None]
  return {
      "point_count": weight.sum(),
      "point_abs_err": (jnp.abs(diff).mean(-1) * weight).sum(),
      "point_distance": (distance * weight).sum(),
      "point_within": within.sum((0, 1)),
  }


def _box_stats(points, batch, mask):
  """Examples with a ground-truth box, and those whose (single) predicted point is in one."""
  x, y = points[:, 0, 0][:, None], points[:, 0, 1][:, None]
  boxes, weight = batch["boxes"], batch["box_weight"]
  inside = ((x >= boxes[..., 0]) & (x <= boxes[..., 2]) & (y >= boxes[..., 1])
            & (y <= boxes[..., 3]) & (weight > 0))
  has_box = jnp.any(weight > 0, -1).astype(jnp.float32) * mask
  return {"box_count": has_box.sum(),
          "box_hit": (jnp.any(inside, -1).astype(jnp.float32) * has_box).sum()}


def make_stats_fn(apply_fn, mesh, param_shardings):
  """Jitted (params, batch, options) -> sums over the batch's real (`_mask`) examples.

  Which statistics come out depends on the batch's fields: `label` (accuracy, top-k, loss),
  `label_set` (ReaL-style accuracy), `boxes` (point in box), `bg_label` (per-group counts over
  (class, background matches class)); points are always there.
  """

  def stats(params, batch, options):
    out = apply_fn(params, batch["image"])
    logits = jnp.where(options["logit_mask"], out["logits"].astype(jnp.float32), -jnp.inf)
    points = out["points"].astype(jnp.float32)
    class_map = options["class_map"]
    mask = batch["_mask"].astype(jnp.float32)
    result = {"count": mask.sum()}
    if "label" in batch:
      label = batch["label"]
      correct, top_correct, xent = _label_stats(logits, label, mask, class_map)
      result.update(correct=correct.sum(), top_correct=top_correct.sum(), loss=xent.sum())
      if "bg_label" in batch:
        num_groups = 2 * logits.shape[-1]
        group = label * 2 + (batch["bg_label"] == label).astype(label.dtype)
        result["group_count"] = jnp.zeros(num_groups).at[group].add(mask)
        result["group_correct"] = jnp.zeros(num_groups).at[group].add(correct)
    if "label_set" in batch:
      # ReaL protocol: an example without any acceptable label does not count.
      pred = class_map[jnp.argmax(logits, -1)]
      counted = (batch["label_set"].max(-1) > 0).astype(jnp.float32) * mask
      hit = jnp.take_along_axis(batch["label_set"], jnp.maximum(pred, 0)[:, None], -1)[:, 0]
      result["set_count"] = counted.sum()
      result["set_correct"] = (jnp.where(pred >= 0, hit, 0.0) * counted).sum()
    result.update(_point_stats(points, batch, mask, options["radii"]))
    if "boxes" in batch:
      result.update(_box_stats(points, batch, mask))
    return result

  replicated = sharding_lib.replicated(mesh)
  return jax.jit(stats, in_shardings=(param_shardings, sharding_lib.batch_sharding(mesh),
                                      replicated),
                 out_shardings=replicated)


def stats_options(fns: ModelFns, mesh, *, label_subset=None, class_map=None, radii=()):
  """The array options of `fns.stats`, placed on the mesh once (see the module docstring).

  `label_subset`: class indices the prediction may choose; `class_map`: int [num_classes],
  model class -> evaluation class or -1.
  """
  logit_mask = np.ones(fns.num_classes, bool)
  if label_subset is not None:
    subset = np.asarray(label_subset)
    if subset.min() < 0 or subset.max() >= fns.num_classes:
      raise ValueError(f"label_subset has class indices outside the model's {fns.num_classes} "
                       f"classes (min {subset.min()}, max {subset.max()}).")
    logit_mask[:] = False
    logit_mask[subset] = True
  if class_map is None:
    class_map = np.arange(fns.num_classes, dtype=np.int32)
  class_map = np.asarray(class_map, np.int32)
  if class_map.shape != (fns.num_classes,):
    raise ValueError(f"class_map has shape {class_map.shape}; the model has "
                     f"{fns.num_classes} classes.")
  radii = np.asarray(radii, np.float32).reshape(-1)
  return jax.device_put({"logit_mask": logit_mask, "class_map": class_map, "radii": radii},
                        sharding_lib.replicated(mesh))


@dataclasses.dataclass(frozen=True)
class EvalData:
  """One evaluation split and how its records become batches."""
  name: str  # For messages: "dataset:split" or a folder.
  source: Any  # Random access: len(source), source[i] -> record.
  transform: transforms.EvalTransform
  input_config: Any  # Reading options (threads, buffers, eval workers).
  batch_size: int  # Global.

  @property
  def num_examples(self) -> int:
    return len(self.source)


def eval_data(fns: ModelFns, name: str, source, input_config, *, batch_size: int,
              keep_keys=(), label_key="label", label_set_key=None, box_key=None,
              max_boxes: int = 1) -> EvalData:
  """EvalData with the run's evaluation crop (`input.image_size`, `input.eval_crop_fraction`,
  `input.eval_keep_aspect`: missing in configs written before it, where it was True)."""
  if not 0 < input_config.eval_crop_fraction <= 1:
    raise ValueError(f"config.input.eval_crop_fraction={input_config.eval_crop_fraction}: the "
                     "central crop's share of the shorter side (of each side with "
                     "eval_keep_aspect=False), in (0, 1].")
  transform = transforms.EvalTransform(
      image_size=input_config.image_size, crop_fraction=input_config.eval_crop_fraction,
      keep_aspect=input_config.get("eval_keep_aspect", transforms.EvalTransform.keep_aspect),
      resize_method=input_config.get("eval_resize_method",
                                     transforms.EvalTransform.resize_method),
      keep_keys=tuple(keep_keys), num_points=fns.num_points, num_classes=fns.num_classes,
      label_key=label_key, label_set_key=label_set_key, box_key=box_key, max_boxes=max_boxes)
  return EvalData(name, source, transform, input_config, batch_size)


def global_batches(mesh, data: EvalData):
  """Yields every example of `data` once, as padded global batches on `mesh`."""
  per_process = sharding_lib.check_batch_size(data.batch_size, mesh,
                                              key=f"evaluation batch_size of {data.name}")
  dataset, num_batches = input_pipeline.make_eval_dataset(
      data.source, data.transform, data.input_config, per_process_batch_size=per_process)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  iterator = iter(dataset)
  for _ in range(num_batches):
    yield sharding_lib.to_global(next(iterator), batch_sharding)


def summed_stats(fns: ModelFns, params, mesh, data: EvalData, options) -> dict[str, np.ndarray]:
  """Runs `fns.stats` over every example of `data` once; returns the summed statistics."""
  totals = None
  for batch in global_batches(mesh, data):
    stats = fns.stats(params, batch, options)
    totals = stats if totals is None else jax.tree.map(jnp.add, totals, stats)
  return jax.tree.map(np.asarray, jax.device_get(totals))


def classification_metrics(totals, *, top_k: bool = False) -> dict[str, float]:
  """accuracy, loss, num_examples (+ top5_accuracy; + real_accuracy where a label_set was read)."""
  metrics = {}
  if "correct" in totals:
    count = max(float(totals["count"]), 1.0)
    metrics["accuracy"] = float(totals["correct"]) / count
    if top_k:
      metrics[f"top{TOP_K}_accuracy"] = float(totals["top_correct"]) / count
    metrics["loss"] = float(totals["loss"]) / count
  if "set_count" in totals:
    metrics["real_accuracy"] = float(totals["set_correct"]) / max(float(totals["set_count"]), 1.0)
    metrics["real_num_examples"] = float(totals["set_count"])
  metrics["num_examples"] = float(totals["count"])
  return metrics


def radius_name(radius: float) -> str:
  return f"point_within_{float(radius):g}"


def localization_metrics(totals, radii=()) -> dict[str, float]:
  """Point error metrics (crop units) where the split has usable points; box hits where boxes.

  point_l1: mean |dx|,|dy|; point_distance: mean Euclidean distance to the annotators' point;
  point_within_R: share of points predicted within R of it; point_in_box: share of examples
  with a ground-truth box whose predicted point lies in one of the boxes.
  """
  metrics = {}
  num_points = float(totals["point_count"])
  if num_points > 0:
    metrics["point_l1"] = float(totals["point_abs_err"]) / num_points
    metrics["point_distance"] = float(totals["point_distance"]) / num_points
    for radius, hits in zip(radii, np.asarray(totals["point_within"]).reshape(-1)):
      metrics[radius_name(radius)] = float(hits) / num_points
    metrics["num_points"] = num_points
  if "box_count" in totals and float(totals["box_count"]) > 0:
    metrics["point_in_box"] = float(totals["box_hit"]) / float(totals["box_count"])
    metrics["num_boxed"] = float(totals["box_count"])
  return metrics


def check_box_key(fns: ModelFns, box_key) -> None:
  if box_key is not None and fns.num_points != 1:
    raise ValueError(f"box_key={box_key!r} compares one predicted point per image with the "
                     f"boxes; this model predicts {fns.num_points} points (config.model.num_points).")


def check_classes(fns: ModelFns, dataset: str, data_dir, *, where: str,
                  evaluated: int | None = None, how: str = "config.num_classes") -> None:
  """Refuses a dataset whose labels have another number of classes than the predictions are
  scored in: `fns.num_classes`, or `evaluated` after a class map (`how` says which). Labels
  past the model's classes would give an infinite loss and a meaningless accuracy without an
  error. Datasets without class labels pass."""
  found = datasets.num_classes(dataset, data_dir)
  evaluated = fns.num_classes if evaluated is None else evaluated
  if found is not None and found != evaluated:
    raise ValueError(f"{where}: dataset {dataset!r} has {found} classes, but the predictions "
                     f"have {evaluated} ({how}); its labels must index the model's classes.")


# Keys of a `config.evals.NAME` entry that are not the evaluator's own arguments.
_SCHEDULE_KEYS = ("type", "every_steps")
# Arguments every Evaluator takes from the job, never from its config entry.
_JOB_ARGS = ("self", "fns", "mesh", "data_dir", "input_config")


def _evaluator_module(name: str, kind):
  if kind is None:
    raise ValueError(f"config.evals.{name} has no `type`.")
  try:
    return importlib.import_module(f"luab_jax.evaluators.{kind}")
  except ModuleNotFoundError as e:
    raise ValueError(f"config.evals.{name}.type={kind!r} is not an evaluator module of "
                     "luab_jax.evaluators.") from e


def check_config_keys(evals_config) -> None:
  """Rejects keys of `config.evals.*` that their Evaluator does not take, naming them.

  Runs at config validation, before any data is read or anything compiled: the keys of an
  evaluator entry are its constructor's keyword arguments plus `type` and `every_steps`.
  """
  unknown = []
  for name, cfg in evals_config.items():
    module = _evaluator_module(name, cfg.get("type"))
    params = inspect.signature(module.Evaluator.__init__).parameters
    known = {p for p in params if p not in _JOB_ARGS} | set(_SCHEDULE_KEYS)
    unknown += [f"config.evals.{name}.{key} (type {cfg['type']!r} takes {sorted(known)})"
                for key in cfg.keys() if key not in known]
    every = cfg.get("every_steps")
    if every is not None and (not isinstance(every, int) or every <= 0):
      raise ValueError(f"config.evals.{name}.every_steps={every!r}: a positive number of steps, "
                       "or None for the end of training only.")
  if unknown:
    raise ValueError(f"Unknown evaluator config keys: {'; '.join(unknown)}.")


def from_config(evals_config, *, fns: ModelFns, mesh, data_dir, input_config):
  """{name: Evaluator} from `config.evals`; evaluator modules are found by their `type`."""
  evaluators = {}
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    module = _evaluator_module(name, cfg.pop("type", None))
    cfg.pop("every_steps", None)  # Scheduling belongs to the trainer.
    if "batch_size" in cfg:  # At start, not when the evaluator first runs after training.
      sharding_lib.check_batch_size(cfg["batch_size"], mesh, key=f"config.evals.{name}.batch_size")
    try:
      evaluators[name] = module.Evaluator(fns, mesh=mesh, data_dir=data_dir,
                                          input_config=input_config, **cfg)
    except TypeError as e:
      raise ValueError(f"config.evals.{name}: {e}") from e
  return evaluators
