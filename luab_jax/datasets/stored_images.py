"""What the real-data builders store for an image: its JPEG bytes, repaired where needed.

ImageNet and COCO hold a few files that are not 3-channel JPEGs (CMYK and grayscale JPEGs, a
PNG under a .JPEG name) and may hold truncated ones. Every image is decoded in full once at
preparation, which is the only way to find a truncated file before it fails in training:
- a decodable 3-channel (RGB) JPEG is stored byte for byte, unchanged;
- anything else PIL decodes is converted to RGB and re-encoded as a JPEG of JPEG_QUALITY, and
  the repair reason names what it was (e.g. "image: JPEG CMYK re-encoded as RGB JPEG q95");
- what PIL cannot decode raises `UndecodableImageError`, for the builder to skip and report.
"""

from __future__ import annotations

import dataclasses
import io

from PIL import Image

JPEG_QUALITY = 95
# MPO is how PIL names camera JPEGs with a multi-picture extension: still a JPEG to any decoder.
_JPEG_FORMATS = ("JPEG", "MPO")
# What PIL raises on files it cannot decode (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class UndecodableImageError(ValueError):
  """PIL cannot decode the whole file (truncated, corrupt, not an image)."""


@dataclasses.dataclass(frozen=True)
class StoredImage:
  data: bytes  # JPEG bytes to store.
  repair: str | None  # Why `data` is a re-encoding; None when it is the original file.
  width: int
  height: int


def storable_jpeg(data: bytes) -> StoredImage:
  """The bytes to store for an image file; see the module docstring for the rules."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Decodes every scan: truncated files fail here, as they would in training.
      width, height = image.size
      if image.format in _JPEG_FORMATS and image.mode == "RGB":
        return StoredImage(data, None, width, height)
      repair = f"image: {image.format} {image.mode} re-encoded as RGB JPEG q{JPEG_QUALITY}"
      rgb = image.convert("RGB")
  except _DECODE_ERRORS as e:
    raise UndecodableImageError(str(e)) from e
  buffer = io.BytesIO()
  rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
  return StoredImage(buffer.getvalue(), repair, width, height)
