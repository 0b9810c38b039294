"""Evaluators: `Evaluator(fns: common.ModelFns, **config).run(params) -> {metric: value}`.

`config.evals` maps a name to a dict with `type` (a module of this package, e.g.
"classification" or "background_challenge") and that evaluator's arguments; see common.py.
"""
