"""Peer implementations measured beside ours (timm in PyTorch, tf.data).

These modules import their peer library and nothing of luab_jax, and run in the separate
benchmark environment `.venv-bench` (`bash launch/bench_env.sh`), never in the project's.
"""
