"""Benchmarks: speed and memory of the train step, the input pipeline and the whole loop.

Not tests: each script prints its command, the machine and the figures (BENCHMARKS.md holds
the tables). Run from the repository root, e.g. `python -m benchmarks.train_step --help`.
"""
