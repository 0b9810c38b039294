"""Vision Transformer (Flax NNX) with a classification head and a LUAB point-regression head.

LUAB trains the usual ViT classifier together with a small regression head that predicts where
the annotator clicked. This module is the network only: `ViT(...)(images)` returns class
logits and point predictions; the losses live in `luab_jax/losses.py`.

Variants are named "NAME/PATCH", e.g. "B/16", "S/8", "Ti/32", "mu/8":

  | NAME | width | depth | mlp_dim | heads |                                                  |
  |------|-------|-------|---------|-------|--------------------------------------------------|
  | mu   |   128 |     4 |     512 |     4 | NOT a standard size: a tiny model for CPU demos  |
  | Ti   |   192 |    12 |     768 |     3 |                                                  |
  | S    |   384 |    12 |    1536 |     6 |                                                  |
  | B    |   768 |    12 |    3072 |    12 |                                                  |
  | L    |  1024 |    24 |    4096 |    16 |                                                  |

`width`, `depth`, `mlp_dim` and `num_heads` passed to `ViT` override the variant's values.

Outputs of `ViT(...)(images)`, images uint8 pixels [B, S, S, 3] (as the input pipeline ships
them) or float already in [-1, 1] (`to_input_range`), S = image_size:
  "logits"      [B, num_classes]     float32
  "points"      [B, num_points, 2]   float32; [..., 0] is x (rightwards), [..., 1] is y
                                     (downwards), both in [0, 1] image coordinates when trained
                                     on such targets. Unbounded (no sigmoid): a regression output.
  "pre_logits"  [B, width]           the pooled representation, in the compute dtype.

Pooling (`pool_type`): "gap" averages the final patch tokens; "tok" prepends a learned CLS token
and reads it out. The point head reads `point_features`: "pooled" (what the classifier sees),
"gap" (mean of the final patch tokens), "cls" or "cls+gap" (the latter two need "tok").

Parameter paths (jax key paths joined with "/", the trailing NNX ".value" left out, which is
what `luab_jax.sharding.path_name` produces). D = width, M = mlp_dim, H = heads, K = D / H,
P = patch size, N = number of tokens, F = point-head input width:

  embedding/kernel                      [P, P, 3, D]   patch embedding (conv, stride P)
  embedding/bias                        [D]
  cls_token                             [1, 1, D]      only with pool_type="tok"
  pos_embedding                         [1, N, D]      N = (S/P)^2 (+1 with "tok")
  encoder/blocks/{i}/ln1/{scale,bias}   [D]
  encoder/blocks/{i}/attn/query/kernel  [D, H, K]      likewise key/ and value/
  encoder/blocks/{i}/attn/query/bias    [H, K]
  encoder/blocks/{i}/attn/out/kernel    [H, K, D]
  encoder/blocks/{i}/attn/out/bias      [D]
  encoder/blocks/{i}/ln2/{scale,bias}   [D]
  encoder/blocks/{i}/mlp/fc1/kernel     [D, M]         and fc1/bias [M]
  encoder/blocks/{i}/mlp/fc2/kernel     [M, D]         and fc2/bias [D]
  encoder/norm/{scale,bias}             [D]            the final LayerNorm
  head/kernel                           [D, num_classes], head/bias [num_classes]
  point_head/kernel                     [F, 2 * num_points]   point_head="linear"
  point_head/bias                       [2 * num_points]
  point_head/fc1/{kernel,bias}          [F, D]                point_head="mlp"
  point_head/fc2/{kernel,bias}          [D, 2 * num_points]
  point_head/{kernel,bias}              [D, num_points]       point_head="softargmax"

The point head's 2 * num_points outputs are laid out (x0, y0, x1, y1, ...).

With `scan_layers=True` the blocks are one module whose parameters are stacked along a leading
layer axis: `encoder/blocks/{i}/X [shape]` becomes `encoder/blocks/X [depth, shape]` (e.g.
`encoder/blocks/attn/query/kernel [depth, D, H, K]`). `TENSOR_PARALLEL_RULES` count dimensions
from the end, so they match both layouts; checkpoints of one layout do not restore into the
other.

Options for big models (config.model keys):
  scan_layers  False: a Python loop over the blocks (one compiled copy per block, readable
               per-layer paths). True: `nnx.scan` over stacked blocks: compile time and program
               size independent of depth, the usual choice for ViT-L and deeper. Not free on
               GPUs: ViT-B/16 compiled for an H200 moves 1.9x the bytes per step scanned
               (stacked parameters sliced and gradients written back per layer; BENCHMARKS.md,
               GPU).
  remat        "none"; "full" (recompute each block in the backward pass, keep only its input);
               or the name of a `jax.checkpoint_policies` policy, e.g. "dots_saveable" (keep
               matmul outputs, recompute the cheap elementwise ops) or
               "dots_with_no_batch_dims_saveable". Per block; less activation memory for more
               FLOPs.
  attention    "xla": the attention written out (`SelfAttention`) in [batch, heads, tokens,
               head_dim] layout, logits and softmax in float32, on every backend. "cudnn":
               `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's fused (flash)
               attention kernel; GPU only, and JAX raises where the kernel does not apply (CPU,
               TPU, float32 on some GPUs) rather than falling back. "cpu_fused": a fused
               attention kernel for XLA:CPU (`models/cpu_attention.py`, C++ through the XLA
               FFI, compiled on first use), float32 programs for CPU only; the demo config's
               choice.

Activation sharding: inside a mesh context (`jax.sharding.use_abstract_mesh`, which the
trainer's `ModelSpec.apply` sets) the activations are constrained by logical axis names
through `ACTIVATION_AXES`: the batch over ("data", "fsdp"), attention heads and the MLP hidden
units over "model", everything else replicated. Outside a mesh the model is unconstrained.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from luab_jax.models import cpu_attention

VARIANTS = {
    # Not a standard ViT size: small enough to train in minutes on a laptop CPU.
    "mu": dict(width=128, depth=4, mlp_dim=512, num_heads=4),
    "Ti": dict(width=192, depth=12, mlp_dim=768, num_heads=3),
    "S": dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "B": dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
}
POOL_TYPES = ("gap", "tok")
POINT_HEADS = ("linear", "mlp", "softargmax")
POINT_FEATURES = ("pooled", "gap", "cls", "cls+gap")
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "cpu_fused")

# Logical activation axis -> mesh axes (`luab_jax.sharding.AXES`); None = replicated.
ACTIVATION_AXES = {"batch": ("data", "fsdp"), "length": None, "embed": None,
                   "heads": "model", "head_dim": None, "mlp": "model"}

# Tensor parallelism (Megatron style) for the encoder blocks, for `config.sharding_rules`
# before a catch-all rule: query/key/value are split on their heads and `out` on its heads
# (the attention of each head stays on one device), fc1 on its outputs and fc2 on its inputs
# (the hidden units stay local); one all-reduce per attention and per MLP. Dimensions count
# from the end, so stacked (scan_layers) parameters match too. The point head's `fc1`/`fc2`
# are not under `mlp/` and fall through to the next rule.
TENSOR_PARALLEL_RULES = [
    (r"attn/(query|key|value)/kernel$", "tp:-2"),  # [D, H, K]
    (r"attn/(query|key|value)/bias$", "tp:-2"),    # [H, K]
    (r"attn/out/kernel$", "tp:-3"),                # [H, K, D]
    (r"mlp/fc1/kernel$", "tp:-1"),                 # [D, M]
    (r"mlp/fc1/bias$", "tp:-1"),                   # [M]
    (r"mlp/fc2/kernel$", "tp:-2"),                 # [M, D]
]

_xavier = nnx.initializers.xavier_uniform()
# Tiny non-zero MLP biases as in the ViT reference code: harmless, and they keep the biases
# from being exactly equal across units.
_mlp_bias = nnx.initializers.normal(stddev=1e-6)


def parse_variant(variant: str) -> dict:
  """"B/16" -> dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16)."""
  name, slash, patch = variant.partition("/")
  if name not in VARIANTS:
    raise ValueError(f"Unknown ViT variant {variant!r}: the name must be one of "
                     f"{list(VARIANTS)}, as in 'B/16'.")
  if not slash or not patch.isdigit() or int(patch) < 1:
    raise ValueError(f"ViT variant {variant!r} needs a patch size: 'NAME/PATCH', e.g. "
                     f"'{name}/16'.")
  return dict(VARIANTS[name], patch_size=int(patch))


def count_params(tree) -> int:
  """Number of parameters in a module, an NNX state, or any pytree of arrays/shape structs."""
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def partition_spec(logical_axes) -> jax.sharding.PartitionSpec:
  """The PartitionSpec of logical activation axes on the mesh in context (`constrain`)."""
  mesh = jax.sharding.get_abstract_mesh()
  spec = []
  for name in logical_axes:
    axes = ACTIVATION_AXES[name] if name is not None else None
    axes = (axes,) if isinstance(axes, str) else (axes or ())
    axes = tuple(axis for axis in axes if axis in mesh.axis_names)
    spec.append(axes or None)
  return jax.sharding.PartitionSpec(*spec)


def constrain(x, logical_axes):
  """Sharding constraint by logical axis names, inside a mesh context; identity outside one.

  Mesh axes a logical name maps to but the mesh lacks are left out, so the same model runs on
  any of the trainer's meshes and eagerly without one.
  """
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, partition_spec(logical_axes))


# jax.checkpoint_policies entries that build a policy from arguments instead of being one.
_POLICY_FACTORIES = ("save_only_these_names", "save_any_names_but_these",
                     "save_anything_except_these_names", "save_and_offload_only_these_names",
                     "save_from_both_policies")


def remat_policy(remat: str):
  """The `jax.checkpoint` policy for a `remat` option; None for "full" (save nothing)."""
  if remat == "full":
    return None
  policy = getattr(jax.checkpoint_policies, remat, None)
  if remat.startswith("_") or not callable(policy) or remat in _POLICY_FACTORIES:
    raise ValueError(f"remat={remat!r}; use 'none', 'full' or a policy of "
                     f"jax.checkpoint_policies such as 'dots_saveable' or "
                     f"'dots_with_no_batch_dims_saveable'.")
  return policy


def to_input_range(images, dtype):
  """Images as the model's input: uint8 pixels -> [-1, 1] (big_vision's value range), in `dtype`.

  The input pipeline ships uint8 (a quarter of float32's bytes through the Grain workers and to
  the device) and the scaling runs here, on the device. Float images are taken as already in
  [-1, 1].
  """
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) * (2.0 / 255.0) - 1.0
  return images.astype(dtype)


# --- Building blocks with hand-written gradients ------------------------------------------------
# Each computes exactly the forward of the plain formulation (tests/test_vit.py checks values
# and gradients against it); only the backward pass is written differently. Which ones a program
# uses depends on the platform it is for (`_platform`):
# - CPU: all of them. XLA:CPU turns every reduction over tokens (a bias or LayerNorm parameter
#   gradient: a column sum over B * N rows) into a reduce-window + reduce pair that ran at
#   ~1 GB/s (7 ms for one [6272, 768] fc1 bias gradient), where the same sum as a matmul with a
#   ones vector takes 0.4 ms (oneDNN). (`add_position_embedding`, there for GPUs, makes no
#   measurable difference on CPU.)
# - TPU: all of them; an ahead-of-time TPU compile of ViT-B/16 needs no more memory with them
#   than with the plain formulas (BENCHMARKS.md, TPU). Step times not measured.
# - GPU: `gelu` and `add_position_embedding` only. LayerNorm and the bias additions keep
#   autodiff's gradients (`_autodiff_norms_and_biases`), which XLA:GPU fuses into kernels that
#   move fewer bytes: 124 GB per ViT-B/16 step at batch 256 against 138 GB with the hand-written
#   ones, where autodiff's GELU would move 135 (the step compiled for an H200 without one,
#   `benchmarks/gpu_hlo.py`; BENCHMARKS.md, GPU; step times not yet measured).


def _platform() -> str:
  """The platform the program being traced is for: that of the mesh the model runs in
  (`ModelSpec.apply` enters it; an ahead-of-time TPU compile's mesh says "tpu" on a CPU host),
  or JAX's default backend when there is no mesh (eager use, tests)."""
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.abstract_device is not None:
    return mesh.abstract_device.platform
  return jax.default_backend()


def _for_cpu() -> bool:
  """Whether the program being traced is for CPU (`_platform`)."""
  return _platform() == "cpu"


def _autodiff_norms_and_biases() -> bool:
  """Whether LayerNorm and bias additions use autodiff's gradients instead of the hand-written
  ones: for GPU programs (section comment above)."""
  return _platform() == "gpu"


def column_sum(x):
  """Sum of [..., F] over all leading axes, as ones[1, rows] @ x[rows, F]."""
  rows = x.reshape(-1, x.shape[-1])
  ones = jnp.ones((1, rows.shape[0]), x.dtype)
  return jnp.dot(ones, rows, preferred_element_type=jnp.float32)[0].astype(x.dtype)


def add_bias(x, bias):
  """x [..., F] + bias [F]; the bias gradient a `column_sum`, except in GPU programs."""
  if _autodiff_norms_and_biases():
    return x + bias
  return _add_bias_column_sum(x, bias)


@jax.custom_vjp
def _add_bias_column_sum(x, bias):
  return x + bias


def _add_bias_fwd(x, bias):
  return x + bias, None


def _add_bias_bwd(_, g):
  return g, column_sum(g)


_add_bias_column_sum.defvjp(_add_bias_fwd, _add_bias_bwd)


@jax.custom_vjp
def add_position_embedding(x, pos):
  """x [B, N, D] + pos [1, N, D], the gradient of `pos` a `column_sum` over the batch.

  As a reduction over the batch, XLA:GPU lays that gradient's operand out batch-minor, and
  with it the residual stream, which it then transposes back around every LayerNorm: 125
  transpose kernels moving 31 GB per ViT-B/16 step at batch 256 (compiled for an H200 without
  one, `benchmarks/gpu_hlo.py`; BENCHMARKS.md, GPU). As a matmul it leaves the layout alone.
  """
  return x + pos


def _add_position_embedding_fwd(x, pos):
  return x + pos, None


def _add_position_embedding_bwd(_, g):
  # [B, N, D] -> [B, N * D]: the batch becomes the rows `column_sum` adds up.
  return g, column_sum(g.reshape(g.shape[0], -1)).reshape(1, *g.shape[1:])


add_position_embedding.defvjp(_add_position_embedding_fwd, _add_position_embedding_bwd)


def dense(x, kernel, bias):
  """x [..., D] @ kernel [D, F] + bias [F] as one 2-D matmul.

  On XLA:CPU the backward pass of a 3-D [B, N, D] x [D, M] dot_general (the kernel gradient
  contracts two dimensions) ran slower than the same maths on [B * N, D] (an MLP's forward +
  backward: 273 vs 170 ms in a micro-benchmark); on GPU and TPU the reshape is free.
  """
  lead = x.shape[:-1]
  y = add_bias(x.reshape(-1, x.shape[-1]) @ kernel, bias)
  return y.reshape(*lead, -1)


def _tokenwise(linear: nnx.Linear, x):
  """An nnx.Linear applied through `dense` (same parameters and result)."""
  return dense(x, linear.kernel[...].astype(linear.dtype or x.dtype),
               linear.bias[...].astype(linear.dtype or x.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, epsilon):
  """LayerNorm over the last axis, as nnx.LayerNorm computes it (fast variance, float32 stats).

  The backward pass is the textbook one, with the scale and bias gradients as `column_sum`s.
  """
  return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.maximum(0.0, (x32 * x32).mean(-1, keepdims=True) - mean * mean)
  rstd = jax.lax.rsqrt(var + epsilon)
  y = (x32 - mean) * (rstd * scale) + bias
  return y.astype(x.dtype), (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, g):
  del epsilon
  x, mean, rstd, scale = residuals
  g = g.astype(jnp.float32)
  normed = (x.astype(jnp.float32) - mean) * rstd
  g_normed = g * scale
  dx = rstd * (g_normed - g_normed.mean(-1, keepdims=True)
               - normed * (g_normed * normed).mean(-1, keepdims=True))
  return (dx.astype(x.dtype), column_sum(g * normed).astype(scale.dtype),
          column_sum(g).astype(scale.dtype))


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nnx.LayerNorm):
  """nnx.LayerNorm (same parameters, same function) computed by `layer_norm`, except in GPU
  programs (`_autodiff_norms_and_biases`)."""

  def __call__(self, x):
    if _autodiff_norms_and_biases():
      return super().__call__(x)
    x, scale, bias = self.promote_dtype((x, self.scale[...], self.bias[...]), dtype=self.dtype)
    return layer_norm(x, scale, bias, self.epsilon)


_SQRT_HALF = float(np.sqrt(0.5))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


def _normal_cdf(x):
  """Phi(x) = (1 + erf(x / sqrt(2))) / 2, the form PyTorch's (timm's) GELU evaluates."""
  return 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


@jax.custom_vjp
def gelu(x):
  """Exact GELU x * Phi(x), as PyTorch (timm) computes it: x / 2 * (1 + erf(x / sqrt(2))).

  Not jax.nn.gelu(approximate=False), which writes Phi through erfc(-x / sqrt(2)): XLA:CPU
  evaluates erfc as erf plus a second polynomial branch and an exp: 2.7-3.8 ms per ViT-Ti/16 MLP
  activation [6272, 768] vs 1.0-1.1 ms through erf (BENCHMARKS.md, Train step). The two differ
  only in float32 rounding: at most 1.1e-6 from float64's GELU over [-10, 10] (erfc: 3.8e-7),
  where 1 + erf(x) cancels for large negative x; both are exact GELU, not the tanh
  approximation (4.7e-4 away).

  The backward recomputes Phi(x) + x phi(x) from x in one fusion, instead of autodiff keeping
  the forward's intermediates; the optimization barrier keeps XLA from merging that
  recomputation with the forward (common subexpression), which would split the fusions again.
  """
  return x * _normal_cdf(x)


def _gelu_fwd(x):
  return x * _normal_cdf(x), x


def _gelu_bwd(x, g):
  x = jax.lax.optimization_barrier(x)
  pdf = jnp.exp(-0.5 * x * x) * jnp.asarray(_INV_SQRT_2PI, x.dtype)
  return (g * (_normal_cdf(x) + x * pdf),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


# XLA:CPU runs a matmul with batch dimensions on one thread (68-90 GFLOP/s for ViT-Ti/16's
# q k^T at batch 32 on 2 cores, where a 2-D matmul of the same FLOPs reaches 179), but its
# runtime runs independent operations side by side. So a CPU program on one device computes
# the attention of CPU_ATTENTION_GROUPS slices of the batch as independent operations: that
# matmul alone 4.8 -> 3.8 ms in four slices; the ViT-Ti/16 train step 1.01-1.08x faster in
# three A/B runs (BENCHMARKS.md, Train step). Not on a multi-device mesh, where slices of the
# batch would cut across the devices' shards.
CPU_ATTENTION_GROUPS = 4


def _attention_groups(batch: int) -> int:
  """How many independent slices of the batch the attention is computed in (module comment)."""
  if not _for_cpu() or jax.sharding.get_abstract_mesh().size > 1:
    return 1
  return math.gcd(batch, CPU_ATTENTION_GROUPS)


def _attend(q, k, v, dtype):
  """softmax(q k^T) v over [B, H, N, K] (q already scaled); logits and softmax in float32."""
  logits = jnp.einsum("bhqk,bhsk->bhqs", q, k, preferred_element_type=jnp.float32)
  weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
  return jnp.einsum("bhqs,bhsk->bhqk", weights, v)


def _attend_in_slices(q, k, v, dtype):
  """`_attend` computed for `_attention_groups` slices of the batch apart (module comment)."""
  size = q.shape[0] // _attention_groups(q.shape[0])
  parts = [_attend(q[i:i + size], k[i:i + size], v[i:i + size], dtype)
           for i in range(0, q.shape[0], size)]
  return jnp.concatenate(parts)  # One part: no operation.


class SelfAttention(nnx.Module):
  """Multi-head self-attention with the parameter layout of flax's MultiHeadAttention.

  The projections keep flax's kernel shapes (query/key/value [D, H, K], out [H, K, D]), so
  checkpoints, parameter paths and sharding rules are those of `nnx.MultiHeadAttention`; the
  computation is written out because the layout matters for speed:

  "xla": query, key and value projected (`_project`) into [B, H, N, K] (heads before
    tokens), the layout in which both attention matmuls are plain batched matmuls over (B, H);
    logits and softmax in float32. On CPU one attention's forward + backward took 88 ms vs 116 ms
    for jax.nn.dot_product_attention on [B, N, H, K] inputs (micro-benchmark, ViT-Ti/16 sizes;
    with the patch-embedding and Dense changes: whole train step 1.12x faster, BENCHMARKS.md);
    on one CPU device it is computed for CPU_ATTENTION_GROUPS slices of the batch apart.
  "cudnn": jax.nn.dot_product_attention(implementation="cudnn") on [B, N, H, K], cuDNN's fused
    (flash) kernel; GPU only.
  "cpu_fused": `cpu_attention.attention` on [B, N, H, K], a fused kernel for XLA:CPU; float32
    programs for CPU only. The output projection is a 2-D `dense` on [B * N, H * K].
  """

  def __init__(self, width: int, num_heads: int, *, implementation: str, dtype, param_dtype,
               rngs: nnx.Rngs):
    head_dim = width // num_heads
    common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.query, self.key, self.value = (
        nnx.LinearGeneral(width, (num_heads, head_dim), kernel_init=_xavier,
                          bias_init=nnx.initializers.zeros, **common) for _ in range(3))
    self.out = nnx.LinearGeneral((num_heads, head_dim), width, axis=(-2, -1),
                                 kernel_init=_xavier, bias_init=nnx.initializers.zeros,
                                 **common)
    self.num_heads, self.head_dim, self.width = num_heads, head_dim, width
    self.implementation = implementation
    self.dtype = dtype

  def _project(self, linear: nnx.LinearGeneral, x, *, heads_first: bool):
    """[B, N, D] -> [B, H, N, K] (heads_first) or [B, N, H, K].

    For CPU (`_for_cpu`): a 2-D `dense` (its bias gradient a matmul), then the layout; 2-3 %
    faster per ViT-Ti/16 step than the einsum (1.94 vs 1.98 s, `benchmarks.ab_backward
    --variants all,-proj`, 12 alternating rounds). Elsewhere: one einsum straight into the layout,
    which XLA:TPU compiles with fewer temporaries (ViT-B/16 on v5e-64: 1.37 vs 1.50 GiB per
    chip, BENCHMARKS.md, TPU). Each projection stays its own matmul either way, so a kernel
    sharded over heads (tensor parallelism) gives a head-sharded output without resharding; one
    fused [D, 3 * H * K] matmul of the three kernels was no faster on CPU (2.07 vs 1.94 s per
    step, A/B in one process) and would reshard the concatenated kernel on a `model` axis.
    """
    kernel = linear.kernel[...].astype(self.dtype)
    bias = linear.bias[...].astype(self.dtype)
    if not _for_cpu():
      y = jnp.einsum(f"bnd,dhk->{'bhnk' if heads_first else 'bnhk'}", x, kernel)
      return y + (bias[:, None, :] if heads_first else bias)
    batch, length, width = x.shape
    y = dense(x, kernel.reshape(width, -1), bias.reshape(-1))
    y = y.reshape(batch, length, self.num_heads, self.head_dim)
    return y.transpose(0, 2, 1, 3) if heads_first else y

  def __call__(self, x):
    x = x.astype(self.dtype)
    if self.implementation == "cudnn":
      if _platform() != "gpu":
        raise ValueError(f"config.model.attention='cudnn' is cuDNN's attention for GPUs; this "
                         f"program is for {_platform()}. Use 'xla' (or 'cpu_fused' on CPU).")
      q, k, v = (constrain(self._project(p, x, heads_first=False),
                           ("batch", "length", "heads", "head_dim"))
                 for p in (self.query, self.key, self.value))
      mixed = jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
      mixed = constrain(mixed, ("batch", "length", "heads", "head_dim"))
      out = jnp.einsum("bnhk,hkd->bnd", mixed, self.out.kernel[...].astype(self.dtype))
    elif self.implementation == "cpu_fused":
      if not _for_cpu() or self.dtype != jnp.float32:
        raise ValueError(
            f"config.model.attention='cpu_fused' is a float32 kernel for CPU programs; this "
            f"program is for {_platform()} in {jnp.dtype(self.dtype).name}. Use 'xla' (or "
            f"'cudnn' on GPUs).")
      layout = ("batch", "length", "heads", "head_dim")
      q, k, v = (constrain(self._project(p, x, heads_first=False), layout)
                 for p in (self.query, self.key, self.value))
      # Laid out as `layout` says: shard_map's out_specs on a mesh, nothing to say without one.
      mixed = cpu_attention.attention(q, k, v, self.head_dim ** -0.5,
                                      spec=partition_spec(layout))
      batch, length = mixed.shape[:2]
      kernel = self.out.kernel[...].astype(self.dtype).reshape(-1, self.width)
      return dense(mixed.reshape(batch, length, -1), kernel,
                   self.out.bias[...].astype(self.dtype))
    else:
      q, k, v = (constrain(self._project(p, x, heads_first=True),
                           ("batch", "heads", "length", "head_dim"))
                 for p in (self.query, self.key, self.value))
      q = q * jnp.asarray(self.head_dim ** -0.5, q.dtype)
      mixed = _attend_in_slices(q, k, v, self.dtype)
      mixed = constrain(mixed, ("batch", "heads", "length", "head_dim"))
      out = jnp.einsum("bhnk,hkd->bnd", mixed, self.out.kernel[...].astype(self.dtype))
    return add_bias(out, self.out.bias[...].astype(self.dtype))


class Mlp(nnx.Module):
  """Dense -> GELU -> Dense, the transformer's feed-forward block."""

  def __init__(self, in_features: int, hidden: int, out_features: int, *, dtype, param_dtype,
               rngs: nnx.Rngs, out_kernel_init=_xavier, out_bias_init=_mlp_bias):
    common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = nnx.Linear(in_features, hidden, kernel_init=_xavier, bias_init=_mlp_bias,
                          **common)
    self.fc2 = nnx.Linear(hidden, out_features, kernel_init=out_kernel_init,
                          bias_init=out_bias_init, **common)

  def __call__(self, x):
    # Exact (erf) GELU, computed as timm computes it, so that ported weights behave the same.
    hidden = gelu(_tokenwise(self.fc1, x))
    if hidden.ndim == 3:  # Tokens [B, N, M]; the point head's [B, M] stays unconstrained.
      hidden = constrain(hidden, ("batch", "length", "mlp"))
    return _tokenwise(self.fc2, hidden)


class EncoderBlock(nnx.Module):
  """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

  def __init__(self, width: int, mlp_dim: int, num_heads: int, *, attention: str, dtype,
               param_dtype, rngs: nnx.Rngs):
    common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.ln1 = LayerNorm(width, **common)
    # Separate query/key/value/out projections: the layout of the flax and big_vision ViT
    # checkpoints, and each kernel can be sharded on its own.
    self.attn = SelfAttention(width, num_heads, implementation=attention, **common)
    self.ln2 = LayerNorm(width, **common)
    self.mlp = Mlp(width, mlp_dim, width, **common)

  def __call__(self, x):
    x = x + self.attn(self.ln1(x))
    x = x + self.mlp(self.ln2(x))
    return constrain(x, ("batch", "length", "embed"))


def _apply_block(block, x):
  return block(x)


class Encoder(nnx.Module):
  """The blocks, as a Python loop over a list or a scan over stacked blocks, + final LN."""

  def __init__(self, width: int, depth: int, mlp_dim: int, num_heads: int, *,
               scan_layers: bool, remat: str, attention: str, dtype, param_dtype,
               rngs: nnx.Rngs):
    common = dict(dtype=dtype, param_dtype=param_dtype)
    block_args = (width, mlp_dim, num_heads)
    self.scan_layers = scan_layers
    self.remat = remat
    if scan_layers:
      # One block created `depth` times under vmap: its parameters gain a leading layer axis,
      # and each layer draws its own initialisation keys.
      @nnx.split_rngs(splits=depth)
      @nnx.vmap(in_axes=0, out_axes=0)
      def create(rngs):
        return EncoderBlock(*block_args, attention=attention, **common, rngs=rngs)
      self.blocks = create(rngs)
    else:
      # nnx.List, not a Python list: this flax version only treats modules inside NNX
      # containers as part of the state.
      self.blocks = nnx.List([EncoderBlock(*block_args, attention=attention, **common,
                                           rngs=rngs) for _ in range(depth)])
    self.norm = LayerNorm(width, **common, rngs=rngs)

  def __call__(self, x):
    apply = _apply_block
    if self.remat != "none":
      apply = nnx.remat(_apply_block, policy=remat_policy(self.remat))
    if self.scan_layers:
      x = nnx.scan(apply, in_axes=(0, nnx.Carry), out_axes=nnx.Carry)(self.blocks, x)
    else:
      for block in self.blocks:
        x = apply(block, x)
    return self.norm(x)


class ViT(nnx.Module):
  """ViT classifier with a point-regression head; see the module docstring.

  Args:
    num_classes: size of the classification head.
    variant: "NAME/PATCH", NAME in VARIANTS.
    width, depth, mlp_dim, num_heads: overrides of the variant's values.
    image_size: side S of the square input images; S must be divisible by the patch size.
    pool_type: "gap" (mean of the patch tokens) or "tok" (a prepended CLS token).
    num_points: points regressed per image.
    point_head: "linear", "mlp" (Dense(width) -> GELU -> Dense), or "softargmax" (a logit
      per patch token; the point is the softmax-weighted mean of the patch centres, so the
      head has to find the object's tokens; reads the patch tokens, not `point_features`).
    point_features: "pooled", "gap", "cls" or "cls+gap" ("cls*" need pool_type="tok").
    dtype: compute dtype (float32 or bfloat16); logits and points are returned in float32.
    param_dtype: dtype of the parameters.
    scan_layers, remat, attention: options for big models, see the module docstring.
    head_zero_init: zero-initialise the output kernels of both heads (big_vision's
      head_zero_init), so that the untrained heads do not push random gradients into the
      backbone. The point bias starts at 0.5 either way: the image centre, the best constant
      guess for points in [0, 1].
    rngs: parameter initialisation randomness (only `rngs.params` is used).
  """

  def __init__(self, *, num_classes: int, variant: str = "B/16", width: int | None = None,
               depth: int | None = None, mlp_dim: int | None = None,
               num_heads: int | None = None, image_size: int, pool_type: str = "gap",
               num_points: int = 1, point_head: str = "linear",
               point_features: str = "pooled", dtype=jnp.float32, param_dtype=jnp.float32,
               head_zero_init: bool = True, scan_layers: bool = False, remat: str = "none",
               attention: str = "xla", rngs: nnx.Rngs):
    size = parse_variant(variant)
    overrides = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
    size.update({k: v for k, v in overrides.items() if v is not None})
    width, patch = size["width"], size["patch_size"]

    if image_size % patch:
      raise ValueError(f"image_size={image_size} is not divisible by the patch size {patch} "
                       f"(variant {variant!r}).")
    if width % size["num_heads"]:
      raise ValueError(f"width={width} is not divisible by num_heads={size['num_heads']}.")
    if pool_type not in POOL_TYPES:
      raise ValueError(f"pool_type={pool_type!r}; use one of {POOL_TYPES}.")
    if point_head not in POINT_HEADS:
      raise ValueError(f"point_head={point_head!r}; use one of {POINT_HEADS}.")
    if point_features not in POINT_FEATURES:
      raise ValueError(f"point_features={point_features!r}; use one of {POINT_FEATURES}.")
    if point_features.startswith("cls") and pool_type != "tok":
      raise ValueError(f"point_features={point_features!r} reads the CLS token, which only "
                       f"exists with pool_type='tok' (got pool_type={pool_type!r}).")
    if attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention={attention!r}; use one of {ATTENTION_IMPLEMENTATIONS}.")
    if remat != "none":
      remat_policy(remat)  # Fails now, not at the first call, on an unknown policy.
    if num_classes < 1 or num_points < 1:
      raise ValueError(f"num_classes={num_classes} and num_points={num_points} must be >= 1.")

    self.image_size = image_size
    self.patch_size = patch
    self.width = width
    self.pool_type = pool_type
    self.num_points = num_points
    self.point_features = point_features
    self.point_head_kind = point_head
    self.dtype = dtype
    common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    self.embedding = nnx.Conv(3, width, kernel_size=(patch, patch), strides=(patch, patch),
                              padding="VALID", **common)
    num_tokens = (image_size // patch) ** 2
    if pool_type == "tok":
      self.cls_token = nnx.Param(jnp.zeros((1, 1, width), param_dtype))
      num_tokens += 1
    self.pos_embedding = nnx.Param(nnx.initializers.normal(stddev=0.02)(
        rngs.params(), (1, num_tokens, width), param_dtype))
    self.encoder = Encoder(width, size["depth"], size["mlp_dim"], size["num_heads"],
                           scan_layers=scan_layers, remat=remat, attention=attention, **common)

    out_init = nnx.initializers.zeros if head_zero_init else nnx.initializers.lecun_normal()
    self.head = nnx.Linear(width, num_classes, kernel_init=out_init, **common)
    point_in = 2 * width if point_features == "cls+gap" else width
    centre = nnx.initializers.constant(0.5)
    if point_head == "linear":
      self.point_head = nnx.Linear(point_in, 2 * num_points, kernel_init=out_init,
                                   bias_init=centre, **common)
    elif point_head == "softargmax":
      # One logit per patch token and point; the point is the softmax-weighted mean of the
      # patch centres. Zero init = uniform weights = the image centre.
      self.point_head = nnx.Linear(width, num_points, kernel_init=out_init, **common)
    else:
      self.point_head = Mlp(point_in, width, 2 * num_points, out_kernel_init=out_init,
                            out_bias_init=centre, **common)

  def __call__(self, images) -> dict:
    expected = (self.image_size, self.image_size, 3)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
      raise ValueError(f"ViT expects images [B, {', '.join(map(str, expected))}]; got shape "
                       f"{tuple(images.shape)}.")
    x = self._embed_patches(to_input_range(images, self.dtype))  # [B, N, D]
    batch = x.shape[0]
    if self.pool_type == "tok":
      cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (batch, 1, self.width))
      x = jnp.concatenate([cls, x], axis=1)
    x = constrain(add_position_embedding(x, self.pos_embedding[...].astype(x.dtype)),
                  ("batch", "length", "embed"))
    x = self.encoder(x)

    if self.pool_type == "tok":
      cls, patches = x[:, 0], x[:, 1:]
    else:
      cls, patches = None, x
    gap = patches.mean(axis=1)
    pooled = cls if self.pool_type == "tok" else gap

    # Losses are computed in float32, whatever the compute dtype.
    logits = self.head(pooled).astype(jnp.float32)
    if self.point_head_kind == "softargmax":
      points = self._softargmax_points(patches)
    else:
      point_in = {"pooled": pooled, "gap": gap, "cls": cls}.get(self.point_features)
      if self.point_features == "cls+gap":
        point_in = jnp.concatenate([cls, gap], axis=-1)
      points = self.point_head(point_in).astype(jnp.float32)
    return {"logits": logits,
            "points": points.reshape(batch, self.num_points, 2),
            "pre_logits": pooled}

  def _embed_patches(self, images):
    """The stride-P convolution of `embedding`, computed as one matmul over flattened patches.

    Same parameters and result as `self.embedding(images)`; XLA:CPU's strided-convolution
    kernel gradient took 70 ms vs 37 ms for the matmul (ViT-Ti/16, batch 32, micro-benchmark).
    """
    batch, size, p = images.shape[0], self.image_size, self.patch_size
    grid = size // p
    patches = images.reshape(batch, grid, p, grid, p, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(batch * grid * grid, p * p * 3)  # Row-major tokens, (P, P, 3).
    kernel = self.embedding.kernel[...].astype(self.dtype).reshape(p * p * 3, self.width)
    x = patches @ kernel + self.embedding.bias[...].astype(self.dtype)
    return x.reshape(batch, grid * grid, self.width)

  def _softargmax_points(self, patches):
    """[B, N, D] patch tokens -> [B, num_points, 2]: expected patch centre under a softmax."""
    grid = self.image_size // self.patch_size
    centres = (jnp.arange(grid, dtype=jnp.float32) + 0.5) / grid
    xs, ys = jnp.meshgrid(centres, centres)  # Row-major tokens: x varies fastest.
    positions = jnp.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)  # [N, 2] as (x, y).
    weights = jax.nn.softmax(self.point_head(patches).astype(jnp.float32), axis=1)  # [B, N, P]
    return jnp.einsum("bnp,nc->bpc", weights, positions)


# The name the trainer looks up: `luab_jax.models.{config.model_name}.Model`.
Model = ViT
