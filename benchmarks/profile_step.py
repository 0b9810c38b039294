"""Where the train step's time goes: a JAX profiler trace of a few steps, summed by XLA op kind.

    python -m benchmarks.profile_step --case Ti/16@224:32 --steps 3

Builds the real train step (`benchmarks/train_step.py`, demo recipe, synthetic batch), runs
`--warmup` steps, traces `--steps` steps with `jax.profiler.trace` into `--trace_dir`, and reads
the trace back: for each op kind (the HLO op name without its number, e.g. `dot_general`,
`multiply_bitcast_fusion`) the number of ops per step, the ms per step summed over threads and
the mean ms per op. Summed over threads, so ops that ran side by side add up; oneDNN matmuls
may not appear as named events. The trace stays in `--trace_dir` for TensorBoard / Perfetto.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import time

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

from benchmarks import timing
from benchmarks import train_step as train_step_bench

_RUNTIME_EVENTS = ("$", "Thunk", "Pjit")  # Python frames and the executor's own spans.


def op_kinds(trace_path: str, steps: int) -> list[dict]:
  """[{op, ops_per_step, ms_per_step, mean_ms}] from a trace, largest first."""
  with gzip.open(trace_path) as f:
    events = json.load(f)["traceEvents"]
  total, count = collections.Counter(), collections.Counter()
  for event in events:
    name = event.get("name", "")
    if event.get("ph") != "X" or name.startswith(_RUNTIME_EVENTS):
      continue
    kind = re.sub(r"[.\d]+$", "", name)
    total[kind] += event.get("dur", 0) / 1e3 / steps
    count[kind] += 1
  return [{"op": kind, "ops_per_step": count[kind] / steps, "ms_per_step": ms,
           "mean_ms": ms * steps / count[kind]} for kind, ms in total.most_common()]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--case", default="Ti/16@224:32", help="VARIANT@SIZE:BATCH")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=20)
  parser.add_argument("--trace_dir", default="/tmp/luab_profile_step")
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()
  variant, size, batch = timing.parse_case(args.case)
  timing.emit({"kind": "header", "bench": "profile_step", "case": args.case,
               **timing.machine("jax", "jaxlib")}, args.out)
  config = train_step_bench.case_config(variant, size, batch, 4.0, args.dtype)
  run, _ = train_step_bench.build_step(config)
  run(args.warmup)
  shutil.rmtree(args.trace_dir, ignore_errors=True)
  start = time.perf_counter()
  with jax.profiler.trace(args.trace_dir):
    run(args.steps)
  traced = (time.perf_counter() - start) / args.steps
  path, = glob.glob(os.path.join(args.trace_dir, "**", "*.trace.json.gz"), recursive=True)
  kinds = op_kinds(path, args.steps)
  timing.emit({"kind": "summary", "bench": "profile_step", "traced_s_per_step": traced,
               "named_ops_ms_per_step": sum(k["ms_per_step"] for k in kinds),
               "trace": path}, args.out)
  for k in kinds[:args.top]:
    timing.emit({"kind": "op_kind", "bench": "profile_step", **k}, args.out)


if __name__ == "__main__":
  main()
