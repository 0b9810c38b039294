"""Region JPEG decoding: the same pixels as a whole decode sliced, for every kind of JPEG."""

import concurrent.futures
import io
import pathlib

import numpy as np
import pytest
from PIL import Image

from luab_jax.pp import image_ops
from luab_jax.pp import jpeg_region

PHOTOS = pathlib.Path(__file__).parent / "fixtures" / "photos"


def _jpeg(width=203, height=157, **save_options) -> bytes:
  """A fixture photo at an odd size (partial iMCUs on both edges) with grain, as a JPEG."""
  with Image.open(PHOTOS / "chelsea.jpg") as im:
    pixels = np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC),
                        np.int16)
  pixels = pixels + np.random.default_rng(0).integers(-12, 13, pixels.shape)
  image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  if save_options.pop("gray", False):
    image = image.convert("L")
  buf = io.BytesIO()
  image.save(buf, "JPEG", quality=90, **save_options)
  return buf.getvalue()


def _whole(data: bytes, scale: int = 1) -> np.ndarray:
  """The whole image decoded at 1/scale (simplejpeg, libjpeg-turbo's simple API)."""
  return image_ops.load_rgb(image_ops.open_image(data), scale=scale)[0]


KINDS = {
    "444": dict(subsampling=0),
    "422": dict(subsampling=1),
    "420": dict(subsampling=2),
    "gray": dict(gray=True),
    "420 progressive": dict(subsampling=2, progressive=True),
    "420 restart markers": dict(subsampling=2, restart_marker_blocks=3),
    "rgb (no YCbCr transform)": dict(subsampling=0, keep_rgb=True),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_regions_equal_the_whole_decode(kind, scale):
  data = _jpeg(**KINDS[kind])
  assert image_ops.open_image(data).jpeg_colorspace in jpeg_region.DECODABLE_COLORSPACES
  whole = _whole(data, scale)
  height, width = whole.shape[:2]
  rng = np.random.default_rng(scale)
  # Every left edge and every top edge over more than an iMCU, random sizes, plus the image's
  # own edges (a box flush with the right or bottom edge has no context pixel beyond it).
  corners = [(0, 0), (height - 1, width - 1)]  # The whole image; its last pixel.
  for start in range(min(40, height - 1, width - 1)):
    corners += [(start, int(rng.integers(0, width))), (int(rng.integers(0, height)), start)]
  for i, (top, left) in enumerate(corners):
    if i % 3 == 0:  # Flush with the bottom-right corner.
      h, w = height - top, width - left
    else:
      h, w = 1 + int(rng.integers(0, height - top)), 1 + int(rng.integers(0, width - left))
    region = jpeg_region.decode_region(data, top, left, h, w, scale=scale)
    assert region.shape == (h, w, 3) and region.dtype == np.uint8
    np.testing.assert_array_equal(region, whole[top:top + h, left:left + w],
                                  err_msg=f"{kind} at 1/{scale}, box {(top, left, h, w)}")


def test_threads_decode_side_by_side():
  data = _jpeg(subsampling=2)
  whole = _whole(data)
  boxes = [(t, l, 157 - t - 3, 203 - l - 5) for t in range(0, 60, 3) for l in range(0, 60, 7)]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    regions = list(pool.map(lambda b: jpeg_region.decode_region(data, *b), boxes))
  for (t, l, h, w), region in zip(boxes, regions):
    np.testing.assert_array_equal(region, whole[t:t + h, l:l + w])


def test_bad_data_and_bad_regions_raise():
  truncated = (PHOTOS / "astronaut_truncated.jpg").read_bytes()
  with pytest.raises(ValueError, match="tj3Decompress8"):
    jpeg_region.decode_region(truncated, 0, 0, 160, 160)
  with pytest.raises(ValueError, match="tj3DecompressHeader"):
    jpeg_region.decode_region(b"\xff\xd8 not a jpeg", 0, 0, 8, 8)
  data = _jpeg()
  with pytest.raises(ValueError, match="not inside the 157 x 203 image"):
    jpeg_region.decode_region(data, 100, 0, 58, 10)
  with pytest.raises(ValueError, match="not inside the 79 x 102 image decoded at 1/2"):
    jpeg_region.decode_region(data, 0, 95, 10, 8, scale=2)
  cmyk = (PHOTOS / "coffee_cmyk.jpg").read_bytes()
  with pytest.raises(ValueError, match="tj3Decompress8"):  # No CMYK -> RGB in libjpeg-turbo.
    jpeg_region.decode_region(cmyk, 0, 0, 10, 10)


@pytest.mark.parametrize("photo", ["coffee_cmyk.jpg", "camera_grayscale.jpg", "rocket.jpg",
                                   "chelsea_png_named.JPEG"])
def test_load_box_decodes_every_kind_of_image(photo):
  """JPEGs the region decoder takes and those it does not (CMYK, PNG) give the same box."""
  data = (PHOTOS / photo).read_bytes()
  opened = image_ops.open_image(data, name=photo)
  box = (11, 29, opened.height - 30, opened.width - 50)
  top, left, h, w = box
  np.testing.assert_array_equal(image_ops.load_box(opened, box, name=photo),
                                image_ops.decode_rgb(data)[top:top + h, left:left + w])


def test_load_box_names_the_record():
  truncated = (PHOTOS / "astronaut_truncated.jpg").read_bytes()
  with pytest.raises(ValueError, match="broken.jpg"):
    image_ops.load_box(image_ops.open_image(truncated), (0, 0, 160, 160), name="broken.jpg")


def test_box_at_scale_rounds_to_decoded_pixels_inside_the_image():
  assert image_ops.box_at_scale((10, 20, 30, 40), (100, 200), (100, 200)) == (10, 20, 30, 40)
  # 1/4 of 375 x 500 decodes to 94 x 125.
  assert image_ops.box_at_scale((0, 0, 375, 500), (375, 500), (94, 125)) == (0, 0, 94, 125)
  top, left, h, w = image_ops.box_at_scale((101, 203, 250, 290), (375, 500), (94, 125))
  assert (top, left) == (25, 51) and top + h == 88 and left + w == 123
  # At least one pixel, never past the edge.
  assert image_ops.box_at_scale((374, 499, 1, 1), (375, 500), (47, 63)) == (46, 62, 1, 1)
