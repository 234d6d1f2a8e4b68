"""Relation extraction heads, as gliner 0.2.29's `RelationsRepLayer` modes (the adjacency of the selected entities)
and its `pair_rep_layer` (a (head, tail) pair scored against relation prompts; `triples` holds the alternative).

Entities come as X [B, E, H] with a mask [B, E]; every adjacency is [B, E, E] of probabilities (gliner applies the
sigmoid, or averages softmax weights, inside the layer), zero wherever either entity is masked. Attributes are named
like gliner's modules (`relations_rep_layer.relation_rep_layer.<name>`), so the key table is one line per tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.heads import ProjectionMLP
from gliner_jax.modeling.layers import torch_linear
from gliner_jax.modeling.triples import TRIPLES_WIDTH, GlinerRows, TriplesScore

ATTENTION_HEADS = 8  # gliner's default `nhead` of the attention and gat modes


def pair_masked(adjacency: jax.Array, mask: jax.Array) -> jax.Array:
    """adjacency [B, E, E] zeroed where entity i or j is masked (mask [B, E])."""
    m = mask.astype(adjacency.dtype)
    return adjacency * m[:, :, None] * m[:, None, :]


def gram_sigmoid(z: jax.Array, mask: jax.Array) -> jax.Array:
    """sigmoid(Z Z^T), pair-masked: gliner's dot-product adjacency of Z [B, E, D]."""
    return pair_masked(jax.nn.sigmoid(jnp.einsum("bid,bjd->bij", z, z)), mask)


class PairSelection(NamedTuple):
    """How gliner picks the pairs its relation stage scores, for a layer whose scores depend on the whole batch
    (TuckER): `examples` [B], the batch's real rows (first); `relations_valid` [B, R]; and `pairs` [B, E, E], the
    pairs chosen (training: the gold adjacency's), or None: the adjacency's pairs above `adjacency_threshold` (every
    pair of two real entities without an adjacency layer). `entity_mask` [B, E]: the real entities, where the mask
    scored holds placeholders (None: the same)."""

    examples: jax.Array
    relations_valid: jax.Array
    pairs: jax.Array | None = None
    adjacency_threshold: jax.Array | float = 0.5
    entity_mask: jax.Array | None = None


def gliner_rows(
    pairs: jax.Array, entity_mask: jax.Array, examples: jax.Array, relations_valid: jax.Array
) -> GlinerRows:
    """gliner's flattened triples batch (`GlinerRows`) of the chosen `pairs` [B, E, E] (the diagonal left out) of
    real entities (`entity_mask` [B, E]) in the real rows (`examples` [B]): each example's pairs in row-major order,
    padded to the batch's largest count N with its first entity as head and tail (zeros for an example without
    entities, and for every row when no example has a pair: N is then 1), each repeated for the batch's largest
    relation count C."""
    e = pairs.shape[1]
    pairs = pairs & ~jnp.eye(e, dtype=bool) & examples[:, None, None] & entity_mask[:, :, None] & entity_mask[:, None]
    flat = pairs.reshape(pairs.shape[0], -1)
    rank = jnp.where(flat, jnp.cumsum(flat, axis=1) - 1, -1).reshape(pairs.shape).astype(jnp.int32)
    counts = flat.sum(1)
    most = counts.max()
    pad = jnp.where(examples, jnp.maximum(most, 1) - counts, 0).astype(jnp.float32)
    on_first = (most > 0) & entity_mask[:, 0]  # gliner's padding pairs read entity 0 (zeros where it has none)
    first = (jnp.arange(e) == 0).astype(jnp.float32) * jnp.where(on_first, pad, 0.0)[:, None]
    return GlinerRows(
        head=pairs.sum(2).astype(jnp.float32) + first,
        tail=pairs.sum(1).astype(jnp.float32) + first,
        zeros=jnp.sum(jnp.where(on_first, 0.0, pad)),
        rank=rank,
        pairs=jnp.maximum(most, 1).astype(jnp.int32),
        relations=relations_valid.sum(1).max().astype(jnp.int32),
        examples=examples.sum().astype(jnp.int32),
        relations_valid=relations_valid,
    )


class Dot(nnx.Module):
    """`dot`: sigmoid(X X^T)."""

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        return gram_sigmoid(x, mask)


class Bilinear(nnx.Module):
    """`bilinear`: sigmoid(Z Z^T), Z = proj(X)."""

    def __init__(self, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.proj = torch_linear(hidden, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        return gram_sigmoid(self.proj(x), mask)


class PairMLP(nnx.Module):
    """`mlp`: sigmoid(Linear(ReLU(Linear([x_i || x_j])))) per ordered pair; the first Linear runs per entity on its
    head and tail halves (the same sums, without building the pairs' 2H features). `mlp` holds gliner's
    Sequential's Linears at 0 and 2 as `linear_in` / `linear_out`."""

    def __init__(self, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.linear_in = torch_linear(2 * hidden, hidden, (axes.EMBED, axes.MLP), dtype, rngs)
        self.linear_out = torch_linear(hidden, 1, (axes.MLP, axes.EMBED), dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        hidden = x.shape[-1]
        kernel = self.linear_in.kernel[...].astype(x.dtype)
        head, tail = x @ kernel[:hidden], x @ kernel[hidden:]
        inner = jax.nn.relu(head[:, :, None] + tail[:, None, :] + self.linear_in.bias[...].astype(x.dtype))
        return pair_masked(jax.nn.sigmoid(self.linear_out(inner)[..., 0]), mask)


class MultiheadAttention(nnx.Module):
    """torch's `nn.MultiheadAttention` (batch first, self-attention, key padding mask): its packed `in_proj`
    (query, key, value rows) and `out_proj`. Returns the output [B, E, H] and the weights averaged over heads."""

    def __init__(self, hidden: int, num_heads: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.in_proj = torch_linear(hidden, 3 * hidden, (axes.EMBED, axes.MLP), dtype, rngs)
        self.out_proj = torch_linear(hidden, hidden, (axes.MLP, axes.EMBED), dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        batch, num, hidden = x.shape
        heads = self.num_heads
        q, k, v = (t.reshape(batch, num, heads, hidden // heads) for t in jnp.split(self.in_proj(x), 3, axis=-1))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(hidden // heads)
        scores = jnp.where(mask[:, None, None, :].astype(bool), scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)  # a row without keys gives NaN, as in torch
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(x.dtype), v).reshape(batch, num, hidden)
        return self.out_proj(out), weights.mean(axis=1).astype(x.dtype)


class Attention(nnx.Module):
    """`attention` / `attn`: the attention weights averaged over heads."""

    def __init__(self, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.attn = MultiheadAttention(hidden, ATTENTION_HEADS, dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        return pair_masked(self.attn(x, mask)[1], mask)


class GAT(nnx.Module):
    """`gat`: sigmoid(Z Z^T), Z = linear(attention output)."""

    def __init__(self, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.attn = MultiheadAttention(hidden, ATTENTION_HEADS, dtype, rngs)
        self.linear = torch_linear(hidden, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        return gram_sigmoid(self.linear(self.attn(x, mask)[0]), mask)


class GCNLayer(nnx.Module):
    """ReLU(linear(D^-1/2 (A + I) D^-1/2 X)), the self-loops on unmasked entities, degrees clamped at 1e-6."""

    def __init__(self, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.linear = torch_linear(hidden, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs)

    def __call__(self, x: jax.Array, adjacency: jax.Array, mask: jax.Array) -> jax.Array:
        m = mask.astype(x.dtype)
        a = pair_masked(adjacency, mask) + m[:, :, None] * jnp.eye(x.shape[1], dtype=x.dtype)
        scale = jnp.maximum(a.sum(axis=-1), 1e-6) ** -0.5
        return jax.nn.relu(self.linear(jnp.einsum("bij,bjd->bid", scale[:, :, None] * a * scale[:, None, :], x)))


class GCN(nnx.Module):
    """`gcn`: the dot adjacency refines the entities through one GCN layer, then sigmoid(P P^T), P = proj(H)."""

    def __init__(self, hidden: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.gcn = GCNLayer(hidden, dtype, rngs)
        self.proj = torch_linear(hidden, hidden, (axes.EMBED, axes.HIDDEN), dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        return gram_sigmoid(self.proj(self.gcn(x, gram_sigmoid(x, mask), mask)), mask)


ADJACENCY_LAYERS = {
    "dot": lambda hidden, dtype, rngs: Dot(),
    "mlp": PairMLP,
    "attention": Attention,
    "attn": Attention,
    "bilinear": Bilinear,
    "gcn": GCN,
    "gat": GAT,
}
"""relations_layer -> builder(hidden, dtype, rngs) of its adjacency module ("none" has none)."""


class RelationHead(nnx.Module):
    """gliner's relation stage on selected entities: the adjacency of `relations_layer` (None for "none") as
    `relation_rep_layer`, and what scores every ordered pair (head i, tail j) against the relation prompts: `pair_rep`
    (gliner's `pair_rep_layer`, the projection MLP from 2H to H, dotted with each relation) or, with a
    `triples_layer`, `triples_score` (gliner's `triples_score_layer`: a score of each (head, relation, tail))."""

    def __init__(
        self,
        relations_layer: str,
        triples_layer: str | None,
        hidden: int,
        dropout: float,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        build = ADJACENCY_LAYERS.get(relations_layer)
        self.relation_rep_layer = None if build is None else build(hidden, dtype, rngs)
        if triples_layer is None:
            self.pair_rep, self.triples_score = ProjectionMLP(2 * hidden, hidden, dropout, dtype, rngs), None
        else:
            self.pair_rep, self.triples_score = None, TriplesScore(triples_layer, TRIPLES_WIDTH, dtype, rngs)

    def __call__(
        self,
        entities: jax.Array,
        entity_mask: jax.Array,
        relations: jax.Array,
        selection: PairSelection | None = None,
    ) -> tuple[jax.Array | None, jax.Array]:
        """entities [B, E, H] (zero where masked), entity_mask [B, E], relation prompts [B, R, H] -> (adjacency
        [B, E, E] or None, pair logits [B, E, E, R]: pair (i, j) against each relation). `selection`: the pairs
        gliner scores, which a TuckER triples layer needs (its scores, and in training its BatchNorm statistics,
        depend on the whole batch); the other layers ignore it."""
        adjacency = None if self.relation_rep_layer is None else self.relation_rep_layer(entities, entity_mask)
        if self.triples_score is not None:
            rows = None
            if selection is not None:
                pairs = selection.pairs
                if pairs is None and adjacency is not None:
                    pairs = adjacency > selection.adjacency_threshold
                elif pairs is None:
                    pairs = jnp.ones((*entity_mask.shape, entity_mask.shape[-1]), bool)  # every pair of real ones
                real = entity_mask if selection.entity_mask is None else selection.entity_mask
                rows = gliner_rows(pairs, real.astype(bool), selection.examples, selection.relations_valid)
            return adjacency, self.triples_score.cells(entities, relations, rows)
        hidden = entities.shape[-1]
        first = self.pair_rep.linear_in
        kernel = first.kernel[...].astype(entities.dtype)
        head, tail = entities @ kernel[:hidden], entities @ kernel[hidden:]
        inner = jax.nn.relu(head[:, :, None] + tail[:, None, :] + first.bias[...].astype(entities.dtype))
        pairs = self.pair_rep.linear_out(self.pair_rep.dropout(inner))  # [B, E, E, H]
        return adjacency, jnp.einsum("bijh,brh->bijr", pairs, relations)
