"""Start-up: wall time from the command to the first training step done, cold and warm cache.

  python -m benchmarks.startup --data_dir data/tfds [--lock /tmp/bench/cpu.lock] [--repeats 2]

For each case (below) and repetition, in a new work directory:

  cold     `python -m luab_jax.train ...` in an empty work directory (nothing cached);
  resumed, no cache   the same command again after the first was stopped by SIGTERM (it saved
           a checkpoint), with `--config.compilation_cache_dir=` (cache off): a resumed job that
           compiles everything again;
  resumed, warm cache the same command again with the default cache (WORKDIR/compilation_cache,
           written by the cold run): what a resumed job pays with the cache.

Each time is from just before the subprocess is started to the moment its log line "First
training step (N) done" appears (the trainer blocks on that step's results before logging it):
Python and JAX imports, config checks, data sources and Grain workers, model and optimizer
initialisation or checkpoint restore, compilation and the step itself. Then the run is sent
SIGTERM (it saves a checkpoint and exits; not timed). Each run also reports when the trainer's
milestone log lines appeared (imports and config, mesh, data pipeline, state init or restore,
first step), the summed XLA compile (or cache-load) time JAX logs, and the cache hits. `--lock` holds that file (flock, as
`flock FILE cmd` does) during each timed command only.

Cases:
  demo   configs/demo.py (ViT-mu/8, 64 px, batch 64, Grain with 1 worker) on luab_shapes/cpu64
         (`--data_dir`, prepared as in launch/demo.sh);
  b16    the real ViT-B/16 (224 px, bfloat16 compute, the B/16 config's model and sharding) on
         the committed ImageNet-AB fixture (`--fixture_data_dir`, prepared with
         `python -m luab_jax.prepare_data --dataset imagenet_ab/fixture --manual_dir
         tests/fixtures/imagenet_ab --data_dir DIR`): the B/16 config's local mode with the
         model put back to B/16 at 224 px and batch `--b16_batch` (default 8; the paper's 1024
         does not fit a CPU). Its start-up is the B/16 program's, not a pod's: no TPU here.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import timing
from luab_jax import glibc_tunables

MARKER = "First training step ("
# Log lines of the trainer, in order; the time each first appears splits the start-up.
PHASES = (("imports_config", "Persistent compilation cache:"), ("mesh", "Mesh "),
          ("data", "Model "), ("state_init_or_restore", "Training steps "),
          ("first_step", MARKER))


def demo_command(args, workdir):
  return [sys.executable, "-m", "luab_jax.train",
          f"--config=configs/demo.py:data_dir='{args.data_dir}'", f"--workdir={workdir}"]


def b16_command(args, workdir):
  return [sys.executable, "-m", "luab_jax.train", "--config=configs/vit_b16_imagenet_ab.py:runlocal",
          f"--workdir={workdir}", f"--config.data_dir={args.fixture_data_dir}",
          "--config.model.variant=B/16", "--config.model.image_size=224",
          "--config.input.image_size=224", "--config.model.dtype=bfloat16",
          f"--config.batch_size={args.b16_batch}", "--config.total_steps=1000",
          "--config.ckpt_steps=1000", "--config.log_training_steps=1000"]


CASES = {"demo": demo_command, "b16": b16_command}


def time_to_first_step(command, lock, timeout) -> dict:
  """Seconds from launch to the marker line; then SIGTERM and wait (untimed, still locked).

  With JAX_LOG_COMPILES=1 JAX logs each compilation's duration (a cache hit's is the time to
  load it) and each persistent-cache hit; both are summed up to the marker.
  """
  # With launch/env.sh's glibc tunables, as the launch scripts start the trainer.
  env = glibc_tunables.environ(dict(os.environ, PYTHONPATH=os.getcwd(), TF_CPP_MIN_LOG_LEVEL="2",
                                    JAX_LOG_COMPILES="1"))
  with timing.locked(lock):
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    seconds, log, phases, compile_s, compiles, hits = None, [], {}, 0.0, 0, 0
    for line in proc.stdout:
      log.append(line)
      if seconds is not None:
        continue
      now = time.perf_counter() - started
      for name, marker in PHASES:
        if marker in line and name not in phases:
          phases[name] = round(now, 2)
      if "Finished XLA compilation of" in line:
        compile_s += float(line.rsplit(" in ", 1)[1].split()[0])
        compiles += 1
      if "Persistent compilation cache hit" in line:
        hits += 1
      if MARKER in line:
        seconds = now
        proc.send_signal(signal.SIGTERM)
    proc.wait()
    timer.cancel()
  if seconds is None:
    raise RuntimeError(f"No '{MARKER}' line (exit {proc.returncode}):\n{''.join(log[-30:])}")
  marker = next(l for l in log if MARKER in l).strip()
  return {"seconds": round(seconds, 2), "phases_at_s": phases,
          "glibc_tunables": env["GLIBC_TUNABLES"],
          "xla_compile_or_load_s": round(compile_s, 2), "programs": compiles,
          "persistent_cache_hits": hits, "log": marker}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="demo,b16")
  parser.add_argument("--data_dir", default="data/tfds")
  parser.add_argument("--fixture_data_dir", default="data/tfds_fixture")
  parser.add_argument("--b16_batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--lock", default=None)
  parser.add_argument("--timeout", type=float, default=600)
  parser.add_argument("--out", default=None, help="Also append the JSON lines here.")
  args = parser.parse_args()
  timing.emit({"machine": timing.machine("jax", "jaxlib", "flax", "grain")}, args.out)
  for case in args.cases.split(","):
    results = {"cold": [], "resumed_no_cache": [], "resumed_warm_cache": []}
    for _ in range(args.repeats):
      workdir = tempfile.mkdtemp(prefix=f"startup_{case}_")
      command = CASES[case](args, workdir)
      for name, extra in (("cold", []), ("resumed_no_cache", ["--config.compilation_cache_dir="]),
                          ("resumed_warm_cache", [])):
        result = time_to_first_step(command + extra, args.lock, args.timeout)
        results[name].append(result["seconds"])
        timing.emit({"case": case, "run": name, "workdir": workdir, **result}, args.out)
    timing.emit({"case": case, "command": " ".join(CASES[case](args, "WORKDIR")),
                 **{name: {"median_s": round(timing.Stats(t).median, 2),
                           "runs_s": [round(x, 2) for x in t]} for name, t in results.items()}},
                args.out)


if __name__ == "__main__":
  main()
