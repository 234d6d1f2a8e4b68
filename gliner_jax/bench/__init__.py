"""Benchmarks and the accelerator check, side by side with the `gliner` PyTorch reference where there is one.

Run one with `python -m gliner_jax.bench NAME [args]` or `gliner-jax bench NAME [args]` (`--help` after NAME for its
options). The reference side (torch, transformers, gliner) is imported only inside the functions that run it.
"""

from __future__ import annotations

import argparse


def argument_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command-line parser of benchmark `module` (its `__name__`), its docstring as the description."""
    name = module.rpartition(".")[2]
    return argparse.ArgumentParser(
        prog=f"python -m gliner_jax.bench {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
