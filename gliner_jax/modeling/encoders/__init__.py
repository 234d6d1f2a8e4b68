"""The encoder families, by the `model_type` of their Hugging Face config.

Each family is one file here: its config dataclass (`from_hf_dict` / `to_hf_dict`, refusing options it does not
implement; `hidden_size`, `num_hidden_layers`, `vocab_size` and `max_tokens`, the longest row its position
embeddings cover or None), its Flax module (`Model(config, dtype=..., rngs=...)`, called as
`model(input_ids, attention_mask)` -> last hidden states [B, T, d]) and its Hugging Face key table
(`hf_modules(config)`: PyTorch module path -> parameter kind, `{i}` for the stacked layer index). Adding a family is
that file plus one line in `ENCODERS` (one per model_type it reads; each with its own config class).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling.encoders import bert, deberta, modernbert
from gliner_jax.modeling.encoders.config_checks import check_field_types


def _none(config: Any) -> tuple[str, ...]:
    return ()


@dataclasses.dataclass(frozen=True)
class EncoderFamily:
    """What the rest of the package needs to know of one encoder family."""

    config_class: type  # a frozen dataclass with from_hf_dict(dict) / to_hf_dict() and hidden_size
    model_class: type[nnx.Module]
    hf_modules: Callable[[Any], dict[str, str]]  # PyTorch module path ("{i}": layer index) -> parameter kind
    hf_ignored: Callable[[Any], tuple[str, ...]]  # tensors transformers skips when loading the base model
    hf_base_prefix: str  # where task models (...ForMaskedLM) keep the base model's tensors
    hf_architecture: str  # the base model's class name in transformers, written into config.json
    # Tensors a Hugging Face checkpoint may lack; they keep their init (transformers initialises them too).
    hf_optional: Callable[[Any], tuple[str, ...]] = _none
    # Tensors of `hf_modules`' stacked layout that transformers' model does not have: neither read nor written.
    hf_absent: Callable[[Any], tuple[str, ...]] = _none


def _bert_family(config_class: type) -> EncoderFamily:
    model_type = config_class.model_type
    return EncoderFamily(
        config_class,
        bert.BertModel,
        bert.hf_modules,
        bert.hf_ignored,
        bert.HF_BASE_PREFIXES[model_type],
        bert.HF_ARCHITECTURES[model_type],
        hf_optional=bert.hf_optional,
    )


ENCODERS: dict[str, EncoderFamily] = {
    deberta.MODEL_TYPE: EncoderFamily(
        deberta.DebertaConfig,
        deberta.DebertaModel,
        deberta.hf_modules,
        deberta.hf_ignored,
        deberta.HF_BASE_PREFIX,
        "DebertaV2Model",
    ),
    "bert": _bert_family(bert.BertConfig),
    "roberta": _bert_family(bert.RobertaConfig),
    "xlm-roberta": _bert_family(bert.XLMRobertaConfig),
    modernbert.MODEL_TYPE: EncoderFamily(
        modernbert.ModernBertConfig,
        modernbert.ModernBertModel,
        modernbert.hf_modules,
        modernbert.hf_ignored,
        modernbert.HF_BASE_PREFIX,
        "ModernBertModel",
        hf_absent=modernbert.hf_absent,
    ),
}


def family_of(model_type: str) -> EncoderFamily:
    """The family registered for `model_type`; NotImplementedError naming the supported ones otherwise."""
    if model_type not in ENCODERS:
        raise NotImplementedError(f"model_type={model_type!r} is not supported (supported: {sorted(ENCODERS)})")
    return ENCODERS[model_type]


def family_of_config(config: Any) -> EncoderFamily:
    """The family of an encoder config object (by its exact class: RoBERTa's config subclasses BERT's)."""
    for family in ENCODERS.values():
        if type(config) is family.config_class:
            return family
    raise TypeError(f"{type(config).__name__} is not the config of a registered encoder family")


def encoder_config_from_hf(hf: Mapping[str, Any]) -> Any:
    """The encoder config of a Hugging Face `config.json` dict, by its `model_type` (DeBERTa-v2 when absent).
    ValueError naming the first field whose value has not the int, float, bool or str type of its field."""
    if not isinstance(hf, Mapping):
        raise ValueError(f"an encoder config is a JSON object, got {hf!r}")
    config_class = family_of(hf.get("model_type") or deberta.MODEL_TYPE).config_class
    hints = typing.get_type_hints(config_class)
    scalars = {key: value for key, value in hf.items() if hints.get(key) in (int, float, bool, str)}
    check_field_types(scalars, config_class, "encoder config")
    return config_class.from_hf_dict(hf)


def build_encoder(config: Any, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.Module:
    """A randomly initialised encoder of `config`'s family."""
    return family_of_config(config).model_class(config, dtype=dtype, rngs=rngs)
