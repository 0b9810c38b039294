"""PNG plots of batch-evaluation metrics against the training step (matplotlib, Agg backend).

One figure per metric name (the last part of `evaluator/.../metric`, e.g. `accuracy`,
`bg_gap`, `point_distance`), written as `{metric}.png`. In it, one line per dataset or
evaluator (the rest of the name: `bgc/mixed_rand`, `imagenet_v2`, ...) and per run: the colour
is the dataset, the line style and marker the run, so a baseline and a LUAB run overlay.
Per-class details (`class_ap/NN`) and counts (`num_*`) are not plotted; they are in the CSV.
"""

import os
import re

import matplotlib

matplotlib.use("Agg")  # Files only: no display on training machines.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from luab_jax import eval_results  # pylint: disable=g-import-not-at-top,wrong-import-position

_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def _split_name(evaluator: str, metric: str) -> tuple[str, str]:
  """("bgc", "mixed_rand/accuracy") -> ("accuracy", "bgc/mixed_rand")."""
  parts = metric.split("/")
  return parts[-1], "/".join([evaluator] + parts[:-1])


def plot_metrics(runs: dict[str, list[dict]], out_dir: str) -> list[str]:
  """Writes one PNG per metric name from the rows of each run; returns the paths."""
  series = {}  # metric name -> {(dataset, run): {step: value}}
  for label, rows in runs.items():
    for row in rows:
      name, dataset = _split_name(row["evaluator"], row["metric"])
      if eval_results.is_per_class(row["metric"]) or name.startswith("num_"):
        continue
      series.setdefault(name, {}).setdefault((dataset, label), {})[row["step"]] = row["value"]
  os.makedirs(out_dir, exist_ok=True)
  run_labels = list(runs)
  paths = []
  for name, lines in sorted(series.items()):
    datasets = sorted({dataset for dataset, _ in lines})
    colours = plt.get_cmap("tab10" if len(datasets) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (dataset, label), points in sorted(lines.items()):
      steps = sorted(points)
      style, marker = _STYLES[run_labels.index(label) % len(_STYLES)]
      ax.plot(steps, [points[s] for s in steps], linestyle=style, marker=marker,
              color=colours(datasets.index(dataset) % colours.N),
              label=f"{dataset} ({label})" if len(run_labels) > 1 else dataset)
    ax.set_xlabel("training step")
    ax.set_ylabel(name)
    ax.set_title(f"{name} vs training step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = os.path.join(out_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths
