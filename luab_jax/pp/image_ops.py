"""Image decoding and resampling on the host (numpy + PIL), used inside Grain transforms.

The crop box is chosen before any pixel is decoded: `open_image` reads only the header (the
image size), the caller samples its box in original pixels, and `load_rgb` then decodes a JPEG
at 1/2, 1/4 or 1/8 scale in the DCT domain (libjpeg's scaled IDCT through PIL's `draft`)
whenever the box is still at least the output size at that scale (`draft_scale`). `crop_resize`
takes the box in original pixels and the scale actually decoded, so crop boxes and the points
that follow them (`geometry.points_into_crop`, always in original pixels) do not depend on the
decode scale; only the resampled pixels differ slightly (DCT-domain downscaling, then the
resize). For 224 px crops of ImageNet-sized photos (~500 x 375) no reduction keeps 224 px, so
those decode at full size; larger photos, or smaller outputs, decode at reduced size.
"""

import io

import numpy as np
from PIL import Image

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_DRAFT_SCALES = (8, 4, 2)


def open_image(image, *, name: str = "<record>") -> Image.Image:
  """Opens encoded bytes (JPEG, PNG, ...) or wraps a uint8 array; encoded pixels stay unread.

  Only the header is parsed, so `.size` is known and `load_rgb` may still choose a reduced
  decode. Raises ValueError naming `name` (file name or record id) if even the header is bad.
  """
  if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
    return Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1
                           else image)
  if isinstance(image, np.ndarray):
    image = image.item() if image.ndim == 0 else image.tobytes()
  try:
    return Image.open(io.BytesIO(image))
  except Exception as e:
    raise ValueError(f"Cannot decode the image of {name}: {e}") from e


def draft_scale(box, size: int) -> int:
  """The largest JPEG decode reduction (8, 4, 2 or 1) keeping the box at least size x size."""
  _, _, h, w = box
  for scale in _DRAFT_SCALES:
    if min(h, w) >= size * scale:
      return scale
  return 1


def load_rgb(pil: Image.Image, *, name: str = "<record>", scale: int = 1):
  """Decodes an opened image, at 1/`scale` in the DCT domain where the format allows it (JPEG).

  Returns (RGB image, the scale actually decoded: original width / decoded width, 1.0 for
  formats without reduced decoding). Forces three channels: ImageNet holds CMYK and grayscale
  JPEGs, which would otherwise come back with 4 or 1 channels. Raises ValueError naming `name`
  for a truncated or undecodable image.
  """
  actual = 1.0
  try:
    if scale > 1 and pil.format == "JPEG":
      width, height = pil.size
      drafted = pil.draft("RGB", (width // scale, height // scale))
      if drafted is not None:  # (mode, box of the decoded image in original pixels / scale)
        actual = width / drafted[1][2]
    pil.load()
  except Exception as e:
    raise ValueError(f"Cannot decode the image of {name}: {e}") from e
  return (pil if pil.mode == "RGB" else pil.convert("RGB")), actual


def decode_rgb(image, *, name: str = "<record>") -> Image.Image:
  """Decodes encoded bytes (JPEG, PNG, ...) or a uint8 array into an RGB PIL image, full size.

  `name` (file name or record id) is put in the error message.
  """
  return load_rgb(open_image(image, name=name), name=name)[0]


def crop_resize(image: Image.Image, box, size: int, *, method: str = "bicubic",
                scale: float = 1.0, flip: bool = False) -> np.ndarray:
  """Crops `box` = (top, left, height, width) and resizes it to size x size, as uint8 [S, S, 3].

  `box` is in pixels of the original image; `scale` is how much smaller `image` was decoded
  (`load_rgb`), so the box is taken at box / scale (PIL resamples a fractional box exactly).
  `flip` mirrors the result left-right (in PIL: cheaper than a strided numpy copy later).
  """
  top, left, h, w = box
  resized = image.resize((size, size), resample=_RESAMPLE[method],
                         box=(left / scale, top / scale, (left + w) / scale, (top + h) / scale))
  if flip:
    resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(resized, dtype=np.uint8)


def to_minus_one_one(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1], the input range of the ViT (big_vision's value_range).

  One multiply into a fresh float32 array and an in-place subtract: the same float32 values as
  `image.astype(np.float32) * (2 / 255) - 1`, with one temporary array fewer.
  """
  out = np.empty(image.shape, np.float32)
  np.multiply(image, np.float32(2.0 / 255.0), out=out, dtype=np.float32)
  out -= np.float32(1.0)
  return out
