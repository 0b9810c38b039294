"""Evaluators: `Evaluator(fns: common.ModelFns, *, mesh, data_dir, input_config, **config)`.

`.run(params) -> {metric: value}` evaluates one set of parameters; `.num_examples` is the number
of images one run reads (for throughput). `config.evals` maps a name to a dict with `type` (a
module of this package: classification, localization, background_challenge, siscore,
imagenet_corrupted, multilabel) and that evaluator's arguments; see common.from_config. The
trainer (periodic evaluation) and `python -m luab_jax.evaluate` (batch evaluation of
checkpoints) build them the same way.
"""
