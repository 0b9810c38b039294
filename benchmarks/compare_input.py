"""Ours vs tf.data on the input path, in alternating rounds; per-round ratios and their median.

    python -m benchmarks.compare_input --rounds 5

Prepares the data once (`benchmarks.input_pipeline --prepare_only` in `.venv`), then per round
runs `benchmarks.input_pipeline` (ours, `.venv`) and `benchmarks.peers.tfdata_pipeline`
(`.venv-bench`), each in its own subprocess, the order alternating between rounds so that drift
of a shared machine falls on both. With `--lock FILE` (default /tmp/bench/cpu.lock where it
exists) each round holds that flock, the one other benchmarks on the machine take.
Ratio = ours images/s / theirs, at 1 core and at 2 cores, against tf.data plain and fused.
Our process gets launch/env.sh's GLIBC_TUNABLES (`timing.subprocess_env`), the
peer's none unless `--peer_glibc_tunables`.

Where the data lives matters: the peer reads every JPEG into its own memory before timing,
ours reads ArrayRecord files. On a VM whose page cache is reclaimed (on the 2-core VM of
BENCHMARKS.md, 1-4 % of freshly read files left the cache within 30 idle seconds, and 23-26 %
of the 10,000-record files were out of it during a comparison run), ours then times the disk
as well. Put `--workdir` on tmpfs, e.g.
`--workdir /dev/shm/luab_input_bench`, so that both sides read from RAM (10,000 records take
1.7 GB there until you delete them).
"""

import argparse
import json
import os
import statistics

from benchmarks import timing
from luab_jax import glibc_tunables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--workdir", default="/tmp/luab_input_bench",
                      help="the JPEGs and the prepared dataset; on tmpfs (/dev/shm/...) both "
                           "sides read from RAM (module docstring)")
  parser.add_argument("--num_images", type=int, default=600,
                      help="records in the benchmark dataset: Grain's global shuffle costs "
                           "~30,000 / N us per element (52 us at 600, 6 us at 10,000, 4.7 at "
                           "ImageNet's 1.28M), so small datasets overstate it")
  parser.add_argument("--ours_python", default=os.path.join(ROOT, ".venv", "bin", "python"))
  parser.add_argument("--peer_python", default=os.path.join(ROOT, ".venv-bench", "bin", "python"))
  parser.add_argument("--ours_1core", default="1:0:1:2", help="CORES:WORKERS:THREADS:PREFETCH")
  parser.add_argument("--ours_2core", default="2:0:2:4",
                      help="two read threads in one process: faster here than worker processes")
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--lock", default="/tmp/bench/cpu.lock" if os.path.isdir("/tmp/bench")
                      else "")
  parser.add_argument("--peer_glibc_tunables", default="",
                      help="GLIBC_TUNABLES for tf.data's process (default: none, as it runs "
                      "out of the box)")
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()

  # Each as its users start it: ours with launch/env.sh's glibc tunables, the peer without any
  # unless --peer_glibc_tunables gives some.
  env = timing.subprocess_env(ROOT, glibc_tunables.with_defaults(""))
  peer_env = timing.subprocess_env(ROOT, args.peer_glibc_tunables)
  common = ["--batches", str(args.batches), "--batch_size", str(args.batch_size),
            "--repeats", str(args.repeats)]
  data = ["--workdir", args.workdir, "--num_images", str(args.num_images)]
  timing.run_json([args.ours_python, "-m", "benchmarks.input_pipeline", *data, "--prepare_only"],
                  env, ROOT)
  ours_cmd = [args.ours_python, "-m", "benchmarks.input_pipeline", *data,
              "--settings", f"loop,{args.ours_1core},{args.ours_2core}", *common]
  peer_cmd = [args.peer_python, "-m", "benchmarks.peers.tfdata_pipeline", "--manual_dir",
              os.path.join(args.workdir, "jpegs"), *common]
  timing.emit({"kind": "header", "bench": "compare_input", **timing.machine()}, args.out)
  pairs = {"1 core / plain": ("1c", "tfdata_plain", 1), "1 core / fused": ("1c", "tfdata_fused", 1),
           "2 cores / plain": ("2c", "tfdata_plain", 2), "2 cores / fused": ("2c", "tfdata_fused", 2)}
  ratios = {name: [] for name in pairs}
  table = []
  for r in range(args.rounds):
    order = [("ours", ours_cmd, env), ("peer", peer_cmd, peer_env)]
    if r % 2:
      order.reverse()
    results = {}
    with timing.locked(args.lock):
      for _, cmd, cmd_env in order:
        for rec in timing.run_json(cmd, cmd_env, ROOT):
          if rec.get("kind") == "result":
            rec["round"] = r
            timing.emit(rec, args.out)
            key = rec["impl"]
            if key == "ours":
              key = {"loop": "loop", args.ours_1core: "1c", args.ours_2core: "2c"}[rec["setting"]]
            elif key.startswith("tfdata"):
              key = (key, rec["cores"])
            results[key] = rec["images_per_s"]["median"]
    row = {"round": r, "order": "/".join(o for o, _, _ in order), **{
        "ours_loop": results["loop"], "ours_1c": results["1c"], "ours_2c": results["2c"],
        "plain_1c": results[("tfdata_plain", 1)], "fused_1c": results[("tfdata_fused", 1)],
        "plain_2c": results[("tfdata_plain", 2)], "fused_2c": results[("tfdata_fused", 2)]}}
    for name, (ours, impl, cores) in pairs.items():
      ratios[name].append(results[ours] / results[(impl, cores)])
      row[name] = ratios[name][-1]
    table.append(row)
    timing.emit({"kind": "round", "bench": "compare_input", **row}, args.out)

  print("\nimages/s (medians within each run); ratio = ours / tf.data")
  cols = ["ours_loop", "ours_1c", "plain_1c", "fused_1c", "ours_2c", "plain_2c", "fused_2c"]
  print("round order     " + " ".join(f"{c:>9s}" for c in cols) + "  " +
        " ".join(f"{n:>16s}" for n in pairs))
  for row in table:
    print(f"{row['round']:5d} {row['order']:9s} " + " ".join(f"{row[c]:9.0f}" for c in cols) +
          "  " + " ".join(f"{row[n]:16.2f}" for n in pairs))
  medians = {name: statistics.median(v) for name, v in ratios.items()}
  print("median ratio    " + " " * 70 + "  " + " ".join(f"{medians[n]:16.2f}" for n in pairs))
  timing.emit({"kind": "summary", "bench": "compare_input", "median_ratio": medians,
               "rounds": args.rounds, "ours_1core": args.ours_1core,
               "ours_2core": args.ours_2core}, args.out)


if __name__ == "__main__":
  main()
