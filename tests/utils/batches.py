"""Training examples for the data and packing tests, and reading training batches from a Grain iterator: a few at a
time, and across a saved iterator state."""

from __future__ import annotations

import json
import random
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


def example(text: str, ner: list, **extra) -> dict:
    return {"tokenized_text": text.split(), "ner": ner, **extra}


# One training batch exercising every rule: several labels on one span, a repeated entity, truncation past
# MAX_LEN, entities wider than MAX_WIDTH, labels outside the classes, ner_labels (also empty), ner_negatives, no
# entities, no words.
BATCH = [
    example("Barack Obama was born in Honolulu Hawaii", [[0, 1, "person"], [5, 5, "city"], [5, 6, "location"]]),
    example(
        "Apple Inc. released the iPhone in San Francisco",
        [[0, 1, "company"], [0, 1, "organisation"], [4, 4, "product"], [6, 7, "city"], [0, 1, "company"]],
    ),
    example(
        "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911 again",
        [[0, 1, "person"], [4, 7, "award"], [9, 9, "date"], [11, 12, "field"], [14, 14, "date"]],
    ),
    example("The Eiffel Tower", []),
    example("Angela Merkel led Germany", [[0, 1, "person"], [3, 3, "country"]], ner_labels=["country", "city"]),
    example("Paris is nice", [[0, 0, "city"]], ner_negatives=["river", "mountain"]),
    example("", []),
    example("Zürich and Kraków", [[0, 0, "city"]], ner_labels=[]),
]


WORDS = [
    "Marie",
    "Curie",
    "won",
    "the",
    "Nobel",
    "Prize",
    "in",
    "Physics",
    "with",
    "Pierre",
    "Curie",
    "in",
    "Paris",
    "in",
    "1903",
    "and",
    "again",
    "in",
    "1911",
]
TYPES = ["person", "award", "city", "date", "field", "river"]


def make_examples(lengths: list[int], seed: int = 0) -> tuple[list[dict], list[list[str]]]:
    """Examples of the given word counts with random entities (some wider than the span model allows), and per
    example 1-5 labels (some not among its entities' labels)."""
    rng = random.Random(seed)
    examples, label_sets = [], []
    for n in lengths:
        words = [rng.choice(WORDS) for _ in range(n)]
        ner = []
        for _ in range(rng.randint(0, 4)):
            start = rng.randrange(n)
            ner.append([start, min(n - 1, start + rng.randint(0, 4)), rng.choice(TYPES)])
        examples.append({"tokenized_text": words, "ner": ner})
        label_sets.append(rng.sample(TYPES, rng.randint(1, 5)))
    return examples, label_sets


def numbered_examples(n: int, seed: int = 0) -> list[dict]:
    """Examples of distinct lengths (at most 60 words: the length names the example) with random entities."""
    rng = random.Random(seed)
    types = [f"type{i}" for i in range(30)]
    examples = []
    for length in rng.sample(range(1, 61), n):
        words = [rng.choice(["Paris", "Apple", "won", "the", "Prize", "Nobel"]) for _ in range(length)]
        ner = []
        for _ in range(rng.randint(0, 6)):
            start = rng.randrange(length)
            ner.append([start, min(length - 1, start + rng.randint(0, 4)), rng.choice(types)])
        examples.append({"tokenized_text": words, "ner": ner})
    return examples


def row_keys(batch: dict) -> list[tuple]:
    """Each row's identity: its real token ids and entity rows."""
    return [
        (tuple(ids[mask == 1].tolist()), tuple(map(tuple, ents.tolist())))
        for ids, mask, ents in zip(batch["input_ids"], batch["attention_mask"], batch["entities"], strict=True)
    ]
