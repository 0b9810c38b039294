"""Default XLA compiler flags, set before JAX starts its backends.

The entry points (train, evaluate, demo, the benchmarks) call `set_defaults()` first thing in
`main`. XLA reads XLA_FLAGS once, when the first backend starts; flags set later are ignored.

CPU backend (measured on a 2-core x86 machine, ViT-Ti/16 train step, BENCHMARKS.md):
  --xla_cpu_experimental_ynn_fusion_type=   turn off YNNPACK dot fusions, which this jaxlib
                                            enables by default and which ran the ViT's matmuls
                                            slower than oneDNN here;
  --xla_cpu_use_onednn=true                 run matmuls through oneDNN instead.
Together: 1.20-1.27x faster ViT-Ti/16 train steps (3.88 -> 3.23 s per batch of 32 with the
previous model code, 3.67 -> 2.88 s with the current one). GPU and TPU compilers ignore
--xla_cpu_* flags.

A flag already present in XLA_FLAGS (given by the user) is left as it is, so each default can
be overridden, e.g. XLA_FLAGS=--xla_cpu_use_onednn=false.
"""

import os

CPU_DEFAULTS = ("--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_use_onednn=true")


def set_defaults(environ=os.environ) -> str:
  """Appends each default flag that XLA_FLAGS does not name yet; returns the new XLA_FLAGS."""
  given = environ.get("XLA_FLAGS", "").split()
  named = {flag.split("=", 1)[0] for flag in given}
  added = [flag for flag in CPU_DEFAULTS if flag.split("=", 1)[0] not in named]
  environ["XLA_FLAGS"] = " ".join(given + added)
  return environ["XLA_FLAGS"]
