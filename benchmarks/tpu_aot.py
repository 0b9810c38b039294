"""Ahead-of-time TPU compilation table: memory per chip and FLOPs, with and without remat.

Runs `python -m luab_jax.compile` (libtpu, no TPU) once per (config, topology, remat), each in
its own process under a time limit, and prints a Markdown table of the JSON reports:

  python -m benchmarks.tpu_aot --python /tmp/aotvenv/bin/python \
      --configs configs/vit_b16_imagenet_ab.py,configs/vit_l16_imagenet_ab.py \
      --topologies v5e:8x8,v4:2x2x4 --remats none,full,dots_saveable --out aot.jsonl
  python -m benchmarks.tpu_aot --table aot.jsonl      # the table only

`--lock FILE` runs each compile under `flock FILE` (shared CPU). A compile that fails or runs
past `--timeout` is recorded as such and the next one starts.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import timing

_GIB = 2 ** 30


def compile_one(python, config, topology, remat, timeout, lock, extra=()):
  with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
    out = f.name
  cmd = [python, "-m", "luab_jax.compile", "--config", config, "--topology", topology,
         f"--config.model.remat={remat}", *extra, "--json", out]
  cmd = ["timeout", str(timeout), "/usr/bin/time", "-f", "AOT_TIME %e %M", *cmd]
  if lock:  # The time limit starts once the lock is held.
    cmd = ["flock", lock, *cmd]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.getcwd())
  started = time.time()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  seconds = time.time() - started
  record = {"config": config, "topology": topology, "remat": remat,
            "seconds_incl_lock_wait": round(seconds, 1), "rc": proc.returncode}
  if extra:
    record["overrides"] = " ".join(extra)
  for line in proc.stderr.splitlines():
    if line.startswith("AOT_TIME "):  # Wall seconds and peak host RSS of the compile.
      record["compile_seconds"] = float(line.split()[1])
      record["compile_max_rss_gib"] = round(int(line.split()[2]) * 1024 / _GIB, 2)
  with open(out) as f:
    lines = f.read().splitlines()
  os.unlink(out)
  if proc.returncode == 0 and lines:
    record.update(json.loads(lines[-1]))
  else:
    lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith("AOT_TIME")]
    errors = [l for l in lines if "RESOURCE_EXHAUSTED" in l or "Error" in l]
    record["error"] = ("timed out" if proc.returncode == 124 else
                       (errors or lines or ["failed"])[-1][:300])
  return record


def table(records) -> str:
  rows = ["| config | topology | chips | remat | args / temps / total per chip (GiB) | HBM | "
          "fits | FLOPs per step compiled / analytic | compile s |",
          "|---|---|---|---|---|---|---|---|---|"]
  for r in records:
    name = os.path.basename(r["config"]).split("_imagenet")[0].replace("vit_", "").upper()
    if r.get("overrides"):
      name += " " + r["overrides"].replace("--config.", "")
    if "error" in r:
      rows.append(f"| {name} | {r['topology']} | | {r['remat']} | {r['error']} | | | | "
                  f"{r['seconds_incl_lock_wait']:.0f} |")
      continue
    note = " (loop body once)" if r["loops_counted_once"] else ""
    rows.append(
        f"| {name} | {r['topology']} | {r['num_devices']} | {r['remat']} | "
        f"{r['argument_bytes'] / _GIB:.2f} / {r['temp_bytes'] / _GIB:.2f} / "
        f"{r['total_bytes'] / _GIB:.2f} | {r['hbm_bytes'] // _GIB} | "
        f"{'yes' if r['fits'] else 'NO'} | {r['flops_per_step']:.3e}{note} / "
        f"{r['analytic_flops_per_step']:.3e} | {r.get('compile_seconds', r['seconds_incl_lock_wait']):.0f} |")
  return "\n".join(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--python", default=sys.executable, help="A Python with libtpu.")
  parser.add_argument("--configs", default="configs/vit_b16_imagenet_ab.py")
  parser.add_argument("--topologies", default="v5e:8x8")
  parser.add_argument("--remats", default="none,full,dots_saveable")
  parser.add_argument("--timeout", type=int, default=600)
  parser.add_argument("--extra", default="", help="More overrides for every compile, "
                      "space-separated, e.g. '--config.model.scan_layers=False'.")
  parser.add_argument("--lock", default=None)
  parser.add_argument("--out", default=None, help="Append one JSON line per compile here.")
  parser.add_argument("--table", default=None, help="Only print the table of this JSONL file.")
  args = parser.parse_args()
  if args.table:
    with open(args.table) as f:
      print(table([json.loads(l) for l in f if l.strip() and '"topology"' in l]))
    return
  timing.emit({"machine": timing.machine()}, args.out)
  records = []
  for config in args.configs.split(","):
    for topology in args.topologies.split(","):
      for remat in args.remats.split(","):
        record = compile_one(args.python, config, topology, remat, args.timeout, args.lock,
                             args.extra.split())
        timing.emit(record, args.out)
        records.append(record)
  print(table(records))


if __name__ == "__main__":
  main()
