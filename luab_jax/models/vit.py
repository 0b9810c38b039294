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

Outputs of `ViT(...)(images)`, images float [B, S, S, 3] already normalised, S = image_size:
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
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

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


def _attention(query, key, value, *, dtype=None, **unused_flax_kwargs):
  # nnx.MultiHeadAttention calls this with flax's dropout/mask arguments, none of which the ViT
  # uses. jax.nn.dot_product_attention computes the logits and the softmax in float32 also for
  # bfloat16 inputs, and can be swapped for a fused kernel on GPU.
  del unused_flax_kwargs
  out = jax.nn.dot_product_attention(query, key, value)
  return out.astype(dtype) if dtype is not None else out


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
    # Exact (erf) GELU as in the original ViT and timm, so that ported weights behave the same.
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class EncoderBlock(nnx.Module):
  """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

  def __init__(self, width: int, mlp_dim: int, num_heads: int, *, dtype, param_dtype,
               rngs: nnx.Rngs):
    common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.ln1 = nnx.LayerNorm(width, **common)
    # Separate query/key/value/out projections: the layout of the flax and big_vision ViT
    # checkpoints, and each kernel can be sharded on its own.
    self.attn = nnx.MultiHeadAttention(
        num_heads=num_heads, in_features=width, qkv_features=width, out_features=width,
        kernel_init=_xavier, attention_fn=_attention, decode=False, keep_rngs=False,
        **common)
    self.ln2 = nnx.LayerNorm(width, **common)
    self.mlp = Mlp(width, mlp_dim, width, **common)

  def __call__(self, x):
    x = x + self.attn(self.ln1(x))
    return x + self.mlp(self.ln2(x))


class Encoder(nnx.Module):
  """A plain stack of blocks (no scan: per-layer parameter paths stay readable) + final LN."""

  def __init__(self, width: int, depth: int, mlp_dim: int, num_heads: int, *, dtype,
               param_dtype, rngs: nnx.Rngs):
    common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # nnx.List, not a Python list: this flax version only treats modules inside NNX containers
    # as part of the state.
    self.blocks = nnx.List([EncoderBlock(width, mlp_dim, num_heads, **common)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, **common)

  def __call__(self, x):
    for block in self.blocks:
      x = block(x)
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
               head_zero_init: bool = True, rngs: nnx.Rngs):
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
    self.encoder = Encoder(width, size["depth"], size["mlp_dim"], size["num_heads"], **common)

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
    x = self.embedding(images.astype(self.dtype))  # [B, S/P, S/P, D]
    batch = x.shape[0]
    x = x.reshape(batch, -1, self.width)
    if self.pool_type == "tok":
      cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (batch, 1, self.width))
      x = jnp.concatenate([cls, x], axis=1)
    x = self.encoder(x + self.pos_embedding[...].astype(x.dtype))

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
