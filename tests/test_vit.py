"""The ViT: variants, output shapes per option, dtypes, exact size, the trainer's functional use."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from luab_jax import sharding
from luab_jax.models import vit

# Tiny sizes: every test here compiles or runs eagerly in well under a second on a CPU.
_TINY = dict(variant="mu/8", width=32, depth=2, mlp_dim=64, num_heads=2, image_size=16)


def _model(seed=0, **overrides):
  return vit.ViT(**{"num_classes": 5, **_TINY, **overrides}, rngs=nnx.Rngs(seed))


def _images(batch=2, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, 16, 16, 3))


def _by_name(state):
  """{"head/kernel": array, ...} with the trainer's own path naming."""
  return {sharding.path_name(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def test_parse_variant():
  assert vit.parse_variant("B/16") == dict(width=768, depth=12, mlp_dim=3072, num_heads=12,
                                           patch_size=16)
  assert vit.parse_variant("mu/8") == dict(width=128, depth=4, mlp_dim=512, num_heads=4,
                                           patch_size=8)
  with pytest.raises(ValueError, match="Q/16.*'Ti'"):
    vit.parse_variant("Q/16")
  with pytest.raises(ValueError, match="patch size"):
    vit.parse_variant("B")


@pytest.mark.parametrize("pool_type,point_features", [
    ("gap", "pooled"), ("gap", "gap"),
    ("tok", "pooled"), ("tok", "gap"), ("tok", "cls"), ("tok", "cls+gap")])
@pytest.mark.parametrize("point_head,num_points", [("linear", 1), ("mlp", 3)])
def test_output_shapes(pool_type, point_features, point_head, num_points):
  model = _model(pool_type=pool_type, point_features=point_features, point_head=point_head,
                 num_points=num_points)
  out = model(_images())
  assert out["logits"].shape == (2, 5) and out["logits"].dtype == jnp.float32
  assert out["points"].shape == (2, num_points, 2) and out["points"].dtype == jnp.float32
  assert out["pre_logits"].shape == (2, 32)
  names = _by_name(nnx.state(model, nnx.Param))
  assert ("cls_token" in names) == (pool_type == "tok")
  point_in = 64 if point_features == "cls+gap" else 32
  first_point_kernel = "point_head/kernel" if point_head == "linear" else "point_head/fc1/kernel"
  assert names[first_point_kernel].shape[0] == point_in


@pytest.mark.parametrize("overrides,message", [
    (dict(point_features="cls"), "pool_type='tok'"),
    (dict(point_features="cls+gap"), "pool_type='tok'"),
    (dict(point_features="avg"), "point_features"),
    (dict(pool_type="max"), "pool_type"),
    (dict(point_head="conv"), "point_head"),
    (dict(image_size=20), "20.*8"),
    (dict(num_heads=3), "num_heads"),
    (dict(variant="Q/8"), "Q/8"),
])
def test_invalid_options_raise(overrides, message):
  with pytest.raises(ValueError, match=message):
    _model(**overrides)


def test_wrong_image_size_raises():
  with pytest.raises(ValueError, match="16, 16, 3"):
    _model()(jnp.zeros((1, 24, 24, 3)))


def test_zero_init_heads_predict_constants():
  out = _model(num_points=2)(_images())
  np.testing.assert_array_equal(out["logits"], 0.0)
  np.testing.assert_array_equal(out["points"], 0.5)  # The image centre.
  out = _model(head_zero_init=False)(_images())
  assert np.all(np.std(np.asarray(out["logits"]), axis=0) > 0)


def test_bfloat16_compute_float32_params_and_outputs():
  model = _model(dtype=jnp.bfloat16, head_zero_init=False, pool_type="tok",
                 point_features="cls+gap", point_head="mlp")
  out = model(_images())
  assert out["logits"].dtype == jnp.float32 and out["points"].dtype == jnp.float32
  assert out["pre_logits"].dtype == jnp.bfloat16
  assert np.all(np.isfinite(out["logits"])) and np.all(np.isfinite(out["points"]))
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
  assert dtypes == {jnp.dtype(jnp.float32)}
  # Same parameters in float32: bfloat16 only perturbs the result slightly.
  reference = _model(head_zero_init=False, pool_type="tok", point_features="cls+gap",
                     point_head="mlp")(_images())
  np.testing.assert_allclose(out["logits"], reference["logits"], atol=0.1, rtol=0.1)


def _expected_vit_params(*, width, depth, mlp_dim, patch, image_size, num_classes, pool_type,
                         num_points):
  d, m = width, mlp_dim
  tokens = (image_size // patch) ** 2 + (1 if pool_type == "tok" else 0)
  embedding = patch * patch * 3 * d + d
  pos_and_cls = tokens * d + (d if pool_type == "tok" else 0)
  attention = 4 * (d * d + d)  # query, key, value, out: kernel + bias each.
  mlp = (d * m + m) + (m * d + d)
  layer_norms = 2 * (2 * d)
  encoder = depth * (attention + mlp + layer_norms) + 2 * d  # + the final LayerNorm.
  head = d * num_classes + num_classes
  point_head = d * 2 * num_points + 2 * num_points  # Linear, on the pooled features.
  return embedding + pos_and_cls + encoder + head + point_head


@pytest.mark.parametrize("pool_type", ["tok", "gap"])
def test_vit_b16_parameter_count(pool_type):
  # Shapes only: nnx.eval_shape allocates nothing, so the 86M parameters cost no memory.
  abstract = nnx.eval_shape(lambda: vit.ViT(num_classes=1000, variant="B/16", image_size=224,
                                            pool_type=pool_type, rngs=nnx.Rngs(0)))
  expected = _expected_vit_params(width=768, depth=12, mlp_dim=3072, patch=16, image_size=224,
                                  num_classes=1000, pool_type=pool_type, num_points=1)
  assert vit.count_params(abstract) == expected
  assert vit.count_params(nnx.split(abstract)[1]) == expected
  # Cross-check of the formula with the size usually quoted for ViT-B/16 ("86.6M"): the
  # classifier alone, CLS-token pooling, no point head.
  without_point_head = expected - (768 * 2 + 2)
  if pool_type == "tok":
    assert round(without_point_head / 1e6, 1) == 86.6


def test_parameter_paths_are_readable():
  model = _model(pool_type="tok", point_head="mlp")
  names = set(_by_name(nnx.split(model)[1]))
  for name in ["embedding/kernel", "pos_embedding", "cls_token", "encoder/norm/scale",
               "encoder/blocks/0/ln1/scale", "encoder/blocks/1/attn/query/kernel",
               "encoder/blocks/1/attn/out/kernel", "encoder/blocks/1/mlp/fc1/kernel",
               "encoder/blocks/1/mlp/fc2/bias", "head/kernel", "point_head/fc2/kernel"]:
    assert name in names, (name, sorted(names))
  assert not any("rng" in name or "cache" in name for name in names), sorted(names)


def test_functional_split_merge_jit_grad():
  """The trainer's pattern: abstract split, jitted init, merge inside jit, grads of the state."""
  kw = dict(num_classes=5, **_TINY, head_zero_init=False)
  abstract = nnx.eval_shape(lambda: vit.ViT(**kw, rngs=nnx.Rngs(0)))
  graphdef, abs_state = nnx.split(abstract)

  def init(seed):
    return nnx.split(vit.ViT(**kw, rngs=nnx.Rngs(seed)))[1]

  # The seed must be static: nnx.Rngs accepts a Python int or a traced jax.random.key, but not a
  # traced int (the trainer closes over the seed, which is the same thing).
  state = jax.jit(init, static_argnums=0)(0)
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
  assert (jax.tree.map(lambda x: (x.shape, x.dtype), abs_state) ==
          jax.tree.map(lambda x: (x.shape, x.dtype), state))
  # The eager module and the jitted init agree: same seed, same parameters (up to XLA fusing
  # the initialisers' arithmetic differently).
  np.testing.assert_allclose(_by_name(state)["pos_embedding"],
                             _by_name(init(0))["pos_embedding"], rtol=1e-6)

  def apply(state, images):
    return nnx.merge(graphdef, state)(images)

  images = _images()
  out = jax.jit(apply)(state, images)
  assert out["logits"].shape == (2, 5) and out["points"].shape == (2, 1, 2)

  @jax.jit
  def grads(state):
    return (jax.grad(lambda s: apply(s, images)["logits"].sum())(state),
            jax.grad(lambda s: apply(s, images)["points"].sum())(state))

  cls_grads, point_grads = map(_by_name, grads(state))
  assert set(cls_grads) == set(_by_name(state))
  for name in ("point_head/kernel", "point_head/bias"):
    assert not np.any(cls_grads[name]) and np.any(point_grads[name]), name
  assert not np.any(point_grads["head/kernel"]) and np.any(cls_grads["head/kernel"])
  # Both losses reach the backbone, down to the patch embedding.
  assert np.any(cls_grads["embedding/kernel"]) and np.any(point_grads["embedding/kernel"])


def test_position_embeddings_make_the_model_patch_order_aware():
  model = _model(head_zero_init=False)
  images = _images(batch=1)
  rolled = jnp.roll(images, 8, axis=2)  # Swaps the two columns of 8x8 patches.
  assert not np.allclose(model(images)["logits"], model(rolled)["logits"], atol=1e-4)
  # Control: without position embeddings, attention + average pooling cannot see the order,
  # so the difference above does come from the position embeddings.
  model.pos_embedding[...] = jnp.zeros_like(model.pos_embedding[...])
  np.testing.assert_allclose(model(images)["logits"], model(rolled)["logits"], atol=1e-5)


@pytest.mark.parametrize("pool_type", ["gap", "tok"])
def test_softargmax_head_points_at_the_weighted_patch_centres(pool_type):
  model = _model(pool_type=pool_type, point_head="softargmax", num_points=2)
  out = model(_images())
  assert out["points"].shape == (2, 2, 2) and out["points"].dtype == jnp.float32
  # Zero-initialised head: uniform weights over the patches -> the image centre.
  np.testing.assert_allclose(out["points"], 0.5, atol=1e-6)
  # Put all the weight of point 0 on the last patch token: bottom-right patch centre.
  grid = 16 // 8  # _TINY: 16 px images, patch 8.
  patches = jnp.zeros((1, grid * grid, 32)).at[0, -1, 0].set(100.0)
  model.point_head.kernel[...] = jnp.zeros((32, 2)).at[0, 0].set(1.0)
  np.testing.assert_allclose(model._softargmax_points(patches)[0, 0],  # pylint: disable=protected-access
                             [(grid - 0.5) / grid] * 2, atol=1e-4)


# ------------------------------------------------------------------ Options for big models.


def _stacked_like(scanned_state, unscanned_state):
  """The scanned model's state filled with the unscanned model's per-block parameters."""
  by_name = _by_name(unscanned_state)

  def fill(path, leaf):
    name = sharding.path_name(path)
    if not name.startswith("encoder/blocks/"):
      return by_name[name]
    rest = name[len("encoder/blocks/"):]
    return jnp.stack([by_name[f"encoder/blocks/{i}/{rest}"] for i in range(leaf.shape[0])])

  return jax.tree_util.tree_map_with_path(fill, scanned_state)


@pytest.mark.parametrize("options", [
    dict(remat="full"), dict(remat="dots_saveable"), dict(scan_layers=True),
    dict(scan_layers=True, remat="dots_with_no_batch_dims_saveable")])
def test_big_model_options_compute_the_same_function(options):
  kw = dict(head_zero_init=False, point_head="mlp", pool_type="tok", depth=3)
  reference = _model(**kw)
  graphdef, ref_state = nnx.split(reference)
  other_graphdef, other_state = nnx.split(_model(**kw, **options))
  if options.get("scan_layers"):
    names = _by_name(other_state)
    assert names["encoder/blocks/attn/query/kernel"].shape == (3, 32, 2, 16)
    assert not any(name.startswith("encoder/blocks/0/") for name in names)
    other_state = _stacked_like(other_state, ref_state)
  else:
    other_state = ref_state
  images = _images()

  def loss(graphdef, state):
    out = nnx.merge(graphdef, state)(images)
    return out["logits"].sum() + out["points"].sum(), out

  (ref_loss, ref_out), ref_grads = jax.jit(
      jax.value_and_grad(lambda s: loss(graphdef, s), has_aux=True))(ref_state)
  (got_loss, got_out), got_grads = jax.jit(
      jax.value_and_grad(lambda s: loss(other_graphdef, s), has_aux=True))(other_state)
  # Same math in another order (scan) or recomputed (remat): float32 round-off only.
  for key in ("logits", "points", "pre_logits"):
    np.testing.assert_allclose(got_out[key], ref_out[key], rtol=1e-5, atol=1e-5, err_msg=key)
  if options.get("scan_layers"):
    ref_grads = _stacked_like(got_grads, ref_grads)
  got, want = _by_name(got_grads), _by_name(ref_grads)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_unknown_big_model_options_raise():
  with pytest.raises(ValueError, match="remat='sometimes'.*dots_saveable"):
    _model(remat="sometimes")
  with pytest.raises(ValueError, match="remat='save_only_these_names'"):
    _model(remat="save_only_these_names")
  with pytest.raises(ValueError, match="attention='flash'.*cudnn"):
    _model(attention="flash")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU.")
def test_cudnn_attention_matches_xla_on_gpu():
  kw = dict(head_zero_init=False, dtype=jnp.bfloat16)
  reference = _model(**kw)
  fused = _model(**kw, attention="cudnn")
  got = jax.jit(lambda m: m(_images()))(fused)["logits"]
  want = jax.jit(lambda m: m(_images()))(reference)["logits"]
  np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05)  # bfloat16 compute.


def test_activation_constraints_follow_the_mesh_and_keep_the_function():
  model = _model(head_zero_init=False)
  graphdef, state = nnx.split(model)
  images = _images(batch=8)
  want = model(images)["logits"]
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("model", 2)])

  def apply(state, images):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return nnx.merge(graphdef, state)(images)["logits"]

  lowered = jax.jit(apply).lower(state, images).as_text()
  # The logical names became mesh axes: the batch over data+fsdp, heads / MLP units over model.
  # q, k, v and the attention output, laid out [batch, heads, tokens, head_dim].
  assert '[{"data", "fsdp"}, {"model"}, {}, {}]> : tensor<8x2x4x16' in lowered
  assert '[{"data", "fsdp"}, {}, {"model"}]> : tensor<8x4x64' in lowered  # MLP hidden units.
  assert '[{"data", "fsdp"}, {}, {}]> : tensor<8x4x32' in lowered  # The residual stream.
  np.testing.assert_allclose(jax.jit(apply)(state, images), want, rtol=1e-5, atol=1e-6)
  # Without a mesh the constraint is the identity.
  x = jnp.ones((4, 3, 8))
  assert vit.constrain(x, ("batch", "length", "embed")) is x


def test_attention_is_flax_multi_head_attention_with_the_same_parameters():
  """The written-out attention computes what nnx.MultiHeadAttention computes, from the same
  parameter tree: checkpoints and sharding rules of the flax layout stay valid."""
  width, heads = 32, 2
  ours = vit.SelfAttention(width, heads, implementation="xla", dtype=jnp.float32,
                           param_dtype=jnp.float32, rngs=nnx.Rngs(0))
  # Non-zero biases, so that a misplaced bias shows.
  for name in ("query", "key", "value", "out"):
    bias = getattr(ours, name).bias
    bias[...] = jax.random.normal(jax.random.key(len(name)), bias.shape)
  flax_attention = nnx.MultiHeadAttention(num_heads=heads, in_features=width, decode=False,
                                          rngs=nnx.Rngs(1))
  ours_state = nnx.state(ours, nnx.Param)
  assert (jax.tree.map(jnp.shape, ours_state)
          == jax.tree.map(jnp.shape, nnx.state(flax_attention, nnx.Param)))
  nnx.update(flax_attention, ours_state)
  x = jax.random.normal(jax.random.key(2), (3, 7, width))
  np.testing.assert_allclose(ours(x), flax_attention(x), rtol=1e-5, atol=1e-5)
  # And the same gradients (2-D projections, bias gradients as matmuls).
  w = jax.random.normal(jax.random.key(3), (3, 7, width))
  loss = lambda module, x: (module(x) * w).sum()
  got, want = (nnx.grad(loss, argnums=(0, 1))(m, x) for m in (ours, flax_attention))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _attention_dots(apply, *args) -> int:
  return str(jax.make_jaxpr(apply)(*args)).count("dot_general")


def test_cpu_attention_in_batch_slices_computes_the_same(monkeypatch):
  """On one CPU device the attention runs per slice of the batch (independent matmuls that
  XLA:CPU runs side by side); values and gradients are those of one batched attention."""
  model = _model(head_zero_init=False)
  images = _images(batch=4)
  assert vit._attention_groups(4) == 4 and vit._attention_groups(6) == 2
  sliced_dots = _attention_dots(lambda x: model(x)["logits"], images)
  sliced_loss, _, sliced_grads = _model_loss_and_grads(model, images)
  monkeypatch.setattr(vit, "CPU_ATTENTION_GROUPS", 1)
  assert vit._attention_groups(4) == 1
  # Two matmuls per attention and per slice: 3 slices more, 2 blocks.
  assert sliced_dots - _attention_dots(lambda x: model(x)["logits"], images) == 2 * 3 * 2
  whole_loss, _, whole_grads = _model_loss_and_grads(model, images)
  np.testing.assert_allclose(sliced_loss, whole_loss, rtol=1e-6)
  _assert_same_grads(sliced_grads, whole_grads)


def test_attention_is_one_batched_computation_on_a_multi_device_mesh():
  """Slices of the batch would cut across the devices' shards: not sliced there."""
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("model", 2)])
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    assert vit._attention_groups(8) == 1
  assert vit._attention_groups(8) == 4  # No mesh: one CPU device.


def test_patch_embedding_is_the_strided_convolution():
  model = _model(head_zero_init=False)
  images = _images(batch=3)
  want = model.embedding(images).reshape(3, -1, _TINY["width"])
  np.testing.assert_allclose(model._embed_patches(images), want, rtol=1e-5, atol=1e-5)


def _loss_and_grads(fn, *args):
  """fn(*args) and the gradients of a random projection of it w.r.t. every argument."""
  w = jax.random.normal(jax.random.key(7), jax.eval_shape(fn, *args).shape)
  return fn(*args), jax.grad(lambda *a: (fn(*a) * w).sum(), argnums=range(len(args)))(*args)


def test_add_bias_and_dense_are_the_plain_formulas():
  """The hand-written backward (bias gradient as a matmul with ones) is the autodiff one."""
  x = jax.random.normal(jax.random.key(0), (3, 5, 8))
  kernel = jax.random.normal(jax.random.key(1), (8, 6))
  bias8, bias6 = (jax.random.normal(jax.random.key(2), (n,)) for n in (8, 6))
  for ours, plain, bias in ((vit.add_bias, lambda x, b: x + b, bias8),
                            (lambda x, b: vit.dense(x, kernel, b), lambda x, b: x @ kernel + b,
                             bias6)):
    got, want = _loss_and_grads(ours, x, bias), _loss_and_grads(plain, x, bias)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
    for a, b in zip(got[1], want[1], strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(vit.column_sum(x), x.sum((0, 1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_add_position_embedding_is_the_plain_sum(dtype):
  """The position embedding's gradient as a matmul over the batch is autodiff's sum."""
  x = jax.random.normal(jax.random.key(0), (3, 5, 8)).astype(dtype)
  pos = jax.random.normal(jax.random.key(1), (1, 5, 8)).astype(dtype)
  got = _loss_and_grads(vit.add_position_embedding, x, pos)
  want = _loss_and_grads(lambda x, pos: x + pos, x, pos)
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=tolerance,
                               atol=tolerance)


@pytest.mark.parametrize("platform, hand_written", [("cpu", True), ("tpu", True),
                                                     ("gpu", False)])
def test_layer_norm_and_bias_gradients_by_platform(monkeypatch, platform, hand_written):
  """GPU programs differentiate LayerNorm and bias additions with autodiff; CPU and TPU
  programs with the hand-written passes, whose parameter gradients are matmuls (`column_sum`)
  where autodiff's are reductions."""
  monkeypatch.setattr(vit, "_platform", lambda: platform)
  norm = vit.LayerNorm(8, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 3, 8))
  bias = jnp.ones(8)
  for fn in (lambda x: vit.add_bias(x, bias), norm):
    traced = str(jax.make_jaxpr(jax.grad(lambda x: fn(x).sum()))(x))
    assert ("dot_general" in traced) == hand_written, traced


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_is_flax_layer_norm(dtype):
  """Same parameters, same values, same gradients as nnx.LayerNorm (scale and bias not 1/0)."""
  ours = vit.LayerNorm(16, dtype=dtype, rngs=nnx.Rngs(0))
  ours.scale[...] = jax.random.normal(jax.random.key(1), (16,))
  ours.bias[...] = jax.random.normal(jax.random.key(2), (16,))
  flax_norm = nnx.LayerNorm(16, dtype=dtype, rngs=nnx.Rngs(0))
  nnx.update(flax_norm, nnx.state(ours))
  x = (3 * jax.random.normal(jax.random.key(3), (4, 9, 16)) + 1).astype(dtype)
  w = jax.random.normal(jax.random.key(4), x.shape)
  loss = lambda module, x: (module(x).astype(jnp.float32) * w).sum()
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  assert ours(x).dtype == flax_norm(x).dtype == dtype
  np.testing.assert_allclose(ours(x).astype(jnp.float32), flax_norm(x).astype(jnp.float32),
                             rtol=tol, atol=tol)
  got, want = (nnx.grad(loss, argnums=(0, 1))(m, x) for m in (ours, flax_norm))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(a.astype(jnp.float32), b.astype(jnp.float32),
                               rtol=tol * 10, atol=tol * 10)


def test_gelu_is_the_exact_gelu():
  """Exact (erf) GELU to float32 rounding, far out too: against float64, and against
  jax.nn.gelu(approximate=False) (erfc form); the tanh approximation is 4.7e-4 away."""
  x = jnp.concatenate([jnp.linspace(-12.0, 12.0, 1001),
                       jax.random.normal(jax.random.key(0), (1000,)) * 3])
  x64 = np.asarray(x, np.float64)
  cdf64 = 0.5 * (1.0 + np.vectorize(math.erf)(x64 / math.sqrt(2.0)))
  for gelu in (vit.gelu, jax.jit(vit.gelu)):  # Op by op and fused round differently.
    np.testing.assert_allclose(gelu(x), x64 * cdf64, rtol=0, atol=1.5e-6)
  exact = lambda x: jax.nn.gelu(x, approximate=False)
  np.testing.assert_allclose(vit.gelu(x), exact(x), rtol=0, atol=1.5e-6)
  grad64 = cdf64 + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
  grad = jax.jit(jax.grad(lambda x: vit.gelu(x).sum()))(x)
  np.testing.assert_allclose(grad, grad64, rtol=0, atol=1e-6)
  weighted = lambda f: jax.jit(jax.grad(lambda x: (f(x) * jnp.cos(x)).sum()))(x)
  np.testing.assert_allclose(weighted(vit.gelu), weighted(exact), rtol=1e-5, atol=1e-6)


def _model_loss_and_grads(model, images):
  """(loss, outputs, gradients by parameter name) of a loss on both of the model's outputs."""

  def loss(model, images):
    out = model(images)
    return (jnp.sin(out["logits"]).sum() + (out["points"] ** 2).sum()), out

  (value, out), grads = nnx.value_and_grad(loss, has_aux=True)(model, images)
  return value, out, _by_name(nnx.state(grads))


def _assert_same_grads(got, want):
  assert got.keys() == want.keys()
  for name in got:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_model_gradients_are_those_of_the_plain_formulation(monkeypatch):
  """The whole ViT with the hand-written backward passes vs the same ViT built from the plain
  formulas (x + b, nnx.LayerNorm, jax.nn.gelu, x @ kernel + b)."""
  model = _model(head_zero_init=False, point_head="softargmax")
  images = _images(batch=3)
  got_loss, got_out, got = _model_loss_and_grads(model, images)
  monkeypatch.setattr(vit, "add_bias", lambda x, b: x + b)
  monkeypatch.setattr(vit, "add_position_embedding", lambda x, pos: x + pos)
  monkeypatch.setattr(vit, "gelu", lambda x: jax.nn.gelu(x, approximate=False))
  monkeypatch.setattr(vit.LayerNorm, "__call__", nnx.LayerNorm.__call__)
  monkeypatch.setattr(vit, "dense", lambda x, kernel, bias: x @ kernel + bias)
  want_loss, want_out, want = _model_loss_and_grads(model, images)
  np.testing.assert_allclose(got_out["logits"], want_out["logits"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_out["points"], want_out["points"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  _assert_same_grads(got, want)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_programs_for_other_platforms_compute_the_same(monkeypatch, platform):
  """What GPU and TPU programs trace differently (`_project`'s einsum form; on GPU, LayerNorm
  and the bias additions with autodiff's gradients) equals the CPU program, gradients
  included."""
  model = _model(head_zero_init=False)
  images = _images(batch=2)
  cpu_loss, _, cpu_grads = _model_loss_and_grads(model, images)
  monkeypatch.setattr(vit, "_platform", lambda: platform)
  other_loss, _, other_grads = _model_loss_and_grads(model, images)
  np.testing.assert_allclose(other_loss, cpu_loss, rtol=1e-5)
  _assert_same_grads(other_grads, cpu_grads)
