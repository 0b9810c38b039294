"""Models, one module per family, found by name (`config.model_name = "vit"` -> `vit.Model`).

Every model is a Flax NNX module built as `Model(num_classes=..., **config.model, rngs=...)`
whose `__call__(images)` returns `{"logits", "points", "pre_logits"}` with logits and points in
float32. See `luab_jax/models/vit.py`.
"""
