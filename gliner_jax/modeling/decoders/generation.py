"""Greedy generation from prefix embeddings with a key / value cache, in one compiled loop (static lengths), and
gliner's label trie (prefix-constrained generation) as arrays the loop can read.

The loop is gliner's `generate_from_embeds` with `do_sample=False` and one sequence (transformers' greedy search):
the prefix runs once, then each step picks the highest logit (the first on ties), within the trie's allowed tokens
when a trie is given (none left: end of sequence only); a row that produced `eos_id` is finished and gets `pad_id`
from then on; the loop stops when every row is finished or after `max_new_tokens` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class TrieTable(NamedTuple):
    """A token trie as arrays: node n's allowed next tokens `tokens[n]` (-1 padding) and the nodes they lead to
    `children[n]`; node 0 is the root and the last node is the dead end (no token allowed) that a path leaving the
    trie reaches."""

    tokens: np.ndarray | jax.Array  # [nodes, branching] int32
    children: np.ndarray | jax.Array  # [nodes, branching] int32


def trie_table(sequences: Sequence[Sequence[int]]) -> TrieTable:
    """The trie of token `sequences` (gliner's `LabelsTrie` of the same sequences), children in insertion order."""
    nodes: list[dict[int, int]] = [{}]
    for sequence in sequences:
        node = 0
        for token in sequence:
            if token not in nodes[node]:
                nodes[node][token] = len(nodes)
                nodes.append({})
            node = nodes[node][token]
    nodes.append({})  # the dead end
    width = max(1, max(len(children) for children in nodes))
    tokens = np.full((len(nodes), width), -1, np.int32)
    children = np.full((len(nodes), width), len(nodes) - 1, np.int32)
    for n, branch in enumerate(nodes):
        tokens[n, : len(branch)] = list(branch)
        children[n, : len(branch)] = list(branch.values())
    return TrieTable(tokens, children)


def _allowed_mask(trie: TrieTable, node: jax.Array, vocab: int, eos_id: int) -> jax.Array:
    """[B, V] mask of the tokens each row's trie node allows (end of sequence alone where it allows none)."""
    tokens = jnp.asarray(trie.tokens)[node]  # [B, branching]
    tokens = jnp.where((tokens < 0).all(-1, keepdims=True), jnp.full_like(tokens, -1).at[:, 0].set(eos_id), tokens)
    rows = jnp.arange(node.shape[0])[:, None]
    return jnp.zeros((node.shape[0], vocab), bool).at[rows, jnp.where(tokens < 0, vocab, tokens)].set(True, mode="drop")


def _next_node(trie: TrieTable, node: jax.Array, token: jax.Array) -> jax.Array:
    tokens, children = jnp.asarray(trie.tokens)[node], jnp.asarray(trie.children)[node]
    hit = tokens == token[:, None]
    child = jnp.take_along_axis(children, jnp.argmax(hit, -1)[:, None], 1)[:, 0]
    return jnp.where(hit.any(-1), child, trie.tokens.shape[0] - 1)


def greedy_generate(
    model: nnx.Module,
    prefix_embeds: jax.Array,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    trie: TrieTable | None = None,
) -> jax.Array:
    """Greedy continuation [B, max_new_tokens] (int32) of prefixes `prefix_embeds` [B, P, d] (every position read):
    the generated tokens, `eos_id` included, then `pad_id`. `model` is a causal decoder of
    `gliner_jax.modeling.decoders`; run it under `nnx.jit` with the three ints static (`trie` is traced: one
    program serves every trie of the same size)."""
    batch, prefix, _ = prefix_embeds.shape
    slots = prefix + max_new_tokens
    key_valid = jnp.concatenate([jnp.ones((batch, prefix), bool), jnp.zeros((batch, max_new_tokens), bool)], axis=1)
    cache = model.init_cache(batch, slots, prefix_embeds.dtype)
    hidden, cache = model(prefix_embeds, key_valid, cache, 0)
    logits = model.logits(hidden[:, -1])
    vocab = logits.shape[-1]
    graphdef, params = nnx.split(model)
    state = (
        params,
        jnp.int32(0),
        logits,
        cache,
        key_valid,
        jnp.zeros((batch,), bool),
        jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
        jnp.zeros((batch,), jnp.int32),
    )

    def cond(state):
        _, step, _, _, _, finished, _, _ = state
        return (step < max_new_tokens) & ~finished.all()

    def body(state):
        params, step, logits, cache, key_valid, finished, out, node = state
        if trie is not None:
            logits = jnp.where(_allowed_mask(trie, node, vocab, eos_id), logits, jnp.finfo(logits.dtype).min)
            node = _next_node(trie, node, jnp.argmax(logits, -1).astype(jnp.int32))
        token = jnp.where(finished, pad_id, jnp.argmax(logits, -1).astype(jnp.int32))
        out = out.at[:, step].set(token)
        finished = finished | (token == eos_id)
        key_valid = key_valid.at[:, prefix + step].set(True)
        decoder = nnx.merge(graphdef, params)
        hidden, cache = decoder(decoder.embed(token[:, None]), key_valid, cache, prefix + step)
        return params, step + 1, decoder.logits(hidden[:, 0]), cache, key_valid, finished, out, node

    return jax.lax.while_loop(cond, body, state)[6]
