"""Test tiers and offline fixtures shared by every tier (helpers: `tests/utils`).

tests/unit runs without torch and gliner (tests/unit/conftest.py refuses them); tests/parity compares with gliner and
transformers (marker `parity`; its torch fixtures: tests/parity/conftest.py); tests/e2e trains, runs several processes
or devices (marker `slow`)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

from tests.utils.fresh import TEST_XLA_FLAGS

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is built locally; never wait on a hub
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()  # read when jax starts

HERE = Path(__file__).resolve().parent
# Each tier's folder and the marker that every test in it carries.
TIER_MARKERS = {"parity": pytest.mark.parity, "e2e": pytest.mark.slow}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.resolve().relative_to(HERE).parts
        if len(parts) > 1 and parts[0] in TIER_MARKERS:
            item.add_marker(TIER_MARKERS[parts[0]])


@pytest.fixture(scope="session")
def gliner_backbone(tmp_path_factory):
    """Directory with a tiny random DeBERTa-v3 plus tokenizer, shared by every reference GLiNER model (built with
    torch: parity and e2e tests only)."""
    from gliner_jax.testing.builders import build_backbone
    from tests.utils.encoders import TINY_V3

    return build_backbone(tmp_path_factory.mktemp("backbone"), TINY_V3)


@pytest.fixture(scope="session")
def labels_backbone(tmp_path_factory):
    """Directory with a tiny random label encoder plus tokenizer (its own vocabulary), for bi-encoder GLiNERs (built
    with torch: parity and e2e tests only)."""
    from gliner_jax.testing.builders import build_labels_backbone
    from tests.utils.encoders import TINY_LABELS_ENCODER

    return build_labels_backbone(tmp_path_factory.mktemp("labels_backbone"), TINY_LABELS_ENCODER)


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """Drop a test file's compiled XLA programs once the file is done: an xdist worker runs many files in turn, and
    their programs would otherwise pile up (one CI worker was killed for memory at 16 GB)."""
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
