"""Mesh from config (three named axes), regex parameter rules incl. tensor parallel, batches."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from luab_jax import sharding
from luab_jax.models import vit

_RULES = [*vit.TENSOR_PARALLEL_RULES, (".*", "fsdp")]


def test_missing_axes_have_size_one_and_order_is_fixed():
  mesh = sharding.make_mesh([("data", -1), ("fsdp", 2)])
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "model": 1}
  assert sharding.batch_axes(mesh) == ("data", "fsdp")
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("model", -1)])
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
  with pytest.raises(ValueError, match="order"):
    sharding.make_mesh([("model", 2), ("data", -1)])
  with pytest.raises(ValueError, match="unknown axis 'tensor'"):
    sharding.make_mesh([("data", -1), ("tensor", 2)])
  with pytest.raises(ValueError, match="needs 16 devices.*has 8"):
    sharding.make_mesh([("data", 4), ("fsdp", 2), ("model", 2)])


def test_tensor_parallel_rules_split_heads_and_mlp_units_and_fsdp_the_rest():
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("model", 2)])
  s = jax.ShapeDtypeStruct
  tree = {
      "encoder": {"blocks": {
          "0": {"attn": {"query": {"kernel": s((64, 4, 16), np.float32),
                                   "bias": s((4, 16), np.float32)},
                         "out": {"kernel": s((4, 16, 64), np.float32)}},
                "mlp": {"fc1": {"kernel": s((64, 256), np.float32)},
                        "fc2": {"kernel": s((256, 64), np.float32)}}},
          # scan_layers: a leading layer axis; the rules count dimensions from the end.
          "attn": {"key": {"kernel": s((3, 64, 4, 16), np.float32)}},
      }},
      "point_head": {"fc1": {"kernel": s((64, 256), np.float32)}},
  }
  got = sharding.infer_shardings(tree, _RULES, mesh, fsdp_min_size_mb=0)
  blocks = got["encoder"]["blocks"]
  assert blocks["0"]["attn"]["query"]["kernel"].spec == P("fsdp", "model", None)
  assert blocks["0"]["attn"]["query"]["bias"].spec == P("model", "fsdp")
  assert blocks["0"]["attn"]["out"]["kernel"].spec == P("model", None, "fsdp")
  assert blocks["0"]["mlp"]["fc1"]["kernel"].spec == P("fsdp", "model")
  assert blocks["0"]["mlp"]["fc2"]["kernel"].spec == P("model", "fsdp")
  assert blocks["attn"]["key"]["kernel"].spec == P(None, "fsdp", "model", None)
  # The point head's MLP is not a transformer block's: FSDP only (largest dimension).
  assert got["point_head"]["fc1"]["kernel"].spec == P(None, "fsdp")
  # Below fsdp_min_size_mb only the tensor-parallel split remains.
  small = sharding.infer_shardings(tree, _RULES, mesh, fsdp_min_size_mb=1)
  assert small["encoder"]["blocks"]["0"]["mlp"]["fc1"]["kernel"].spec == P(None, "model")


def test_tensor_parallel_split_that_does_not_divide_is_an_error():
  mesh = sharding.make_mesh([("data", 2), ("model", 4)])
  tree = {"attn": {"query": {"kernel": jax.ShapeDtypeStruct((64, 6, 16), np.float32)}}}
  with pytest.raises(ValueError, match=r"attn/query/kernel.*\(6\).*'model' axis of config.mesh"):
    sharding.infer_shardings(tree, _RULES, mesh)


def test_batch_size_names_the_batch_axes():
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("model", 2)])
  # The batch is split 4 ways (data x fsdp) and replicated over model.
  assert sharding.check_batch_size(12, mesh) == 12
  with pytest.raises(ValueError, match=r"config.batch_size=10 .* 4 devices .*data=2 x fsdp=2"):
    sharding.check_batch_size(10, mesh)


def test_a_rule_that_is_not_a_regex_names_the_key():
  mesh = sharding.make_mesh([("data", -1)], jax.devices()[:1])
  with pytest.raises(ValueError, match=r"config.sharding_rules: '\(unclosed' is not a regular"):
    sharding.infer_shardings({"w": jax.ShapeDtypeStruct((4, 4), "float32")},
                                 [("(unclosed", "fsdp"), (".*", "replicate")], mesh)
