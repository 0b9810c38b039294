"""Datasets of luab_jax: TFDS builders that live in this package, read as ArrayRecord."""
