"""The end-to-end tier (marker `slow`, set in tests/conftest.py): training runs, several processes and devices, and the
compile-heavy training-mode numerics of the encoder layers (remat, blockwise attention) that would hold up the unit
loop."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory) -> Path:
    """A persistent compilation cache for the training runs of this worker (runs of the same program compile once)."""
    return tmp_path_factory.mktemp("jax-cache")
