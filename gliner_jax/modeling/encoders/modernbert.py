"""ModernBERT encoder in Flax NNX (transformers' `ModernBertModel`; Ettin encoders share it): rotary positions,
global attention alternating with sliding-window local attention, GeGLU MLP, pre-LN layers, optional biases.

Every layer is `h + attn(attn_norm(h))`, then `h + mlp(mlp_norm(h))`; layer 0 has no `attn_norm` (the embedding
norm precedes it). A `full_attention` layer attends over its whole segment with rotary base `full_rope_theta`; a
`sliding_attention` layer sees keys at most `local_attention // 2` positions away, with base `sliding_rope_theta`.
Rotary positions restart in each packed segment of `attention_mask`, which is what the unpadded layout ModernBERT
was designed for computes: any number of examples per row, each attending only to itself.

The layers are stacked and scanned like every encoder here, so all of them hold an `attn_norm`; layer 0's is never
read, and it has no tensor in the Hugging Face key table (`hf_absent`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.encoders.config_checks import check_heads, fields_dict, refuse
from gliner_jax.modeling.layer_stack import run_layers
from gliner_jax.modeling.layers import (
    ACTIVATIONS,
    attention,
    embed,
    embed_padding_frozen,
    layer_norm,
    linear,
    padding_reads_row,
    segment_pair_mask,
    segment_positions,
    split_heads,
    stacked_layers,
)

MODEL_TYPE = "modernbert"
# Prefix under which transformers' task models (ModernBertForMaskedLM, ...) keep the encoder.
HF_BASE_PREFIX = "model."
GLOBAL, LOCAL = "full_attention", "sliding_attention"
# transformers' rotary bases when a config names none.
_DEFAULT_THETAS = {GLOBAL: 160_000.0, LOCAL: 10_000.0}
# The legacy (transformers 4) key of each layer type's rotary base.
_LEGACY_THETA_KEYS = {GLOBAL: "global_rope_theta", LOCAL: "local_rope_theta"}


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """A ModernBERT encoder configuration: the `ModernBertConfig` fields the encoder reads, with transformers'
    defaults. `layer_types` and the two rotary bases are read from either config format (transformers 5:
    `layer_types`, `rope_parameters`; 4.x: `global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`).
    Other keys are kept in `extra` (legacy ones included, so that both versions read a saved config alike)."""

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    attention_dropout: float = 0.0
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    local_attention: int = 128
    pad_token_id: int | None = 50283
    layer_types: tuple[str, ...] = ()  # empty: every third layer global from layer 0, as transformers' default
    full_rope_theta: float = _DEFAULT_THETAS[GLOBAL]
    sliding_rope_theta: float = _DEFAULT_THETAS[LOCAL]
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.layer_types:
            object.__setattr__(self, "layer_types", _every_nth_global(self.num_hidden_layers, 3))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        check_heads(self.hidden_size, self.num_attention_heads)
        unknown = sorted(set(self.layer_types) - {GLOBAL, LOCAL})
        refusals = {
            "hidden_activation": (
                self.hidden_activation not in ACTIVATIONS,
                f"only {sorted(ACTIVATIONS)} are implemented",
            ),
            "layer_types": (
                bool(unknown) or len(self.layer_types) != self.num_hidden_layers,
                f"one of {GLOBAL!r} / {LOCAL!r} per layer ({self.num_hidden_layers})",
            ),
        }
        refuse("ModernBERT", refusals, self)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int | None:
        """No position table bounds a row (rotary positions)."""
        return None

    @property
    def window(self) -> int:
        """How far a sliding-window layer sees: keys j of query i with |i - j| <= window."""
        return self.local_attention // 2

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> ModernBertConfig:
        """Build from a transformers `ModernBertConfig` dict of either version; refuse what our encoder does not
        implement."""
        model_type = hf.get("model_type") or MODEL_TYPE
        if model_type != MODEL_TYPE:
            raise NotImplementedError(f"model_type={model_type!r} is not a ModernBERT config ({MODEL_TYPE!r})")
        hidden, heads = hf.get("hidden_size", cls.hidden_size), hf.get("num_attention_heads", cls.num_attention_heads)
        refusals = {
            "rope_scaling": (hf.get("rope_scaling") is not None, "only the default rotary embedding is implemented"),
            "head_dim": (
                hf.get("head_dim", hidden // heads) not in (None, hidden // heads),
                f"must equal hidden_size // num_attention_heads = {hidden // heads}",
            ),
        }
        refuse("ModernBERT", refusals, hf)
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "full_rope_theta", "sliding_rope_theta"}
        values = {key: hf[key] for key in fields - {"layer_types"} if key in hf}
        layers = hf.get("num_hidden_layers", cls.num_hidden_layers)
        values["layer_types"] = hf.get("layer_types") or _every_nth_global(
            layers, hf.get("global_attn_every_n_layers", 3)
        )
        thetas = _rope_thetas(hf)
        extra = {k: v for k, v in hf.items() if k not in fields and k != "rope_parameters"}
        return cls(**values, full_rope_theta=thetas[GLOBAL], sliding_rope_theta=thetas[LOCAL], extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        """A dict that `transformers.ModernBertConfig(**d)` turns into the same encoder."""
        thetas = {GLOBAL: self.full_rope_theta, LOCAL: self.sliding_rope_theta}
        out = fields_dict(self, skip=("full_rope_theta", "sliding_rope_theta"))
        out.update(
            model_type=MODEL_TYPE,
            layer_types=list(self.layer_types),
            rope_parameters={kind: {"rope_theta": theta, "rope_type": "default"} for kind, theta in thetas.items()},
        )
        return out


def _every_nth_global(num_layers: int, every: int) -> tuple[str, ...]:
    """transformers' layer types from the legacy `global_attn_every_n_layers`: layer i is global when i % n == 0."""
    return tuple(LOCAL if i % every else GLOBAL for i in range(num_layers))


def _rope_thetas(hf: Mapping[str, Any]) -> dict[str, float]:
    """The rotary base of each layer type: `rope_parameters[type]["rope_theta"]`, else the legacy key, else the
    default. A legacy `local_rope_theta: null` means the global base (transformers 4). Anything but the default
    rotary embedding is refused."""
    rope_parameters = hf.get("rope_parameters") or {}
    if not isinstance(rope_parameters, Mapping) or set(rope_parameters) - {GLOBAL, LOCAL}:
        raise NotImplementedError(
            f"unsupported ModernBERT config rope_parameters={rope_parameters!r}: expected one entry per layer type"
        )
    thetas = {}
    for kind in (GLOBAL, LOCAL):
        params = dict(rope_parameters.get(kind) or {})
        rope_type = params.pop("rope_type", "default")
        theta = params.pop("rope_theta", None)
        if rope_type != "default" or params:
            raise NotImplementedError(
                f"unsupported ModernBERT config rope_parameters[{kind!r}]={rope_parameters[kind]!r}: "
                "only the default rotary embedding is implemented"
            )
        legacy = _LEGACY_THETA_KEYS[kind]
        if theta is None and legacy in hf:
            theta = hf[legacy] if hf[legacy] is not None else thetas[GLOBAL]
        thetas[kind] = float(theta if theta is not None else _DEFAULT_THETAS[kind])
    return thetas


def _init(config: ModernBertConfig, std: float) -> nnx.Initializer:
    """transformers' ModernBERT init: a normal of `std` truncated at `initializer_cutoff_factor` deviations."""
    cutoff = config.initializer_cutoff_factor

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return std * jax.random.truncated_normal(key, -cutoff, cutoff, shape, dtype)

    return init


def _linear(
    config: ModernBertConfig, d_in: int, d_out: int, names: tuple[str, str], std: float, bias: bool, dtype, rngs
) -> nnx.Linear:
    return linear(d_in, d_out, names, dtype, rngs, _init(config, std), use_bias=bias)


def _norm(config: ModernBertConfig, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return layer_norm(config.hidden_size, config.norm_eps, dtype, rngs, use_bias=config.norm_bias)


def rotary_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin [B, T, dh] of the rotary angles position * theta^(-2k/dh), each frequency twice (the two halves
    of the head dim rotate together), in float32."""
    inv_freq = 1.0 / np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, heads, dh] rotated by the angles of cos / sin [B, T, dh] (first half against second half), in
    float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated_half = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos[:, :, None] + rotated_half * sin[:, :, None]).astype(x.dtype)


class ModernBertEmbeddings(nnx.Module):
    """Token embeddings, LayerNorm, dropout (no positions, no token types)."""

    def __init__(self, config: ModernBertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        init = _init(config, config.initializer_range)
        self.pad_token_id = config.pad_token_id  # torch's padding_idx: no gradient for that row
        self.tok_embeddings = embed(config.vocab_size, config.hidden_size, (axes.VOCAB, axes.EMBED), init, dtype, rngs)
        self.norm = _norm(config, dtype, rngs)
        self.drop = Dropout(config.embedding_dropout, rngs=rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        tokens = embed_padding_frozen(self.tok_embeddings, input_ids, self.pad_token_id)
        return self.drop(self.norm(tokens))


class ModernBertAttention(nnx.Module):
    """Fused q / k / v projection (rows 0:d q, d:2d k, 2d:3d v), rotary q and k, attention, output projection."""

    def __init__(self, config: ModernBertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d, bias = config.hidden_size, config.attention_bias
        out_std = config.initializer_range / (2.0 * config.num_hidden_layers) ** 0.5
        self.num_heads = config.num_attention_heads
        self.Wqkv = _linear(config, d, 3 * d, (axes.EMBED, axes.HEADS), config.initializer_range, bias, dtype, rngs)
        self.Wo = _linear(config, d, d, (axes.HEADS, axes.EMBED), out_std, bias, dtype, rngs)
        self.dropout = Dropout(config.attention_dropout, rngs=rngs)
        self.out_drop = Dropout(config.attention_dropout, rngs=rngs)

    def __call__(self, hidden: jax.Array, pair_mask: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        q, k, v = jnp.split(split_heads(self.Wqkv(hidden), 3 * self.num_heads), 3, axis=-2)
        context = attention(rotate(q, cos, sin), rotate(k, cos, sin), v, pair_mask, self.dropout)
        # A query that sees no key (padding beyond a sliding window's reach) gets zeros, as torch's SDPA gives it
        context = context * pair_mask.any(axis=-1)[:, 0, :, None].astype(context.dtype)
        return self.out_drop(self.Wo(context))


class ModernBertMLP(nnx.Module):
    """GeGLU: Wi to twice the intermediate width, act(first half) * second half, dropout, Wo."""

    def __init__(self, config: ModernBertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d, width, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        out_std = config.initializer_range / (2.0 * config.num_hidden_layers) ** 0.5
        self.Wi = _linear(config, d, 2 * width, (axes.EMBED, axes.MLP), config.initializer_range, bias, dtype, rngs)
        self.Wo = _linear(config, width, d, (axes.MLP, axes.EMBED), out_std, bias, dtype, rngs)
        self.activation = ACTIVATIONS[config.hidden_activation]
        self.drop = Dropout(config.mlp_dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        inputs, gate = jnp.split(self.Wi(x), 2, axis=-1)
        return self.Wo(self.drop(self.activation(inputs) * gate))


class ModernBertLayer(nnx.Module):
    """One pre-LN block; `first` (layer 0) skips the attention norm."""

    def __init__(self, config: ModernBertConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.attn_norm = _norm(config, dtype, rngs)
        self.attn = ModernBertAttention(config, dtype, rngs)
        self.mlp_norm = _norm(config, dtype, rngs)
        self.mlp = ModernBertMLP(config, dtype, rngs)

    def __call__(
        self, hidden: jax.Array, first: jax.Array, pair_mask: jax.Array, cos: jax.Array, sin: jax.Array
    ) -> jax.Array:
        normed = jnp.where(first, hidden, self.attn_norm(hidden))
        hidden = hidden + self.attn(normed, pair_mask, cos, sin)
        return hidden + self.mlp(self.mlp_norm(hidden))


class ModernBertModel(nnx.Module):
    """ModernBERT encoder: `model(input_ids, attention_mask) -> last_hidden_state [B, T, d]`.

    `attention_mask` holds segment ids (0 padding; 1, 2, ... examples packed into a row). The layers are stacked
    on a leading axis and run in a scan (`layer_stack.run_layers`), each reading its layer type's mask and rotary
    tables; `unroll_layers` unrolls it (the same numbers, compile time growing with depth) and `remat` ("none",
    "dots", "full") rematerialises each layer in the backward pass (the same numbers, less memory). Parameters are
    float32; `dtype` is the compute dtype; softmax, rotary angles and LayerNorm statistics are float32 either way.
    """

    def __init__(self, config: ModernBertConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.unroll_layers = False
        self.remat = "none"
        self.embeddings = ModernBertEmbeddings(config, dtype, rngs)
        self.layers = stacked_layers(config.num_hidden_layers, lambda rngs: ModernBertLayer(config, dtype, rngs), rngs)
        self.final_norm = _norm(config, dtype, rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, *, all_layers: bool = False) -> jax.Array:
        """Last hidden states [B, T, d]; with `all_layers`, every layer's output [L, B, T, d] (transformers'
        `hidden_states[1:]`: the last one normed by `final_norm`, as transformers records it)."""
        return self._layers(self.embeddings(input_ids), attention_mask, all_layers)

    def encode_embeddings(self, inputs_embeds: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """The model fed embeddings [B, T, d] in place of token ids (transformers' `inputs_embeds`): the embedding
        LayerNorm and dropout, the layers, the final norm."""
        return self._layers(self.embeddings.drop(self.embeddings.norm(inputs_embeds)), attention_mask, False)

    def _layers(self, hidden: jax.Array, attention_mask: jax.Array, all_layers: bool) -> jax.Array:
        config = self.config
        segment_mask = padding_reads_row(segment_pair_mask(attention_mask), attention_mask)
        columns = jnp.arange(hidden.shape[1])
        near = jnp.abs(columns[:, None] - columns[None, :]) <= config.window  # a segment is contiguous
        masks = {GLOBAL: segment_mask, LOCAL: segment_mask & near}
        positions = segment_positions(attention_mask)
        thetas = {GLOBAL: config.full_rope_theta, LOCAL: config.sliding_rope_theta}
        tables = {kind: rotary_tables(positions, config.head_dim, theta) for kind, theta in thetas.items()}
        is_global = jnp.asarray([kind == GLOBAL for kind in config.layer_types])
        is_first = jnp.arange(config.num_hidden_layers) == 0

        def apply(
            layer: ModernBertLayer, h: jax.Array, first: jax.Array, global_: jax.Array, masks: dict, tables: dict
        ) -> jax.Array:
            pair_mask = jnp.where(global_, masks[GLOBAL], masks[LOCAL])
            cos, sin = (jnp.where(global_, g, loc) for g, loc in zip(tables[GLOBAL], tables[LOCAL], strict=True))
            return layer(h, first, pair_mask, cos, sin)

        hidden = run_layers(
            apply,
            self.layers,
            hidden,
            masks,
            tables,
            per_layer=(is_first, is_global),
            unroll=self.unroll_layers,
            remat=self.remat,
            collect=all_layers,
        )
        if not all_layers:
            return self.final_norm(hidden)
        hidden, states = hidden
        return states.at[-1].set(self.final_norm(hidden))


def hf_modules(config: ModernBertConfig) -> dict[str, str]:
    """Every module that holds parameters: transformers' `ModernBertModel` path -> parameter kind, layers as `{i}`
    (`layers.0.attn_norm` excepted, see `hf_absent`)."""
    norm = "layer_norm" if config.norm_bias else "layer_norm_no_bias"
    attention_linear = "linear" if config.attention_bias else "linear_no_bias"
    mlp_linear = "linear" if config.mlp_bias else "linear_no_bias"
    return {
        "embeddings.tok_embeddings": "embedding",
        "embeddings.norm": norm,
        "layers.{i}.attn_norm": norm,
        "layers.{i}.attn.Wqkv": attention_linear,
        "layers.{i}.attn.Wo": attention_linear,
        "layers.{i}.mlp_norm": norm,
        "layers.{i}.mlp.Wi": mlp_linear,
        "layers.{i}.mlp.Wo": mlp_linear,
        "final_norm": norm,
    }


def hf_ignored(config: ModernBertConfig) -> tuple[str, ...]:
    """ModernBERT's rotary tables are non-persistent buffers: no tensor to skip."""
    return ()


def hf_absent(config: ModernBertConfig) -> tuple[str, ...]:
    """Tensors of our stacked layout that transformers' model does not have: layer 0's attention norm."""
    return ("layers.0.attn_norm.weight", "layers.0.attn_norm.bias")
