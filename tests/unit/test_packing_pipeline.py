"""Packed training batches without a reference: the row plan and the Grain pipeline (the packed network and loss
against the unpacked ones and gliner's: tests/parity/test_packing_vs_gliner.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from gliner_jax.buckets import row_bucket
from gliner_jax.packing import plan_packed_rows
from gliner_jax.training.data import Packing, make_train_dataset
from tests.utils.batches import assert_state_restores, make_examples, take

# ---- the row plan ----


def test_plan_rows_hand_checked():
    # Rows of <= 10 tokens: first-fit decreasing needs 3, (9), (6, 4), (5, 3, 2). 9 fits beside no other example,
    # so the other five take 2 rows, one of them with 3 examples.
    assert plan_packed_rows([5, 9, 2, 6, 3, 4], 10) == [[1], [3, 5], [0, 2, 4]]
    assert plan_packed_rows([4, 0, 4], 10, multiple=4) == [[0], [2], [], []]  # empty examples left out, rows spread
    assert plan_packed_rows([], 10, multiple=2) == [[], []]
    with pytest.raises(ValueError, match="11 tokens"):
        plan_packed_rows([3, 11], 10)


@pytest.mark.parametrize("seed", range(5))
def test_plan_rows_places_every_example_once_within_capacity(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 100) for _ in range(rng.randint(1, 40))]
    multiple = rng.choice([1, 2, 4])
    rows = plan_packed_rows(lengths, 128, multiple=multiple)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert all(row == sorted(row) for row in rows)
    assert len(rows) % multiple == 0
    # First fit leaves at most one row half empty or less: at most ceil(2 * tokens / capacity) rows, then bucketed.
    assert len(rows) <= row_bucket(-(-2 * sum(lengths) // 128), multiple)


# ---- the Grain pipeline ----


def source(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return make_examples([rng.randint(1, 60) for _ in range(n)], seed)[0]


def example_keys(batch: dict[str, np.ndarray]) -> list[tuple]:
    """Each example's identity, packed or not: its real tokens and its entity rows, in row then slot order."""
    packed = batch["words_valid"].ndim == 3
    keys = []
    for r, (ids, segments) in enumerate(zip(batch["input_ids"], batch["attention_mask"], strict=True)):
        for s in range(1, segments.max(initial=0) + 1):
            entities = batch["entities"][r, s - 1] if packed else batch["entities"][r]
            keys.append((tuple(ids[segments == s].tolist()), tuple(map(tuple, entities.tolist()))))
    return keys


def test_packed_pipeline_carries_the_unpacked_examples_per_host(processor):
    """Each host's packed batch holds exactly the examples (tokens, labels, targets) of its unpacked batch, in rows
    of at most row_length tokens, a multiple of row_multiple rows."""
    data = source(40)
    common = dict(global_batch_size=8, seed=5, num_epochs=1)
    for host in range(2):
        plain = make_train_dataset(data, processor, process_index=host, process_count=2, **common)
        packed = make_train_dataset(
            data, processor, process_index=host, process_count=2, packing=Packing(256, 2), **common
        )
        for want, got in zip(take(iter(plain), 5), take(iter(packed), 5), strict=True):
            assert sorted(example_keys(got)) == sorted(example_keys(want))
            assert got["input_ids"].shape[0] % 2 == 0 and got["input_ids"].shape[1] <= 256
            assert got["words_valid"].shape[2:] == want["words_valid"].shape[1:]
            assert got["span_idx"].shape[:2] == got["words_valid"].shape[:2]


def test_packed_iterator_state_restores_the_same_batches(processor):
    dataset = make_train_dataset(
        source(30, seed=1),
        processor,
        global_batch_size=6,
        seed=2,
        process_index=0,
        process_count=1,
        packing=Packing(256),
    )
    iterator = iter(dataset)
    take(iterator, 2)
    assert_state_restores(dataset, iterator, 3)


def test_packing_pads_less_than_one_example_per_row(processor):
    data = source(64, seed=3)
    common = dict(global_batch_size=8, seed=0, process_index=0, process_count=1, num_epochs=1)
    padding = {}
    for name, packing in (("plain", None), ("packed", Packing(256))):
        batches = take(iter(make_train_dataset(data, processor, packing=packing, **common)), 8)
        real = sum(int((b["attention_mask"] > 0).sum()) for b in batches)
        padding[name] = 1 - real / sum(b["attention_mask"].size for b in batches)
    assert padding["packed"] < padding["plain"] / 2
