"""gliner 0.2.29's context encoders (its `context_encoders.py`): an encoder over states that are already dense (word
states, not token ids), `encoder(hidden_states [B, W, D], mask [B, W]) -> [B, W, D_out]`, zeros where mask is unset.

A span model's `span_encoder_config` puts one before its span representation (gliner's `SpanRepLayer`); gliner's
streaming model also reads labels with one. Three kinds, by the config's `model_type`: "deberta-v2" (DeBERTa-v2
layers and relative embeddings, no token embeddings: our `DebertaLayerStack`), "modernbert" (a whole ModernBERT fed
embeddings: its embedding LayerNorm and dropout, the layers, the final norm) and "rnn" (an LSTM over the valid
prefix of each row: our `BiLSTM`). A Linear maps the input width to the encoder's `hidden_size` and one maps it back
to the output width where they differ (`input_projection`, `output_projection`). No config: gliner's identity
encoder, which has no parameters and nothing to compute here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.encoders import encoder_config_from_hf
from gliner_jax.modeling.encoders.config_checks import check_field_types, fields_dict, split_fields
from gliner_jax.modeling.encoders.deberta import DebertaConfig, DebertaLayerStack
from gliner_jax.modeling.encoders.modernbert import ModernBertConfig, ModernBertModel
from gliner_jax.modeling.layers import torch_linear
from gliner_jax.modeling.lstm import BiLSTM

RNN_MODEL_TYPE = "rnn"
CONTEXT_ENCODER_TYPES = ("deberta-v2", "modernbert", RNN_MODEL_TYPE)  # gliner's CONTEXT_ENCODER_MODEL_TYPES
_DEBERTA_VOCAB = 128100  # transformers' DebertaV2Config default; a context encoder has no token embeddings


@dataclasses.dataclass(frozen=True)
class RNNEncoderConfig:
    """gliner's `RNNEncoderConfig`: an LSTM of `num_hidden_layers` layers, `hidden_size` wide in all (split over
    the two directions when bidirectional), `dropout` between layers in training. Other keys are kept in `extra`."""

    hidden_size: int = 512
    num_hidden_layers: int = 1
    dropout: float = 0.0
    bidirectional: bool = True
    rnn_type: str = "lstm"
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_field_types(self.__dict__, RNNEncoderConfig, "rnn span_encoder_config")
        object.__setattr__(self, "rnn_type", self.rnn_type.lower())
        refusals = {  # gliner refuses each
            "rnn_type": (self.rnn_type != "lstm", "only 'lstm' is supported"),
            "hidden_size": (
                self.hidden_size < 1 or (self.bidirectional and self.hidden_size % 2),
                "must be positive, and even when bidirectional",
            ),
            "num_hidden_layers": (self.num_hidden_layers < 1, "must be positive"),
            "dropout": (not 0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
        }
        for key, (refused, why) in refusals.items():
            if refused:
                raise ValueError(f"rnn span_encoder_config {key}={getattr(self, key)!r}: {why}")

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> RNNEncoderConfig:
        """From gliner's saved dict (`model_type` "rnn"); unknown keys kept in `extra`."""
        values, extra = split_fields(cls, hf, skip=("model_type",))
        return cls(**values, extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        """The dict gliner writes and reads back."""
        return fields_dict(self) | {"model_type": RNN_MODEL_TYPE}


ContextEncoderConfig = DebertaConfig | ModernBertConfig | RNNEncoderConfig


def _default_heads(width: int) -> int:
    """gliner's default head count: width // 64 (at least 1), lowered until it divides the width."""
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    return heads


def context_encoder_config(
    data: Mapping[str, Any], *, hidden_size: int, dropout: float, default_layers: int = 1
) -> ContextEncoderConfig:
    """A context encoder's config from its gliner_config.json dict, completed with gliner's defaults as its
    `normalize_context_encoder_config` does: the width of the states it reads (`hidden_size`), `default_layers`
    layers, the model's `dropout`, and per kind heads, feed-forward width, DeBERTa's relative attention, ModernBERT's
    one-row vocabulary. ValueError naming the field for an unknown `model_type` or an invalid value."""
    if not isinstance(data, Mapping):
        raise ValueError(f"GLiNER config span_encoder_config={data!r}: expected a JSON object")
    values = dict(data)
    model_type = values.get("model_type")
    if model_type not in CONTEXT_ENCODER_TYPES:
        raise ValueError(f"unknown span_encoder_config model_type={model_type!r}; known: {CONTEXT_ENCODER_TYPES}")
    width = values.setdefault("hidden_size", hidden_size)
    values.setdefault("num_hidden_layers", default_layers)
    if model_type == RNN_MODEL_TYPE:
        values.setdefault("dropout", dropout)
        return RNNEncoderConfig.from_hf_dict(values)
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"span_encoder_config hidden_size={width!r}: must be a positive integer")
    values.setdefault("num_attention_heads", _default_heads(width))
    values.setdefault("intermediate_size", 4 * width)
    if model_type == "deberta-v2":
        defaults = dict(
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            max_relative_positions=512,
            vocab_size=_DEBERTA_VOCAB,
        )
    else:  # gliner runs ModernBERT on embeddings and keeps its token table one row
        defaults = dict(attention_dropout=dropout, embedding_dropout=dropout, mlp_dropout=dropout, vocab_size=1)
        defaults |= {f"{name}_token_id": 0 for name in ("pad", "bos", "eos", "cls", "sep")}
    for key, value in defaults.items():
        values.setdefault(key, value)
    config = encoder_config_from_hf(values)
    if isinstance(config, ModernBertConfig):  # gliner builds it with one row whatever the config says
        config = dataclasses.replace(config, vocab_size=1, pad_token_id=0)
    return config


class ContextEncoder(nnx.Module):
    """A context encoder of `config` (see the module doc) reading states `input_size` wide and returning states
    `output_size` wide: `encoder(hidden_states [B, W, input_size], mask [B, W]) -> [B, W, output_size]`, zeros where
    mask is unset. The mask must be a prefix of each row (the LSTM runs over it, forward and back); attention reads
    only the masked positions. Parameters are float32; `dtype` is the compute dtype."""

    def __init__(
        self,
        config: ContextEncoderConfig,
        input_size: int,
        output_size: int,
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config = config
        width = config.hidden_size

        def projection(d_in: int, d_out: int, names: tuple[str, str]) -> nnx.Linear | None:
            return torch_linear(d_in, d_out, names, dtype, rngs) if d_in != d_out else None

        self.input_projection = projection(input_size, width, (axes.HIDDEN, axes.EMBED))
        if isinstance(config, RNNEncoderConfig):
            self.encoder = BiLSTM(
                width,
                config.num_hidden_layers,
                bidirectional=config.bidirectional,
                dropout=config.dropout,
                dtype=dtype,
                rngs=rngs,
            )
        elif isinstance(config, DebertaConfig):
            self.encoder = DebertaLayerStack(config, dtype, rngs)
        elif isinstance(config, ModernBertConfig):
            self.encoder = ModernBertModel(config, dtype=dtype, rngs=rngs)
        else:
            raise TypeError(f"{type(config).__name__} is not a context encoder config")
        self.output_projection = projection(width, output_size, (axes.EMBED, axes.HIDDEN))

    def __call__(self, hidden_states: jax.Array, mask: jax.Array) -> jax.Array:
        """hidden_states [B, W, input_size], mask [B, W] (bool, a prefix of each row) -> [B, W, output_size]."""
        x = hidden_states if self.input_projection is None else self.input_projection(hidden_states)
        if isinstance(self.encoder, BiLSTM):
            x = self.encoder(x, mask)
        elif isinstance(self.encoder, DebertaLayerStack):
            x = self.encoder(x, mask.astype(jnp.int32))
        else:
            x = self.encoder.encode_embeddings(x, mask.astype(jnp.int32))
        if self.output_projection is not None:
            x = self.output_projection(x)
        return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
