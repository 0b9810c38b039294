"""Peer: timm's ViT train step in PyTorch (forward + backward + AdamW), on synthetic batches.

    .venv-bench/bin/python -m benchmarks.peers.timm_step --cases Ti/16@224:32

On a GPU, in bfloat16 mixed precision (what timm's `--amp-dtype bfloat16` does):

    python -m benchmarks.peers.timm_step --cases B/16@224:256 --device cuda --dtype bfloat16 \
        --steps_per_call 10 --repeats 10

Runs in `.venv-bench` (torch, timm), or any Python with torch and timm. Per case
VARIANT@IMAGE_SIZE:BATCH: timm's `vit_{tiny,small,base}_patch16_224` with `img_size=IMAGE_SIZE`,
1000 classes, float32 parameters and optimizer, eager mode (timm's attention is
`scaled_dot_product_attention`, fused on GPUs), all cores (torch's default thread count),
cross-entropy, `torch.optim.AdamW`; `--dtype bfloat16` runs forward and loss under
`torch.autocast`. `--warmup` untimed calls, then `--repeats` timed calls of `--steps_per_call`
steps (a call waits for the device at its end). The same printout as benchmarks.train_step.
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
  parser.add_argument("--device", default="cpu", help="cpu or cuda")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--steps_per_call", type=int, default=1)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  device = torch.device(args.device)
  accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
  timing.emit({"kind": "header", "bench": "timm_step", **timing.machine(
      "torch", "timm", accelerator=f"{device.type}:{accelerator}"),
      "torch_threads": torch.get_num_threads()}, args.out)
  torch.manual_seed(0)
  for case in args.cases.split(","):
    variant, size, batch = timing.parse_case(case)
    model = timm.create_model(TIMM_NAMES[variant], img_size=size, num_classes=1000).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def run():
      for _ in range(args.steps_per_call):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=args.dtype == "bfloat16"):
          loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
      if device.type == "cuda":
        torch.cuda.synchronize(device)

    stats = timing.repeat(run, warmup=args.warmup, repeats=args.repeats,
                          steps_per_call=args.steps_per_call)
    timing.emit({"kind": "result", "impl": "timm", "model": TIMM_NAMES[variant], "case": case,
                 "device": args.device, "dtype": args.dtype,
                 "step_s": {"median": stats.median, "min": min(stats.times),
                            "max": max(stats.times)},
                 "images_per_s": stats.rate(batch)}, args.out)


if __name__ == "__main__":
  main()
