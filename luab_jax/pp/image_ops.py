"""Image decoding and resampling on the host (numpy + PIL), used inside Grain transforms."""

import io

import numpy as np
from PIL import Image

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def decode_rgb(image, *, name: str = "<record>") -> Image.Image:
  """Decodes encoded bytes (JPEG, PNG, ...) or a uint8 array into an RGB PIL image.

  Forces three channels: ImageNet holds CMYK and grayscale JPEGs, which would otherwise come
  back with 4 or 1 channels. `name` (file name or record id) is put in the error message.
  """
  if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
    pil = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
  else:
    if isinstance(image, np.ndarray):
      image = image.item() if image.ndim == 0 else image.tobytes()
    try:
      pil = Image.open(io.BytesIO(image))
      pil.load()
    except Exception as e:
      raise ValueError(f"Cannot decode the image of {name}: {e}") from e
  return pil if pil.mode == "RGB" else pil.convert("RGB")


def crop_resize(image: Image.Image, box, size: int, *, method: str = "bicubic") -> np.ndarray:
  """Crops `box` = (top, left, height, width) and resizes it to size x size, as uint8 [S, S, 3]."""
  top, left, h, w = box
  resized = image.resize((size, size), resample=_RESAMPLE[method],
                         box=(left, top, left + w, top + h))
  return np.asarray(resized, dtype=np.uint8)


def to_minus_one_one(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1], the input range of the ViT (big_vision's value_range)."""
  return image.astype(np.float32) * (2.0 / 255.0) - 1.0
