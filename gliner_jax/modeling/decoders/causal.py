"""What every causal decoder family shares: the key / value cache, causal attention over it (grouped-query heads
included), and its stacked layers run in a scan that reads and writes the cache.

One code path serves the whole-sequence forward pass (training, teacher forcing) and generation: a call writes its
keys and values into the cache at slots `index, ..., index + T - 1` and each query attends to the slots at or
before its own that `key_valid` allows. The whole-sequence pass is the call at index 0 on a fresh cache of length T.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class KVCache(NamedTuple):
    """Keys and values of every layer, [layers, B, S, kv_heads, head_dim] each, slot s holding position s."""

    keys: jax.Array
    values: jax.Array


def empty_cache(num_layers: int, batch: int, length: int, kv_heads: int, head_dim: int, dtype: jnp.dtype) -> KVCache:
    """A zero cache of `length` slots."""
    shape = (num_layers, batch, length, kv_heads, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def cached_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    layer_cache: tuple[jax.Array, jax.Array],
    index: jax.Array | int,
    key_valid: jax.Array,
    scale: float | jax.Array,
    dropout: Callable[[jax.Array], jax.Array],
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Causal softmax attention of queries q [B, T, H, dh] at slots index .. index + T - 1 over one layer's cache
    [B, S, KV, dh] after writing k, v [B, T, KV, dh] into it; query head h reads key head h // (H / KV), as
    transformers' `repeat_kv`. `key_valid` [B, S] marks the slots a query may read (besides causality). Scores and
    softmax in float32; a query that may read no slot averages all values (finite, as transformers' additive masks).
    Returns the context [B, T, H * dh] and the updated layer cache."""
    cache_k = jax.lax.dynamic_update_slice_in_dim(layer_cache[0], k.astype(layer_cache[0].dtype), index, axis=1)
    cache_v = jax.lax.dynamic_update_slice_in_dim(layer_cache[1], v.astype(layer_cache[1].dtype), index, axis=1)
    batch, length, heads, dh = q.shape
    kv_heads, slots = cache_k.shape[2], cache_k.shape[1]
    q = q.reshape(batch, length, kv_heads, heads // kv_heads, dh)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, cache_k.astype(q.dtype)).astype(jnp.float32) * scale
    causal = jnp.arange(slots)[None, :] <= (index + jnp.arange(length))[:, None]
    allowed = key_valid[:, None, None, None, :].astype(bool) & causal[None, None, None]
    scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    probs = dropout(jax.nn.softmax(scores, axis=-1).astype(v.dtype))
    context = jnp.einsum("bkgts,bskd->btkgd", probs, cache_v.astype(v.dtype))
    return context.reshape(batch, length, heads * dh), (cache_k, cache_v)


def run_cached_layers(
    apply: Callable[..., tuple[jax.Array, tuple[jax.Array, jax.Array]]],
    layers: nnx.Module,
    hidden: jax.Array,
    cache: KVCache,
    *shared: Any,
    per_layer: tuple[jax.Array, ...] = (),
) -> tuple[jax.Array, KVCache]:
    """`hidden, layer_cache = apply(layer, hidden, layer_cache, *layer_inputs, *shared)` for each stacked layer in a
    scan; each layer reads and returns its row of `cache` (and of each `per_layer` array). Returns the last hidden
    states and the new cache."""
    in_axes = (nnx.Carry, 0, 0, 0, *(0,) * len(per_layer), *(None,) * len(shared))

    @nnx.scan(in_axes=in_axes, out_axes=(nnx.Carry, 0, 0))
    def run(h: jax.Array, layer: nnx.Module, keys: jax.Array, values: jax.Array, *inputs: Any):
        h, (keys, values) = apply(layer, h, (keys, values), *inputs)
        return h, keys, values

    hidden, keys, values = run(hidden, layers, cache.keys, cache.values, *per_layer, *shared)
    return hidden, KVCache(keys, values)
