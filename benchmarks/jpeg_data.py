"""ImageNet-like JPEGs made at run time for the input-pipeline benchmarks (no download).

    python -m benchmarks.jpeg_data --out /tmp/jpegs --num_images 600

Writes an ImageNet-AB manual directory for the `imagenet_ab/fixture` builder (its three classes
n00000001..3): `train/<wnid>/<wnid>_<i>.JPEG` and `train_xml/<wnid>/<wnid>_<i>.xml` with one
selected click each, so the prepared records carry real points. The peers read the same files
(the builder stores a decodable RGB JPEG byte for byte, so both sides decode identical bytes).

Each image is a random crop of a photograph of `tests/fixtures/photos/` (or of the photos given
with --photos), resized to 500 x 375 (one in five portrait, 375 x 500), colour-jittered, with a
second photo blended in and mild grain so the files are not smooth upscales; JPEG quality 90,
4:2:0 chroma subsampling, as most ImageNet files. About 80 KB a file on average (ImageNet's train
JPEGs average ~110 KB at ~400 x 350 pixels; these have 500 x 375).

Depends only on numpy and PIL (runs in `.venv` and in `.venv-bench`).
"""

import argparse
import glob
import os

import numpy as np
from PIL import Image

WNIDS = ("n00000001", "n00000002", "n00000003")
PHOTOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "tests", "fixtures", "photos")
_SKIP = ("truncated", "png_named")

_XML = """<annotation>
\t<metadata>
\t\t<estimateTime>{time}</estimateTime>
\t\t<imageHeight>{h}</imageHeight>
\t\t<imageID>{wnid}/{stem}</imageID>
\t\t<imageWidth>{w}</imageWidth>
\t\t<originalImageHeight>{h}</originalImageHeight>
\t\t<originalImageWidth>{w}</originalImageWidth>
\t\t<selected>True</selected>
\t\t<selectedCount>1</selectedCount>
\t\t<selectedRecord>
\t\t\t<x>{x:.4f}</x>
\t\t\t<y>{y:.4f}</y>
\t\t\t<time>{time}</time>
\t\t</selectedRecord>
\t</metadata>
</annotation>
"""


def _photos(folder: str) -> list[np.ndarray]:
  paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                 if p.lower().endswith((".jpg", ".jpeg")) and not any(s in p for s in _SKIP))
  out = []
  for path in paths:
    with Image.open(path) as im:
      out.append(np.asarray(im.convert("RGB"), np.float32))
  if not out:
    raise FileNotFoundError(f"No photographs in {folder}.")
  return out


def _random_view(rng, photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """A random crop (40-100% of the area, any aspect within 3/4..4/3) resized to `size` (w, h)."""
  h, w = photo.shape[:2]
  area = h * w * rng.uniform(0.4, 1.0)
  aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
  cw = int(min(w, round(np.sqrt(area * aspect))))
  ch = int(min(h, round(np.sqrt(area / aspect))))
  top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  crop = Image.fromarray(photo[top:top + ch, left:left + cw].astype(np.uint8))
  if rng.random() < 0.5:
    crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(crop.resize(size, Image.Resampling.BICUBIC), np.float32)


def make_image(rng: np.random.Generator, photos: list[np.ndarray]) -> Image.Image:
  size = (375, 500) if rng.random() < 0.2 else (500, 375)
  a = _random_view(rng, photos[rng.integers(len(photos))], size)
  b = _random_view(rng, photos[rng.integers(len(photos))], size)
  mix = rng.uniform(0.15, 0.4)
  image = (1 - mix) * a + mix * b
  gain = rng.uniform(0.75, 1.25, size=3)  # Per-channel colour jitter.
  image = (image - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-20, 20)
  image = image * gain
  # Grain (luminance, plus a little per channel): the photos are small, and smooth upscales
  # would make files and decoding unrealistically cheap.
  image += rng.normal(0, 12.0, image.shape[:2])[..., None] + rng.normal(0, 4.0, image.shape)
  return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def write_manual_dir(out: str, num_images: int, *, seed: int = 0, quality: int = 90,
                     photos_dir: str = PHOTOS) -> list[str]:
  """Writes the manual directory; returns the JPEG paths (sorted). Reuses a complete one."""
  paths = []
  for i in range(num_images):
    wnid = WNIDS[i % len(WNIDS)]
    paths.append(os.path.join(out, "train", wnid, f"{wnid}_{i}.JPEG"))
  stamp = os.path.join(out, "COMPLETE")
  want = f"{num_images} {seed} {quality}\n"
  if os.path.exists(stamp) and open(stamp).read() == want:
    return sorted(paths)
  rng = np.random.default_rng(seed)
  photos = _photos(photos_dir)
  for wnid in WNIDS:
    os.makedirs(os.path.join(out, "train", wnid), exist_ok=True)
    os.makedirs(os.path.join(out, "train_xml", wnid), exist_ok=True)
  for path in paths:
    image = make_image(rng, photos)
    image.save(path, "JPEG", quality=quality, subsampling="4:2:0")
    wnid, stem = os.path.basename(os.path.dirname(path)), os.path.basename(path)[:-5]
    x, y = rng.uniform(0.05, 0.95, size=2)
    with open(os.path.join(out, "train_xml", wnid, stem + ".xml"), "w") as f:
      f.write(_XML.format(time=int(rng.integers(500, 5000)), h=image.height, w=image.width,
                          wnid=wnid, stem=stem, x=x, y=y))
  with open(stamp, "w") as f:
    f.write(want)
  return sorted(paths)


def read_jpegs(manual_dir: str) -> list[bytes]:
  """The JPEG files of a manual directory written by `write_manual_dir`, in sorted path order."""
  paths = sorted(glob.glob(os.path.join(manual_dir, "train", "*", "*.JPEG")))
  if not paths:
    raise FileNotFoundError(f"No JPEGs under {manual_dir}/train/; run benchmarks.jpeg_data.")
  out = []
  for path in paths:
    with open(path, "rb") as f:
      out.append(f.read())
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_images", type=int, default=600)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  paths = write_manual_dir(args.out, args.num_images, seed=args.seed)
  sizes = [os.path.getsize(p) for p in paths]
  print(f"{len(paths)} JPEGs under {args.out}: mean {np.mean(sizes) / 1024:.0f} KB "
        f"(min {min(sizes) / 1024:.0f}, max {max(sizes) / 1024:.0f})")


if __name__ == "__main__":
  main()
