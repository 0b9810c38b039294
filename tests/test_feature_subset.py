"""`datasets.core.FeatureSubsetSource` gives the records TFDS's own parser gives, key by key."""

import pickle
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from luab_jax.datasets import core

FEATURES = {
    "image": tfds.features.Image(shape=(None, None, 3)),
    "label": tfds.features.ClassLabel(num_classes=3),
    "points": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
    "flag": tfds.features.Tensor(shape=(), dtype=np.bool_),
    "name": tfds.features.Text(),
    "grid": tfds.features.Tensor(shape=(2, 3), dtype=np.int32),
    "encoded": tfds.features.Tensor(shape=(None, 3), dtype=np.int64, encoding="bytes"),
    "steps": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.int64)),
    "zlib": tfds.features.Tensor(shape=(None, None), dtype=np.int64, encoding="zlib"),
}


def _example(i):
  rng = np.random.default_rng(i)
  return {
      "image": rng.integers(0, 255, (5 + i, 4, 3), dtype=np.uint8),
      "label": i % 3,
      "points": rng.random((i + 1, 2), dtype=np.float32),
      "flag": bool(i % 2),
      "name": f"image_{i}.jpg",
      "grid": rng.integers(-5, 5, (2, 3), dtype=np.int32),
      "steps": list(range(i)),
      "encoded": np.arange(3 * i, dtype=np.int64).reshape(i, 3),
      "zlib": np.full((i + 1, 2), i, np.int64),
  }


def _source(features, records):
  """What `FeatureSubsetSource` needs of TFDS's `as_data_source` result, with encoded images."""
  info = types.SimpleNamespace(features=features, full_name="fake/1.0.0")
  return types.SimpleNamespace(dataset_info=info, data_source=records,
                               decoders={"image": tfds.decode.SkipDecoding()})


@pytest.fixture(scope="module")
def source():
  features = tfds.features.FeaturesDict(FEATURES)
  return _source(features, [features.serialize_example(_example(i)) for i in range(4)])


def _tfds_record(source, index, keys):
  whole = source.dataset_info.features.deserialize_example_np(
      source.data_source[index], decoders={"image": tfds.decode.SkipDecoding()})
  return {key: whole[key] for key in keys}


def _assert_same(got, want, where):
  assert set(got) == set(want), where
  for key, value in want.items():
    assert type(got[key]) is type(value), f"{where} {key}: {type(got[key])} vs {type(value)}"
    if isinstance(value, np.ndarray):
      assert got[key].dtype == value.dtype and got[key].shape == value.shape, f"{where} {key}"
    np.testing.assert_array_equal(got[key], value, err_msg=f"{where} {key}")


@pytest.mark.parametrize("keys, direct", [
    (("image", "label", "points", "flag", "name", "grid", "encoded"), True),
    (("label", "steps"), False),   # A sequence: TFDS's parser.
    (("zlib", "flag"), False),     # Stored as two tf.train.Features: TFDS's parser.
])
def test_records_equal_tfds_parser(source, keys, direct):
  subset = core.FeatureSubsetSource(source, keys)
  assert (subset._fields is not None) == direct
  subset = pickle.loads(pickle.dumps(subset))  # As Grain's worker processes get it.
  for index in range(len(source.data_source)):
    _assert_same(subset[index], _tfds_record(source, index, keys), f"record {index}")


def test_missing_feature_names_the_record():
  written = tfds.features.FeaturesDict({"label": FEATURES["label"]})
  declared = tfds.features.FeaturesDict({"label": FEATURES["label"], "name": FEATURES["name"]})
  source = _source(declared, [written.serialize_example({"label": 1})])
  with pytest.raises(KeyError, match=r"Record 0 of fake/1.0.0 has no feature 'name'"):
    core.FeatureSubsetSource(source, ("label", "name"))[0]


def test_scalar_with_several_values_names_the_record():
  written = tfds.features.FeaturesDict(
      {"label": tfds.features.Tensor(shape=(2,), dtype=np.int64)})
  declared = tfds.features.FeaturesDict({"label": FEATURES["label"]})
  source = _source(declared, [written.serialize_example({"label": [1, 2]})])
  with pytest.raises(ValueError, match=r"Record 0 of fake/1.0.0: feature 'label' is a scalar"):
    core.FeatureSubsetSource(source, ("label",))[0]
