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


def scatter_rows(values: jax.Array, slots: jax.Array, num_slots: int) -> jax.Array:
    """out[b, slots[b, t]] = values[b, t] into zeros [B, num_slots, D]; slots outside [0, num_slots) are dropped."""
    batch = jnp.arange(values.shape[0])[:, None]
    out = jnp.zeros((values.shape[0], num_slots, values.shape[-1]), values.dtype)
    return out.at[batch, slots].set(values, mode="drop")


def pool_words(tokens: jax.Array, words_mask: jax.Array, num_words: int, pooling: str) -> jax.Array:
    """tokens [B, T, D], words_mask [B, T] -> word states [B, num_words, D] pooled by `pooling`."""
    if pooling not in SUBTOKEN_POOLING:
        raise ValueError(f"unknown subtoken_pooling {pooling!r}; known: {SUBTOKEN_POOLING}")
    slots = jnp.where(words_mask > 0, words_mask - 1, num_words)  # unmarked subtokens go out of range: dropped
    if pooling in ("first", "last"):
        return scatter_rows(tokens, slots, num_words)
    batch = jnp.arange(tokens.shape[0])[:, None]
    shape = (tokens.shape[0], num_words, tokens.shape[-1])
    counts = jnp.zeros((*shape[:2], 1), tokens.dtype).at[batch, slots].add(1, mode="drop")
    if pooling == "mean":
        sums = jnp.zeros(shape, tokens.dtype).at[batch, slots].add(tokens, mode="drop")
        return sums / jnp.maximum(counts, 1)
    maxima = jnp.full(shape, -jnp.inf, tokens.dtype).at[batch, slots].max(tokens, mode="drop")
    return jnp.where(counts > 0, maxima, 0)
