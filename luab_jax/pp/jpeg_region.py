"""Decoding one region of a JPEG, with the same pixels as decoding all of it and slicing.

A RandomResizedCrop keeps on average under half of the image (area share 0.08-1), yet a full
decode pays for every pixel. libjpeg-turbo can skip much of the rest: rows below the region are
never read, rows above are entropy-decoded but not transformed, and columns outside it are not
inverse-transformed, upsampled or colour-converted. tf.data's `decode_and_crop_jpeg` (what
big_vision's `inception_crop` uses) relies on the same machinery. On 500 x 375 JPEGs with
inception-crop boxes (mean area share 0.42) it takes 0.72 ms against 0.88 ms for the full
decode (`benchmarks.input_pipeline --decode`; BENCHMARKS.md, Input pipeline): the entropy
decoding of every row down to the box's bottom remains.

TurboJPEG 3 exposes it as `tj3SetCroppingRegion`; none of the PyPI bindings passes it through
(simplejpeg, PyTurboJPEG's `decode`, turbojpeg's `decompress`, imagecodecs), so this module calls
the C API through ctypes, on the libturbojpeg 3 that the `turbojpeg` wheel bundles
(requirements.txt). ctypes releases the GIL during the call, so Grain's read threads decode in
parallel.

Same pixels as the full decode: libjpeg-turbo needs the region's left edge on an iMCU column
(8 to 32 pixels, by chroma subsampling), and its "fancy" (triangle-filter) chroma upsampling
treats the region's left and right edges as image edges. So the decoded region starts at the
iMCU column at or before one pixel left of the wanted columns and ends one pixel after them
(where the image goes on), and the extra columns are sliced off (a view, no copy).
`tests/test_jpeg_region.py` checks equality with the full decode for each chroma subsampling,
progressive files, boxes on every edge, and decodes at 1/2 to 1/8 size.

Colour: YCbCr, grayscale and RGB JPEGs come out as RGB. CMYK and YCCK JPEGs are not taken
(`DECODABLE_COLORSPACES`): libjpeg-turbo does not convert them to RGB; `image_ops` decodes those
whole. Corrupt data is an error, warnings included (TurboJPEG's stop-on-warning), as in
`image_ops`' strict full decode: a truncated file does not come back with grey rows.
"""

import ctypes
import importlib.metadata
import os
import threading

import numpy as np

# simplejpeg's header names of the colour spaces this decoder converts to RGB.
DECODABLE_COLORSPACES = ("YCbCr", "Gray", "RGB")

# turbojpeg.h (TurboJPEG 3.0).
_TJINIT_DECOMPRESS = 1
_TJPARAM_STOPONWARNING = 0
_TJPARAM_SUBSAMP = 4
_TJPARAM_JPEGWIDTH = 5
_TJPARAM_JPEGHEIGHT = 6
_TJPF_RGB = 0
# iMCU width in pixels, indexed by TJSAMP_444, 422, 420, GRAY, 440, 411, 441 (tjMCUWidth).
_IMCU_WIDTH = (8, 16, 16, 8, 8, 32, 8)


class _Region(ctypes.Structure):
  _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int),
              ("h", ctypes.c_int)]


class _ScalingFactor(ctypes.Structure):
  _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


def _library_path() -> str:
  """The libturbojpeg shipped inside the `turbojpeg` wheel (auditwheel renames it)."""
  try:
    files = importlib.metadata.distribution("turbojpeg").files or []
  except importlib.metadata.PackageNotFoundError as e:
    raise ImportError("Region JPEG decoding needs the `turbojpeg` wheel, which bundles "
                      "libturbojpeg 3: pip install -r requirements.txt") from e
  # The C library, not the wheel's own Python extension (turbojpeg.cpython-*.so).
  libraries = [f for f in files if f.name.startswith("libturbojpeg")
               and (".so" in f.name or f.name.endswith(".dylib"))]
  if len(libraries) != 1:
    raise ImportError(f"Expected one libturbojpeg in the `turbojpeg` wheel, found "
                      f"{[str(f) for f in libraries]}.")
  return os.fspath(libraries[0].locate())


def _load_library(path: str) -> ctypes.CDLL:
  lib = ctypes.CDLL(path)
  if not hasattr(lib, "tj3SetCroppingRegion"):
    raise ImportError(f"{path} is not TurboJPEG 3 (no tj3SetCroppingRegion).")
  handle, buffer, status = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
  signatures = {
      "tj3Init": ([ctypes.c_int], handle),
      "tj3Set": ([handle, ctypes.c_int, ctypes.c_int], status),
      "tj3Get": ([handle, ctypes.c_int], ctypes.c_int),
      "tj3DecompressHeader": ([handle, buffer, ctypes.c_size_t], status),
      "tj3SetScalingFactor": ([handle, _ScalingFactor], status),
      "tj3SetCroppingRegion": ([handle, _Region], status),
      "tj3Decompress8": ([handle, buffer, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int,
                          ctypes.c_int], status),
      "tj3GetErrorStr": ([handle], ctypes.c_char_p),
      "tj3Destroy": ([handle], None),
  }
  for name, (argtypes, restype) in signatures.items():
    function = getattr(lib, name)
    function.argtypes, function.restype = argtypes, restype
  return lib


_LIB = _load_library(_library_path())


class _Decompressor:
  """One TurboJPEG decompression handle; a handle must not be shared between threads."""

  def __init__(self):
    self._destroy = _LIB.tj3Destroy  # Kept: module globals may be gone when __del__ runs.
    self.handle = _LIB.tj3Init(_TJINIT_DECOMPRESS)
    if not self.handle:
      raise RuntimeError(f"tj3Init failed: {_LIB.tj3GetErrorStr(None).decode()}")
    self._check(_LIB.tj3Set(self.handle, _TJPARAM_STOPONWARNING, 1), "tj3Set")

  def __del__(self):
    if getattr(self, "handle", None):
      self._destroy(self.handle)

  def _check(self, status: int, call: str) -> None:
    if status != 0:
      raise ValueError(f"{call}: {_LIB.tj3GetErrorStr(self.handle).decode(errors='replace')}")

  def decode(self, jpeg: bytes, top: int, left: int, height: int, width: int,
             scale: int) -> np.ndarray:
    self._check(_LIB.tj3DecompressHeader(self.handle, jpeg, len(jpeg)), "tj3DecompressHeader")
    subsampling = _LIB.tj3Get(self.handle, _TJPARAM_SUBSAMP)
    if not 0 <= subsampling < len(_IMCU_WIDTH):
      raise ValueError(f"unsupported chroma subsampling (TJSAMP {subsampling})")
    self._check(_LIB.tj3SetScalingFactor(self.handle, _ScalingFactor(1, scale)),
                "tj3SetScalingFactor")
    # TJSCALED: libjpeg's scaled sizes round up.
    full_width = -(-_LIB.tj3Get(self.handle, _TJPARAM_JPEGWIDTH) // scale)
    full_height = -(-_LIB.tj3Get(self.handle, _TJPARAM_JPEGHEIGHT) // scale)
    if not (0 <= top and 0 <= left and 0 < height and 0 < width
            and top + height <= full_height and left + width <= full_width):
      raise ValueError(f"region (top {top}, left {left}, height {height}, width {width}) is "
                       f"not inside the {full_height} x {full_width} image decoded at 1/{scale}")
    imcu_width = -(-_IMCU_WIDTH[subsampling] // scale)
    # One pixel of context on each side for the chroma upsampling (module docstring).
    x0 = max(0, left - 1)
    x0 -= x0 % imcu_width
    x1 = min(full_width, left + width + 1)
    self._check(_LIB.tj3SetCroppingRegion(self.handle, _Region(x0, top, x1 - x0, height)),
                "tj3SetCroppingRegion")
    out = np.empty((height, x1 - x0, 3), np.uint8)
    self._check(_LIB.tj3Decompress8(self.handle, jpeg, len(jpeg), out.ctypes.data,
                                    out.strides[0], _TJPF_RGB), "tj3Decompress8")
    return out[:, left - x0:left - x0 + width]


_THREAD_STATE = threading.local()


def decode_region(jpeg: bytes, top: int, left: int, height: int, width: int, *,
                  scale: int = 1) -> np.ndarray:
  """Rows [top, top + height) and columns [left, left + width) of the JPEG decoded at 1/scale.

  The region is in pixels of the decoded image, which is ceil(size / scale) large (libjpeg's
  DCT-domain scaling, `scale` in 1, 2, 4, 8). Returns uint8 RGB [height, width, 3] (a view
  into the decoded region). Raises ValueError with TurboJPEG's message for corrupt or
  truncated data, an unsupported file (CMYK, YCCK: see DECODABLE_COLORSPACES) or a region
  outside the image.
  """
  decompressor = getattr(_THREAD_STATE, "decompressor", None)
  if decompressor is None:  # One handle per thread (and per process: state is thread-local).
    decompressor = _THREAD_STATE.decompressor = _Decompressor()
  try:
    return decompressor.decode(jpeg, top, left, height, width, scale)
  except ValueError:
    # After an error libjpeg-turbo's handle can keep failing on good files ("Premature end of
    # JPEG file" from the next header): the next call starts on a fresh one.
    _THREAD_STATE.decompressor = None
    raise
