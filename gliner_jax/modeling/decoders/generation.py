"""Generation from prefix embeddings with a key / value cache, greedy or beam search, each in one compiled loop
(static lengths), and gliner's label trie (prefix-constrained generation) as arrays the loops can read.

The loops are gliner's `generate_from_embeds` with `do_sample=False`. One sequence is transformers' greedy search:
the prefix runs once, then each step picks the highest logit (the first on ties), within the trie's allowed tokens
when a trie is given (none left: end of sequence only); a row that produced `eos_id` is finished and gets `pad_id`
from then on; the loop stops when every row is finished or after `max_new_tokens` steps. Several sequences
(`num_gen_sequences`) are transformers' beam search with that many beams (`beam_generate`).
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


def _stable_log_probs(logits: jax.Array, allowed: jax.Array | None) -> jax.Array:
    """A beam step's token scores as transformers computes them for gliner: log-softmax, the trie's disallowed tokens
    at -inf (`PrefixConstrainedLogitsProcessor`), then gliner's `NumericalStabilityProcessor` (-inf to the dtype's
    minimum, clamped to +-1e9, plus 1e-6)."""
    scores = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if allowed is not None:
        scores = jnp.where(allowed, scores, -jnp.inf)
    scores = jnp.where(jnp.isneginf(scores), jnp.finfo(jnp.float32).min, scores)
    return jnp.clip(scores, -1e9, 1e9) + 1e-6


def _gather(tree: jax.Array, index: jax.Array) -> jax.Array:
    """Rows `index` [B, k] of the beam axis (1) of `tree` [B, n, ...]."""
    return jnp.take_along_axis(tree, index.reshape(index.shape + (1,) * (tree.ndim - 2)), axis=1)


def beam_generate(
    model: nnx.Module,
    prefix_embeds: jax.Array,
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    trie: TrieTable | None = None,
) -> jax.Array:
    """transformers' beam search (its `_beam_search`: length penalty 1, no early stopping, one end-of-sequence
    token) of `num_beams` beams from prefixes `prefix_embeds` [B, P, d]: [B, num_beams, max_new_tokens] (int32), the
    best finished sequences first, each its tokens (`eos_id` included) then `pad_id`.

    Per step: every running beam's token scores (`_stable_log_probs`, within the trie when given) plus its running
    score; the best 2 * num_beams (beam, token) continuations over all beams; of those, the best num_beams not
    ending the sequence (an end-of-sequence token, or the last step) run on, and those among the best num_beams that
    end it join the finished ones at their score divided by their length, the best num_beams kept. A row takes no
    finished sequence once its best running score divided by its length cannot beat its worst finished one; the
    loop ends when no row can improve or every continuation ends its sequence. Ties go to the lower index, as in
    `jax.lax.top_k`. Run it under `nnx.jit` with the four ints static."""
    batch, prefix, _ = prefix_embeds.shape
    beams, keep, length = num_beams, 2 * num_beams, max_new_tokens
    key_valid = jnp.concatenate([jnp.ones((batch, prefix), bool), jnp.zeros((batch, length), bool)], axis=1)
    cache = model.init_cache(batch, prefix + length, prefix_embeds.dtype)
    hidden, cache = model(prefix_embeds, key_valid, cache, 0)
    logits = jnp.repeat(model.logits(hidden[:, -1]), beams, axis=0)  # every beam starts from its row's prefix
    vocab = logits.shape[-1]
    cache = jax.tree.map(lambda x: jnp.repeat(x, beams, axis=1), cache)
    graphdef, params = nnx.split(model)
    no_score = jnp.float32(-1e9)
    first_beam_only = jnp.where(jnp.arange(beams) == 0, 0.0, no_score)
    state = dict(
        params=params,
        step=jnp.int32(0),
        logits=logits,
        cache=cache,
        key_valid=jnp.repeat(key_valid, beams, axis=0),
        running=jnp.full((batch, beams, length), pad_id, jnp.int32),
        running_scores=jnp.broadcast_to(first_beam_only, (batch, beams)).astype(jnp.float32),
        node=jnp.zeros((batch, beams), jnp.int32),
        finished=jnp.full((batch, beams, length), pad_id, jnp.int32),
        finished_scores=jnp.full((batch, beams), no_score),
        is_finished=jnp.zeros((batch, beams), bool),
        improvable=jnp.ones((batch,), bool),
        done=jnp.bool_(False),
    )

    def cond(state):
        return (state["step"] < length) & ~state["done"]

    def body(state):
        step = state["step"]
        allowed = None
        if trie is not None:
            allowed = _allowed_mask(trie, state["node"].reshape(-1), vocab, eos_id)
        scores = _stable_log_probs(state["logits"], allowed).reshape(batch, beams, vocab)
        scores = (scores + state["running_scores"][..., None]).reshape(batch, beams * vocab)
        top_scores, top_index = jax.lax.top_k(scores, keep)
        source, tokens = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        candidates = _gather(state["running"], source).at[:, :, step].set(tokens)
        ends = (tokens == eos_id) | (step + 1 >= length)
        # the running beams of the next step: the best that do not end their sequence
        running_scores = top_scores + ends.astype(jnp.float32) * no_score
        _, chosen = jax.lax.top_k(running_scores, beams)
        nodes = _gather(state["node"], source)
        if trie is not None:
            nodes = _next_node(trie, nodes.reshape(-1), tokens.reshape(-1)).reshape(batch, keep)
        # the finished: those among the best `beams` that end here, at their length-normalised score
        just_finished = ends & (jnp.arange(keep) < beams)[None]
        normalised = top_scores / (step + 1).astype(jnp.float32)
        normalised = normalised + (~state["improvable"])[:, None].astype(jnp.float32) * no_score
        normalised = normalised + (~just_finished).astype(jnp.float32) * no_score
        merged_scores = jnp.concatenate([state["finished_scores"], normalised], axis=1)
        _, best = jax.lax.top_k(merged_scores, beams)
        finished_scores = _gather(merged_scores, best)
        is_finished = _gather(jnp.concatenate([state["is_finished"], just_finished], axis=1), best)
        finished = _gather(jnp.concatenate([state["finished"], candidates], axis=1), best)
        running_scores = _gather(running_scores, chosen)
        # whether a row's best running beam could still beat its worst finished sequence
        worst = jnp.where(is_finished, finished_scores.min(axis=1, keepdims=True), no_score)
        best_possible = running_scores[:, :1] / (step + 1).astype(jnp.float32)
        improvable = state["improvable"] & (best_possible > worst).any(axis=1)
        done = ~improvable.any() | ends.all()
        rows = (jnp.arange(batch)[:, None] * beams + _gather(source, chosen)).reshape(-1)
        cache = jax.tree.map(lambda x: x[:, rows], state["cache"])
        key_valid = state["key_valid"].at[:, prefix + step].set(True)
        decoder = nnx.merge(graphdef, state["params"])
        next_tokens = _gather(tokens, chosen).reshape(-1, 1)
        hidden, cache = decoder(decoder.embed(next_tokens), key_valid, cache, prefix + step)
        return dict(
            params=state["params"],
            step=step + 1,
            logits=decoder.logits(hidden[:, 0]),
            cache=cache,
            key_valid=key_valid,
            running=_gather(candidates, chosen),
            running_scores=running_scores,
            node=_gather(nodes, chosen),
            finished=finished,
            finished_scores=finished_scores,
            is_finished=is_finished,
            improvable=improvable,
            done=done,
        )

    return jax.lax.while_loop(cond, body, state)["finished"]
