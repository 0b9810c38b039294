"""ImageNet-AB: ImageNet-1k train images with their annotation byproducts, as a TFDS builder.

Importing this package registers the TFDS builder "imagenet_ab" (configs 1k, fixture). XML
parsing and the official target live in `xml_records` (no TFDS there).
"""

from luab_jax.datasets.imagenet_ab import imagenet_ab_dataset_builder  # noqa: F401  (registers)
from luab_jax.datasets.imagenet_ab.imagenet_ab_dataset_builder import ImagenetAb  # noqa: F401
