"""The train step alone: gradient accumulation equals the big batch; the EMA of the weights."""

import jax
import numpy as np
import optax
import pytest

from luab_jax import losses
from luab_jax import optim
from luab_jax import sharding as sharding_lib
from luab_jax import train_state as train_state_lib
from luab_jax import train_step
from tests.test_train import _config

# Float32 sums in another order: the losses and the gradient norm agree to ~1e-7 relative. The
# first AdamW update is about lr * g / (|g| + eps), i.e. lr * sign(g): for the few weights whose
# gradient is ~eps a rounding difference moves it by a fraction of lr, so the parameters after
# the step are compared with an absolute tolerance of lr / 20 (most differ by < 1e-8).
_LOSS_RTOL = 1e-5
_PARAM_ATOL = 5e-5


def _batch(config, batch_size, seed=0):
  """A random train batch with weight-0 examples, missing points and skipped clicks."""
  rng = np.random.default_rng(seed)
  size, p = config.model.image_size, config.model.num_points
  weight = np.ones(batch_size, np.float32)
  weight[[1, 6]] = 0.0
  point_weight = (rng.uniform(size=(batch_size, p)) < 0.6).astype(np.float32)
  return {"image": rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32),
          "label": rng.integers(0, config.num_classes, batch_size).astype(np.int32),
          "points": rng.uniform(size=(batch_size, p, 2)).astype(np.float32),
          "point_weight": point_weight, "weight": weight,
          "bad_points": rng.integers(0, 2, batch_size).astype(np.int32)}


def _one_step(config, mesh, batch):
  spec = train_state_lib.model_spec(config, mesh)
  tx, schedule = optim.make_optimizer(config.optax, 10, 0)
  abstract = train_state_lib.abstract_train_state(spec, tx,
                                                  ema=config.get("ema_decay") is not None)
  shardings = train_state_lib.train_state_shardings(abstract, config, mesh)
  state = train_state_lib.init_train_state(spec, tx, 0, shardings)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  step = train_step.jit_train_step(train_step.make_train_step(config, spec, tx, schedule),
                                   shardings, batch_sharding, mesh)
  state, metrics = step(state, sharding_lib.to_global(batch, batch_sharding))
  return jax.device_get(state), jax.device_get(metrics)


# One of the four cases by default; all with -m slow.
@pytest.mark.parametrize("normalize,devices", [
    ("valid", 8), pytest.param("batch", 1, marks=pytest.mark.slow),
    pytest.param("valid", 1, marks=pytest.mark.slow),
    pytest.param("batch", 8, marks=pytest.mark.slow)])
def test_micro_batches_equal_the_big_batch(tiny_data_dir, normalize, devices):
  config = _config(tiny_data_dir)
  config.loss.point_normalize = normalize
  config.optax.lr = 1e-3
  mesh = sharding_lib.make_mesh([("data", devices), ("fsdp", 1), ("model", 1)],
                                jax.devices()[:devices])
  batch = _batch(config, 32)
  big_state, big = _one_step(config, mesh, batch)
  config.grad_accum_steps = 4
  acc_state, acc = _one_step(config, mesh, batch)
  for key in ("loss", "classification_loss", "point_loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(acc[key], big[key], rtol=_LOSS_RTOL, err_msg=key)
  for key in ("data/skipped_images", "data/bad_points", "points_per_image"):
    assert acc[key] == big[key], key
  diffs = jax.tree.map(lambda a, b: np.abs(a - b).max(), acc_state["params"],
                       big_state["params"])
  print(f"normalize={normalize} devices={devices}: loss {big['loss']:.8f} vs {acc['loss']:.8f}, "
        f"grad_norm {big['grad_norm']:.8f} vs {acc['grad_norm']:.8f}, "
        f"max |param diff| {max(jax.tree.leaves(diffs)):.2e}, median over tensors "
        f"{np.median(jax.tree.leaves(diffs)):.2e}")
  assert max(jax.tree.leaves(diffs)) < _PARAM_ATOL


def test_grad_accum_steps_must_divide_the_batch_per_device(tiny_data_dir):
  config = _config(tiny_data_dir, grad_accum_steps=3)
  with pytest.raises(ValueError, match="config.grad_accum_steps=3"):
    train_step.check_config(config, 16)
  config.grad_accum_steps = 0
  with pytest.raises(ValueError, match="config.grad_accum_steps=0"):
    train_step.check_config(config)


def test_ema_follows_the_parameters(tiny_data_dir):
  config = _config(tiny_data_dir, ema_decay=0.9)
  mesh = sharding_lib.make_mesh([("data", 1), ("fsdp", 1), ("model", 1)], jax.devices()[:1])
  spec = train_state_lib.model_spec(config, mesh)
  tx, schedule = optim.make_optimizer(config.optax, 10, 0)
  abstract = train_state_lib.abstract_train_state(spec, tx, ema=True)
  shardings = train_state_lib.train_state_shardings(abstract, config, mesh)
  state = train_state_lib.init_train_state(spec, tx, 0, shardings)
  init = jax.device_get(state["params"])
  step = train_step.jit_train_step(train_step.make_train_step(config, spec, tx, schedule),
                                   shardings, sharding_lib.batch_sharding(mesh), mesh)
  # The first update: decay min(0.9, 1 / 10) (the warm-up), so the EMA moves 90 % of the way.
  state, _ = step(state, _batch(config, 16))
  state = jax.device_get(state)
  expected = optax.incremental_update(state["params"], init, step_size=0.9)
  for got, want in zip(jax.tree.leaves(state["ema_params"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(state["params"]),
                                                  jax.tree.leaves(init))) > 1e-4
  assert [float(train_step.ema_decay_at(0.9, t)) for t in (0, 8, 80, 10_000)] == pytest.approx(
      [0.1, 0.5, 0.9, 0.9])
  assert float(train_step.ema_decay_at(0.9999, 28_000)) == pytest.approx(28_001 / 28_010)


def test_the_configured_smooth_l1_threshold_reaches_the_point_loss(tiny_data_dir):
  config = _config(tiny_data_dir)
  config.loss.point_loss = "smooth_l1"
  batch = _batch(config, 8)
  rng = np.random.default_rng(1)
  out = {"logits": rng.normal(size=(8, config.num_classes)).astype(np.float32),
         "points": rng.uniform(size=batch["points"].shape).astype(np.float32)}
  got = {}
  for beta in (0.1, 1.0):
    config.loss.point_smooth_l1_beta = beta
    got[beta] = float(train_step.weighted_losses(config, out, batch)["point_loss"])
    want = losses.masked_point_loss(out["points"], batch["points"], batch["point_weight"],
                                    example_weight=batch["weight"], smooth_l1_beta=beta)
    np.testing.assert_allclose(got[beta], float(want), rtol=1e-6)
  assert got[0.1] != got[1.0]


@pytest.mark.parametrize("scan_layers", [False, True])
def test_weight_decay_applies_to_kernels_only(tiny_data_dir, scan_layers):
  """Scanned layers stack LayerNorm scales and biases to [depth, D], and query/key/value
  biases are [H, K]: a mask by rank decayed them."""
  config = _config(tiny_data_dir)
  config.model.scan_layers = scan_layers
  params = train_state_lib.model_spec(config).abstract_params
  mask = optim.decay_mask(params)
  flat = {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"): decayed
          for path, decayed in jax.tree_util.tree_leaves_with_path(mask)}
  decayed = sorted(name for name, on in flat.items() if on)
  assert decayed and all(name.endswith("/kernel") for name in decayed), decayed
  assert all(on for name, on in flat.items() if name.endswith("/kernel"))
  for name in ("pos_embedding", "ln1/scale", "attn/query/bias", "mlp/fc1/bias", "head/bias"):
    assert any(name in n for n in flat), (name, sorted(flat))
    assert not any(on for n, on in flat.items() if name in n), name
  # The mask optax applies: a step with zero gradients moves decayed parameters only.
  config.optax.weight_decay, config.optax.grad_clip_norm = 0.5, None
  tx, _ = optim.make_optimizer(config.optax, 10, 0)
  ones = jax.tree.map(lambda p: np.ones(p.shape, p.dtype), params)
  updates, _ = tx.update(jax.tree.map(np.zeros_like, ones), tx.init(ones), ones)
  moved = {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"):
           bool(np.any(u != 0))
           for path, u in jax.tree_util.tree_leaves_with_path(updates)}
  assert moved == flat
