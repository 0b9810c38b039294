"""Peer: tf.data doing the same decode + RandomResizedCrop + flip + normalise, on the same JPEGs.

    .venv-bench/bin/python -m benchmarks.peers.tfdata_pipeline --manual_dir /tmp/luab_input_bench/jpegs

Runs in `.venv-bench` (tensorflow-cpu), never imports luab_jax. Reads the JPEG files that
`benchmarks.jpeg_data` wrote (the bytes our ArrayRecord dataset stores), holds them in memory
and builds, per setting `VARIANT:CORES`:
- `plain`: decode_jpeg -> sample_distorted_bounding_box (area 0.08-1, aspect 3/4-4/3, as ours)
  -> crop -> resize to 224 -> random flip -> [-1, 1];
- `fused`: the same box from `extract_jpeg_shape`, then `decode_and_crop_jpeg` (decodes only the
  box; what big_vision's `decode_jpeg_and_inception_crop` does) -> resize -> flip -> [-1, 1];
Both decode with TensorFlow's default `dct_method`, libjpeg's fast integer IDCT (JDCT_IFAST;
ours uses the accurate one, BENCHMARKS.md, Input pipeline, seventh run);
batched (`--batch_size`), `num_parallel_calls` = CORES, tf.data's private thread pool of CORES
threads, intra-op parallelism 1, and this process pinned to CORES cores. Resize: bilinear without
antialiasing by default (tf.image.resize's and big_vision's default, and ours: OpenCV's
INTER_LINEAR), `--resize bicubic` for the bicubic kernel. The peer hands float32 [-1, 1] batches
over, as tf.data pipelines do (tf.image.resize returns float32); ours hands uint8 over and the
model scales it on the device.
Timing as ours: `--warmup` untimed repetitions, then `--repeats` x `--batches` batches.
"""

import argparse
import os
import time

from benchmarks import jpeg_data
from benchmarks import timing

DEFAULT_SETTINGS = ("plain:1", "fused:1", "plain:2", "fused:2")


def build(tf, jpegs, variant: str, cores: int, args):
  size = args.image_size

  def box(shape):
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4], tf.float32), area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), min_object_covered=0.0, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    return begin, crop_size

  def finish(crop):
    image = tf.image.resize(crop, [size, size], method=args.resize)
    image = tf.image.random_flip_left_right(image)
    return image * (2.0 / 255.0) - 1.0

  def plain(data):
    image = tf.io.decode_jpeg(data, channels=3)
    begin, crop_size = box(tf.shape(image))
    return finish(tf.slice(image, begin, crop_size))

  def fused(data):
    begin, crop_size = box(tf.io.extract_jpeg_shape(data))
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    return finish(tf.io.decode_and_crop_jpeg(data, window, channels=3))

  ds = tf.data.Dataset.from_tensor_slices(jpegs).shuffle(len(jpegs), seed=0).repeat()
  ds = ds.map({"plain": plain, "fused": fused}[variant], num_parallel_calls=cores)
  ds = ds.batch(args.batch_size, drop_remainder=True).prefetch(2)
  options = tf.data.Options()
  options.threading.private_threadpool_size = cores
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manual_dir", required=True, help="benchmarks.jpeg_data's output")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--resize", default="bilinear", choices=["bilinear", "bicubic"])
  parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                      help="comma-separated VARIANT:CORES, VARIANT in plain, fused")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  all_cores = sorted(os.sched_getaffinity(0))
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  jpegs = jpeg_data.read_jpegs(args.manual_dir)
  header = timing.machine("tensorflow-cpu", "tensorflow", "numpy")
  timing.emit({"kind": "header", "bench": "input_pipeline", **header}, args.out)
  for setting in args.settings.split(","):
    variant, cores = setting.split(":")
    cores = int(cores)
    os.sched_setaffinity(0, set(all_cores[:cores]))
    it = iter(build(tf, jpegs, variant, cores, args))

    def pull():
      for _ in range(args.batches):
        batch = next(it)
      batch.numpy()

    start = time.perf_counter()
    next(it)
    first = time.perf_counter() - start
    stats = timing.repeat(pull, warmup=args.warmup, repeats=args.repeats)
    rate = stats.rate(args.batches * args.batch_size)
    timing.emit({"kind": "result", "bench": "input_pipeline", "impl": f"tfdata_{variant}",
                 "setting": setting, "cores": cores, "resize": args.resize,
                 "image_size": args.image_size, "batch_size": args.batch_size,
                 "first_batch_s": round(first, 2), "images_per_s": rate,
                 "per_core": rate["median"] / cores}, args.out)
    del it


if __name__ == "__main__":
  main()
