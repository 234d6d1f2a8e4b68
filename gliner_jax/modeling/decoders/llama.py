"""The Llama-style causal language model in Flax NNX (transformers' `LlamaForCausalLM` and `Qwen2ForCausalLM`; SmolLM
checkpoints are Llama's): RMSNorm, rotary positions (rotate-half), grouped-query attention, SwiGLU MLP, pre-norm
blocks, a final RMSNorm and the vocabulary logits through `lm_head` or the tied token embeddings.

Llama and Qwen2 differ only in their defaults and biases: Llama's `attention_bias` gives q, k, v and o projections a
bias (none by default), Qwen2's q, k, v projections always have one and its o projection never.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.decoders.causal import KVCache, cached_attention, empty_cache, run_cached_layers
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.encoders.config_checks import fields_dict, refuse, split_fields
from gliner_jax.modeling.layers import ACTIVATIONS, embed, linear, logical_axes, split_heads, stacked_layers


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """A Llama configuration: the `LlamaConfig` fields the model reads, with transformers' defaults; the rotary
    base is `rope_theta` (read from transformers 5's `rope_parameters` or the older top-level key). Other keys are
    kept in `extra` and written back unchanged."""

    model_type: ClassVar[str] = "llama"

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )
        refusals = {"hidden_act": (self.hidden_act not in ACTIVATIONS, f"only {sorted(ACTIVATIONS)} are implemented")}
        refuse(self.model_type, refusals, self)

    max_tokens = property(lambda self: self.max_position_embeddings)
    qkv_bias = property(lambda self: self.attention_bias)
    o_bias = property(lambda self: self.attention_bias)

    @classmethod
    def _refusals(cls, hf: Mapping[str, Any], rope: Mapping[str, Any]) -> dict[str, tuple[bool, str]]:
        return {"rope_type": (rope.get("rope_type", "default") != "default", "only the default rotary is implemented")}

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> LlamaConfig:
        """Build from a transformers config dict of this model type; refuse what the model does not implement."""
        model_type = hf.get("model_type") or cls.model_type
        if model_type != cls.model_type:
            raise NotImplementedError(f"model_type={model_type!r} is not a {cls.model_type!r} config")
        rope = dict(hf.get("rope_scaling") or {})
        rope.update(hf.get("rope_parameters") or {})
        rope.setdefault("rope_type", rope.get("type", "default"))
        refuse(cls.model_type, cls._refusals(hf, rope), rope | dict(hf))
        values, extra = split_fields(cls, hf)
        if "rope_theta" in rope:
            values["rope_theta"] = rope["rope_theta"]
        extra = {key: value for key, value in extra.items() if key not in ("rope_parameters", "rope_scaling")}
        return cls(**values, extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        """A dict that transformers' config class of this model type turns into the same model."""
        out = fields_dict(self)
        out["rope_parameters"] = {"rope_type": "default", "rope_theta": out.pop("rope_theta")}
        out["model_type"] = self.model_type
        return out


@dataclasses.dataclass(frozen=True)
class Qwen2Config(LlamaConfig):
    """A Qwen2 configuration (transformers' `Qwen2Config` defaults); sliding-window attention is refused."""

    model_type: ClassVar[str] = "qwen2"

    vocab_size: int = 151936
    intermediate_size: int = 22016
    max_position_embeddings: int = 32768

    qkv_bias = property(lambda self: True)
    o_bias = property(lambda self: False)

    @classmethod
    def _refusals(cls, hf: Mapping[str, Any], rope: Mapping[str, Any]) -> dict[str, tuple[bool, str]]:
        window = (bool(hf.get("use_sliding_window")), "sliding-window attention is not implemented")
        return {**super()._refusals(hf, rope), "use_sliding_window": window}


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (transformers' rotate-half layout) of x [B, T, heads, dh] at `positions` [T]."""
    dh = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)[None, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = dh // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def rms_norm(config: LlamaConfig, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.RMSNorm:
    """RMSNorm over the model width (statistics in float32), weight initialised to ones."""
    return nnx.RMSNorm(
        config.hidden_size,
        epsilon=config.rms_norm_eps,
        dtype=dtype,
        scale_metadata=logical_axes(axes.EMBED),
        rngs=rngs,
    )


def _linear(config: LlamaConfig, d_in: int, d_out: int, names, bias: bool, dtype: jnp.dtype, rngs: nnx.Rngs):
    init = nnx.initializers.normal(config.initializer_range)
    return linear(d_in, d_out, names, dtype, rngs, init, use_bias=bias)


class LlamaAttention(nnx.Module):
    def __init__(self, config: LlamaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d, dh = config.hidden_size, config.head_dim
        self.config = config
        heads, kv = config.num_attention_heads * dh, config.num_key_value_heads * dh
        self.q_proj = _linear(config, d, heads, (axes.EMBED, axes.HEADS), config.qkv_bias, dtype, rngs)
        self.k_proj = _linear(config, d, kv, (axes.EMBED, axes.HEADS), config.qkv_bias, dtype, rngs)
        self.v_proj = _linear(config, d, kv, (axes.EMBED, axes.HEADS), config.qkv_bias, dtype, rngs)
        self.o_proj = _linear(config, heads, d, (axes.HEADS, axes.EMBED), config.o_bias, dtype, rngs)
        self.dropout = Dropout(config.attention_dropout, rngs=rngs)

    def __call__(self, hidden, layer_cache, index, key_valid):
        c = self.config
        positions = index + jnp.arange(hidden.shape[1])
        q = rotary(split_heads(self.q_proj(hidden), c.num_attention_heads), positions, c.rope_theta)
        k = rotary(split_heads(self.k_proj(hidden), c.num_key_value_heads), positions, c.rope_theta)
        v = split_heads(self.v_proj(hidden), c.num_key_value_heads)
        context, layer_cache = cached_attention(q, k, v, layer_cache, index, key_valid, c.head_dim**-0.5, self.dropout)
        return self.o_proj(context), layer_cache


class LlamaMLP(nnx.Module):
    def __init__(self, config: LlamaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d, m, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = _linear(config, d, m, (axes.EMBED, axes.MLP), bias, dtype, rngs)
        self.up_proj = _linear(config, d, m, (axes.EMBED, axes.MLP), bias, dtype, rngs)
        self.down_proj = _linear(config, m, d, (axes.MLP, axes.EMBED), bias, dtype, rngs)
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(self.activation(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nnx.Module):
    def __init__(self, config: LlamaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.input_layernorm = rms_norm(config, dtype, rngs)
        self.self_attn = LlamaAttention(config, dtype, rngs)
        self.post_attention_layernorm = rms_norm(config, dtype, rngs)
        self.mlp = LlamaMLP(config, dtype, rngs)

    def __call__(self, hidden, layer_cache, index, key_valid):
        attended, layer_cache = self.self_attn(self.input_layernorm(hidden), layer_cache, index, key_valid)
        hidden = hidden + attended
        return hidden + self.mlp(self.post_attention_layernorm(hidden)), layer_cache


class LlamaModel(nnx.Module):
    """transformers' `LlamaModel`: token embeddings, the stacked layers, the final RMSNorm."""

    def __init__(self, config: LlamaConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        init = nnx.initializers.normal(config.initializer_range)
        self.embed_tokens = embed(config.vocab_size, config.hidden_size, (axes.VOCAB, axes.EMBED), init, dtype, rngs)
        self.layers = stacked_layers(
            config.num_hidden_layers, lambda rngs: LlamaDecoderLayer(config, dtype, rngs), rngs
        )
        self.norm = rms_norm(config, dtype, rngs)

    def __call__(self, inputs_embeds, key_valid, cache, index):
        def apply(layer, h, layer_cache, index, key_valid):
            return layer(h, layer_cache, index, key_valid)

        hidden, cache = run_cached_layers(apply, self.layers, inputs_embeds, cache, index, key_valid)
        return self.norm(hidden), cache


class LlamaForCausalLM(nnx.Module):
    """Llama / Qwen2 language model: `model(inputs_embeds, key_valid, cache, index) -> (last hidden states, cache)`;
    `logits(hidden)`, `embed(ids)`, `init_cache` as for GPT-2 (positions are the cache slots)."""

    def __init__(self, config: LlamaConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.model = LlamaModel(config, dtype, rngs)
        if not config.tie_word_embeddings:
            init = nnx.initializers.normal(config.initializer_range)
            names = (axes.EMBED, axes.VOCAB)
            self.lm_head = linear(config.hidden_size, config.vocab_size, names, dtype, rngs, init, use_bias=False)

    def embed(self, ids: jax.Array) -> jax.Array:
        """Token embeddings [..., d] of `ids` (gliner's `ids_to_embeds`)."""
        return self.model.embed_tokens(ids)

    def init_cache(self, batch: int, length: int, dtype: jnp.dtype = jnp.float32) -> KVCache:
        """An empty cache of `length` positions."""
        c = self.config
        return empty_cache(c.num_hidden_layers, batch, length, c.num_key_value_heads, c.head_dim, dtype)

    def __call__(
        self, inputs_embeds: jax.Array, key_valid: jax.Array, cache: KVCache, index: jax.Array | int = 0
    ) -> tuple[jax.Array, KVCache]:
        return self.model(inputs_embeds, key_valid, cache, index)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Vocabulary logits of final hidden states (float32)."""
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.attend(hidden).astype(jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)


def hf_modules(config: LlamaConfig) -> dict[str, str]:
    """Every module of `LlamaForCausalLM` / `Qwen2ForCausalLM` that holds parameters: PyTorch path -> kind."""
    qkv = "linear" if config.qkv_bias else "linear_no_bias"
    mlp = "linear" if config.mlp_bias else "linear_no_bias"
    layer = {
        "input_layernorm": "layer_norm_no_bias",
        "self_attn.q_proj": qkv,
        "self_attn.k_proj": qkv,
        "self_attn.v_proj": qkv,
        "self_attn.o_proj": "linear" if config.o_bias else "linear_no_bias",
        "post_attention_layernorm": "layer_norm_no_bias",
        "mlp.gate_proj": mlp,
        "mlp.up_proj": mlp,
        "mlp.down_proj": mlp,
    }
    modules = {"model.embed_tokens": "embedding", "model.norm": "layer_norm_no_bias"}
    modules.update({f"model.layers.{{i}}.{name}": kind for name, kind in layer.items()})
    if not config.tie_word_embeddings:
        modules["lm_head"] = "linear_no_bias"
    return modules


def hf_ignored(config: LlamaConfig) -> tuple[str, ...]:
    """Tensors a checkpoint may carry that the model does not read: the tied `lm_head` copy, rotary buffers."""
    rotary_buffers = tuple(f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(config.num_hidden_layers))
    return (*rotary_buffers, "lm_head.weight") if config.tie_word_embeddings else rotary_buffers
