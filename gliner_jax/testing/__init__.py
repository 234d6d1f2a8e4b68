"""Test and benchmark support: reference models built offline with PyTorch and `gliner` (needs the dev extra).

The package itself never imports this folder; tests (`tests/`) and benchmarks (`scripts/`) do.
"""
