"""The device wire format: a collated (or packed) batch's model inputs as one int32 array, so that a batch is one
transfer to the devices, and its `WireSizes`, the static sizes that take it apart again under jit (`from_wire`);
`span_arrays`, the span indices both sides compute from word counts."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


def span_arrays(text_lengths: Any, num_words: int, max_width: int, xp: Any = np) -> tuple[Any, Any]:
    """span_idx [..., W*K, 2] (first and last word of every span, start-major then width; (0, 0) where the span
    starts past its example's words) and span_mask [..., W*K] (the span ends inside its example), from the word
    counts [...] (per row [B], or per packed slot [B, S]); `xp` is numpy or jax.numpy."""
    starts = xp.repeat(xp.arange(num_words), max_width)
    ends = starts + xp.tile(xp.arange(max_width), num_words)
    lengths = text_lengths[..., None]
    span_idx = xp.where((starts < lengths)[..., None], xp.stack([starts, ends], -1), 0).astype(xp.int32)
    return span_idx, ends < lengths


class WireSizes(NamedTuple):
    """The sizes a wire array does not carry (hashable: a static argument of the jitted forward pass)."""

    num_words: int  # W
    num_labels: int  # C
    max_width: int | None  # the span model's K; None for the token model
    num_slots: int | None  # packed slots S per row; None unpacked


def to_wire(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    words_mask: np.ndarray,
    word_counts: np.ndarray,
    label_counts: np.ndarray,
) -> np.ndarray:
    """The model's inputs as one int32 wire array (one transfer to the devices): [B, 3T + 2S] from token arrays
    [B, T] and word / label counts per row [B] (S = 1) or per packed slot [B, S]; `from_wire` takes it apart."""
    counts = [np.asarray(c, np.int32).reshape(len(input_ids), -1) for c in (word_counts, label_counts)]
    return np.concatenate([input_ids, attention_mask, words_mask, *counts], axis=1, dtype=np.int32)


def from_wire(wire: Any, sizes: WireSizes, xp: Any = np) -> dict[str, Any]:
    """The arrays `GLiNERModel` takes (`Batch.model_arrays`, or their packed layout), by argument name, from a
    `to_wire` array and its `WireSizes`; `xp` is numpy or jax.numpy."""
    num_words, num_labels, max_width, num_slots = sizes
    slots = num_slots or 1
    tokens = (wire.shape[1] - 2 * slots) // 3
    lengths, label_counts = wire[:, 3 * tokens : 3 * tokens + slots], wire[:, 3 * tokens + slots :]
    if num_slots is None:
        lengths, label_counts = lengths[:, 0], label_counts[:, 0]
    arrays = {
        "input_ids": wire[:, :tokens],
        "attention_mask": wire[:, tokens : 2 * tokens],
        "words_mask": wire[:, 2 * tokens : 3 * tokens],
        "words_valid": xp.arange(num_words) < lengths[..., None],
        "labels_valid": xp.arange(num_labels) < label_counts[..., None],
    }
    if max_width is not None:
        arrays["span_idx"], arrays["span_mask"] = span_arrays(lengths, num_words, max_width, xp)
    return arrays
