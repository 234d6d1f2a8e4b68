"""Benchmark folders in gliner's layout, written for the tests of `gliner_jax.benchmark_suite`."""

from __future__ import annotations

import json
from pathlib import Path


def record(sentence: str, *entities: tuple[str, str]) -> dict:
    """A `{"sentence", "entities"}` record; each entity is (its text, its type), found at its first occurrence."""
    spans = []
    for text, kind in entities:
        start = sentence.index(text)
        spans.append({"pos": [start, start + len(text)], "type": kind})
    return {"sentence": sentence, "entities": spans}


def write_dataset(root: Path, name: str, test: list[dict], labels: list[str]) -> Path:
    """ROOT/NAME/ with test.json, labels.json and the empty train.json and dev.json that gliner's reader needs."""
    folder = root / name
    folder.mkdir(parents=True)
    for file_name, content in (("train.json", []), ("dev.json", []), ("test.json", test), ("labels.json", labels)):
        (folder / file_name).write_text(json.dumps(content), encoding="utf-8")
    return folder
