"""Long texts and large label sets: a text longer than the model reads is cut into overlapping word windows, and a
label set whose prompt does not fit is run in several passes; each (window, pass) is one model row, and the rows'
entities are merged afterwards (`decoding.merge_spans`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator

import numpy as np

from gliner_jax.text.collate import Processor
from gliner_jax.text.words import Word, word_strings


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One model row: a window of one text's words, with one pass of its labels."""

    text: int  # index of the text
    first_word: int  # index of the window's first word in the text
    words: list[Word]
    labels: list[str]


def label_passes(labels: list[str], max_len: int) -> list[list[str]]:
    """`labels` split into passes whose prompt (2 words per label, plus one) fits in `max_len` words."""
    per_pass = max(1, (max_len - 1) // 2)
    return [labels[begin : begin + per_pass] for begin in range(0, len(labels), per_pass)]


def plan_model_rows(
    processor: Processor, words_per_text: list[list[Word]], label_sets: list[list[str]], *, truncate: bool
) -> Iterator[ModelRow]:
    """Windows of at most `max_len` words (overlapping by a quarter, and at least `max_width`) x label passes of
    every text that has words (one pass for a bi-encoder, which writes no label prompt).

    Under a token limit (the tokenizer's `model_max_length`, the encoder's absolute positions), a window also stops
    before its words and the longest prompt of its text would pass it. `truncate=True` reads one window of the
    first `max_len` words instead (with a warning), as gliner does; past a token limit it is refused, not cut."""
    max_len, width = processor.max_len, processor.max_width
    planned: dict[tuple[str, ...], tuple[list[list[str]], int | None]] = {}  # label set -> (passes, word budget)
    for index, words in enumerate(words_per_text):
        if not words:
            continue
        if truncate and len(words) > max_len:
            warnings.warn(f"text {index} has {len(words)} words; only the first {max_len} are read", stacklevel=3)
            words = words[:max_len]
        key = tuple(label_sets[index])
        if key not in planned:
            # A bi-encoder reads labels with its own encoder: all of them in one pass.
            # So does a model with precomputed prompts (its prompt is a lone separator).
            prompted = processor.label_prompt and not processor.skip_prompt
            passes = label_passes(label_sets[index], max_len) if prompted else [label_sets[index]]
            budgets = [] if truncate else [processor.word_budget(labels) for labels in passes]
            planned[key] = passes, min(budgets) if budgets and budgets[0] is not None else None  # the longest prompt's
        passes, budget = planned[key]
        for first, stop in word_windows(processor, word_strings(words), max_len, width, budget, f"text {index}"):
            for labels in passes:
                yield ModelRow(index, first, words[first:stop], labels)


def window_starts(length: int, size: int, max_width: int) -> range:
    """First word of each window of at most `size` words over `length` words: consecutive windows overlap by a
    quarter of `size`, and by at least `max_width` words, so every span of up to `max_width` words lies whole
    inside some window."""
    stride = max(1, size - max(max_width, size // 4))
    return range(0, max(1, length - size + stride), stride)


def word_windows(
    processor: Processor, words: list[str], size: int, max_width: int, budget: int | None, name: str
) -> list[tuple[int, int]]:
    """(first, stop) windows over `words`: those of `window_starts`, or of `token_windows` under a token budget
    (the words are then tokenized to count their tokens)."""
    if budget is None:
        return [(first, min(first + size, len(words))) for first in window_starts(len(words), size, max_width)]
    return token_windows(processor.tokens_per_word(words), size, max_width, budget, name)


def token_windows(
    tokens_per_word: np.ndarray, size: int, max_width: int, budget: int, name: str
) -> list[tuple[int, int]]:
    """(first, stop) word windows of at most `size` words and `budget` tokens, each overlapping the previous one by
    a quarter of that one's words and at least `max_width` words; where the budget never binds, these are the
    windows of `window_starts`. Raises ValueError when a single word does not fit in the budget."""
    ends = np.cumsum(tokens_per_word)  # tokens up to and including each word
    windows, first = [], 0
    while True:
        taken = int(np.searchsorted(ends, (ends[first - 1] if first else 0) + budget, side="right")) - first
        stop = min(first + size, first + taken, len(ends))
        if stop == first:
            raise ValueError(
                f"{name}: word {first} with its label prompt does not fit in the token limit "
                f"({budget} tokens left beside the prompt); use fewer labels"
            )
        if not windows or stop > windows[-1][1]:  # else it lies inside the previous window
            windows.append((first, stop))
        if stop == len(ends):
            return windows
        first = max(first + 1, stop - max(max_width, (stop - first) // 4))
