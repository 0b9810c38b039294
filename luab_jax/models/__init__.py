"""Models, one module per family, found by name (`config.model_name = "vit"` -> `vit.Model`).

Every model is a Flax NNX module built as `Model(num_classes=..., **config.model, rngs=...)`
whose `__call__(images)` takes uint8 images [B, S, S, 3] and returns a dict with `logits`
[B, num_classes] and `points` [B, num_points, 2] ((x, y) in [0, 1]), both float32; more entries
are allowed. `train_state.model_spec` checks the keys and these shapes at start. See
`luab_jax/models/vit.py`.
"""
