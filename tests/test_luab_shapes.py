"""Tests of the procedural benchmark luab_shapes: renderer properties and the TFDS round trip."""

import dataclasses
import os

import numpy as np
import pytest

from luab_jax.datasets.luab_shapes import generator as gen

SMALL = gen.ShapesSpec(image_size=32, num_classes=10)


def _renders(spec, split, n, start=0):
  return [gen.render(spec, split, i) for i in range(start, start + n)]


# ---------------------------------------------------------------------------------------------
# Determinism and record format.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", gen.SPLITS)
def test_render_is_deterministic_and_well_formed(split):
  a, b = gen.render(SMALL, split, 7), gen.render(SMALL, split, 7)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert a["image"].dtype == np.uint8 and a["image"].shape == (32, 32, 3)
  assert a["clicks"].dtype == np.float32 and a["clicks"].ndim == 2 and a["clicks"].shape[1] == 2
  assert a["point"].dtype == np.float32 and a["point"].shape == (2,)
  assert a["object_box"].dtype == np.float32 and a["object_box"].shape == (4,)
  assert isinstance(a["has_point"], bool) and isinstance(a["label"], int)
  assert 0 <= a["label"] < SMALL.num_classes
  assert a["file_name"] == f"{split}/0000007"


@pytest.mark.parametrize("split", ["train", "mixed_rand", "only_bg"])
def test_different_index_or_seed_gives_different_image(split):
  img = gen.render(SMALL, split, 0)["image"]
  assert not np.array_equal(img, gen.render(SMALL, split, 1)["image"])
  other_seed = dataclasses.replace(SMALL, seed=1)
  assert not np.array_equal(img, gen.render(other_seed, split, 0)["image"])


def test_unknown_split_names_the_valid_ones():
  with pytest.raises(ValueError, match="mixed_next"):
    gen.render(SMALL, "validation", 0)


def test_bad_spec_is_rejected():
  with pytest.raises(ValueError):
    gen.ShapesSpec(num_classes=11)
  with pytest.raises(ValueError):
    gen.ShapesSpec(rho=1.5)


# ---------------------------------------------------------------------------------------------
# Clicks and geometry.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "original", "only_bg"])
def test_clicks_near_object_and_point_is_their_mean(split):
  spec = SMALL
  slack = 4 * spec.click_jitter + 1.0 / spec.image_size
  for r in _renders(spec, split, 60):
    clicks = r["clicks"]
    assert r["has_point"] == (len(clicks) > 0)
    if not r["has_point"]:
      np.testing.assert_array_equal(r["point"], [-1.0, -1.0])
      continue
    assert spec.clicks_per_object[0] <= len(clicks) <= spec.clicks_per_object[1]
    np.testing.assert_allclose(r["point"], clicks.mean(0), atol=1e-6)
    assert np.all((clicks >= 0) & (clicks <= 1))
    # only_bg has no object drawn, so its box is -1: use the shared foreground's box.
    box = gen.render(spec, "original", int(r["file_name"][-7:]))["object_box"] \
        if split == "only_bg" else r["object_box"]
    x0, y0, x1, y1 = box
    assert 0 < x0 < x1 < 1 and 0 < y0 < y1 < 1  # The object lies fully inside the image.
    assert np.all((clicks[:, 0] >= x0 - slack) & (clicks[:, 0] <= x1 + slack)), (r["file_name"], clicks, box)
    assert np.all((clicks[:, 1] >= y0 - slack) & (clicks[:, 1] <= y1 + slack)), (r["file_name"], clicks, box)


def test_unjittered_clicks_land_on_the_visible_object():
  """Without jitter every click is on a mask pixel (coverage >= 1/2): dark on no_fg, far from grey
  on only_fg. Edge pixels are half background, hence the loose thresholds."""
  spec = dataclasses.replace(SMALL, click_jitter=0.0)
  s = spec.image_size
  for i in range(40):
    for split in ("no_fg", "only_fg"):
      r = gen.render(spec, split, i)
      cols = np.minimum((r["clicks"] * s).astype(int), s - 1)
      pixels = r["image"][cols[:, 1], cols[:, 0]].astype(np.float32)
      if split == "no_fg":
        assert np.all(pixels.mean(-1) < 100), (i, pixels)
      else:  # Objects are very dark or very light: visible on any background.
        assert np.all(np.abs(pixels.mean(-1) - 128) > 30), (i, pixels)


def test_no_click_fraction_on_train_and_always_clicks_on_eval():
  no_click = np.mean([not r["has_point"] for r in _renders(SMALL, "train", 500)])
  assert abs(no_click - SMALL.no_click_fraction) < 0.06, no_click
  for split in gen.EVAL_SPLITS:
    assert all(r["has_point"] for r in _renders(SMALL, split, 20))
  never = dataclasses.replace(SMALL, no_click_fraction=0.0)
  assert all(r["has_point"] for r in _renders(never, "train", 50))


# ---------------------------------------------------------------------------------------------
# Background assignment per split.
# ---------------------------------------------------------------------------------------------


def test_rho_is_respected_on_train():
  rs = _renders(SMALL, "train", 1000)
  match = np.mean([r["bg_label"] == r["label"] for r in rs])
  assert abs(match - SMALL.rho) < 0.03, match
  assert len({r["label"] for r in rs}) == SMALL.num_classes
  # The off-diagonal backgrounds are spread over the other families, not one fixed family.
  off = [(r["bg_label"] - r["label"]) % SMALL.num_classes for r in rs if r["bg_label"] != r["label"]]
  assert len(set(off)) >= 5
  balanced = dataclasses.replace(SMALL, rho=0.0)
  assert not any(r["bg_label"] == r["label"] for r in _renders(balanced, "train", 200))


def test_eval_split_backgrounds():
  k = SMALL.num_classes
  n = 40
  for i in range(n):
    r = {split: gen.render(SMALL, split, i) for split in gen.EVAL_SPLITS}
    label = r["original"]["label"]
    assert r["mixed_same"]["bg_label"] == label
    assert r["mixed_next"]["bg_label"] == (label + 1) % k
    assert r["only_fg"]["bg_label"] == -1
    assert r["no_fg"]["bg_label"] == label and r["only_bg"]["bg_label"] == label
    assert 0 <= r["mixed_rand"]["bg_label"] < k
    np.testing.assert_array_equal(r["only_bg"]["object_box"], [-1, -1, -1, -1])
    for split in gen.EVAL_SPLITS:  # Shared foreground: same class, clicks and geometry.
      assert r[split]["label"] == label
      np.testing.assert_array_equal(r[split]["clicks"], r["original"]["clicks"])
      np.testing.assert_array_equal(r[split]["point"], r["original"]["point"])
      if split != "only_bg":
        np.testing.assert_array_equal(r[split]["object_box"], r["original"]["object_box"])
    # A new background instance: mixed_same differs from original even with the same family.
    assert not np.array_equal(r["mixed_same"]["image"], r["original"]["image"])
  rand = [gen.render(SMALL, "mixed_rand", i) for i in range(200)]
  assert np.mean([r["bg_label"] == r["label"] for r in rand]) < 0.25


# ---------------------------------------------------------------------------------------------
# The shortcut exists: background statistics alone predict the class.
# ---------------------------------------------------------------------------------------------


def _background_features(image):
  """Global colour and texture statistics that ignore shape: colour mean / std, gradient energy
  and a magnitude-weighted histogram of gradient orientations."""
  x = image.astype(np.float32) / 255.0
  grey = x.mean(-1)
  gx, gy = np.diff(grey, axis=1)[:-1, :], np.diff(grey, axis=0)[:, :-1]
  mag = np.hypot(gx, gy)
  theta = np.mod(np.arctan2(gy, gx), np.pi)
  hist, _ = np.histogram(theta, bins=8, range=(0, np.pi), weights=mag)
  hist = hist / max(hist.sum(), 1e-6)
  return np.concatenate([x.mean((0, 1)), x.std((0, 1)), [mag.mean()], hist])


def test_background_shortcut_predicts_the_class_on_only_bg():
  k = SMALL.num_classes
  train = _renders(SMALL, "train", 400)
  feats = np.stack([_background_features(r["image"]) for r in train])
  labels = np.array([r["label"] for r in train])
  mu, sd = feats.mean(0), feats.std(0) + 1e-6
  centroids = np.stack([((feats[labels == c] - mu) / sd).mean(0) for c in range(k)])

  def predict(images):
    f = (np.stack([_background_features(im) for im in images]) - mu) / sd
    return np.argmin(((f[:, None] - centroids[None]) ** 2).sum(-1), axis=1)

  only_bg = _renders(SMALL, "only_bg", 100)
  acc = np.mean(predict([r["image"] for r in only_bg]) == [r["label"] for r in only_bg])
  assert acc > 0.6, f"background-only accuracy {acc:.2f} (chance {1 / k:.2f})"
  # ...and the same shortcut is misled when the background is the next class's.
  nxt = _renders(SMALL, "mixed_next", 100)
  fooled = np.mean(predict([r["image"] for r in nxt]) == [r["bg_label"] for r in nxt])
  assert fooled > 0.5, fooled


# ---------------------------------------------------------------------------------------------
# TFDS builder round trip.
# ---------------------------------------------------------------------------------------------


def test_builder_round_trip(tiny_data_dir):
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  from luab_jax.pp import image_ops  # pylint: disable=g-import-not-at-top

  b = core.builder("luab_shapes/tiny", tiny_data_dir)
  cfg = b.builder_config
  spec = cfg.spec
  assert (spec.image_size, spec.num_classes) == (32, 4)
  assert set(b.info.splits.keys()) == set(gen.SPLITS)
  for split in gen.SPLITS:
    src = core.get_source("luab_shapes/tiny", split, tiny_data_dir)
    assert len(src) == (cfg.num_train if split == gen.TRAIN_SPLIT else cfg.num_eval)
    for index in (0, len(src) - 1):
      record, want = src[index], gen.render(spec, split, index)
      image = np.asarray(image_ops.decode_rgb(record["image"]))
      np.testing.assert_array_equal(image, want["image"])
      assert int(record["label"]) == want["label"]
      assert int(record["bg_label"]) == want["bg_label"]
      assert bool(record["has_point"]) == want["has_point"]
      np.testing.assert_array_equal(record["point"], want["point"])
      np.testing.assert_array_equal(np.asarray(record["clicks"]).reshape(-1, 2), want["clicks"])
      np.testing.assert_array_equal(record["object_box"], want["object_box"])
      name = record["file_name"]
      assert (name.decode() if isinstance(name, bytes) else name) == want["file_name"]


def test_dataset_names_and_classes(tiny_data_dir, tmp_path):
  """The trainer compares config.num_classes with `num_classes`; a misspelt dataset is named."""
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  assert core.num_classes("luab_shapes/tiny", tiny_data_dir) == 4
  with pytest.raises(ValueError, match=r"Unknown dataset 'luab_shapez/tiny'"):
    core.builder("luab_shapez/tiny", str(tmp_path))
  with pytest.raises(ValueError, match="num_processes=0"):
    core.prepare("luab_shapes/tiny", str(tmp_path), num_processes=0)


def test_a_registered_module_without_its_builder_is_named(tmp_path, monkeypatch):
  """An entry of _LOCAL_BUILDERS whose module registers no builder of that name (the class
  named otherwise): not "unknown dataset" while the list of known ones holds it."""
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(core._LOCAL_BUILDERS, "toy_dots", "luab_jax.datasets.luab_shapes")
  with pytest.raises(ValueError, match=r"Dataset 'toy_dots': importing "
                                       r"luab_jax.datasets.luab_shapes .* registered no TFDS "
                                       r"builder of that name.*class ToyDots -> toy_dots"):
    core.builder("toy_dots", str(tmp_path))


def test_data_dir_with_a_tilde_is_the_home_directory(tiny_data_dir, tmp_path, monkeypatch):
  """TFDS would take "~/x" as a folder named "~" in the current directory."""
  from luab_jax.datasets import core  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("HOME", os.path.dirname(tiny_data_dir))
  assert core.builder("luab_shapes/tiny", "~/" + os.path.basename(tiny_data_dir)).is_prepared()
