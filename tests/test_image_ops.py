"""Reduced-size JPEG decoding (DCT-domain scaling) against the full-size decode: same boxes, same
points, nearly the same pixels; and the reduced decode is really used where the crop allows it."""

import io
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from luab_jax.models import vit
from luab_jax.pp import geometry
from luab_jax.pp import image_ops
from luab_jax.pp import jpeg_region
from luab_jax.pp import transforms

PHOTOS = pathlib.Path(__file__).parent / "fixtures" / "photos"


def _large_jpeg(size=(1280, 960), dot=None) -> bytes:
  """A fixture photo upscaled to `size` (w, h) as a JPEG; optionally a white disc at `dot`."""
  with Image.open(PHOTOS / "astronaut.jpg") as im:
    image = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
  if dot is not None:
    pixels = np.asarray(image, np.uint8) // 4  # Darkened, so the dot stands out.
    yy, xx = np.mgrid[:size[1], :size[0]]
    pixels = pixels.copy()
    pixels[(xx - dot[0]) ** 2 + (yy - dot[1]) ** 2 <= 30 ** 2] = 255
    image = Image.fromarray(pixels)
  buf = io.BytesIO()
  image.save(buf, "JPEG", quality=95)
  return buf.getvalue()


def test_draft_scale_keeps_the_box_at_least_the_output_size():
  assert image_ops.draft_scale((0, 0, 1500, 2000), 224) == 4
  assert image_ops.draft_scale((0, 0, 1792, 1792), 224) == 8
  assert image_ops.draft_scale((0, 0, 448, 448), 224) == 2
  assert image_ops.draft_scale((0, 0, 447, 1000), 224) == 1
  assert image_ops.draft_scale((0, 0, 375, 500), 224) == 1  # ImageNet-sized: full decode.


def test_load_rgb_decodes_a_large_jpeg_at_reduced_size():
  data = _large_jpeg()
  image, scale = image_ops.load_rgb(image_ops.open_image(data), scale=4)
  assert scale == 4.0 and image.shape == (240, 320, 3) and image.dtype == np.uint8
  # Formats without a reduced decode ignore the request.
  buf = io.BytesIO()
  Image.new("RGB", (400, 300)).save(buf, "PNG")
  image, scale = image_ops.load_rgb(image_ops.open_image(buf.getvalue()), scale=4)
  assert scale == 1.0 and image.shape == (300, 400, 3)


def _reference(data, box, size, flip, method="bilinear"):
  """The full-size decode path: decode everything, crop + resize in original pixels (float)."""
  # Decoded by PIL, not through image_ops (the test spies on it).
  full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  top, left, h, w = box
  return image_ops.resize(full[top:top + h, left:left + w], size, flip=flip,
                          method=method).astype(np.float32)


def _spy_on_region_decode_scales(monkeypatch) -> list[int]:
  """The decode scale of every region decode from now on (1: full size, 2: half, ...)."""
  scales = []
  decode_region = jpeg_region.decode_region

  def spy(*args, scale=1, **kwargs):
    scales.append(scale)
    return decode_region(*args, scale=scale, **kwargs)

  monkeypatch.setattr(jpeg_region, "decode_region", spy)
  return scales


def test_train_transform_draft_matches_full_decode(monkeypatch):
  data = _large_jpeg()
  record = {"image": data, "label": 1, "point": np.float32([0.42, 0.61]), "has_point": True,
            "file_name": "large.jpg"}
  transform = transforms.TrainTransform(image_size=224, scale=(0.3, 1.0))
  scales = _spy_on_region_decode_scales(monkeypatch)
  for seed in range(12):
    example = transform.random_map(record, np.random.default_rng(seed))
    # The box and the flip the transform drew, replayed from the same seed in original pixels.
    rng = np.random.default_rng(seed)
    box = geometry.sample_inception_box(rng, 960, 1280, scale=(0.3, 1.0))
    flip = bool(rng.random() < 0.5)
    targets, weights = geometry.points_into_crop(record["point"][None], np.array([True]), box,
                                                 (960, 1280), flip=flip)
    np.testing.assert_array_equal(example["points"], targets, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(example["point_weight"], weights, err_msg=f"seed {seed}")
    reference = _reference(data, box, 224, flip)
    assert example["image"].dtype == np.uint8
    diff = np.abs(example["image"] - reference)
    # uint8 levels: DCT-domain downscaling + resize vs resize alone of a smooth photo.
    assert diff.mean() < 2.5 and np.percentile(diff, 99) < 19, (seed, scales[-1], diff.mean())
  assert 2 in scales and sum(s > 1 for s in scales) >= 6, scales  # Really used.


def test_train_transform_moves_a_painted_dot_with_its_point_at_reduced_size(monkeypatch):
  """A disc painted at the click of a large JPEG lands where the target says, draft or not."""
  width, height, px, py = 1280, 960, 700, 380
  record = {"image": _large_jpeg((width, height), dot=(px, py)), "label": 0,
            "point": np.float32([(px + 0.5) / width, (py + 0.5) / height]), "has_point": True,
            "file_name": "dot.jpg"}
  transform = transforms.TrainTransform(image_size=64, scale=(0.2, 1.0), resize_method="bilinear")
  scales = _spy_on_region_decode_scales(monkeypatch)
  seen = 0
  for seed in range(30):
    example = transform.random_map(record, np.random.default_rng(seed))
    if example["point_weight"][0] == 0:
      continue
    seen += 1
    brightness = example["image"].mean(-1)
    ys, xs = np.nonzero(brightness > 128)  # Background <= 64.
    assert len(xs), f"seed {seed}: the point is in the crop but the dot is not"
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / 64
    np.testing.assert_allclose(centre, example["points"][0], atol=2.5 / 64,
                               err_msg=f"seed {seed}, decode scale {scales[-1]}")
  assert seen >= 5 and max(scales) >= 4, (seen, scales)


def test_eval_transform_draft_matches_full_decode():
  data = _large_jpeg()
  record = {"image": data, "label": 2, "point": np.float32([0.5, 0.45]), "has_point": True,
            "file_name": "large.jpg"}
  example = transforms.EvalTransform(image_size=112).map(record)
  box = geometry.central_box(960, 1280, 0.875)
  assert image_ops.draft_scale(box, 112) == 4  # This case does decode at reduced size.
  targets, weights = geometry.points_into_crop(record["point"][None], np.array([True]), box,
                                               (960, 1280), flip=False)
  np.testing.assert_array_equal(example["points"], targets)
  np.testing.assert_array_equal(example["point_weight"], weights)
  diff = np.abs(example["image"] - _reference(data, box, 112, False, method="area"))
  assert diff.mean() < 2.5


def test_eval_transform_without_keeping_the_aspect_squashes_the_whole_image():
  """A disc near the left edge of a 4:3 image: outside the central square, inside the squashed
  whole image, where the point lands on it."""
  data = _large_jpeg(dot=(100, 480))
  record = {"image": data, "label": 2, "point": np.float32([100.5 / 1280, 480.5 / 960]),
            "has_point": True, "file_name": "large.jpg"}
  square = transforms.EvalTransform(image_size=64, crop_fraction=1.0).map(record)
  assert square["point_weight"][0] == 0  # The central 960 x 960 square starts at x = 160.
  whole = transforms.EvalTransform(image_size=64, crop_fraction=1.0, keep_aspect=False).map(record)
  assert geometry.central_box(960, 1280, 1.0, keep_aspect=False) == (0, 0, 960, 1280)
  assert geometry.central_box(960, 1280, 0.5, keep_aspect=False) == (240, 320, 480, 640)
  assert whole["point_weight"][0] == 1
  np.testing.assert_allclose(whole["points"][0], record["point"], atol=1e-6)
  ys, xs = np.nonzero(whole["image"].mean(-1) > 160)
  np.testing.assert_allclose([(xs.mean() + 0.5) / 64, (ys.mean() + 0.5) / 64], record["point"],
                             atol=1.5 / 64)
  diff = np.abs(whole["image"] - _reference(data, (0, 0, 960, 1280), 64, False, method="area"))
  assert diff.mean() < 2.5


@pytest.mark.parametrize("photo", ["coffee_cmyk.jpg", "camera_grayscale.jpg",
                                   "chelsea_png_named.JPEG"])
def test_other_modes_and_formats_still_decode_to_rgb(photo):
  data = (PHOTOS / photo).read_bytes()
  image, _ = image_ops.load_rgb(image_ops.open_image(data), scale=2)
  assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8
  # The same pixels as PIL's own decode and RGB conversion (CMYK: within one level).
  with Image.open(PHOTOS / photo) as im:
    full = np.asarray(im.convert("RGB"), np.int16)
  diff = np.abs(image_ops.decode_rgb(data).astype(np.int16) - full)
  assert diff.max() <= (1 if "cmyk" in photo else 0), diff.max()


def test_bad_images_name_the_file():
  data = (PHOTOS / "astronaut_truncated.jpg").read_bytes()
  with pytest.raises(ValueError, match="broken.jpg"):
    image_ops.load_rgb(image_ops.open_image(data, name="broken.jpg"), name="broken.jpg")
  with pytest.raises(ValueError, match="garbage.jpg"):
    image_ops.open_image(b"not an image", name="garbage.jpg")
  with pytest.raises(ValueError, match="broken.jpg"):
    transforms.EvalTransform(image_size=32).map({"image": data, "label": 0,
                                                 "file_name": "broken.jpg"})


def test_uint8_pixels_reach_the_model_as_minus_one_one():
  """The pipeline ships uint8; the model's scaling equals the host's float32 [-1, 1] mapping."""
  pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
  on_host = pixels.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
  on_device = np.asarray(vit.to_input_range(pixels, jnp.float32))
  np.testing.assert_array_equal(on_device, on_host)
  assert on_device.min() == -1 and on_device.max() == 1
  # Float input is taken as already scaled.
  np.testing.assert_array_equal(np.asarray(vit.to_input_range(on_host, jnp.float32)), on_host)


@pytest.mark.parametrize("method", sorted(image_ops.RESIZE_METHODS))
def test_resize_methods_keep_a_gradient_in_order_and_flip_mirrors(method):
  gradient = np.tile(np.arange(0, 250, 2, dtype=np.uint8)[None, :, None], (100, 1, 3))
  crop = gradient[10:90, 20:120]
  out = image_ops.resize(crop, 32, method=method)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0)  # Left to right, dark to bright.
  flipped = image_ops.resize(crop, 32, method=method, flip=True)
  np.testing.assert_array_equal(flipped, out[:, ::-1])


def test_resize_writes_into_a_row_of_the_batch():
  crop = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
  batch = np.zeros((2, 24, 24, 3), np.uint8)
  for row, flip in enumerate([False, True]):
    written = image_ops.resize(crop, 24, flip=flip, out=batch[row])
    assert np.shares_memory(written, batch)
  np.testing.assert_array_equal(batch[0], image_ops.resize(crop, 24))
  np.testing.assert_array_equal(batch[1], image_ops.resize(crop, 24)[:, ::-1])


def test_unknown_resize_method_names_the_key():
  with pytest.raises(ValueError, match="resize_method='lanczos'"):
    transforms.TrainTransform(image_size=32, resize_method="lanczos")
