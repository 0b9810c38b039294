"""COCO 2014 with the COCO-AB annotation byproducts.

Importing this package registers the TFDS builder "coco_ab" (configs 2014, fixture).
`coco_records` holds the parsing, the join on image id and the official target (pure Python +
numpy, no TFDS).
"""

from luab_jax.datasets.coco_ab import coco_ab_dataset_builder  # noqa: F401  (registers)
from luab_jax.datasets.coco_ab.coco_ab_dataset_builder import CocoAb  # noqa: F401
