"""luab_jax: learning image classifiers from annotation byproducts (LUAB) in JAX.

Package levels (each imports only from levels below it):
  4. tools:        train, evaluate, demo, prepare_data
  3. evaluators:   evaluators/*
  2. plumbing:     input_pipeline, sharding, checkpointing
  1. building blocks: models/*, pp/* (data ops), losses, optim
  0. ground:       datasets/*, config_args, durations, metric_logs
"""
