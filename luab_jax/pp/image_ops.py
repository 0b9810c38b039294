"""Image decoding (libjpeg-turbo, PIL) and resampling (OpenCV) on the host, in Grain transforms.

The crop box is chosen before any pixel is decoded: `open_image` reads only the header (the
image size), the caller samples its box in original pixels, and `load_box` then decodes only
what the box needs:
- a JPEG decodes just the box's region (`jpeg_region`: libjpeg-turbo skips the rows and columns
  outside it, as tf.data's `decode_and_crop_jpeg`; the same pixels as a full decode), and at
  1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg's scaled IDCT) whenever the box is still at
  least the output size at that scale (`draft_scale`);
- other formats (and CMYK/YCCK JPEGs, which the region decoder does not convert) decode whole
  (`load_rgb`), and the box is sliced out.
Boxes, and the points that follow them (`geometry.points_into_crop`, always in original pixels),
do not depend on the decode scale; a reduced decode takes the box rounded to whole decoded pixels
(`box_at_scale`), and only the resampled pixels differ slightly (DCT-domain downscaling, then
the resize). For 224 px crops of ImageNet-sized photos (~500 x 375) no reduction keeps 224 px,
so those decode their region at full size; larger photos, or smaller outputs, decode at reduced
size.

Whole-image decoders (`load_rgb`): JPEGs go straight to libjpeg-turbo through simplejpeg
(straight into a numpy array: 0.88 ms for a 500 x 375 JPEG against 1.09 ms + 0.08 ms to copy out
of PIL; bit-identical pixels for YCbCr and grayscale JPEGs, CMYK within one level), in strict
mode, so a truncated or corrupt file raises instead of coming back with grey rows. Other formats
(PNG, ...) and the rare JPEG whose header libjpeg-turbo's simple API does not take (unusual
chroma sampling) are decoded by PIL, which raises on a truncated file too. Either way the result
is RGB: CMYK, grayscale, palette and RGBA input are converted.

Resizing is OpenCV's SIMD kernels (a box of a 500 x 375 image to 224 px: bilinear 0.11 ms
against PIL's antialiased 0.68 ms, bicubic 0.13 against 1.08 ms; BENCHMARKS.md, Input pipeline).
`RESIZE_METHODS`:
- "bilinear": OpenCV INTER_LINEAR, no antialiasing, like `tf.image.resize` and big_vision's
  `inception_crop` (the training default);
- "area": INTER_AREA, each output pixel averages the input pixels it covers, so downscaling is
  antialiased (big_vision's `resize_small` default; the evaluation default); upscaling is
  bilinear;
- "bicubic": INTER_CUBIC, no antialiasing.
Images leave the host as uint8; the model maps them to its input range on the device
(`models/vit.py`), so workers compute and copy 4x fewer bytes than float32 would need.
"""

import dataclasses
import io
import math

import cv2
import numpy as np
from PIL import Image
import simplejpeg

from luab_jax.pp import jpeg_region

RESIZE_METHODS = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
                  "bicubic": cv2.INTER_CUBIC}
_DRAFT_SCALES = (8, 4, 2)
_JPEG_START = b"\xff\xd8"
# Grain runs one transform per worker thread or process; OpenCV's own thread pool on top of
# that only oversubscribes the cores (a 224 px resize is far too small to split).
cv2.setNumThreads(1)


def check_resize_method(method: str, key: str = "resize_method") -> None:
  """Raises ValueError naming `key` unless `method` is one of RESIZE_METHODS."""
  if method not in RESIZE_METHODS:
    raise ValueError(f"{key}={method!r} is not a resize method; use one of "
                     f"{sorted(RESIZE_METHODS)}.")


@dataclasses.dataclass(frozen=True)
class OpenedImage:
  """An image whose size is known and whose pixels are not decoded yet (`load_rgb` does).

  Exactly one of `jpeg` (bytes for libjpeg-turbo), `pil` (an opened PIL image) and `pixels`
  (an array that needs no decoding) is set. `jpeg_colorspace` is the JPEG header's colour space
  ("YCbCr", "Gray", "RGB", "CMYK", "YCCK").
  """
  width: int
  height: int
  jpeg: bytes | None = None
  jpeg_colorspace: str | None = None
  pil: Image.Image | None = None
  pixels: np.ndarray | None = None

  @property
  def size(self) -> tuple[int, int]:
    return self.width, self.height


def _rgb_array(pixels: np.ndarray) -> np.ndarray:
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  if pixels.ndim == 2:
    return np.repeat(pixels[..., None], 3, axis=-1)
  if pixels.ndim == 3 and pixels.shape[-1] == 4:
    return np.ascontiguousarray(pixels[..., :3])
  return pixels


def open_image(image, *, name: str = "<record>") -> OpenedImage:
  """Opens encoded bytes (JPEG, PNG, ...) or wraps a uint8 array; encoded pixels stay unread.

  Only the header is parsed, so the size is known and `load_rgb` may still choose a reduced
  decode. Raises ValueError naming `name` (file name or record id) if even the header is bad.
  """
  if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
    return OpenedImage(image.shape[1], image.shape[0], pixels=image)
  if isinstance(image, np.ndarray):
    image = image.item() if image.ndim == 0 else image.tobytes()
  if image[:2] == _JPEG_START:
    try:
      height, width, colorspace, _ = simplejpeg.decode_jpeg_header(image)
      return OpenedImage(width, height, jpeg=image, jpeg_colorspace=colorspace)
    except ValueError:
      pass  # Not a header libjpeg-turbo's simple API takes: PIL reads it, or names the error.
  try:
    pil = Image.open(io.BytesIO(image))
  except Exception as e:
    raise ValueError(f"Cannot decode the image of {name}: {e}") from e
  return OpenedImage(pil.width, pil.height, pil=pil)


def draft_scale(box, size: int) -> int:
  """The largest JPEG decode reduction (8, 4, 2 or 1) keeping the box at least size x size."""
  _, _, h, w = box
  for scale in _DRAFT_SCALES:
    if min(h, w) >= size * scale:
      return scale
  return 1


def load_rgb(image: OpenedImage, *, name: str = "<record>", scale: int = 1):
  """Decodes an opened image, at 1/`scale` in the DCT domain where the format allows it (JPEG).

  Returns (uint8 RGB array [H', W', 3], the scale actually decoded: original width / decoded
  width, 1.0 for formats without reduced decoding). Forces three channels: ImageNet holds CMYK
  and grayscale JPEGs, which would otherwise come back with 4 or 1 channels. Raises ValueError
  naming `name` for a truncated or undecodable image.
  """
  try:
    if image.jpeg is not None:
      # libjpeg's scaled output is ceil(size / scale): the smallest size >= these minimums.
      pixels = simplejpeg.decode_jpeg(
          image.jpeg, colorspace="RGB", min_height=math.ceil(image.height / scale),
          min_width=math.ceil(image.width / scale), strict=True)
      return pixels, image.width / pixels.shape[1]
    if image.pixels is not None:
      return _rgb_array(image.pixels), 1.0
    pil, actual = image.pil, 1.0
    if scale > 1 and pil.format == "JPEG":
      drafted = pil.draft("RGB", (image.width // scale, image.height // scale))
      if drafted is not None:  # (mode, box of the decoded image in original pixels / scale)
        actual = image.width / drafted[1][2]
    pil.load()
    return np.asarray(pil if pil.mode == "RGB" else pil.convert("RGB")), actual
  except Exception as e:
    raise ValueError(f"Cannot decode the image of {name}: {e}") from e


def decode_rgb(image, *, name: str = "<record>") -> np.ndarray:
  """Decodes encoded bytes (JPEG, PNG, ...) or a uint8 array into uint8 RGB [H, W, 3], full size.

  `name` (file name or record id) is put in the error message.
  """
  return load_rgb(open_image(image, name=name), name=name)[0]


def box_at_scale(box, image_hw, decoded_hw) -> tuple[int, int, int, int]:
  """`box` = (top, left, height, width) in original pixels, in pixels of a reduced decode.

  Edges are rounded to whole decoded pixels (at most half a decoded pixel: under 0.25 % of a
  box that a reduced decode allows) and kept inside the decoded image; at least one pixel.
  """
  if tuple(image_hw) == tuple(decoded_hw):
    return tuple(box)

  def edges(start, length, size, decoded_size):
    """(first, end) decoded pixel of one axis: end > first, both inside the decoded image."""
    scale = decoded_size / size
    first = min(round(start * scale), decoded_size - 1)
    return first, min(max(round((start + length) * scale), first + 1), decoded_size)

  top, bottom = edges(box[0], box[2], image_hw[0], decoded_hw[0])
  left, right = edges(box[1], box[3], image_hw[1], decoded_hw[1])
  return top, left, bottom - top, right - left


def _slice_box(pixels: np.ndarray, box) -> np.ndarray:
  top, left, h, w = box
  crop = pixels[top:top + h, left:left + w]
  if top < 0 or left < 0 or crop.shape[:2] != (h, w):
    raise ValueError(f"Crop box {tuple(box)} leaves the image of shape {pixels.shape}.")
  return crop


def load_box(image: OpenedImage, box, *, name: str = "<record>", scale: int = 1) -> np.ndarray:
  """Decodes the pixels of `box` = (top, left, height, width), in original pixels, of an image.

  At 1/`scale` where the format allows it (JPEG: `draft_scale`), the box then rounded to whole
  decoded pixels (`box_at_scale`). A JPEG in a colour space that `jpeg_region` converts decodes
  only the box's region; anything else decodes whole (`load_rgb`) and is sliced. Returns uint8
  RGB [h, w, 3]. Raises ValueError naming `name` for a truncated or undecodable image.
  """
  if image.jpeg is not None and image.jpeg_colorspace in jpeg_region.DECODABLE_COLORSPACES:
    decoded_hw = (math.ceil(image.height / scale), math.ceil(image.width / scale))
    top, left, h, w = box_at_scale(box, (image.height, image.width), decoded_hw)
    try:
      return jpeg_region.decode_region(image.jpeg, top, left, h, w, scale=scale)
    except ValueError as e:
      raise ValueError(f"Cannot decode the image of {name}: {e}") from e
  pixels, _ = load_rgb(image, name=name, scale=scale)
  return _slice_box(pixels, box_at_scale(box, (image.height, image.width), pixels.shape[:2]))


def resize(pixels: np.ndarray, size: int, *, method: str = "bilinear", flip: bool = False,
           out: np.ndarray | None = None) -> np.ndarray:
  """Resizes uint8 [H, W, 3] to size x size (`RESIZE_METHODS`); `flip` mirrors left-right.

  `out`, a C-contiguous uint8 [size, size, 3] array such as one row of a batch, receives the
  result (OpenCV writes into a `dst` of the right size and type), so a batch is built in
  place instead of stacked afterwards.
  """
  resized = cv2.resize(pixels, (size, size), dst=out, interpolation=RESIZE_METHODS[method])
  # In place (OpenCV's horizontal flip swaps each row's ends): a new output array from the
  # bindings costs more than the flip itself.
  return cv2.flip(resized, 1, dst=resized) if flip else resized
