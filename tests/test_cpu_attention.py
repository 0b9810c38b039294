"""The fused CPU attention kernel (config.model.attention="cpu_fused"): values and gradients of
the written-out attention, on one device and on a mesh, and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from luab_jax import sharding
from luab_jax.models import cpu_attention
from luab_jax.models import vit


def _reference(q, k, v, scale):
  """The "xla" implementation's maths on [B, N, H, K]: `vit._attend` in [B, H, N, K]."""
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  return vit._attend(q * scale, k, v, jnp.float32).transpose(0, 2, 1, 3)


def _qkv(shape, seed=0, spread=1.0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q, k, v, w = (jax.random.normal(key, shape, jnp.float32) for key in keys)
  return q * spread, k, v, w


# Token counts that are not multiples of the vector width exercise the loops' tails; 197 is
# ViT-/16's at 224 px.
@pytest.mark.parametrize("shape", [(2, 5, 3, 8), (3, 17, 2, 16), (2, 197, 3, 64)])
def test_values_and_gradients_are_those_of_the_written_out_attention(shape):
  q, k, v, w = _qkv(shape)
  scale = shape[-1] ** -0.5

  def loss(attend):
    return jax.jit(jax.value_and_grad(
        lambda q, k, v: (attend(q, k, v, scale) * w).sum(), argnums=(0, 1, 2)))

  got_out = jax.jit(cpu_attention.attention, static_argnums=3)(q, k, v, scale)
  want_out = jax.jit(_reference, static_argnums=3)(q, k, v, scale)
  np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=2e-6)
  (got_loss, got_grads), (want_loss, want_grads) = (
      loss(cpu_attention.attention)(q, k, v), loss(_reference)(q, k, v))
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  for name, got, want in zip("qkv", got_grads, want_grads, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=f"d{name}")


def test_softmax_is_stable_for_large_logits():
  """Logits in the thousands: the row maximum is subtracted before exp, nothing overflows, and
  rows that put all their weight on one token return that token's value."""
  q, k, v, _ = _qkv((2, 9, 2, 8), spread=300.0)
  got = cpu_attention.attention(q, k, v, 1.0)
  assert bool(jnp.isfinite(got).all())
  np.testing.assert_allclose(got, _reference(q, k, v, 1.0), rtol=1e-5, atol=1e-5)


def test_nan_inputs_give_nan_outputs():
  q, k, v, _ = _qkv((1, 6, 1, 4))
  got = cpu_attention.attention(q.at[0, 2, 0, 1].set(jnp.nan), k, v, 0.5)
  assert bool(jnp.isnan(got[0, 2]).all()) and bool(jnp.isfinite(jnp.delete(got, 2, 1)).all())


def test_rejects_other_dtypes_and_shapes():
  q, k, v, _ = _qkv((1, 4, 2, 8))
  with pytest.raises(ValueError, match="float32 .B, N, H, K.*k is bfloat16"):
    cpu_attention.attention(q, k.astype(jnp.bfloat16), v, 1.0)
  with pytest.raises(ValueError, match="v is float32 \\(1, 4, 16\\)"):
    cpu_attention.attention(q, k, v.reshape(1, 4, 16), 1.0)


def _vit(attention, **overrides):
  return vit.ViT(num_classes=5, variant="mu/8", width=32, depth=2, mlp_dim=64, num_heads=2,
                 image_size=16, head_zero_init=False, attention=attention, **overrides,
                 rngs=nnx.Rngs(0))


def _loss_and_grads(model, images):
  def loss(model):
    out = model(images)
    return jnp.sin(out["logits"]).sum() + (out["points"] ** 2).sum()
  value, grads = nnx.value_and_grad(loss)(model)
  return value, {sharding.path_name(path): leaf for path, leaf
                 in jax.tree_util.tree_flatten_with_path(nnx.state(grads))[0]}


def _assert_same_loss_and_grads(fused, written_out, images):
  got_loss, got = _loss_and_grads(fused, images)
  want_loss, want = _loss_and_grads(written_out, images)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  assert got.keys() == want.keys()
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_vit_with_the_kernel_computes_the_xla_attention_function():
  """Same parameters (the implementation is not part of the parameter tree), same function."""
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  fused, written_out = _vit("cpu_fused"), _vit("xla")
  assert (jax.tree.map(jnp.shape, nnx.state(fused)) ==
          jax.tree.map(jnp.shape, nnx.state(written_out)))
  _assert_same_loss_and_grads(fused, written_out, images)


def test_runs_per_shard_on_a_multi_device_mesh():
  """Batch over data+fsdp and heads over model: each device runs the kernel on its shard, and
  the result is the single-device one (no gather of q, k, v)."""
  model = _vit("cpu_fused")
  graphdef, state = nnx.split(model)
  images = jax.random.normal(jax.random.key(2), (8, 16, 16, 3))
  want = model(images)["logits"]
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("model", 2)])

  def apply(state, images):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return nnx.merge(graphdef, state)(images)["logits"]

  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  lowered = jax.jit(apply).lower(state, images)
  # Per device: 8 / 4 examples and 2 / 2 heads of [B, N, H, K] = [8, 4, 2, 16].
  assert "tensor<2x4x1x16xf32>" in lowered.as_text()
  np.testing.assert_allclose(jax.jit(apply)(state, images), want, rtol=1e-5, atol=1e-5)


def test_other_platforms_and_dtypes_are_refused_with_the_config_key(monkeypatch):
  images = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(ValueError, match="attention='cpu_fused'.*in bfloat16"):
    _vit("cpu_fused", dtype=jnp.bfloat16)(images)
  monkeypatch.setattr(vit, "_platform", lambda: "tpu")
  with pytest.raises(ValueError, match="attention='cpu_fused'.*for tpu in float32"):
    _vit("cpu_fused")(images)


def test_missing_compiler_is_an_error_naming_the_config_key(monkeypatch, tmp_path):
  monkeypatch.setenv("LUAB_KERNEL_CACHE", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-luab")
  with pytest.raises(RuntimeError, match="'no-such-compiler-luab'.*attention='xla'"):
    cpu_attention.library_path()
  assert not list(tmp_path.iterdir())  # Nothing half-built left behind.


def test_the_library_is_built_once_per_source_and_cpu(monkeypatch, tmp_path):
  """Built into the cache on first use, reused afterwards (same path, not rebuilt)."""
  monkeypatch.setenv("LUAB_KERNEL_CACHE", str(tmp_path))
  built = cpu_attention.library_path()
  assert built.parent == tmp_path and built.exists()
  stamp = built.stat().st_mtime_ns
  assert cpu_attention.library_path() == built and built.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("options", [dict(scan_layers=True), dict(remat="full"),
                                     dict(remat="dots_saveable")])
def test_works_under_scan_and_rematerialisation(options):
  """Inside `nnx.scan` over the blocks and under `jax.checkpoint` (the FFI call recomputed in
  the backward pass) the kernel computes what the written-out attention computes there."""
  images = jax.random.normal(jax.random.key(3), (2, 16, 16, 3))
  _assert_same_loss_and_grads(_vit("cpu_fused", **options), _vit("xla", **options), images)
