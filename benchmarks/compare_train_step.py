"""Ours vs timm on the ViT train step, in alternating rounds; per-round ratios and their median.

    python -m benchmarks.compare_train_step --cases Ti/16@224:32,Ti/16@64:64 --rounds 3

Per round: `benchmarks.train_step` (ours, `.venv`) and `benchmarks.peers.timm_step` (timm,
`.venv-bench`), each in its own subprocess, the order alternating between rounds so that drift
of a shared machine falls on both; each round holds `--lock` (default /tmp/bench/cpu.lock where
/tmp/bench exists). Ratio = ours images/s / timm's, per case. Our run also reports MFU against
the float32 matmul peak it measures. Our process gets launch/env.sh's GLIBC_TUNABLES
(`timing.subprocess_env`), timm's none unless `--peer_glibc_tunables` (each process's
header prints its value).
"""

import argparse
import os
import statistics

from benchmarks import timing
from luab_jax import glibc_tunables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="Ti/16@224:32,Ti/16@64:64")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--ours_python", default=os.path.join(ROOT, ".venv", "bin", "python"))
  parser.add_argument("--peer_python", default=os.path.join(ROOT, ".venv-bench", "bin", "python"))
  parser.add_argument("--lock", default="/tmp/bench/cpu.lock" if os.path.isdir("/tmp/bench")
                      else "")
  parser.add_argument("--peer_glibc_tunables", default="",
                      help="GLIBC_TUNABLES for timm's process (default: none, as timm runs "
                      "out of the box; e.g. glibc.malloc.hugetlb=1 to give it ours)")
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()

  # Each as its users start it: ours with launch/env.sh's glibc tunables, timm without any
  # unless --peer_glibc_tunables gives some.
  envs = {"ours": timing.subprocess_env(ROOT, glibc_tunables.with_defaults("")),
          "timm": timing.subprocess_env(ROOT, args.peer_glibc_tunables)}
  common = ["--cases", args.cases, "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
  commands = {"ours": [args.ours_python, "-m", "benchmarks.train_step", *common],
              "timm": [args.peer_python, "-m", "benchmarks.peers.timm_step", *common]}
  timing.emit({"kind": "header", "bench": "compare_train_step", **timing.machine()}, args.out)
  cases = args.cases.split(",")
  ratios = {case: [] for case in cases}
  rows = []
  for r in range(args.rounds):
    order = ["ours", "timm"] if r % 2 == 0 else ["timm", "ours"]
    rates, mfu = {}, {}
    with timing.locked(args.lock):
      for impl in order:
        for rec in timing.run_json(commands[impl], envs[impl], ROOT):
          rec["round"] = r
          timing.emit(rec, args.out)
          if rec.get("kind") == "result":
            rates[(impl, rec["case"])] = rec["images_per_s"]["median"]
            if impl == "ours":
              mfu[rec["case"]] = rec["mfu"]
    for case in cases:
      ratio = rates[("ours", case)] / rates[("timm", case)]
      ratios[case].append(ratio)
      rows.append((r, "/".join(order), case, rates[("ours", case)], rates[("timm", case)],
                   mfu[case], ratio))
      timing.emit({"kind": "round", "round": r, "case": case, "ratio": ratio}, args.out)

  print("\nround order      case              ours img/s  timm img/s  ours MFU  ours/timm")
  for r, order, case, ours, timm, mfu_, ratio in rows:
    print(f"{r:5d} {order:10s} {case:16s} {ours:11.2f} {timm:11.2f} {mfu_:8.1%} {ratio:10.2f}")
  medians = {case: statistics.median(v) for case, v in ratios.items()}
  for case, m in medians.items():
    print(f"median ours/timm {case}: {m:.2f}")
  timing.emit({"kind": "summary", "bench": "compare_train_step", "median_ratio": medians,
               "rounds": args.rounds}, args.out)


if __name__ == "__main__":
  main()
