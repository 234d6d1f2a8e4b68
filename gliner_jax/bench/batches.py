"""Benchmark data: records made of data/tiny sentences with their labels, the tokenizer corpus over them, and
synthetic span-model batches of any shape (the `collate` contract) for memory and batch-size probes."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from gliner_jax.data_formats import Example, read_examples

TINY_TRAIN = Path(__file__).resolve().parents[2] / "data" / "tiny" / "train.jsonl"
NEGATIVE_TYPES = ("award", "disease", "vehicle", "language", "currency")  # types no record has
LABELS_PER_RECORD, MAX_POSITIVE_TYPES = 5, 3
SYNTHETIC_LABELS, SYNTHETIC_ENTITIES = 25, 32


def make_records(
    count: int, seed: int = 0, draw_length: Callable[[random.Random], int] = lambda rng: rng.randint(60, 120)
) -> list[Example]:
    """Records of `draw_length` words (default 60-120): consecutive random sentences of data/tiny/train.jsonl,
    their entities shifted, cut at the drawn length (entities past the cut dropped)."""
    sentences = read_examples(TINY_TRAIN)[0]
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        target, words, ner = draw_length(rng), [], []
        while len(words) < target:
            sentence = sentences[rng.randrange(len(sentences))]
            ner += [[start + len(words), end + len(words), label] for start, end, label in sentence["ner"]]
            words += sentence["tokenized_text"]
        records.append({"tokenized_text": words[:target], "ner": [e for e in ner if e[1] < target]})
    return records


def pile_ner_length(rng: random.Random) -> int:
    """A word count like the GLiNER paper's Pile-NER passages: log-normal around 110 words (about 80% within
    50-200), clipped to 20-384."""
    return min(384, max(20, round(math.exp(rng.gauss(math.log(110), 0.45)))))


def pick_labels(records: Sequence[Example], seed: int = 0) -> list[list[str]]:
    """Per record 5 labels, shuffled: up to 3 of its entity types, the rest negatives (types it does not have)."""
    rng = random.Random(seed)
    all_types = sorted({label for record in records for *_, label in record["ner"]} | set(NEGATIVE_TYPES))
    label_sets = []
    for record in records:
        present = sorted({label for *_, label in record["ner"]})
        positives = rng.sample(present, min(MAX_POSITIVE_TYPES, len(present)))
        absent = [label for label in all_types if label not in present]
        labels = positives + rng.sample(absent, LABELS_PER_RECORD - len(positives))
        rng.shuffle(labels)
        label_sets.append(labels)
    return label_sets


def tokenizer_corpus(labels: Sequence[Sequence[str]]) -> list[str]:
    """The texts a benchmark's word-level tokenizer is trained on: data/tiny/train.jsonl and every label."""
    corpus = [" ".join(record["tokenized_text"]) for record in read_examples(TINY_TRAIN)[0]]
    corpus.append(" ".join(sorted({label for row in labels for label in row} | set(NEGATIVE_TYPES))))
    return corpus


def synthetic_batch(
    rows: int, tokens: int, class_token: int, max_width: int, max_len: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """A span-model training batch (the `collate` contract) of `rows` rows of `tokens` tokens: [CLS], 25 labels
    (`<<ENT>>` and one token each), [SEP], as many one-token words as fit (at most max_len), [SEP]; 32 entities."""
    rng = np.random.default_rng(seed)
    labels, prompt = SYNTHETIC_LABELS, 2 * SYNTHETIC_LABELS + 2
    words = min(max_len, tokens - prompt - 1)
    if words < 1:
        raise ValueError(f"rows of {tokens} tokens leave no room for words beside {labels} labels")
    input_ids = rng.integers(4, class_token, (rows, tokens)).astype(np.int32)
    input_ids[:, 1 : prompt - 1 : 2] = class_token
    attention_mask = np.zeros((rows, tokens), np.int32)
    attention_mask[:, : prompt + words + 1] = 1
    words_mask = np.zeros((rows, tokens), np.int32)
    words_mask[:, prompt : prompt + words] = np.arange(1, words + 1)
    starts = np.repeat(np.arange(words), max_width)
    ends = starts + np.tile(np.arange(max_width), words)
    span_mask = np.broadcast_to(ends < words, (rows, words * max_width))
    span_idx = np.where(span_mask[..., None], np.stack([starts, ends], -1), 0).astype(np.int32)
    entities = SYNTHETIC_ENTITIES
    first = rng.integers(0, max(1, words - 3), (rows, entities))
    last = np.minimum(first + rng.integers(0, 3, (rows, entities)), words - 1)
    kinds = rng.integers(1, labels + 1, (rows, entities))
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "words_mask": words_mask,
        "words_valid": np.ones((rows, words), bool),
        "labels_valid": np.ones((rows, labels), bool),
        "span_idx": span_idx,
        "span_mask": np.ascontiguousarray(span_mask),
        "entities": np.stack([first, last, kinds], axis=-1).astype(np.int32),
    }


def shapes_of(batch: dict[str, np.ndarray]) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch as abstract arrays (for compiling ahead of time)."""
    return {name: jax.ShapeDtypeStruct(value.shape, value.dtype) for name, value in batch.items()}
