"""Evaluation batches through the training collator: every example with every label, in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gliner_jax.data_formats import Example, labels_of
from gliner_jax.text.collate import Processor
from gliner_jax.training.data import CheckedSource, collate


@dataclasses.dataclass
class EvalBatch:
    """An evaluation batch: the contract arrays, the examples of its real rows (gold "ner" unfiltered) and the
    labels every row was given (class id c is labels[c - 1])."""

    arrays: dict[str, np.ndarray]
    examples: list[Example]
    labels: list[str]


def make_eval_batches(
    examples: Sequence[Any], processor: Processor, labels: Sequence[str] | None = None, *, batch_size: int = 8
) -> Iterator[EvalBatch]:
    """Evaluation batches in order, without sampling: every example gets all `labels` (default: the sorted set of
    the examples' labels); the last batch is padded with neutral rows to `batch_size`. Bad records are skipped."""
    checked = CheckedSource(examples)
    valid = [example for example in map(checked.__getitem__, range(len(checked))) if example is not None]
    labels = list(dict.fromkeys(labels_of(valid) if labels is None else labels))
    for start in range(0, len(valid), batch_size):
        rows = valid[start : start + batch_size]
        arrays = collate(rows, [labels] * len(rows), processor, batch_size=batch_size)
        yield EvalBatch(arrays, rows, labels)
