"""The causal decoder families (gliner's label-generating `labels_decoder`), by the `model_type` of their Hugging
Face config.

Each family is one file here: its config dataclass (`from_hf_dict` / `to_hf_dict`, refusing options it does not
implement; `hidden_size`, `num_hidden_layers`, `vocab_size`, `eos_token_id`, `pad_token_id`, `max_tokens`), its
Flax module (`Model(config, dtype=..., rngs=...)`, called as `model(inputs_embeds, key_valid, cache, index)` ->
(final hidden states, cache), with `embed(ids)`, `logits(hidden)` and `init_cache(batch, length)`) and its Hugging
Face key table (`hf_modules(config)`: the causal-LM class's PyTorch module path -> parameter kind, `{i}` for the
stacked layer index; `hf_ignored(config)`: tensors a checkpoint may carry that the model does not read). Adding a
family is that file plus one line per model_type in `DECODERS`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling.decoders import gpt2, llama
from gliner_jax.modeling.encoders.config_checks import check_field_types


@dataclasses.dataclass(frozen=True)
class DecoderFamily:
    """What the rest of the package needs to know of one decoder family."""

    config_class: type
    model_class: type[nnx.Module]
    hf_modules: Callable[[Any], dict[str, str]]
    hf_ignored: Callable[[Any], tuple[str, ...]]


DECODERS: dict[str, DecoderFamily] = {
    gpt2.MODEL_TYPE: DecoderFamily(gpt2.Gpt2Config, gpt2.Gpt2LMHeadModel, gpt2.hf_modules, gpt2.hf_ignored),
    "llama": DecoderFamily(llama.LlamaConfig, llama.LlamaForCausalLM, llama.hf_modules, llama.hf_ignored),
    "qwen2": DecoderFamily(llama.Qwen2Config, llama.LlamaForCausalLM, llama.hf_modules, llama.hf_ignored),
}


def decoder_family_of(model_type: str) -> DecoderFamily:
    """The family registered for `model_type`; NotImplementedError naming the supported ones otherwise."""
    if model_type not in DECODERS:
        raise NotImplementedError(f"decoder model_type={model_type!r} is not supported (supported: {sorted(DECODERS)})")
    return DECODERS[model_type]


def decoder_family_of_config(config: Any) -> DecoderFamily:
    """The family of a decoder config object (by its exact class: Qwen2's config subclasses Llama's)."""
    for family in DECODERS.values():
        if type(config) is family.config_class:
            return family
    raise TypeError(f"{type(config).__name__} is not the config of a registered decoder family")


def decoder_config_from_hf(hf: Mapping[str, Any]) -> Any:
    """The decoder config of a Hugging Face `config.json` dict, by its `model_type` (GPT-2 when absent, gliner's
    default `labels_decoder`). ValueError naming the first field whose value has not its field's type."""
    if not isinstance(hf, Mapping):
        raise ValueError(f"a decoder config is a JSON object, got {hf!r}")
    config_class = decoder_family_of(hf.get("model_type") or gpt2.MODEL_TYPE).config_class
    hints = typing.get_type_hints(config_class)
    scalars = {key: value for key, value in hf.items() if hints.get(key) in (int, float, bool, str)}
    check_field_types(scalars, config_class, "decoder config")
    return config_class.from_hf_dict(hf)


def build_decoder(config: Any, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.Module:
    """A randomly initialised causal decoder of `config`'s family."""
    return decoder_family_of_config(config).model_class(config, dtype=dtype, rngs=rngs)
