"""Masked point loss and classification losses against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from luab_jax import losses

_PRED = jnp.array([[[0.5, 0.5]], [[0.0, 1.0]], [[0.2, 0.2]]])
_TARGET = jnp.array([[[0.7, 0.1]], [[-1.0, -1.0]], [[0.2, 0.5]]])
_WEIGHT = jnp.array([[1.0], [0.0], [1.0]])


def test_l1_valid_normalization_ignores_masked_points():
  # Per point: mean(|0.2|, |0.4|) = 0.3 and mean(0, 0.3) = 0.15; 2 valid points.
  loss = losses.masked_point_loss(_PRED, _TARGET, _WEIGHT, kind="l1", normalize="valid")
  np.testing.assert_allclose(loss, (0.3 + 0.15) / 2, rtol=1e-6)


def test_batch_normalization_divides_by_all_points():
  loss = losses.masked_point_loss(_PRED, _TARGET, _WEIGHT, kind="l1", normalize="batch")
  np.testing.assert_allclose(loss, (0.3 + 0.15) / 3, rtol=1e-6)


def test_l2_and_smooth_l1():
  l2 = losses.masked_point_loss(_PRED, _TARGET, _WEIGHT, kind="l2")
  np.testing.assert_allclose(l2, ((0.04 + 0.16) / 2 + 0.09 / 2) / 2, rtol=1e-5)
  # beta = 0.1: every |diff| here >= 0.1 except 0 -> |d| - 0.05.
  smooth = losses.masked_point_loss(_PRED, _TARGET, _WEIGHT, kind="smooth_l1", smooth_l1_beta=0.1)
  np.testing.assert_allclose(smooth, ((0.15 + 0.35) / 2 + (0.0 + 0.25) / 2) / 2, rtol=1e-5)


def test_masked_points_get_no_gradient():
  import jax  # pylint: disable=g-import-not-at-top
  grad = jax.grad(lambda p: losses.masked_point_loss(p, _TARGET, _WEIGHT, kind="l1"))(_PRED)
  np.testing.assert_array_equal(grad[1], 0.0)
  assert np.all(np.asarray(grad[0]) != 0)


def test_no_valid_point_gives_zero():
  loss = losses.masked_point_loss(_PRED, _TARGET, jnp.zeros((3, 1)))
  assert float(loss) == 0.0


def test_unknown_kind_is_rejected():
  with pytest.raises(ValueError, match="huber"):
    losses.masked_point_loss(_PRED, _TARGET, _WEIGHT, kind="huber")


def test_softmax_xent_with_label_smoothing():
  logits = jnp.array([[2.0, 0.0, 0.0]])
  log_p = np.log(np.exp([2.0, 0, 0]) / np.exp([2.0, 0, 0]).sum())
  np.testing.assert_allclose(losses.softmax_xent(logits, jnp.array([0])), -log_p[0], rtol=1e-6)
  smoothed = losses.softmax_xent(logits, jnp.array([0]), label_smoothing=0.3)
  expected = -(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])
  np.testing.assert_allclose(smoothed, expected, rtol=1e-6)
