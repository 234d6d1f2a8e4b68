"""Subtoken states -> word states, by gliner's `subtoken_pooling` ("first", "last", "mean", "max").

Which subtokens belong to a word is the input pipeline's `words_mask` [B, T] (gliner's): the word's 1-based
number at each subtoken that pools into it, 0 elsewhere. For "first" / "last" one subtoken per word is marked (the
pipeline picks which), for "mean" / "max" every subtoken of the word. A word without a marked subtoken (cut off by
the tokenizer, or beyond a row's length) gets zeros, as in gliner.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SUBTOKEN_POOLING = ("first", "last", "mean", "max")


def scatter_rows(
    values: jax.Array, slots: jax.Array, num_slots: int, rows: jax.Array | None = None, num_rows: int | None = None
) -> jax.Array:
    """out[rows[b, t], slots[b, t]] = values[b, t] into zeros [num_rows, num_slots, D]; indices out of range are
    dropped. Default rows: each token's own row (rows[b, t] = b, num_rows = B); packed rows pass the example of
    each token instead."""
    if rows is None:
        rows, num_rows = jnp.arange(values.shape[0])[:, None], values.shape[0]
    out = jnp.zeros((num_rows, num_slots, values.shape[-1]), values.dtype)
    return out.at[rows, slots].set(values, mode="drop")


def pool_words(
    tokens: jax.Array,
    words_mask: jax.Array,
    num_words: int,
    pooling: str,
    rows: jax.Array | None = None,
    num_rows: int | None = None,
) -> jax.Array:
    """tokens [B, T, D], words_mask [B, T] -> word states [B, num_words, D] pooled by `pooling`; with `rows` [B, T]
    (each token's example, as in `scatter_rows`), [num_rows, num_words, D]."""
    if pooling not in SUBTOKEN_POOLING:
        raise ValueError(f"unknown subtoken_pooling {pooling!r}; known: {SUBTOKEN_POOLING}")
    if rows is None:
        rows, num_rows = jnp.arange(tokens.shape[0])[:, None], tokens.shape[0]
    slots = jnp.where(words_mask > 0, words_mask - 1, num_words)  # unmarked subtokens go out of range: dropped
    if pooling in ("first", "last"):
        return scatter_rows(tokens, slots, num_words, rows, num_rows)
    shape = (num_rows, num_words, tokens.shape[-1])
    counts = jnp.zeros((*shape[:2], 1), tokens.dtype).at[rows, slots].add(1, mode="drop")
    if pooling == "mean":
        sums = jnp.zeros(shape, tokens.dtype).at[rows, slots].add(tokens, mode="drop")
        return sums / jnp.maximum(counts, 1)
    maxima = jnp.full(shape, -jnp.inf, tokens.dtype).at[rows, slots].max(tokens, mode="drop")
    return jnp.where(counts > 0, maxima, 0)
