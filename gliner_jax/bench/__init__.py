"""Benchmarks and the accelerator check, side by side with the `gliner` PyTorch reference where there is one.

Run one with `python -m gliner_jax.bench NAME [args]` or `gliner-jax bench NAME [args]` (`--help` after NAME for its
options). The reference side (torch, transformers, gliner) is imported only inside the functions that run it.
"""
