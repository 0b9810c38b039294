"""Host memory: the demo's training process with its Grain workers, and evaluation vs data size.

  python -m benchmarks.memory --data_dir data/tfds [--steps 200] [--lock /tmp/bench/cpu.lock]

What is measured: every `--interval` seconds the process tree of the command (the process and
all its descendants: Grain worker processes, TensorFlow/absl helpers) is read from /proc, and
for each process `/proc/PID/smaps_rollup` gives its RSS and PSS. Reported are the peaks over
the run of

  tree_pss   the sum of the processes' PSS (proportional set size: a page shared by k processes
             counts 1/k in each, so the sum is the tree's real footprint; this is the figure
             held against the 4 GiB budget), and its split into anonymous memory (heap,
             arrays: tree_pss_anon) and file-backed + shared memory (libraries, memory-mapped
             data files, shared-memory batches: tree_pss_file_shmem);
  tree_rss   the sum of their RSS (counts shared pages, e.g. Grain's shared-memory batches and
             pages a forked worker shares with its parent, once per process: an upper bound);
  main_rss   the training process alone (what `/usr/bin/time -v` calls maximum resident set
             size);
  processes  the largest number of processes in the tree.

The timeline in the JSON gives (seconds, tree_pss, tree_pss_anon): a footprint that grows with
the data shows in the anonymous part (the file-backed part is the libraries, flat once they are
loaded; ArrayRecord shards are read with pread, not mapped). Sampling misses peaks shorter than
the interval. No cgroup figure: this machine's memory cgroup is shared with other jobs.

Runs (each under `--lock`, held as `flock FILE cmd` would):
  train    `python -m luab_jax.train --config configs/demo.py:data_dir=D,steps=S` in a new work
           directory: the demo's configuration (batch 64, Grain with 1 worker, prefetch 32, the
           evaluators at the end on 7,000 images) for S steps instead of 800 (memory is flat
           once the pipeline is full; the timeline in the JSON shows it);
  eval N   `python -m luab_jax.evaluate` of that run's latest checkpoint with the localisation
           evaluator on `train[:N]` (20,000 records in all), for each N of `--eval_sizes`: its
           peak should not grow with N (the evaluation pipeline reads at most `read_threads`
           batches ahead, input_pipeline.eval_read_options).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import timing
from luab_jax import glibc_tunables

_KIB = 1024
_GIB = 2 ** 30


def _children():
  """{ppid: [pid, ...]} over every process visible in /proc."""
  tree = {}
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
      continue
    tree.setdefault(ppid, []).append(int(name))
  return tree


def _rollup(pid):
  """(rss, pss, pss_anon, pss_file) in bytes, or None if the process is gone."""
  found = {}
  try:
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
      for line in f:
        key = line.split(":", 1)[0]
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"):
          found[key] = int(line.split()[1]) * _KIB
  except OSError:
    return None
  if "Rss" not in found:
    return None
  return (found["Rss"], found.get("Pss", 0), found.get("Pss_Anon", 0),
          found.get("Pss_File", 0) + found.get("Pss_Shmem", 0))


def sample_tree(root):
  tree, pids, i = _children(), [root], 0
  while i < len(pids):
    pids.extend(tree.get(pids[i], []))
    i += 1
  sizes = {pid: _rollup(pid) for pid in pids}
  sizes = {pid: s for pid, s in sizes.items() if s is not None}
  return {"tree_rss": sum(s[0] for s in sizes.values()),
          "tree_pss": sum(s[1] for s in sizes.values()),
          "tree_pss_anon": sum(s[2] for s in sizes.values()),
          "tree_pss_file_shmem": sum(s[3] for s in sizes.values()),
          "main_rss": sizes.get(root, (0, 0))[0], "processes": len(sizes)}


def measure(command, *, interval, lock, timeout, markers=()):
  """Runs `command`; returns peaks, the wall time, and peaks before each marker line."""
  # With launch/env.sh's glibc tunables, as launch/demo.sh starts the trainer.
  env = glibc_tunables.environ(dict(os.environ, PYTHONPATH=os.getcwd(),
                                    TF_CPP_MIN_LOG_LEVEL="2"))
  with timing.locked(lock):
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log, seen = [], {}
    peaks = {"tree_rss": 0, "tree_pss": 0, "tree_pss_anon": 0, "tree_pss_file_shmem": 0,
             "main_rss": 0, "processes": 0}

    def read():
      for line in proc.stdout:
        log.append(line)
        for m in markers:
          if m in line and m not in seen:
            seen[m] = dict(peaks, seconds=round(time.perf_counter() - started, 1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timeline = []
    while proc.poll() is None:
      if time.perf_counter() - started > timeout:
        proc.kill()
        break
      s = sample_tree(proc.pid)
      for key in peaks:
        peaks[key] = max(peaks[key], s[key])
      timeline.append((round(time.perf_counter() - started, 1), round(s["tree_pss"] / _GIB, 3),
                       round(s["tree_pss_anon"] / _GIB, 3)))
      time.sleep(interval)
    proc.wait()
    reader.join(timeout=10)
    seconds = time.perf_counter() - started
  if proc.returncode != 0:
    raise RuntimeError(f"exit {proc.returncode}:\n{''.join(log[-30:])}")
  gib = lambda d: {k: (round(v / _GIB, 3) if k != "processes" and k != "seconds" else v)
                   for k, v in d.items()}
  step = max(1, len(timeline) // 40)
  return {"peak_gib": gib(peaks), "seconds": round(seconds, 1),
          "glibc_tunables": env["GLIBC_TUNABLES"],
          "peak_gib_before": {m: gib(v) for m, v in seen.items()},
          "timeline_s_pss_anon_gib": timeline[::step]}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default="data/tfds")
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--eval_sizes", default="2500,10000")
  parser.add_argument("--workdir", default=None, help="Default: a new temporary directory.")
  parser.add_argument("--skip_train", action="store_true", help="Reuse --workdir's checkpoint.")
  parser.add_argument("--interval", type=float, default=0.2)
  parser.add_argument("--lock", default=None)
  parser.add_argument("--timeout", type=float, default=600)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  timing.emit({"machine": timing.machine("jax", "jaxlib", "grain")}, args.out)
  workdir = args.workdir or tempfile.mkdtemp(prefix="memory_demo_")
  config = f"configs/demo.py:data_dir='{args.data_dir}',steps={args.steps}"
  if not args.skip_train:
    command = [sys.executable, "-m", "luab_jax.train", f"--config={config}",
               f"--workdir={workdir}"]
    result = measure(command, interval=args.interval, lock=args.lock, timeout=args.timeout,
                     markers=("First training step", "Evaluator "))
    timing.emit({"run": "train", "command": " ".join(command), **result}, args.out)
  for n in [int(x) for x in args.eval_sizes.split(",")]:
    command = [sys.executable, "-m", "luab_jax.evaluate", f"--workdir={workdir}",
               "--checkpoints=latest", "--evals=loc", "--redo", f"--config={config}",
               f"--config.evals.loc.split=train[:{n}]"]
    result = measure(command, interval=args.interval, lock=args.lock, timeout=args.timeout)
    timing.emit({"run": f"eval {n}", "command": " ".join(command), **result}, args.out)


if __name__ == "__main__":
  main()
