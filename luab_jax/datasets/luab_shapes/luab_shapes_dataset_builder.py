"""TFDS builder "luab_shapes": the procedural background-reliance benchmark as ArrayRecord.

Nothing is downloaded: every example is `generator.render(config.spec, split, index)`.

  import luab_jax.datasets.luab_shapes  # registers the builder
  b = tfds.builder("luab_shapes/tiny", data_dir=D, file_format="array_record")
  b.download_and_prepare(file_format="array_record")
  src = b.as_data_source(split="train")   # random access: src[i] is example i

Configs: `cpu64` (64 px, K=10, rho 0.8, objects 30-50% of the side, 20,000 train, 1,000 per
eval split), `gpu224` (224 px, K=10, rho 0.9, 100,000 train, 2,000 per eval split), `tiny`
(32 px, K=4, rho 0.9, 256 train, 64 per eval split; tests). cpu64 uses a lower rho and larger
objects than the generator defaults so that the shape is learnable at all within the CPU
demo's ~50k training images; with rho 0.9 and objects of 20-35% neither the baseline nor LUAB
learned any shape in that budget (only_fg at chance for both).

Splits: "train" and `generator.EVAL_SPLITS`. Shuffling is disabled, so record i of a split is
example i and the eval splits stay aligned by index (shared foregrounds).

The image is stored as PNG bytes (encoded here with PIL). `as_data_source` decodes it, so a record
`src[i]` is a dict of numpy values:
  image       uint8 [S, S, 3] (decoded by TFDS; pass
              `decoders={"image": tfds.decode.SkipDecoding()}` to get the PNG `bytes` instead)
  label       int64 scalar, shape class (ClassLabel over `generator.CLASS_NAMES[:K]`)
  bg_label    int32 scalar, habitat family; -1 for only_fg
  clicks      float32 [N, 2], (x, y) in [0, 1], x right, y down; N may be 0
  point       float32 [2], mean of the clicks; (-1, -1) without clicks
  has_point   bool scalar
  object_box  float32 [4], (x_min, y_min, x_max, y_max) in [0, 1]; all -1 for only_bg
  file_name   bytes, f"{split}/{index:07d}"
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from luab_jax.datasets.luab_shapes import generator


@dataclasses.dataclass(eq=False)
class LuabShapesConfig(tfds.core.BuilderConfig):
  """A config: every `generator.ShapesSpec` field, plus the split sizes."""
  image_size: int = 64
  num_classes: int = 10
  rho: float = 0.9
  object_scale: tuple[float, float] = (0.2, 0.35)
  clicks_per_object: tuple[int, int] = (1, 3)
  click_jitter: float = 0.02
  no_click_fraction: float = 0.2
  seed: int = 0
  num_train: int = 20_000
  num_eval: int = 1_000  # Per evaluation split.

  def __post_init__(self):
    _ = self.spec  # Validates the generator fields when the config is declared.
    if self.num_train < 1 or self.num_eval < 1:
      raise ValueError(f"num_train and num_eval must be >= 1 ({self.num_train}, {self.num_eval}).")

  @property
  def spec(self) -> generator.ShapesSpec:
    names = [f.name for f in dataclasses.fields(generator.ShapesSpec)]
    return generator.ShapesSpec(**{name: getattr(self, name) for name in names})


def _png_bytes(image: np.ndarray) -> bytes:
  # PIL with light compression: much faster than TFDS's TF-based encoder, and tiny images
  # compress well anyway. TFDS stores bytes as they are (no re-encoding).
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


class LuabShapes(tfds.core.GeneratorBasedBuilder):
  """Shapes on spuriously correlated procedural backgrounds, with simulated annotator clicks."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      LuabShapesConfig(name="cpu64", description="64 px, 10 classes, rho 0.8; CPU runs.",
                       image_size=64, num_classes=10, rho=0.8, object_scale=(0.3, 0.5),
                       num_train=20_000, num_eval=1_000),
      LuabShapesConfig(name="gpu224", description="224 px, 10 classes, rho 0.9; GPU runs.",
                       image_size=224, num_classes=10, num_train=100_000, num_eval=2_000),
      LuabShapesConfig(name="tiny", description="32 px, 4 classes, rho 0.9; tests.",
                       image_size=32, num_classes=4, num_train=256, num_eval=64),
  ]
  DEFAULT_CONFIG_NAME = "cpu64"

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    s = cfg.image_size
    return self.dataset_info_from_configs(
        description=("Procedural shapes on habitat backgrounds that match the class with "
                     f"probability rho during training, with simulated clicks. {cfg.spec}"),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(generator.CLASS_NAMES[:cfg.num_classes])),
            "bg_label": tfds.features.Tensor(shape=(), dtype=np.int32),
            "clicks": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
            "point": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "has_point": tfds.features.Tensor(shape=(), dtype=np.bool_),
            "object_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # Record i == example i: eval splits are aligned by index.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered, nothing is downloaded.
    cfg = self.builder_config
    sizes = {generator.TRAIN_SPLIT: cfg.num_train}
    sizes.update({split: cfg.num_eval for split in generator.EVAL_SPLITS})
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    spec = self.builder_config.spec
    for index in range(num_examples):
      example = generator.render(spec, split, index)
      example["image"] = _png_bytes(example["image"])
      yield index, example


# The name TFDS also accepts for the builder class of a `*_dataset_builder.py` module.
Builder = LuabShapes
