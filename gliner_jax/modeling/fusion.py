"""gliner's fusion modules: the cross fuser (`post_fusion_schema`: attention blocks between a bi-encoder's word states
and label embeddings) and the layers fuser (`fuse_layers`: an encoder's layer outputs weighed and summed)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.layers import layer_norm, split_heads, torch_linear

TORCH_LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which gliner's fusion blocks keep
SELF_ATTENTION = ("l2l", "t2t")  # label -> label, text -> text
CROSS_ATTENTION = ("l2t", "t2l")  # label -> text, text -> label


def parse_schema(schema: str) -> tuple[str, ...]:
    """The blocks of a `post_fusion_schema` ("l2l-l2t-t2t-t2l", ...), in order, as gliner splits it on "-". gliner
    builds a cross-attention block for every name but "l2l" / "t2t" and runs only the four it knows: an unknown name
    (an empty one included) holds parameters that never run."""
    return tuple(schema.split("-"))


class MultiheadAttention(nnx.Module):
    """gliner's MultiheadAttention: query / key / value Linears, scaled dot-product attention per head over the keys a
    mask [N, Q, K] allows (a query allowed none gets zeros, as torch's SDPA gives), dropout on the probabilities."""

    def __init__(self, width: int, num_heads: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.query_layer = torch_linear(width, width, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.key_layer = torch_linear(width, width, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.value_layer = torch_linear(width, width, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array) -> jax.Array:
        q = split_heads(self.query_layer(query), self.num_heads)
        k = split_heads(self.key_layer(key), self.num_heads)
        v = split_heads(self.value_layer(value), self.num_heads)
        scores = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) * q.shape[-1] ** -0.5
        allowed = mask[:, None]
        probs = jax.nn.softmax(jnp.where(allowed, scores, jnp.finfo(jnp.float32).min), axis=-1)
        probs = jnp.where(allowed.any(axis=-1, keepdims=True), probs, 0.0)
        context = jnp.einsum("bnqk,bknd->bqnd", self.dropout(probs.astype(v.dtype)), v)
        return context.reshape(*context.shape[:-2], -1)


class SelfAttentionBlock(nnx.Module):
    """gliner's SelfAttentionBlock: x = pre_norm(x); post_norm(x + dropout(attention(q_proj x, k_proj x, v_proj x)))."""

    def __init__(self, width: int, num_heads: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.self_attn = MultiheadAttention(width, num_heads, dropout, dtype, rngs)
        self.pre_norm = layer_norm(width, TORCH_LAYER_NORM_EPS, dtype, rngs)
        self.post_norm = layer_norm(width, TORCH_LAYER_NORM_EPS, dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.q_proj = torch_linear(width, width, (axes.EMBED, axes.HIDDEN), dtype, rngs)
        self.k_proj = torch_linear(width, width, (axes.EMBED, axes.HIDDEN), dtype, rngs)
        self.v_proj = torch_linear(width, width, (axes.EMBED, axes.HIDDEN), dtype, rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = self.pre_norm(x)
        attended = self.self_attn(self.q_proj(x), self.k_proj(x), self.v_proj(x), mask)
        return self.post_norm(x + self.dropout(attended))


class CrossAttentionBlock(nnx.Module):
    """gliner's CrossAttentionBlock: query = pre_norm(query); post_norm(query + dropout(attention(query, key,
    v_proj key))), the key read as it is (not normalised)."""

    def __init__(self, width: int, num_heads: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.cross_attn = MultiheadAttention(width, num_heads, dropout, dtype, rngs)
        self.pre_norm = layer_norm(width, TORCH_LAYER_NORM_EPS, dtype, rngs)
        self.post_norm = layer_norm(width, TORCH_LAYER_NORM_EPS, dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.v_proj = torch_linear(width, width, (axes.EMBED, axes.HIDDEN), dtype, rngs)

    def __call__(self, query: jax.Array, key: jax.Array, mask: jax.Array) -> jax.Array:
        query = self.pre_norm(query)
        attended = self.cross_attn(query, key, self.v_proj(key), mask)
        return self.post_norm(query + self.dropout(attended))


class CrossFuser(nnx.Module):
    """gliner's CrossFuser: `num_layers` times the blocks of `schema`, in order, over label states [N, C, H] and word
    states [N, W, H] (masks [N, C], [N, W]): "l2l" / "t2t" self-attention on the labels / the words, "l2t" labels
    attending to the words, "t2l" words attending to the labels."""

    def __init__(
        self, width: int, num_heads: int, num_layers: int, schema: str, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        self.schema = parse_schema(schema)

        def block(name: str) -> nnx.Module:
            kind = SelfAttentionBlock if name in SELF_ATTENTION else CrossAttentionBlock
            return kind(width, num_heads, dropout, dtype, rngs)

        self.layers = nnx.List([nnx.List([block(name) for name in self.schema]) for _ in range(num_layers)])

    def __call__(
        self, labels: jax.Array, words: jax.Array, labels_valid: jax.Array, words_valid: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(labels, words) after every block."""
        pair = {
            "l2l": labels_valid[:, :, None] & labels_valid[:, None, :],
            "t2t": words_valid[:, :, None] & words_valid[:, None, :],
            "l2t": labels_valid[:, :, None] & words_valid[:, None, :],
            "t2l": words_valid[:, :, None] & labels_valid[:, None, :],
        }
        for blocks in self.layers:
            for name, block in zip(self.schema, blocks, strict=True):
                if name == "l2l":
                    labels = block(labels, pair[name])
                elif name == "t2t":
                    words = block(words, pair[name])
                elif name == "l2t":
                    labels = block(labels, words, pair[name])
                elif name == "t2l":
                    words = block(words, labels, pair[name])
        return labels, words


class LayersFuser(nnx.Module):
    """gliner's LayersFuser (`fuse_layers`): an encoder's layer outputs U [K, B, T, D] (transformers' hidden states
    but the embeddings') weighed per row and summed, then projected: z[b, k] = mean over the batch's columns of
    squeeze(U[k, b]), s = sigmoid(W2 relu(W1 z)), output_projection(sum_k s[:, k] U[k]).

    gliner averages over every column of its batch, padding included, and its batch is padded to its longest row:
    the columns averaged here are those some row of `attention_mask` [B, T] uses (bucket padding beyond them is not
    gliner's), and the padding states inside them are the encoder's own, as transformers computes them."""

    def __init__(self, num_layers: int, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.squeeze = torch_linear(width, 1, (axes.EMBED, None), dtype, rngs)
        self.W1 = torch_linear(num_layers, num_layers // 2, (None, None), dtype, rngs)
        self.W2 = torch_linear(num_layers // 2, num_layers, (None, None), dtype, rngs)
        self.output_projection = torch_linear(width, width, (axes.EMBED, axes.HIDDEN), dtype, rngs)

    def __call__(self, states: jax.Array, attention_mask: jax.Array) -> jax.Array:
        used = (attention_mask > 0).any(axis=0)  # [T]: the columns of gliner's batch
        squeezed = self.squeeze(states)[..., 0].astype(jnp.float32)  # [K, B, T]
        z = jnp.sum(jnp.where(used, squeezed, 0.0), axis=-1) / jnp.maximum(used.sum(), 1)  # [K, B]
        weights = jax.nn.sigmoid(self.W2(jax.nn.relu(self.W1(z.T.astype(states.dtype)))))  # [B, K]
        return self.output_projection(jnp.einsum("kbtd,bk->btd", states, weights))


def build_cross_fuser(config: Any, dtype: jnp.dtype, rngs: nnx.Rngs) -> CrossFuser | None:
    """gliner's cross fuser of a GLiNER config (`post_fusion_schema`, `num_post_fusion_layers`; None without a
    schema): as wide as hidden_size, with the text backbone's attention heads, as every gliner model builds it."""
    if not config.post_fusion_schema:
        return None
    heads = config.encoder_config.num_attention_heads
    width, layers, schema = config.hidden_size, config.num_post_fusion_layers, config.post_fusion_schema
    return CrossFuser(width, heads, layers, schema, config.dropout, dtype, rngs)
