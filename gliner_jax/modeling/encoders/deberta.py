"""DeBERTa-v2/v3 encoder in Flax NNX: disentangled attention over log-bucketed relative positions.

Module and attribute names follow transformers' `DebertaV2Model` tree (`embeddings.word_embeddings`,
`encoder.layer.attention.self.query_proj`, ...) so that the checkpoint key table (`hf_modules`) stays obvious.
The encoder layers are stacked on a leading "layers" axis and run in a scan (`modeling/layer_stack.py`), so compile
time does not grow with depth; training unrolls that loop (`unroll_layers`) for throughput and may rematerialise each
layer (`remat`). Long inputs run attention in blocks of queries (`blockwise_above`, `query_block`), so that no
[T, T] score table of the whole sequence exists at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.blockwise import map_blocks
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.encoders.config_checks import fields_dict
from gliner_jax.modeling.layer_stack import run_layers
from gliner_jax.modeling.layers import (
    embed,
    layer_norm,
    linear,
    segment_pair_mask,
    segment_positions,
    stacked_layers,
)

MODEL_TYPE = "deberta-v2"
# Prefix under which transformers' task models (DebertaV2ForMaskedLM, ...) keep the encoder.
HF_BASE_PREFIX = "deberta."

# Defaults that transformers' DebertaV2 code falls back to when a key is absent from config.json.
# They differ from the deberta-v3 values, so a config read from JSON must use these, not ours.
_HF_ABSENT_DEFAULTS: dict[str, Any] = {
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-7,
    "relative_attention": False,
    "max_relative_positions": -1,
    "position_buckets": -1,
    "position_biased_input": True,
    "pos_att_type": None,
    "share_att_key": False,
    "norm_rel_ebd": "none",
    "conv_kernel_size": 0,
}
# Blockwise attention by default: inputs longer than BLOCKWISE_ABOVE tokens, blocks of QUERY_BLOCK queries.
BLOCKWISE_ABOVE = 1024
QUERY_BLOCK = 256
_SUPPORTED_POS_ATT_TYPES = ("c2p", "p2c")
_SUPPORTED_REL_NORMS = ("none", "layer_norm")


@dataclasses.dataclass(frozen=True)
class DebertaConfig:
    """A DeBERTa-v2/v3 encoder configuration (the subset of `DebertaV2Config` our encoder implements).

    Defaults are those of microsoft/deberta-v3-base. Keys of a Hugging Face config that do not
    change the encoder's computation (pooler settings, token ids, ...) are kept in `extra` so that
    a load/save round trip loses nothing.
    """

    vocab_size: int = 128100
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-7
    initializer_range: float = 0.02
    position_buckets: int = 256
    max_relative_positions: int = -1
    pos_att_type: tuple[str, ...] = ("p2c", "c2p")
    share_att_key: bool = True
    norm_rel_ebd: str = "layer_norm"
    position_biased_input: bool = False
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act != "gelu":
            raise NotImplementedError(f"hidden_act={self.hidden_act!r} is not supported (only 'gelu')")
        unknown = [t for t in self.pos_att_type if t not in _SUPPORTED_POS_ATT_TYPES]
        if unknown:
            raise NotImplementedError(f"pos_att_type {unknown} is not supported (only c2p and p2c)")
        unknown = [t for t in self.rel_norms if t not in _SUPPORTED_REL_NORMS]
        if unknown:
            raise NotImplementedError(f"norm_rel_ebd {unknown} is not supported (only layer_norm or none)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int | None:
        """The longest row the absolute position embeddings cover; None without them (relative positions only)."""
        return self.max_position_embeddings if self.position_biased_input else None

    @property
    def rel_norms(self) -> tuple[str, ...]:
        """`norm_rel_ebd` split on '|', as transformers reads it."""
        return tuple(t.strip() for t in self.norm_rel_ebd.lower().split("|"))

    @property
    def max_relative_distance(self) -> int:
        """`max_relative_positions`, or `max_position_embeddings` when it is < 1."""
        if self.max_relative_positions < 1:
            return self.max_position_embeddings
        return self.max_relative_positions

    @property
    def attention_span(self) -> int:
        """Half the number of relative-position embeddings (`pos_ebd_size` in transformers)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_distance

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> DebertaConfig:
        """Build from a transformers `DebertaV2Config` dict; refuse what our encoder does not implement."""
        model_type = hf.get("model_type") or MODEL_TYPE
        if model_type != MODEL_TYPE:
            raise NotImplementedError(f"model_type={model_type!r} is not a DeBERTa-v2/v3 config ({MODEL_TYPE!r})")

        def get(key: str) -> Any:
            return hf[key] if key in hf else _HF_ABSENT_DEFAULTS[key]

        hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
        refusals = {
            "relative_attention": (get("relative_attention") is not True, "must be true"),
            "conv_kernel_size": (get("conv_kernel_size") > 0, "convolution layers are not implemented"),
            "type_vocab_size": (get("type_vocab_size") > 0, "token type embeddings are not implemented"),
            "attention_head_size": (
                hf.get("attention_head_size", hidden // heads) != hidden // heads,
                f"must equal hidden_size // num_attention_heads = {hidden // heads}",
            ),
            "embedding_size": (
                hf.get("embedding_size", hidden) != hidden,
                f"must equal hidden_size = {hidden}",
            ),
        }
        for key, (refused, why) in refusals.items():
            if refused:
                raise NotImplementedError(f"unsupported DeBERTa config {key}={hf.get(key)!r}: {why}")

        pos_att_type = get("pos_att_type") or ()
        if isinstance(pos_att_type, str):
            pos_att_type = [t.strip() for t in pos_att_type.lower().split("|")]
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "pos_att_type"}
        values = {key: get(key) if key in _HF_ABSENT_DEFAULTS else hf[key] for key in fields}
        used = fields | {"pos_att_type"}
        extra = {k: v for k, v in hf.items() if k not in used}
        return cls(**values, pos_att_type=tuple(pos_att_type), extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        """A dict that `transformers.DebertaV2Config(**d)` turns into the same encoder."""
        out = fields_dict(self)
        out.update(
            model_type=MODEL_TYPE,
            pos_att_type=list(self.pos_att_type),
            relative_attention=True,
            type_vocab_size=0,
        )
        return out


def bucket_distances(distances: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """Relative distances log-bucketed as in DeBERTa-v3.

    Distances below `bucket_size // 2` are kept; larger ones are mapped to
    `ceil(log(|d| / mid) / log((max_position - 1) / mid) * (mid - 1)) + mid`, with the sign of d.
    The arithmetic is float32, as in the PyTorch reference, so that bucket edges agree exactly.
    """
    rel = np.asarray(distances, np.int64)
    if bucket_size <= 0 or max_position <= 0:
        return rel
    mid = bucket_size // 2
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    ratio = abs_pos.astype(np.float32) / np.float32(mid)
    log_base = np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(np.log(ratio) / log_base * np.float32(mid - 1)) + np.float32(mid)
    bucketed = np.where(abs_pos <= mid, rel.astype(np.float32), log_pos * np.sign(rel).astype(np.float32))
    return bucketed.astype(np.int64)


def relative_positions(length: int, bucket_size: int, max_position: int) -> np.ndarray:
    """Bucketed relative positions q - k, [length, length]."""
    ids = np.arange(length)
    return bucket_distances(ids[:, None] - ids[None, :], bucket_size, max_position)


def relative_scores(
    content: jax.Array,
    positions: jax.Array,
    columns: np.ndarray,
    *,
    row_start: int | jax.Array = 0,
    col_start: int | jax.Array = 0,
    width: int | None = None,
) -> jax.Array:
    """out[b, n, a, c] = content[b, n, a] . positions[n, columns[(row_start + a) - (col_start + c) + L - 1]]: a c2p /
    p2c score table, or the block of one whose rows start at `row_start` and whose `width` columns (default: as
    many as rows) start at `col_start` (offsets static, or traced inside a loop over blocks).

    content [B, N, A, dh], positions [N, R, dh], columns [2L - 1] (one per distance i - j of a length-L input;
    distances past them, which only padding reads, take the nearest). The score depends on i - j only through its
    column, so the rows of `positions` are gathered per distance first (A + width - 1 of them), contracted, and
    skewed into place (Transformer-XL's pad / reshape / slice), instead of gathering an [A, width] table out of
    [A, R] scores. The contraction is written as a dot_general whose result keeps the distance axis minor, so that
    the skew reads memory in order (an einsum here let XLA:CPU pick a distance-major result, which made the skew a
    strided gather: 13% of the encoder).
    """
    rows = content.shape[-2]
    width = rows if width is None else width
    # Column m of by_distance holds distance (row_start - col_start) + rows - 1 - m, i.e. columns index base - m.
    base = rows - 1 + (len(columns) - 1) // 2
    steps = np.arange(rows + width - 1)
    if isinstance(row_start, int) and isinstance(col_start, int):
        gathered = positions[:, columns[np.clip(row_start - col_start + base - steps, 0, len(columns) - 1)]]
    else:
        index = jnp.take(jnp.asarray(columns), row_start - col_start + base - steps, mode="clip")
        gathered = jnp.take(positions, index, axis=1)
    by_distance = jax.lax.dot_general(content, gathered, (((3,), (2,)), ((1,), (0,))))
    return skew(jnp.swapaxes(by_distance, 0, 1), width)  # [B, N, A, A + width - 1] -> [B, N, A, width]


def skew(by_distance: jax.Array, width: int) -> jax.Array:
    """[..., A, A + width - 1] -> [..., A, width]: out[..., a, c] = by_distance[..., a, A - 1 - a + c], by padding each
    row by one (row stride A + width), reading the flat buffer from A - 1 with row stride A + width - 1."""
    rows = by_distance.shape[-2]
    lead = by_distance.shape[:-2]
    padded = jnp.pad(by_distance, [(0, 0)] * (by_distance.ndim - 1) + [(0, 1)])
    flat = padded.reshape(*lead, -1)[..., rows - 1 : rows - 1 + rows * (rows + width - 1)]
    return flat.reshape(*lead, rows, rows + width - 1)[..., :width]


def p2c_scores(
    keys: jax.Array, pos_query: jax.Array, columns: np.ndarray, query_start: int | jax.Array, rows: int
) -> jax.Array:
    """p2c[b, n, i, j] = keys[b, n, j] . pos_query[n, columns[j - i + L - 1]] for the `rows` queries i from
    `query_start`, [B, N, rows, T]: the transposed `relative_scores` of the keys. For a block of queries the keys go
    in blocks of as many (the last padded), so that each score is computed once."""
    length = keys.shape[-2]
    if rows == length:
        return jnp.swapaxes(relative_scores(keys, pos_query, columns, col_start=query_start), -1, -2)
    blocks = -(-length // rows)
    padded = jnp.pad(keys, [(0, 0), (0, 0), (0, blocks * rows - length), (0, 0)])
    padded = padded.reshape(*keys.shape[:2], blocks, rows, keys.shape[-1])

    def block(key_rows: jax.Array, key_start: jax.Array) -> jax.Array:
        return relative_scores(key_rows, pos_query, columns, row_start=key_start, col_start=query_start, width=rows)

    per_block = jax.vmap(block, in_axes=(2, 0), out_axes=2)(padded, jnp.arange(blocks) * rows)  # [B, N, K, kr, qr]
    return jnp.moveaxis(per_block, -1, 2).reshape(*keys.shape[:2], rows, blocks * rows)[..., :length]


def _linear(
    config: DebertaConfig, d_in: int, d_out: int, names: tuple[str, str], dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.Linear:
    return linear(d_in, d_out, names, dtype, rngs, nnx.initializers.normal(config.initializer_range))


def _layer_norm(config: DebertaConfig, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return layer_norm(config.hidden_size, config.layer_norm_eps, dtype, rngs)


def _embed(config: DebertaConfig, rows: int, names: tuple[str, str], dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Embed:
    return embed(rows, config.hidden_size, names, nnx.initializers.normal(config.initializer_range), dtype, rngs)


class DebertaEmbeddings(nnx.Module):
    """Word (+ absolute position) embeddings, LayerNorm, zeroed at padding."""

    def __init__(self, config: DebertaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.word_embeddings = _embed(config, config.vocab_size, (axes.VOCAB, axes.EMBED), dtype, rngs)
        self.position_embeddings = (
            _embed(config, config.max_position_embeddings, (axes.POSITIONS, axes.EMBED), dtype, rngs)
            if config.position_biased_input
            else None
        )
        self.LayerNorm = _layer_norm(config, dtype, rngs)
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        x = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            length, rows = input_ids.shape[1], self.position_embeddings.num_embeddings
            if length > rows:
                raise ValueError(f"sequence length {length} exceeds max_position_embeddings {rows}")
            x = x + self.position_embeddings(segment_positions(attention_mask))
        x = self.LayerNorm(x) * (attention_mask > 0)[..., None].astype(x.dtype)
        return self.dropout(x)


class KeysAndPositions(NamedTuple):
    """What every query attends over: keys and values [B, N, T, dh], and the projected relative embeddings [N, R, dh]
    of the c2p (`pos_key`) and p2c (`pos_query`) terms (None where the config has no such term)."""

    keys: jax.Array
    values: jax.Array
    pos_key: jax.Array | None
    pos_query: jax.Array | None


class DisentangledSelfAttention(nnx.Module):
    """Content-to-content attention plus c2p / p2c relative-position terms.

    Inputs longer than `blockwise_above` tokens (None: never) run in blocks of `query_block` queries, one block at a
    time (`blockwise.map_blocks`: the backward pass recomputes each block): every score, c2p / p2c term, softmax row
    and dropout mask is the one the whole-sequence computation makes, but only [B, heads, query_block, T] tables
    exist at once, forward and backward. Set both with `model.set_attributes(blockwise_above=..., query_block=...)`.
    """

    def __init__(self, config: DebertaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.pos_att_type = config.pos_att_type
        self.share_att_key = config.share_att_key
        self.blockwise_above: int | None = BLOCKWISE_ABOVE
        self.query_block = QUERY_BLOCK
        self.query_proj = _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.key_proj = _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.value_proj = _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
        separate = not config.share_att_key
        self.pos_key_proj = (
            _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
            if separate and "c2p" in config.pos_att_type
            else None
        )
        self.pos_query_proj = (
            _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
            if separate and "p2c" in config.pos_att_type
            else None
        )
        # float32 sqrt, as the reference computes the scale.
        self.scale = float(np.sqrt(np.float32(config.head_dim * (1 + len(config.pos_att_type)))))
        self.pos_dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.dropout = Dropout(config.attention_probs_dropout_prob, rngs=rngs)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        """[..., T, heads * dh] -> [..., heads, T, dh]."""
        x = x.reshape(*x.shape[:-1], self.num_heads, -1)
        return jnp.swapaxes(x, -2, -3)

    def __call__(
        self,
        hidden: jax.Array,
        segments: jax.Array,
        rel_embeddings: jax.Array,
        c2p_columns: np.ndarray,
        p2c_columns: np.ndarray,
    ) -> jax.Array:
        q = self._split_heads(self.query_proj(hidden))  # [B, N, T, dh]
        rel = self.pos_dropout(rel_embeddings)
        pos_key = pos_query = None
        if "c2p" in self.pos_att_type:
            pos_key = self._split_heads((self.key_proj if self.share_att_key else self.pos_key_proj)(rel))  # [N, R, dh]
        if "p2c" in self.pos_att_type:
            pos_query = self._split_heads((self.query_proj if self.share_att_key else self.pos_query_proj)(rel))
        keys = KeysAndPositions(
            self._split_heads(self.key_proj(hidden)), self._split_heads(self.value_proj(hidden)), pos_key, pos_query
        )
        columns = (c2p_columns, p2c_columns)
        length = q.shape[-2]
        if self.blockwise_above is None or length <= self.blockwise_above or self.query_block >= length:
            context = self._attend(q, segments, 0, keys, segments, columns, lambda probs, start: self.dropout(probs))
        else:
            context = self._blockwise(q, keys, segments, columns)
        return jnp.swapaxes(context, 1, 2).reshape((*hidden.shape[:-1], -1))

    def _attend(
        self,
        queries: jax.Array,
        query_ids: jax.Array,
        start: int | jax.Array,
        keys: KeysAndPositions,
        segments: jax.Array,
        columns: tuple[np.ndarray, np.ndarray],
        drop: Callable[[jax.Array, tuple], jax.Array],
    ) -> jax.Array:
        """Context vectors [B, N, A, dh] of the A queries from position `start` (segment ids `query_ids`) over every
        key; `drop(probs, start)` applies the attention dropout."""
        k, v = keys.keys, keys.values
        scale = jnp.asarray(self.scale, k.dtype)
        scores = jnp.einsum("bnqd,bnkd->bnqk", queries, k / scale)
        if keys.pos_key is not None:
            c2p = relative_scores(queries, keys.pos_key, columns[0], row_start=start, width=k.shape[-2])
            scores = scores + c2p / scale
        if keys.pos_query is not None:
            scores = scores + p2c_scores(k, keys.pos_query, columns[1], start, queries.shape[-2]) / scale
        scores = jnp.where(
            segment_pair_mask(segments, query_ids), scores.astype(jnp.float32), jnp.finfo(jnp.float32).min
        )
        probs = drop(jax.nn.softmax(scores, axis=-1).astype(v.dtype), (0, 0, start, 0))
        return jnp.einsum("bnqk,bnkd->bnqd", probs, v)

    def _blockwise(
        self, q: jax.Array, keys: KeysAndPositions, segments: jax.Array, columns: tuple[np.ndarray, np.ndarray]
    ) -> jax.Array:
        """`_attend` over blocks of `query_block` queries (the last padded), one at a time forward and backward."""
        length, rows = q.shape[-2], self.query_block
        blocks = -(-length // rows)
        dropout_key, drop = self.dropout.window((*q.shape[:-1], length))
        pad = blocks * rows - length
        q_blocks = jnp.pad(q, [(0, 0), (0, 0), (0, pad), (0, 0)]).reshape(*q.shape[:2], blocks, rows, -1)
        id_blocks = jnp.pad(segments, [(0, 0), (0, pad)]).reshape(segments.shape[0], blocks, rows)
        xs = (jnp.moveaxis(q_blocks, 2, 0), jnp.moveaxis(id_blocks, 1, 0), jnp.arange(blocks) * rows)

        def block(x: tuple[jax.Array, jax.Array, jax.Array], shared: tuple) -> jax.Array:
            (queries, query_ids, start), (keys, segments, dropout_key) = x, shared
            return self._attend(
                queries, query_ids, start, keys, segments, columns, lambda probs, at: drop(dropout_key, probs, at)
            )

        context = map_blocks(block, xs, (keys, segments, dropout_key))  # [blocks, B, N, rows, dh]
        return jnp.moveaxis(context, 0, 2).reshape(*q.shape[:2], blocks * rows, -1)[:, :, :length]


class DebertaResidualOutput(nnx.Module):
    """Projection back to the model width, dropout, residual, LayerNorm (after attention and after the MLP)."""

    def __init__(self, config: DebertaConfig, d_in: int, in_axis: str, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dense = _linear(config, d_in, config.hidden_size, (in_axis, axes.EMBED), dtype, rngs)
        self.LayerNorm = _layer_norm(config, dtype, rngs)
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class DebertaAttention(nnx.Module):
    def __init__(self, config: DebertaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.self = DisentangledSelfAttention(config, dtype, rngs)
        self.output = DebertaResidualOutput(config, config.hidden_size, axes.HEADS, dtype, rngs)

    def __call__(self, hidden: jax.Array, *relative: jax.Array) -> jax.Array:
        return self.output(self.self(hidden, *relative), hidden)


class DebertaIntermediate(nnx.Module):
    def __init__(self, config: DebertaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dense = _linear(config, config.hidden_size, config.intermediate_size, (axes.EMBED, axes.MLP), dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(self.dense(x), approximate=False)


class DebertaLayer(nnx.Module):
    """One transformer block: disentangled attention, then the GELU MLP."""

    def __init__(self, config: DebertaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.attention = DebertaAttention(config, dtype, rngs)
        self.intermediate = DebertaIntermediate(config, dtype, rngs)
        self.output = DebertaResidualOutput(config, config.intermediate_size, axes.MLP, dtype, rngs)

    def __call__(self, hidden: jax.Array, *relative: jax.Array) -> jax.Array:
        attended = self.attention(hidden, *relative)
        return self.output(self.intermediate(attended), attended)


class DebertaLayerStack(nnx.Module):
    """`num_hidden_layers` blocks stacked on a leading axis, with the shared relative embeddings.

    The blocks run in a scan (`layer_stack.run_layers`). `unroll_layers` (set with
    `model.set_attributes(unroll_layers=True)`) unrolls it: the same numbers, compile time growing with depth (a
    deberta-v3-large gradient: 2.5 -> 17 s on CPU), and a train step without the scan's stacked copies of every
    layer's saved activations (5% faster at deberta-v3-small shapes on CPU). `remat` ("none", "dots", "full"; see
    `layer_stack.REMAT_POLICIES`) rematerialises each layer in the backward pass: the same numbers, less memory.
    """

    def __init__(self, config: DebertaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.config = config
        self.unroll_layers = False
        self.remat = "none"
        self.layer = stacked_layers(config.num_hidden_layers, lambda rngs: DebertaLayer(config, dtype, rngs), rngs)
        self.rel_embeddings = _embed(config, 2 * config.attention_span, (axes.RELPOS, axes.EMBED), dtype, rngs)
        self.LayerNorm = _layer_norm(config, dtype, rngs) if "layer_norm" in config.rel_norms else None

    def relative_columns(self, length: int) -> tuple[slice, np.ndarray, np.ndarray]:
        """Which relative embeddings a length-T input reads, and the column each distance reads.

        Returns the window of `rel_embeddings` rows that the c2p and p2c terms can index (projecting
        only those rows gives the same scores with less work on short inputs), then for each distance
        d = -(T-1) ... T-1 (index d + T - 1) the c2p and p2c columns in that window.
        """
        span = self.config.attention_span
        distances = np.arange(-(length - 1), length)
        rel = bucket_distances(distances, self.config.position_buckets, self.config.max_relative_distance)
        c2p = np.clip(rel + span, 0, 2 * span - 1)
        p2c = np.clip(-rel + span, 0, 2 * span - 1)
        low, high = min(c2p.min(), p2c.min()), max(c2p.max(), p2c.max())
        return slice(int(low), int(high) + 1), c2p - low, p2c - low

    def __call__(
        self, hidden: jax.Array, attention_mask: jax.Array, *, all_layers: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        window, c2p_columns, p2c_columns = self.relative_columns(hidden.shape[1])
        rel = self.rel_embeddings.embedding[window].astype(hidden.dtype)
        if self.LayerNorm is not None:
            rel = self.LayerNorm(rel)

        def apply(layer: DebertaLayer, h: jax.Array, segments: jax.Array, rel: jax.Array) -> jax.Array:
            return layer(h, segments, rel, c2p_columns, p2c_columns)  # columns: static NumPy, closed over

        return run_layers(
            apply,
            self.layer,
            hidden,
            attention_mask,
            rel,
            unroll=self.unroll_layers,
            remat=self.remat,
            collect=all_layers,
        )


class DebertaModel(nnx.Module):
    """DeBERTa-v2/v3 encoder: `model(input_ids, attention_mask) -> last_hidden_state [B, T, d]`.

    Parameters are float32; `dtype` is the compute dtype (float32 or bfloat16). Softmax and
    LayerNorm statistics are computed in float32 either way.
    """

    def __init__(self, config: DebertaConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = DebertaEmbeddings(config, dtype, rngs)
        self.encoder = DebertaLayerStack(config, dtype, rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, *, all_layers: bool = False) -> jax.Array:
        """Last hidden states [B, T, d]; with `all_layers`, every layer's output [L, B, T, d] (transformers'
        `hidden_states[1:]`)."""
        out = self.encoder(self.embeddings(input_ids, attention_mask), attention_mask, all_layers=all_layers)
        return out[1] if all_layers else out


# Modules of one encoder layer: PyTorch path under `encoder.layer.{i}.` -> parameter kind. Our path is the same,
# under `encoder.layer.` with the layer index as leading axis.
_LAYER_MODULES = {
    "attention.self.query_proj": "linear",
    "attention.self.key_proj": "linear",
    "attention.self.value_proj": "linear",
    "attention.output.dense": "linear",
    "attention.output.LayerNorm": "layer_norm",
    "intermediate.dense": "linear",
    "output.dense": "linear",
    "output.LayerNorm": "layer_norm",
}


def hf_modules(config: DebertaConfig) -> dict[str, str]:
    """Every module of the encoder that holds parameters: transformers' `DebertaV2Model` path -> parameter kind,
    layers as `{i}` (stacked on our side)."""
    modules = {"embeddings.word_embeddings": "embedding", "embeddings.LayerNorm": "layer_norm"}
    if config.position_biased_input:
        modules["embeddings.position_embeddings"] = "embedding"
    layer = dict(_LAYER_MODULES)
    if not config.share_att_key and "c2p" in config.pos_att_type:
        layer["attention.self.pos_key_proj"] = "linear"
    if not config.share_att_key and "p2c" in config.pos_att_type:
        layer["attention.self.pos_query_proj"] = "linear"
    modules.update({f"encoder.layer.{{i}}.{name}": kind for name, kind in layer.items()})
    modules["encoder.rel_embeddings"] = "embedding"
    if "layer_norm" in config.rel_norms:
        modules["encoder.LayerNorm"] = "layer_norm"
    return modules


def hf_ignored(config: DebertaConfig) -> tuple[str, ...]:
    """Tensors transformers itself skips when loading a `DebertaV2Model`: a non-persistent buffer that old files
    carry, and absolute positions in checkpoints of models that do not use them."""
    if config.position_biased_input:
        return ("embeddings.position_ids",)
    return ("embeddings.position_ids", "embeddings.position_embeddings.weight")
