"""GPT-2 causal language model in Flax NNX (transformers' `GPT2LMHeadModel`): learned absolute positions, pre-LN
blocks (LayerNorm, causal attention, residual; LayerNorm, MLP, residual), a final LayerNorm, and the vocabulary
logits through the token embeddings (tied) or a separate `lm_head`.

GPT-2's `Conv1D` projections hold their weight as [in, out] (our kernel's layout, no transpose); `c_attn` projects
to queries, keys and values side by side.
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
from gliner_jax.modeling.encoders.config_checks import check_heads, fields_dict, refuse, split_fields
from gliner_jax.modeling.layers import ACTIVATIONS, embed, layer_norm, linear, split_heads, stacked_layers

MODEL_TYPE = "gpt2"


@dataclasses.dataclass(frozen=True)
class Gpt2Config:
    """A GPT-2 configuration: the `GPT2Config` fields the model reads, with transformers' defaults; other keys are
    kept in `extra` and written back unchanged."""

    model_type: ClassVar[str] = MODEL_TYPE

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False  # float32 attention: what ours computes either way
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_heads(self.n_embd, self.n_head)
        refusals = {
            "activation_function": (
                self.activation_function not in ACTIVATIONS,
                f"only {sorted(ACTIVATIONS)} are implemented",
            )
        }
        refuse(self.model_type, refusals, self)

    hidden_size = property(lambda self: self.n_embd)
    num_hidden_layers = property(lambda self: self.n_layer)
    num_attention_heads = property(lambda self: self.n_head)
    num_key_value_heads = property(lambda self: self.n_head)
    head_dim = property(lambda self: self.n_embd // self.n_head)
    max_tokens = property(lambda self: self.n_positions)

    @property
    def intermediate_size(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> Gpt2Config:
        """Build from a transformers GPT-2 config dict; refuse what the model does not implement."""
        model_type = hf.get("model_type") or cls.model_type
        if model_type != cls.model_type:
            raise NotImplementedError(f"model_type={model_type!r} is not a {cls.model_type!r} config")
        refuse(
            cls.model_type,
            {"add_cross_attention": (bool(hf.get("add_cross_attention")), "cross-attention is not implemented")},
            hf,
        )
        values, extra = split_fields(cls, hf)
        return cls(**values, extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        """A dict that transformers' `GPT2Config` turns into the same model."""
        return fields_dict(self) | {"model_type": self.model_type}


def _linear(config: Gpt2Config, d_in: int, d_out: int, names: tuple[str, str], dtype: jnp.dtype, rngs: nnx.Rngs):
    return linear(d_in, d_out, names, dtype, rngs, nnx.initializers.normal(config.initializer_range))


class Gpt2Attention(nnx.Module):
    def __init__(self, config: Gpt2Config, dtype: jnp.dtype, rngs: nnx.Rngs):
        d = config.n_embd
        self.num_heads = config.n_head
        self.c_attn = _linear(config, d, 3 * d, (axes.EMBED, axes.HEADS), dtype, rngs)
        self.c_proj = _linear(config, d, d, (axes.HEADS, axes.EMBED), dtype, rngs)
        self.attn_dropout = Dropout(config.attn_pdrop, rngs=rngs)
        self.resid_dropout = Dropout(config.resid_pdrop, rngs=rngs)

    def __call__(self, hidden, layer_cache, index, key_valid, scale):
        q, k, v = (split_heads(x, self.num_heads) for x in jnp.split(self.c_attn(hidden), 3, axis=-1))
        context, layer_cache = cached_attention(q, k, v, layer_cache, index, key_valid, scale, self.attn_dropout)
        return self.resid_dropout(self.c_proj(context)), layer_cache


class Gpt2MLP(nnx.Module):
    def __init__(self, config: Gpt2Config, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.c_fc = _linear(config, config.n_embd, config.intermediate_size, (axes.EMBED, axes.MLP), dtype, rngs)
        self.c_proj = _linear(config, config.intermediate_size, config.n_embd, (axes.MLP, axes.EMBED), dtype, rngs)
        self.activation = ACTIVATIONS[config.activation_function]
        self.dropout = Dropout(config.resid_pdrop, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dropout(self.c_proj(self.activation(self.c_fc(x))))


class Gpt2Block(nnx.Module):
    def __init__(self, config: Gpt2Config, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.ln_1 = layer_norm(config.n_embd, config.layer_norm_epsilon, dtype, rngs)
        self.attn = Gpt2Attention(config, dtype, rngs)
        self.ln_2 = layer_norm(config.n_embd, config.layer_norm_epsilon, dtype, rngs)
        self.mlp = Gpt2MLP(config, dtype, rngs)

    def __call__(self, hidden, layer_cache, scale, index, key_valid):
        attended, layer_cache = self.attn(self.ln_1(hidden), layer_cache, index, key_valid, scale)
        hidden = hidden + attended
        return hidden + self.mlp(self.ln_2(hidden)), layer_cache


class Gpt2Model(nnx.Module):
    """transformers' `GPT2Model`: token and position embeddings, the stacked blocks, the final LayerNorm."""

    def __init__(self, config: Gpt2Config, dtype: jnp.dtype, rngs: nnx.Rngs):
        init = nnx.initializers.normal(config.initializer_range)
        self.config = config
        self.wte = embed(config.vocab_size, config.n_embd, (axes.VOCAB, axes.EMBED), init, dtype, rngs)
        self.wpe = embed(config.n_positions, config.n_embd, (axes.POSITIONS, axes.EMBED), init, dtype, rngs)
        self.drop = Dropout(config.embd_pdrop, rngs=rngs)
        self.h = stacked_layers(config.n_layer, lambda rngs: Gpt2Block(config, dtype, rngs), rngs)
        self.ln_f = layer_norm(config.n_embd, config.layer_norm_epsilon, dtype, rngs)

    def __call__(self, inputs_embeds, key_valid, cache, index):
        length = inputs_embeds.shape[1]
        positions = index + jnp.arange(length)
        hidden = self.drop(inputs_embeds + self.wpe(positions)[None])
        scales = jnp.full((self.config.n_layer,), self.config.head_dim**-0.5 if self.config.scale_attn_weights else 1.0)
        if self.config.scale_attn_by_inverse_layer_idx:
            scales = scales / jnp.arange(1, self.config.n_layer + 1)

        def apply(block, h, layer_cache, scale, index, key_valid):
            return block(h, layer_cache, scale, index, key_valid)

        hidden, cache = run_cached_layers(apply, self.h, hidden, cache, index, key_valid, per_layer=(scales,))
        return self.ln_f(hidden), cache


class Gpt2LMHeadModel(nnx.Module):
    """GPT-2 language model: `model(inputs_embeds, key_valid, cache, index) -> (last hidden states, cache)`;
    `logits(hidden)` the vocabulary logits, `embed(ids)` the token embeddings, `init_cache` an empty cache.

    `key_valid` [B, S] marks the cache slots (positions) a query may attend to; positions are the slot indices
    (transformers' default when no position ids are given). Parameters are float32; `dtype` is the compute dtype.
    """

    def __init__(self, config: Gpt2Config, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.transformer = Gpt2Model(config, dtype, rngs)
        if not config.tie_word_embeddings:
            init = nnx.initializers.normal(config.initializer_range)
            self.lm_head = linear(
                config.n_embd, config.vocab_size, (axes.EMBED, axes.VOCAB), dtype, rngs, init, use_bias=False
            )

    def embed(self, ids: jax.Array) -> jax.Array:
        """Token embeddings [..., d] of `ids` (gliner's `ids_to_embeds`)."""
        return self.transformer.wte(ids)

    def init_cache(self, batch: int, length: int, dtype: jnp.dtype = jnp.float32) -> KVCache:
        """An empty cache of `length` positions; ValueError beyond the `n_positions` the position table holds."""
        c = self.config
        if length > c.n_positions:
            raise ValueError(f"{length} decoder positions exceed the n_positions={c.n_positions} of its GPT-2 config")
        return empty_cache(c.n_layer, batch, length, c.n_head, c.head_dim, dtype)

    def __call__(
        self, inputs_embeds: jax.Array, key_valid: jax.Array, cache: KVCache, index: jax.Array | int = 0
    ) -> tuple[jax.Array, KVCache]:
        return self.transformer(inputs_embeds, key_valid, cache, index)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Vocabulary logits of final hidden states (float32)."""
        if self.config.tie_word_embeddings:
            return self.transformer.wte.attend(hidden).astype(jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)


_LAYER_MODULES = {
    "ln_1": "layer_norm",
    "attn.c_attn": "conv1d",
    "attn.c_proj": "conv1d",
    "ln_2": "layer_norm",
    "mlp.c_fc": "conv1d",
    "mlp.c_proj": "conv1d",
}


def hf_modules(config: Gpt2Config) -> dict[str, str]:
    """Every module of `GPT2LMHeadModel` that holds parameters: PyTorch path -> parameter kind, layers as `{i}`."""
    modules = {"transformer.wte": "embedding", "transformer.wpe": "embedding", "transformer.ln_f": "layer_norm"}
    modules.update({f"transformer.h.{{i}}.{name}": kind for name, kind in _LAYER_MODULES.items()})
    if not config.tie_word_embeddings:
        modules["lm_head"] = "linear_no_bias"
    return modules


def hf_ignored(config: Gpt2Config) -> tuple[str, ...]:
    """Tensors a checkpoint may carry that the model does not read: the tied `lm_head` copy, old attention biases."""
    ignored = tuple(f"transformer.h.{i}.attn.{name}" for i in range(config.n_layer) for name in ("bias", "masked_bias"))
    return (*ignored, "lm_head.weight") if config.tie_word_embeddings else ignored
