"""What the trainer asks of a model (luab_jax/models/__init__.py), checked before anything runs:
its config keys are its constructor's arguments, and it returns logits [B, num_classes] and
points [B, num_points, 2] in float32."""

import sys
import types

import jax.numpy as jnp
from flax import nnx
import ml_collections
import pytest

from luab_jax import train_state


class _Model(nnx.Module):
  """A linear model whose points come back in the shape `points_shape(batch, num_points)`."""

  def __init__(self, *, num_classes: int, image_size: int, num_points: int = 1,
               points_shape=lambda batch, num_points: (batch, num_points, 2),
               points_dtype=jnp.float32, rngs: nnx.Rngs):
    self.num_points, self.points_shape, self.points_dtype = num_points, points_shape, points_dtype
    self.head = nnx.Linear(3, num_classes, rngs=rngs)

  def __call__(self, images):
    pooled = images.astype(jnp.float32).mean((1, 2))
    batch = images.shape[0]
    points = jnp.zeros(self.points_shape(batch, self.num_points), self.points_dtype)
    return {"logits": self.head(pooled), "points": points}


@pytest.fixture(name="config")
def _config(monkeypatch):
  monkeypatch.setitem(sys.modules, "luab_jax.models.contract_test",
                      types.SimpleNamespace(Model=_Model))
  config = ml_collections.ConfigDict()
  config.model_name = "contract_test"
  config.num_classes = 5
  config.model = {"image_size": 8, "num_points": 2}
  config.input = {"image_size": 8}
  return config


def test_a_model_that_keeps_the_contract_passes(config):
  spec = train_state.model_spec(config)
  assert spec.abstract_params["head"]["kernel"].shape == (3, 5)


def test_config_model_keys_are_the_constructors_arguments(config):
  config.model.num_point = 2
  with pytest.raises(ValueError, match=r"Unknown config.model keys \['num_point'\]: "
                                       r"luab_jax.models.contract_test.Model takes \['image_size', "
                                       r"'num_points', 'points_dtype', 'points_shape'\]"):
    train_state.model_spec(config)
  del config.model["num_point"]
  del config.model["image_size"]
  with pytest.raises(ValueError, match=r"config.model lacks \['image_size'\]"):
    train_state.check_model_config(config)


def test_points_of_another_shape_or_dtype_are_refused(config):
  # [B, 2] would broadcast against the [B, 1, 2] targets into [B, B, 2] in the loss.
  config.model.num_points = 1
  config.model.points_shape = lambda batch, num_points: (batch, 2)
  with pytest.raises(ValueError, match=r"returned points of shape \(2, 2\) float32 for a batch "
                                       r"of 2 images of 8x8; expected \(2, 1, 2\) float32"):
    train_state.model_spec(config)
  config.model.points_shape = lambda batch, num_points: (batch, num_points, 2)
  config.model.points_dtype = jnp.bfloat16
  with pytest.raises(ValueError, match=r"points of shape \(2, 1, 2\) bfloat16"):
    train_state.model_spec(config)


def test_logits_of_another_class_count_are_refused(config, monkeypatch):
  monkeypatch.setattr(_Model, "__call__", lambda self, images: {
      "logits": jnp.zeros((images.shape[0], 3)), "points": jnp.zeros((images.shape[0], 2, 2))})
  with pytest.raises(ValueError, match=r"logits of shape \(2, 3\) float32 .* expected \(2, 5\)"):
    train_state.model_spec(config)
  monkeypatch.setattr(_Model, "__call__", lambda self, images: jnp.zeros((images.shape[0], 5)))
  with pytest.raises(ValueError, match=r"must return a dict with \['logits', 'points'\]"):
    train_state.model_spec(config)
