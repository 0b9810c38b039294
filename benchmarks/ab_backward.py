"""A/B of the ViT's hand-written backward passes, in one process: each variant is the real
train step (benchmarks/train_step.py, demo recipe) built with some of them replaced by the plain
formulas, and the variants are timed in alternating rounds (shared-machine noise falls on all).

    python -m benchmarks.ab_backward --variants base,all,-gelu --rounds 6

On a GPU (bfloat16, cuDNN attention, ten steps per timed call):

    python -m benchmarks.ab_backward --case B/16@224:256 --dtype bfloat16 --attention cudnn \
        --variants all,-pos,-gpu,-pos-gpu --rounds 4 --steps_per_round 10

Levers (luab_jax/models/vit.py): bias (`add_bias`: bias gradients as matmuls), ln
(`LayerNorm`), gelu (`gelu`), pos (`add_position_embedding`: the position embedding's gradient
as a matmul; plain: a reduction over the batch), gpu (`_autodiff_norms_and_biases`: GPU
programs keep autodiff's LayerNorm and bias gradients; plain: no exception, the hand-written
ones as on CPU, so `-pos-gpu` is the GPU program before that change), proj
(`SelfAttention._project`'s 2-D form for CPU; plain: the einsum form other platforms get), split (the attention of `CPU_ATTENTION_GROUPS` slices of the
batch as independent operations on one CPU device; plain: one batched attention). proj and
split are levers of the written-out attention (`--attention xla`); with `cpu_fused`, split does
nothing and proj is refused (the kernel takes only programs for CPU). Variants:
"base" = all plain, "all" = as committed, "-X" (or "-X-Y") = all but X plain, "+X" = only X kept.
Several attentions (`--attention cpu_fused,xla`) build every variant with each, named
VARIANT/ATTENTION, all in the same alternating rounds:

    python -m benchmarks.ab_backward --variants all --attention cpu_fused,xla --rounds 8 \
        --steps_per_round 2

A variant may end in XLA's options for its compile, "[KEY=VALUE;KEY=VALUE]"
(`jax.stages.Lowered.compile`), so that programs differing only in them share the rounds; e.g.
Triton's GEMMs (XLA:GPU's default) against cuBLAS's, into which XLA fuses the bias additions:

    python -m benchmarks.ab_backward --case B/16@224:256 --dtype bfloat16 --attention cudnn \
        --variants "all,all[xla_gpu_enable_triton_gemm=false]" --rounds 4 --steps_per_round 10
"""

import argparse
import ast
import contextlib
import functools
import re
import statistics
import time

from luab_jax import xla_flags

xla_flags.set_defaults()  # Before JAX starts a backend.

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from flax import nnx

from benchmarks import timing
from benchmarks import train_step as train_step_bench
from luab_jax.models import vit


PLAIN = {
    "bias": (vit, "add_bias", lambda x, b: x + b),
    "ln": (vit.LayerNorm, "__call__", nnx.LayerNorm.__call__),
    "gelu": (vit, "gelu", functools.partial(jax.nn.gelu, approximate=False)),
    "pos": (vit, "add_position_embedding", lambda x, pos: x + pos),
    "gpu": (vit, "_autodiff_norms_and_biases", lambda: False),
    "proj": (vit, "_for_cpu", lambda: False),
    "split": (vit, "CPU_ATTENTION_GROUPS", 1),
}


def plain_levers(variant: str) -> list[str]:
  """The levers that "base", "all", "-X-Y" or "+X+Y" makes plain (module docstring)."""
  if variant in ("base", "all"):
    return list(PLAIN) if variant == "base" else []
  named = variant[1:].split(variant[0]) if variant[:1] in ("-", "+") else None
  if not named or not set(named) <= set(PLAIN):
    raise ValueError(f"Unknown variant {variant!r}: use base, all, -X-Y or +X+Y with X, Y of "
                     f"{', '.join(PLAIN)}.")
  return named if variant[0] == "-" else [name for name in PLAIN if name not in named]


def parse_variant(variant: str) -> tuple[list[str], dict]:
  """(the levers made plain, XLA's options {KEY: VALUE}) of "LEVERS" or "LEVERS[KEY=VALUE;...]";
  XLA takes true/false and numbers as such, not as text."""
  match = re.fullmatch(r"([^\[\]]+)(?:\[([^\[\]]*)\])?", variant)
  if match is None:
    raise ValueError(f"Variant {variant!r}: expected LEVERS or LEVERS[KEY=VALUE;...], e.g. "
                     "all[xla_gpu_enable_triton_gemm=false].")
  options = {}
  for item in filter(None, (match.group(2) or "").split(";")):
    key, equals, value = (part.strip() for part in item.partition("="))
    if not equals or not key:
      raise ValueError(f"Variant {variant!r}: {item!r} is not KEY=VALUE.")
    if value.lower() in ("true", "false"):
      options[key] = value.lower() == "true"
    else:
      try:
        options[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        options[key] = value  # A string option.
  return plain_levers(match.group(1)), options


@contextlib.contextmanager
def plain(levers):
  saved = [(owner, name, getattr(owner, name)) for owner, name, _ in map(PLAIN.get, levers)]
  for owner, name, value in map(PLAIN.get, levers):
    setattr(owner, name, value)
  try:
    yield
  finally:
    for owner, name, value in saved:
      setattr(owner, name, value)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--case", default="Ti/16@224:32")
  parser.add_argument("--variants", default="base,all")
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--steps_per_round", type=int, default=1,
                      help="steps per timed call (one wait at its end)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--attention", default="xla",
                      help=f"comma-separated, of {vit.ATTENTION_IMPLEMENTATIONS}")
  parser.add_argument("--out", default=None, help="append every JSON line here")
  args = parser.parse_args()
  variant_name, size, batch = timing.parse_case(args.case)
  attentions = args.attention.split(",")
  for attention in attentions:
    if attention not in vit.ATTENTION_IMPLEMENTATIONS:
      parser.error(f"--attention {attention!r}: use {vit.ATTENTION_IMPLEMENTATIONS}")
  for variant in args.variants.split(","):
    try:
      parse_variant(variant)
    except ValueError as error:
      parser.error(str(error))
  device = jax.devices()[0]
  timing.emit({"kind": "header", "bench": "ab_backward", **timing.machine(
      "jax", "jaxlib", "flax", accelerator=f"{device.platform}:{device.device_kind}")}, args.out)
  runs, settings = {}, {}
  for attention in attentions:
    config = train_step_bench.case_config(variant_name, size, batch, 4.0, args.dtype, attention)
    for lever_variant in args.variants.split(","):
      variant = lever_variant if len(attentions) == 1 else f"{lever_variant}/{attention}"
      levers, options = parse_variant(lever_variant)
      with plain(levers):  # The step is traced here: compiled or at its first call.
        run, _ = train_step_bench.build_step(config, options)
        run()
        run()
      runs[variant], settings[variant] = run, (levers, options, attention)
  variants = list(runs)

  def step_s(variant):
    start = time.perf_counter()
    runs[variant](args.steps_per_round)
    return (time.perf_counter() - start) / args.steps_per_round

  times = timing.alternating(
      step_s, variants, rounds=args.rounds,
      on_round=lambda r, figures: timing.emit(
          {"kind": "round", "round": r, "step_s": figures}, args.out))
  for variant in variants:
    median = statistics.median(times[variant])
    levers, options, attention = settings[variant]
    timing.emit({"kind": "result", "variant": variant, "plain": levers,
                 "compiler_options": options,
                 "case": args.case, "step_s": {"median": median, "min": min(times[variant]),
                                                "max": max(times[variant])},
                 "images_per_s": batch / median, "dtype": args.dtype,
                 "attention": attention,
                 "steps": len(times[variant]) * args.steps_per_round}, args.out)


if __name__ == "__main__":
  main()
