"""The embedded background-reliance benchmark `luab_shapes`.

Importing this package registers the TFDS builder "luab_shapes" (configs cpu64, gpu224, tiny).
The renderer itself (`generator`) is pure numpy + PIL.
"""

from luab_jax.datasets.luab_shapes import luab_shapes_dataset_builder  # noqa: F401  (registers)
from luab_jax.datasets.luab_shapes.luab_shapes_dataset_builder import LuabShapes  # noqa: F401
