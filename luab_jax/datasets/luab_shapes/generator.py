"""Procedural "shapes in habitats" benchmark: a Waterbirds / Backgrounds-Challenge in miniature.

Each image shows one small shape (the class, K <= 10 of them) pasted on a procedural background
texture (a "habitat" family). In training, the habitat family equals the class with probability
`rho`, so the whole image carries an easy spurious cue while the true cue (the small shape) is
harder. A plain classifier takes the shortcut; LUAB's click regression points the model at the
object. Simulated annotator clicks are sampled inside the exact object mask.

Pure numpy + PIL (no TensorFlow): rendering is a function of (spec, split, index) only.

Coordinates
-----------
All points and boxes are normalised to [0, 1] over the whole image, x to the right, y down:
pixel column c covers x in [c/S, (c+1)/S). `clicks` is float32 [N, 2] of (x, y); `point` is the
mean of the clicks (the official ImageNet-AB regression target), or (-1, -1) when N == 0, with
`has_point` False. `object_box` is (x_min, y_min, x_max, y_max) of the object's mask pixels.

Splits
------
- "train": label uniform; habitat == label with probability rho, otherwise one of the K-1 other
  habitats uniformly (so P(habitat == label) is exactly rho). `no_click_fraction` of the train
  images have no clicks.
- Evaluation splits, IN-9 style (all always have clicks; labels are balanced, label = index % K):
  "original" (habitat == label w.p. rho), "mixed_same" (habitat == label, a new background
  instance), "mixed_rand" (habitat uniform), "mixed_next" (habitat == (label + 1) % K), "only_fg"
  (shape on a neutral grey background, bg_label = -1), "no_fg" (habitat == label, object region
  painted black), "only_bg" (habitat == label, no object; object_box = -1, but label, clicks and
  point still describe where the object would be).
  Example i of every evaluation split has the same foreground (class, geometry, colour, clicks):
  it comes from the rng stream [seed, EVAL_FG_STREAM, i]; its background comes from
  [seed, split_id, i]. Train uses [seed, TRAIN_STREAM, i] for everything.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("disk", "square", "triangle", "cross", "star", "ring", "diamond", "crescent",
               "arrow", "heart")
HABITAT_NAMES = ("waves", "fine_diagonal", "vertical", "checker", "dots", "rings", "hatch",
                 "blobs", "plaid", "speckle")
TRAIN_SPLIT = "train"
EVAL_SPLITS = ("original", "mixed_same", "mixed_rand", "mixed_next", "only_fg", "no_fg", "only_bg")
SPLITS = (TRAIN_SPLIT,) + EVAL_SPLITS

# Rng stream ids: disjoint from the eval split ids (1..7) used for eval backgrounds.
TRAIN_STREAM = 100
EVAL_FG_STREAM = 200
_SPLIT_IDS = {name: i + 1 for i, name in enumerate(EVAL_SPLITS)}

_SUPERSAMPLE = 4  # Shapes are drawn at 4x resolution and box-downsampled: anti-aliased edges.
_NEUTRAL_GREY = 0.5


@dataclasses.dataclass(frozen=True)
class ShapesSpec:
  """Knobs of the benchmark. Fractions are of the image side."""
  image_size: int = 64
  num_classes: int = 10
  rho: float = 0.9                                  # P(train habitat == class).
  object_scale: tuple[float, float] = (0.2, 0.35)   # Object diameter range.
  clicks_per_object: tuple[int, int] = (1, 3)       # Inclusive range.
  click_jitter: float = 0.02                        # Gaussian std of a click around its sample.
  no_click_fraction: float = 0.2                    # Train images with no clicks at all.
  seed: int = 0

  def __post_init__(self):
    if not 2 <= self.num_classes <= len(CLASS_NAMES):
      raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}], got {self.num_classes}.")
    if not 0.0 <= self.rho <= 1.0:
      raise ValueError(f"rho must be in [0, 1], got {self.rho}.")
    lo, hi = self.object_scale
    if not 0.0 < lo <= hi < 1.0:
      raise ValueError(f"object_scale must satisfy 0 < min <= max < 1, got {self.object_scale}.")
    if not 0 <= self.clicks_per_object[0] <= self.clicks_per_object[1]:
      raise ValueError(f"bad clicks_per_object {self.clicks_per_object}.")
    if self.image_size < 16:
      raise ValueError(f"image_size must be >= 16, got {self.image_size}.")


# ----------------------------------------------------------------------------------------------
# Foreground: unit shapes. Each is a list of (polygon, fill) drawn in order; fill 0 cuts a hole.
# Vertices lie in the unit disk, y down, so a radius-r object fits a circle of radius r.
# ----------------------------------------------------------------------------------------------


def _circle(radius, cx=0.0, cy=0.0, n=48):
  t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
  return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _regular_star(points, outer, inner):
  t = np.arange(2 * points) * np.pi / points - np.pi / 2
  r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
  return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _heart(n=64):
  t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
  x = 16 * np.sin(t) ** 3
  y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
  pts = np.stack([x, y], axis=1)
  pts -= (pts.max(0) + pts.min(0)) / 2  # Centre the bounding box.
  return pts / np.linalg.norm(pts, axis=1).max()


@functools.cache
def _unit_shapes():
  a = 0.3  # Half-width of the cross arms.
  return (
      [(_circle(0.95), 1)],                                                   # disk
      [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.68, 1)],           # square
      [(_regular_star(3, 1.0, 0.5)[::2], 1)],                                 # triangle
      [(np.array([[-a, -.95], [a, -.95], [a, -a], [.95, -a], [.95, a], [a, a], [a, .95],
                  [-a, .95], [-a, a], [-.95, a], [-.95, -a], [-a, -a]]), 1)],  # cross
      [(_regular_star(5, 1.0, 0.42), 1)],                                     # star
      [(_circle(0.95), 1), (_circle(0.55), 0)],                               # ring
      [(np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]]), 1)],              # diamond
      [(_circle(0.95), 1), (_circle(0.8, cx=0.45), 0)],                       # crescent
      [(np.array([[-1, -.22], [.1, -.22], [.1, -.6], [1, 0], [.1, .6], [.1, .22],
                  [-1, .22]]), 1)],                                           # arrow
      [(_heart(), 1)],                                                        # heart
  )


def _draw_alpha(label, size, center, radius, angle):
  """Anti-aliased coverage in [0, 1] (float32 [S, S]) of shape `label`.

  Only the square patch around the object is drawn (at 4x): at 224 px this is several times
  faster than supersampling the whole canvas.
  """
  ss = _SUPERSAMPLE
  x0, y0 = (max(0, int(math.floor(c - radius)) - 1) for c in center)
  x1, y1 = (min(size, int(math.ceil(c + radius)) + 1) for c in center)
  canvas = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
  draw = ImageDraw.Draw(canvas)
  rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  offset = np.asarray(center) - (x0, y0)
  for poly, fill in _unit_shapes()[label]:
    pts = (np.asarray(poly, np.float64) @ rot.T * radius + offset) * ss
    draw.polygon([tuple(p) for p in pts.tolist()], fill=255 * fill)
  alpha = np.zeros((size, size), np.float32)
  # Box filter: each output pixel gets the mean coverage of its 4x4 sub-pixels.
  alpha[y0:y1, x0:x1] = np.asarray(canvas.reduce(ss), np.float32) / 255.0
  return alpha


@dataclasses.dataclass(frozen=True)
class _Foreground:
  label: int
  alpha: np.ndarray   # float32 [S, S] coverage.
  colour: np.ndarray  # float32 [3].
  texture: np.ndarray  # float32 [S, S, 1] light multiplicative noise.
  clicks: np.ndarray  # float32 [N, 2].
  box: np.ndarray     # float32 [4].


def _object_colour(rng):
  """A colour that ignores the class and contrasts with every habitat.

  Habitats stay in mid luminance (about 0.25..0.75), so objects are either dark or light.
  """
  lum = rng.uniform(0.02, 0.14) if rng.random() < 0.5 else rng.uniform(0.86, 0.98)
  hue = rng.uniform(0, 2 * np.pi)
  chroma = rng.uniform(0.0, 0.12)
  return np.clip(lum + chroma * _hue_vector(hue), 0.0, 1.0).astype(np.float32)


def _sample_clicks(rng, mask, n, jitter):
  """n points uniform inside the binary mask (sub-pixel), plus gaussian jitter, clipped to [0,1]."""
  size = mask.shape[0]
  ys, xs = np.nonzero(mask)
  pick = rng.integers(0, len(xs), size=n)
  pts = np.stack([xs[pick], ys[pick]], axis=1) + rng.uniform(0.0, 1.0, size=(n, 2))
  pts = pts / size + rng.normal(0.0, jitter, size=(n, 2))
  return np.clip(pts, 0.0, 1.0).astype(np.float32)


def _mask_box(mask):
  size = mask.shape[0]
  ys, xs = np.nonzero(mask)
  return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) / size


def _sample_foreground(spec, rng, label, with_clicks):
  size = spec.image_size
  radius = rng.uniform(*spec.object_scale) * size / 2
  margin = radius + 1.0  # Keep the whole shape (and its anti-aliased rim) inside the image.
  center = rng.uniform(margin, size - margin, size=2)
  angle = rng.uniform(0, 2 * np.pi)
  alpha = _draw_alpha(label, size, center, radius, angle)
  colour = _object_colour(rng)
  texture = 1.0 + 0.04 * _noise(rng, (size, size, 1))
  mask = alpha >= 0.5
  n = int(rng.integers(spec.clicks_per_object[0], spec.clicks_per_object[1] + 1))
  clicks = (_sample_clicks(rng, mask, n, spec.click_jitter) if with_clicks and n > 0
            else np.zeros((0, 2), np.float32))
  return _Foreground(label, alpha, colour, texture, clicks, _mask_box(mask))


# ----------------------------------------------------------------------------------------------
# Backgrounds: K habitat families, recognisable from global texture statistics and palette.
# ----------------------------------------------------------------------------------------------


def _noise(rng, shape):
  """Standard normal float32 noise (float32 sampling is about twice as fast as float64)."""
  return rng.standard_normal(shape, dtype=np.float32)


def _hue_vector(hue):
  """Zero-mean RGB direction of a hue: adding it changes colour, not mean brightness."""
  return np.array([math.cos(hue), math.cos(hue - 2 * np.pi / 3), math.cos(hue + 2 * np.pi / 3)],
                  np.float32)


@functools.cache
def _grid(size):
  c = (np.arange(size, dtype=np.float32) + 0.5) / size
  return c[None, :], c[:, None]  # u (x) row, v (y) column: broadcast to [S, S].


def _grating(u, v, theta, cycles, phase):
  arg = np.float32(2 * np.pi * cycles) * (u * np.float32(np.cos(theta)) + v * np.float32(np.sin(theta)))
  return 0.5 + 0.5 * np.sin(arg + np.float32(phase))


def _value_noise(rng, size, cells):
  coarse = rng.random((cells, cells)).astype(np.float32)
  img = Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC)
  p = np.asarray(img)
  return (p - p.min()) / max(float(np.ptp(p)), 1e-6)


def _habitat_pattern(family, rng, size):
  """Pattern p in [0, 1], float32 [S, S], with per-instance phase / orientation / scale jitter."""
  u, v = _grid(size)
  d_theta = np.deg2rad(rng.uniform(-8, 8))
  freq = rng.uniform(0.9, 1.1)
  phase = rng.uniform(0, 2 * np.pi)
  if family == 0:    # waves: horizontal stripes, low frequency.
    return _grating(u, v, np.pi / 2 + d_theta, 2.5 * freq, phase)
  if family == 1:    # fine_diagonal: 45 degree, high frequency.
    return _grating(u, v, np.pi / 4 + d_theta, 6.0 * freq, phase)
  if family == 2:    # vertical stripes, medium frequency.
    return _grating(u, v, d_theta, 4.0 * freq, phase)
  if family == 3:    # checker: product of two square waves.
    a = _grating(u, v, d_theta, 2.0 * freq, phase) > 0.5
    b = _grating(u, v, np.pi / 2 + d_theta, 2.0 * freq, rng.uniform(0, 2 * np.pi)) > 0.5
    return (a ^ b).astype(np.float32)
  if family == 4:    # dots: smooth blobs on a square lattice.
    a = _grating(u, v, d_theta, 5.0 * freq, phase)
    b = _grating(u, v, np.pi / 2 + d_theta, 5.0 * freq, rng.uniform(0, 2 * np.pi))
    return ((a * b) > 0.45).astype(np.float32)
  if family == 5:    # rings: concentric circles around a random centre.
    cx, cy = rng.uniform(0, 1, size=2)
    r = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
    return 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * freq * r + phase)
  if family == 6:    # hatch: hard-edged 135 degree stripes.
    return (_grating(u, v, 3 * np.pi / 4 + d_theta, 5.0 * freq, phase) > 0.5).astype(np.float32)
  if family == 7:    # blobs: smooth value noise.
    return _value_noise(rng, size, cells=int(rng.integers(4, 6)))
  if family == 8:    # plaid: sum of two oblique gratings.
    return 0.5 * (_grating(u, v, np.pi / 6 + d_theta, 3.0 * freq, phase) +
                  _grating(u, v, 2 * np.pi / 3 + d_theta, 3.0 * freq, rng.uniform(0, 2 * np.pi)))
  if family == 9:    # speckle: i.i.d. pixel noise (no orientation, all high frequency).
    return rng.random((size, size)).astype(np.float32)
  raise ValueError(f"unknown habitat family {family}")


def _render_background(family, rng, size):
  """float32 [S, S, 3] in about [0.25, 0.75]: two palette colours of the family's hue."""
  hue = 2 * np.pi * family / len(HABITAT_NAMES) + rng.uniform(-0.15, 0.15)
  chroma = rng.uniform(0.11, 0.16)
  lo = rng.uniform(0.36, 0.42) + chroma * _hue_vector(hue)
  hi = rng.uniform(0.58, 0.64) + chroma * _hue_vector(hue + rng.uniform(-0.3, 0.3))
  p = _habitat_pattern(family, rng, size)[..., None]
  img = lo.astype(np.float32) + (hi - lo).astype(np.float32) * p
  return img + 0.02 * _noise(rng, img.shape)


def _neutral_background(rng, size):
  return _NEUTRAL_GREY + 0.02 * _noise(rng, (size, size, 3))


# ----------------------------------------------------------------------------------------------
# Assembly.
# ----------------------------------------------------------------------------------------------


def _composite(background, fg, paint=None):
  """Alpha-blends the foreground (its textured colour, or a flat `paint`) onto the background."""
  alpha = fg.alpha[..., None]
  obj = fg.colour * fg.texture if paint is None else np.asarray(paint, np.float32)
  return background * (1.0 - alpha) + obj * alpha


def _to_uint8(img):
  return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _spurious_family(rng, label, num_classes, rho):
  """The habitat equals the label w.p. rho, else one of the other K-1 uniformly."""
  if rng.random() < rho:
    return label
  return int((label + rng.integers(1, num_classes)) % num_classes)


def _eval_background_family(split, rng, label, spec):
  k = spec.num_classes
  if split == "original":
    return _spurious_family(rng, label, k, spec.rho)
  if split == "mixed_rand":
    return int(rng.integers(0, k))
  if split == "mixed_next":
    return (label + 1) % k
  if split == "only_fg":
    return -1
  return label  # mixed_same, no_fg, only_bg.


def _check_split(split):
  if split not in SPLITS:
    raise ValueError(f"Unknown luab_shapes split {split!r}; valid splits are {list(SPLITS)}.")


def render(spec: ShapesSpec, split: str, index: int) -> dict:
  """Renders example `index` of `split`; deterministic in (spec, split, index)."""
  _check_split(split)
  index = int(index)
  if index < 0:
    raise ValueError(f"index must be >= 0, got {index}.")
  size, k = spec.image_size, spec.num_classes
  if split == TRAIN_SPLIT:
    rng = np.random.default_rng([spec.seed, TRAIN_STREAM, index])
    label = int(rng.integers(0, k))
    # Drawn unconditionally so the rest of the stream does not depend on the outcome.
    with_clicks = rng.random() >= spec.no_click_fraction
    family = _spurious_family(rng, label, k, spec.rho)
    fg = _sample_foreground(spec, rng, label, with_clicks)
    image = _composite(_render_background(family, rng, size), fg)
  else:
    label = index % k  # Balanced evaluation classes.
    fg = _sample_foreground(spec, np.random.default_rng([spec.seed, EVAL_FG_STREAM, index]),
                            label, with_clicks=True)
    bg_rng = np.random.default_rng([spec.seed, _SPLIT_IDS[split], index])
    family = _eval_background_family(split, bg_rng, label, spec)
    background = (_neutral_background(bg_rng, size) if family < 0
                  else _render_background(family, bg_rng, size))
    if split == "only_bg":
      image = background
    elif split == "no_fg":
      image = _composite(background, fg, paint=(0.0, 0.0, 0.0))
    else:
      image = _composite(background, fg)

  clicks = fg.clicks
  has_point = len(clicks) > 0
  point = clicks.mean(axis=0) if has_point else np.full((2,), -1.0, np.float32)
  box = np.full((4,), -1.0, np.float32) if split == "only_bg" else fg.box
  return {
      "image": _to_uint8(image),
      "label": label,
      "bg_label": int(family),
      "clicks": clicks.astype(np.float32),
      "point": point.astype(np.float32),
      "has_point": bool(has_point),
      "object_box": box.astype(np.float32),
      "file_name": f"{split}/{index:07d}",
  }
