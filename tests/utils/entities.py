"""Comparing entity lists with the reference's."""

from __future__ import annotations

import numpy as np


def assert_same_entities(ours: list[dict], ref: list[dict]) -> None:
    """The same spans, texts and labels in the same order; scores within 1e-5."""
    assert [(e["start"], e["end"], e["text"], e["label"]) for e in ours] == [
        (e["start"], e["end"], e["text"], e["label"]) for e in ref
    ]
    np.testing.assert_allclose([e["score"] for e in ours], [e["score"] for e in ref], rtol=0, atol=1e-5)
