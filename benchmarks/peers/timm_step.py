"""Peer: timm's ViT train step in PyTorch (forward + backward + AdamW), on synthetic batches.

    .venv-bench/bin/python -m benchmarks.peers.timm_step --cases Ti/16@224:32

Runs in `.venv-bench` (torch, timm). Per case VARIANT@IMAGE_SIZE:BATCH: timm's
`vit_{tiny,small,base}_patch16_224` with `img_size=IMAGE_SIZE`, 1000 classes, float32, eager
mode, all cores (torch's default thread count), cross-entropy, `torch.optim.AdamW`; `--warmup`
untimed steps, then `--repeats` timed ones. The same printout as benchmarks.train_step.
"""

import argparse

import timm
import torch

from benchmarks import timing

TIMM_NAMES = {"Ti/16": "vit_tiny_patch16_224", "S/16": "vit_small_patch16_224",
              "B/16": "vit_base_patch16_224"}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="Ti/16@224:32")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  timing.emit({"kind": "header", "bench": "timm_step", **timing.machine("torch", "timm"),
               "torch_threads": torch.get_num_threads()}, args.out)
  torch.manual_seed(0)
  for case in args.cases.split(","):
    variant, size, batch = timing.parse_case(case)
    model = timm.create_model(TIMM_NAMES[variant], img_size=size, num_classes=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 1000, (batch,))

    def run():
      optimizer.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(model(images), labels)
      loss.backward()
      optimizer.step()

    stats = timing.repeat(run, warmup=args.warmup, repeats=args.repeats)
    timing.emit({"kind": "result", "impl": "timm", "model": TIMM_NAMES[variant], "case": case,
                 "step_s": {"median": stats.median, "min": min(stats.times),
                            "max": max(stats.times)},
                 "images_per_s": stats.rate(batch)}, args.out)


if __name__ == "__main__":
  main()
