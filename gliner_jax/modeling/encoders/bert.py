"""BERT, RoBERTa and XLM-RoBERTa encoders in Flax NNX (transformers' `BertModel`, `RobertaModel`,
`XLMRobertaModel`): absolute position and token type embeddings, post-LN layers (attention, residual, LayerNorm;
MLP, residual, LayerNorm).

One module serves the three model types. They differ in their config defaults and in how positions are numbered:
BERT counts 0, 1, 2, ... along the row; RoBERTa and XLM-R count the tokens that are not `pad_token_id` from
`pad_token_id + 1` on, and give a padding token the position `pad_token_id`. Positions restart in each packed
segment of `attention_mask`.

Token types: gliner never passes `token_type_ids`, so every token reads row 0 of `token_type_embeddings`, as
transformers does without them.

The pooler (`pooler.dense`, tanh over the first token's state) belongs to the state dict of transformers' base
model, and gliner saves it with every BERT-family backbone, so it lives here too: checkpoints load and save with
every key, and `pooled_output` computes it. The last hidden states never use it. A checkpoint without a pooler
(task models such as `BertForMaskedLM` build their base model without one) loads with the pooler at its random
init, as transformers does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.encoders.config_checks import check_heads, fields_dict, refuse, split_fields
from gliner_jax.modeling.layer_stack import run_layers
from gliner_jax.modeling.layers import (
    ACTIVATIONS,
    attention,
    embed,
    embed_padding_frozen,
    layer_norm,
    linear,
    padding_reads_row,
    segment_cumsum,
    segment_pair_mask,
    segment_positions,
    split_heads,
    stacked_layers,
)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """A BERT encoder configuration: the `BertConfig` fields the encoder reads, with transformers' defaults (which
    also fill keys absent from a config.json). Keys that do not change the last hidden states (token ids, classifier
    dropout, `use_cache`, ...) are kept in `extra`, so that a load / save round trip loses nothing."""

    model_type: ClassVar[str] = "bert"
    # Whether positions count the non-padding tokens from pad_token_id + 1 (RoBERTa) or the columns from 0 (BERT).
    positions_after_padding: ClassVar[bool] = False

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_heads(self.hidden_size, self.num_attention_heads)
        refusals = {
            "hidden_act": (self.hidden_act not in ACTIVATIONS, f"only {sorted(ACTIVATIONS)} are implemented"),
            "type_vocab_size": (self.type_vocab_size < 1, "row 0 of the token type embeddings is read"),
            "pad_token_id": (
                self.positions_after_padding and self.pad_token_id is None,
                "positions are counted from the padding id",
            ),
        }
        refuse(self.model_type, refusals, self)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """The longest row the position embeddings cover (RoBERTa's first pad_token_id + 1 rows are never read by a
        real token)."""
        if self.positions_after_padding:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> BertConfig:
        """Build from a transformers config dict of this model type; refuse what our encoder does not implement."""
        model_type = hf.get("model_type") or cls.model_type
        if model_type != cls.model_type:
            raise NotImplementedError(f"model_type={model_type!r} is not a {cls.model_type!r} config")
        refusals = {
            # transformers 5 ignores it (absolute positions always); 4.x computed relative-key attention instead.
            "position_embedding_type": (
                hf.get("position_embedding_type", "absolute") != "absolute",
                "only absolute position embeddings are implemented",
            ),
            "is_decoder": (bool(hf.get("is_decoder")), "causal (decoder) attention is not implemented"),
            "add_cross_attention": (bool(hf.get("add_cross_attention")), "cross-attention is not implemented"),
        }
        refuse(cls.model_type, refusals, hf)
        values, extra = split_fields(cls, hf)
        return cls(**values, extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        """A dict that transformers' config class of this model type turns into the same encoder."""
        return fields_dict(self) | {"model_type": self.model_type}


@dataclasses.dataclass(frozen=True)
class RobertaConfig(BertConfig):
    """A RoBERTa encoder configuration (transformers' `RobertaConfig` defaults)."""

    model_type: ClassVar[str] = "roberta"
    positions_after_padding: ClassVar[bool] = True

    vocab_size: int = 50265
    pad_token_id: int | None = 1


@dataclasses.dataclass(frozen=True)
class XLMRobertaConfig(BertConfig):
    """An XLM-RoBERTa encoder configuration (transformers' `XLMRobertaConfig` defaults)."""

    model_type: ClassVar[str] = "xlm-roberta"
    positions_after_padding: ClassVar[bool] = True

    pad_token_id: int | None = 1


# Where transformers' task models (...ForMaskedLM, ...) keep the encoder, by model type.
HF_BASE_PREFIXES = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta."}
HF_ARCHITECTURES = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}


def _linear(config: BertConfig, d_in: int, d_out: int, names: tuple[str, str], dtype: jnp.dtype, rngs: nnx.Rngs):
    return linear(d_in, d_out, names, dtype, rngs, nnx.initializers.normal(config.initializer_range))


def _layer_norm(config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return layer_norm(config.hidden_size, config.layer_norm_eps, dtype, rngs)


def _embed(config: BertConfig, rows: int, names: tuple[str, str], dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Embed:
    return embed(rows, config.hidden_size, names, nnx.initializers.normal(config.initializer_range), dtype, rngs)


class BertEmbeddings(nnx.Module):
    """Word + token type (row 0) + absolute position embeddings, LayerNorm, dropout."""

    def __init__(self, config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.config = config
        self.word_embeddings = _embed(config, config.vocab_size, (axes.VOCAB, axes.EMBED), dtype, rngs)
        self.position_embeddings = _embed(
            config, config.max_position_embeddings, (axes.POSITIONS, axes.EMBED), dtype, rngs
        )
        self.token_type_embeddings = _embed(config, config.type_vocab_size, (axes.TYPES, axes.EMBED), dtype, rngs)
        self.LayerNorm = _layer_norm(config, dtype, rngs)
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)

    def positions(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Position ids [B, T] as transformers numbers them, restarting in each packed segment."""
        if not self.config.positions_after_padding:
            return segment_positions(attention_mask)
        pad = self.config.pad_token_id
        real = (input_ids != pad).astype(jnp.int32)
        return segment_cumsum(real, attention_mask) * real + pad

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        length = input_ids.shape[1]
        if length > self.config.max_tokens:
            raise ValueError(f"sequence length {length} exceeds the {self.config.max_tokens} positions of the encoder")
        token_type = self.token_type_embeddings(jnp.zeros((1, 1), jnp.int32))
        pad = self.config.pad_token_id
        x = embed_padding_frozen(self.word_embeddings, input_ids, pad) + token_type
        positions = self.positions(input_ids, attention_mask)
        if self.config.positions_after_padding:  # RoBERTa / XLM-R: the padding position row is torch's padding_idx
            x = x + embed_padding_frozen(self.position_embeddings, positions, pad)
        else:
            x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nnx.Module):
    def __init__(self, config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.key = _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.value = _linear(config, d, d, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.dropout = Dropout(config.attention_probs_dropout_prob, rngs=rngs)

    def __call__(self, hidden: jax.Array, pair_mask: jax.Array) -> jax.Array:
        q, k, v = (split_heads(proj(hidden), self.num_heads) for proj in (self.query, self.key, self.value))
        return attention(q, k, v, pair_mask, self.dropout)


class BertResidualOutput(nnx.Module):
    """Projection back to the model width, dropout, residual, LayerNorm (`attention.output` and `output`)."""

    def __init__(self, config: BertConfig, d_in: int, in_axis: str, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dense = _linear(config, d_in, config.hidden_size, (in_axis, axes.EMBED), dtype, rngs)
        self.LayerNorm = _layer_norm(config, dtype, rngs)
        self.dropout = Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nnx.Module):
    def __init__(self, config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.self = BertSelfAttention(config, dtype, rngs)
        self.output = BertResidualOutput(config, config.hidden_size, axes.HEADS, dtype, rngs)

    def __call__(self, hidden: jax.Array, pair_mask: jax.Array) -> jax.Array:
        return self.output(self.self(hidden, pair_mask), hidden)


class BertIntermediate(nnx.Module):
    def __init__(self, config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dense = _linear(config, config.hidden_size, config.intermediate_size, (axes.EMBED, axes.MLP), dtype, rngs)
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(self.dense(x))


class BertLayer(nnx.Module):
    """One post-LN block: self-attention, then the MLP."""

    def __init__(self, config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.attention = BertAttention(config, dtype, rngs)
        self.intermediate = BertIntermediate(config, dtype, rngs)
        self.output = BertResidualOutput(config, config.intermediate_size, axes.MLP, dtype, rngs)

    def __call__(self, hidden: jax.Array, pair_mask: jax.Array) -> jax.Array:
        attended = self.attention(hidden, pair_mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nnx.Module):
    """`num_hidden_layers` blocks stacked on a leading axis and run in a scan (`layer_stack.run_layers`);
    `unroll_layers` unrolls it and `remat` ("none", "dots", "full") rematerialises each block in the backward pass
    (as for DeBERTa: the same numbers; unrolled, a faster train step and compile time growing with depth; remat, less
    memory for more compute)."""

    def __init__(self, config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.unroll_layers = False
        self.remat = "none"
        self.layer = stacked_layers(config.num_hidden_layers, lambda rngs: BertLayer(config, dtype, rngs), rngs)

    def __call__(
        self, hidden: jax.Array, attention_mask: jax.Array, *, all_layers: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        def apply(layer: BertLayer, h: jax.Array, pair_mask: jax.Array) -> jax.Array:
            return layer(h, pair_mask)

        pair_mask = padding_reads_row(segment_pair_mask(attention_mask), attention_mask)
        return run_layers(
            apply, self.layer, hidden, pair_mask, unroll=self.unroll_layers, remat=self.remat, collect=all_layers
        )


class BertPooler(nnx.Module):
    """tanh(dense(first token's state)): transformers' `pooler_output`."""

    def __init__(self, config: BertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dense = _linear(config, config.hidden_size, config.hidden_size, (axes.EMBED, axes.HEADS), dtype, rngs)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(hidden[:, 0]))


class BertModel(nnx.Module):
    """BERT / RoBERTa / XLM-R encoder: `model(input_ids, attention_mask) -> last_hidden_state [B, T, d]`.

    `attention_mask` holds segment ids (0 padding; 1, 2, ... examples packed into a row). Parameters are float32;
    `dtype` is the compute dtype. Softmax and LayerNorm statistics are computed in float32 either way.
    """

    def __init__(self, config: BertConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, dtype, rngs)
        self.encoder = BertEncoder(config, dtype, rngs)
        self.pooler = BertPooler(config, dtype, rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, *, all_layers: bool = False) -> jax.Array:
        """Last hidden states [B, T, d]; with `all_layers`, every layer's output [L, B, T, d] (transformers'
        `hidden_states[1:]`)."""
        out = self.encoder(self.embeddings(input_ids, attention_mask), attention_mask, all_layers=all_layers)
        return out[1] if all_layers else out

    def pooled_output(self, last_hidden_state: jax.Array) -> jax.Array:
        """transformers' `pooler_output` [B, d] of the last hidden states (gliner never reads it)."""
        return self.pooler(last_hidden_state)


_LAYER_MODULES = {
    "attention.self.query": "linear",
    "attention.self.key": "linear",
    "attention.self.value": "linear",
    "attention.output.dense": "linear",
    "attention.output.LayerNorm": "layer_norm",
    "intermediate.dense": "linear",
    "output.dense": "linear",
    "output.LayerNorm": "layer_norm",
}
_POOLER = "pooler.dense"


def hf_modules(config: BertConfig) -> dict[str, str]:
    """Every module that holds parameters: transformers' base-model path -> parameter kind, layers as `{i}`."""
    modules = {
        "embeddings.word_embeddings": "embedding",
        "embeddings.position_embeddings": "embedding",
        "embeddings.token_type_embeddings": "embedding",
        "embeddings.LayerNorm": "layer_norm",
    }
    modules.update({f"encoder.layer.{{i}}.{name}": kind for name, kind in _LAYER_MODULES.items()})
    modules[_POOLER] = "linear"
    return modules


def hf_ignored(config: BertConfig) -> tuple[str, ...]:
    """Non-persistent buffers that older checkpoints carry and transformers skips."""
    return ("embeddings.position_ids", "embeddings.token_type_ids")


def hf_optional(config: BertConfig) -> tuple[str, ...]:
    """Tensors a Hugging Face checkpoint may lack (task models have no pooler); they keep their init."""
    return (f"{_POOLER}.weight", f"{_POOLER}.bias")
