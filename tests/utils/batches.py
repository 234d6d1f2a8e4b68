"""Reading training batches from a Grain iterator in tests: a few at a time, and across a saved iterator state."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np


def take(iterator: Any, n: int) -> list[dict]:
    """The next `n` batches (the processor's truncation warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [next(iterator) for _ in range(n)]


def assert_state_restores(dataset: Any, iterator: Any, n: int) -> list[dict]:
    """The next `n` batches of `iterator`; a fresh iterator of `dataset` set to its state (saved first, as JSON,
    as Grain's checkpoint handler stores it) must yield the same arrays."""
    state = iterator.get_state()
    json.dumps(state)
    expected = take(iterator, n)
    restored = iter(dataset)
    restored.set_state(state)
    for want, got in zip(expected, take(restored, n), strict=True):
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    return expected
