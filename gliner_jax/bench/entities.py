"""Entities of two libraries compared: as plain tuples (picklable, JSON-able) and agreeing within a tolerance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Entity = tuple[int, int, str, float]


def simplify(entities: Sequence[Sequence[dict[str, Any]]]) -> list[list[Entity]]:
    """Each text's entities as (start, end, label, score) tuples."""
    return [[(e["start"], e["end"], e["label"], float(e["score"])) for e in row] for row in entities]


def agree(ref: list[list[Entity]], ours: list[list[Entity]], tolerance: float) -> bool:
    """Same entities (start, end, label) in the same order, scores within `tolerance`."""
    return all(
        [e[:3] for e in r] == [e[:3] for e in o]
        and all(abs(a[3] - b[3]) <= tolerance for a, b in zip(r, o, strict=True))
        for r, o in zip(ref, ours, strict=True)
    )
