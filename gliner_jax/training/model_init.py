"""The network a run trains: a new GLiNER (uni-encoder, bi-encoder with a label encoder, or decoder model with a
pretrained causal LM) on a random or pretrained encoder of any registered family, or an existing GLiNER."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from transformers import PreTrainedTokenizerBase

from gliner_jax.checkpoint_io import load_gliner, load_hf_decoder, load_hf_encoder
from gliner_jax.config import STREAMING_MODEL_TYPE, GLiNERConfig, builds_labels_decoder
from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.hub import (
    ENCODER_PATTERNS,
    TOKENIZER_PATTERNS,
    add_special_tokens,
    add_streaming_tokens,
    load_decoder_tokenizer,
    load_tokenizer,
    resolve,
    resolve_gliner,
)
from gliner_jax.model import GLiNER
from gliner_jax.modeling.dropout import network_rngs
from gliner_jax.modeling.encoders import encoder_config_from_hf, family_of
from gliner_jax.modeling.encoders.deberta import MODEL_TYPE as DEBERTA
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.modeling.streaming import StreamingSpanModel
from gliner_jax.text.splitters import WordSplitter
from gliner_jax.text.words import Word
from gliner_jax.training.config import ModelSection


def words_splitter_type(section: ModelSection) -> str:
    """The words_splitter_type of the model the section builds: `init_from`'s config's, else `gliner`'s (gliner's
    default, whitespace, when absent), known before the model is built (its training texts are split with it)."""
    if section.init_from is not None:
        return resolve_gliner(section.init_from).config.words_splitter_type
    return section.gliner.get("words_splitter_type", GLiNERConfig.words_splitter_type)


class ModelWordSplitter:
    """The word splitter of the model a section builds, made at its first text: a run whose data has no text to
    split (pre-split records) never resolves `init_from` before its data is checked."""

    def __init__(self, section: ModelSection) -> None:
        self.section = section
        self._split: WordSplitter | None = None

    def __call__(self, text: str) -> list[Word]:
        """The words of `text` with their character offsets, as the model splits it."""
        if self._split is None:
            self._split = WordSplitter(words_splitter_type(self.section))
        return self._split(text)


def build_model(section: ModelSection, seed: int) -> GLiNER:
    """The model (float32 parameters, compute dtype from the section) with its config and tokenizers.

    `init_from`, `encoder` / `labels_encoder` (as names) and the tokenizers are local directories or Hugging Face Hub
    repo ids (`gliner_jax.hub`). An existing GLiNER is read in any layout gliner reads (legacy ones completed). For a
    new uni-encoder GLiNER, gliner's three special tokens ([FLERT], the entity and separator tokens) are added to the
    tokenizer (a relation model's: the entity, separator and relation tokens) and the word embeddings grow to the
    new vocabulary; new rows are drawn like the encoder's init. A new
    bi-encoder keeps its tokenizers and embeddings as they are (it writes no prompt), as gliner does. A new decoder
    model (`gliner.labels_decoder`: a causal LM's directory or repo id, no `relations_layer`) takes that model's
    weights, config and tokenizer (with `add_prefix_space`, its pad token the end-of-sequence token where it has
    none), as gliner's from-pretrained decoder does.
    """
    dtype = jnp.dtype(section.dtype)
    if section.init_from is not None:
        layout = resolve_gliner(section.init_from)
        model, config = load_gliner(layout.directory, config=layout.config, dtype=dtype, seed=seed)
        tokenizer = _tokenizer(section.tokenizer) if section.tokenizer else layout.tokenizer
        return GLiNER(model, config, tokenizer, layout.labels_tokenizer, layout.decoder_tokenizer)

    fields: dict[str, Any] = dict(section.gliner)
    if fields.pop("model_type", None) == STREAMING_MODEL_TYPE:
        return _new_streaming_model(section, fields, dtype, seed)
    decoder = decoder_tokenizer = None
    if builds_labels_decoder(fields):  # its config is the causal LM's
        decoder_directory = resolve(fields["labels_decoder"], ENCODER_PATTERNS)
        decoder, fields["labels_decoder_config"] = load_hf_decoder(decoder_directory, seed=seed)
        decoder_tokenizer = load_decoder_tokenizer(decoder_directory)
    base = GLiNERConfig(**fields)  # validates the fields before any weights are built
    bi_encoder = section.labels_encoder is not None
    encoder_dir = resolve(section.encoder, ENCODER_PATTERNS) if isinstance(section.encoder, str) else None
    tokenizer = _tokenizer(section.tokenizer) if section.tokenizer else load_tokenizer(encoder_dir)
    if base.is_relex:  # gliner's relation model adds its three tokens (no [FLERT]): entity, separator, relation
        tokenizer.add_tokens([base.ent_token, base.sep_token, base.rel_token], special_tokens=True)
    elif not bi_encoder:
        add_special_tokens(tokenizer, base.ent_token, base.sep_token)
    pretrained = {}
    if encoder_dir is not None:
        pretrained["encoder"], encoder_config = load_hf_encoder(encoder_dir, seed=seed)
        if not bi_encoder:
            encoder_config = dataclasses.replace(encoder_config, vocab_size=len(tokenizer))
    else:
        encoder_fields = dict(section.encoder)  # a random encoder: its family's config fields, DeBERTa by default
        family = family_of(encoder_fields.pop("model_type", DEBERTA))
        encoder_config = family.config_class(**{**encoder_fields, "vocab_size": len(tokenizer)})
    fields = {
        "vocab_size": len(tokenizer),
        "class_token_index": tokenizer.convert_tokens_to_ids(base.ent_token),
    }
    if base.is_relex:
        fields["rel_token_index"] = tokenizer.convert_tokens_to_ids(base.rel_token)
    labels_tokenizer = None
    if bi_encoder:
        name, labels_config, labels_tokenizer, labels_pretrained = _labels_encoder(section, seed)
        fields = {"labels_encoder": name, "labels_encoder_config": labels_config}
        if labels_pretrained is not None:
            pretrained["labels_encoder"] = labels_pretrained
    config = dataclasses.replace(
        base,
        model_name=section.encoder if isinstance(section.encoder, str) else base.model_name,
        encoder_config=encoder_config,
        **fields,
    )
    model = GLiNERModel(config, dtype=dtype, rngs=network_rngs(seed))
    for name, encoder in pretrained.items():
        _copy_pretrained(getattr(model, name), encoder)
    if decoder is not None:
        _copy_pretrained(model.label_decoder.decoder, decoder)
    return GLiNER(model, config, tokenizer, labels_tokenizer, decoder_tokenizer)


def _new_streaming_model(section: ModelSection, fields: dict[str, Any], dtype: jnp.dtype, seed: int) -> GLiNER:
    """A new streaming span model on the causal LM `section.encoder` names, as gliner's `from_config` builds one: the
    LM's tokenizer (or `section.tokenizer`) given gliner's pad, label and separator tokens, the LM's base model as
    the backbone (its embeddings grown to the tokenizer, the new rows at their random init), the rest random."""
    directory = resolve(section.encoder, ENCODER_PATTERNS)
    tokenizer = _tokenizer(section.tokenizer) if section.tokenizer else load_tokenizer(directory)
    tokens = fields.get("label_token", StreamingSpanConfig.label_token), fields.get("sep_token", GLiNERConfig.sep_token)
    label_id, sep_id = add_streaming_tokens(tokenizer, *tokens)
    decoder, decoder_config = load_hf_decoder(directory, seed=seed)
    rows = len(tokenizer)
    config = StreamingSpanConfig(
        **fields,
        model_name=section.encoder,
        encoder_config=dataclasses.replace(decoder_config, vocab_size=rows),
        vocab_size=rows,
        class_token_index=label_id,
        sep_token_index=sep_id,
    )
    model = StreamingSpanModel(config, dtype=dtype, rngs=network_rngs(seed))
    _copy_pretrained(model.encoder, decoder)  # the base model's weights: an untied head is not read
    return GLiNER(model, config, tokenizer)


def _labels_encoder(section: ModelSection, seed: int) -> tuple[str, Any, PreTrainedTokenizerBase, nnx.Module | None]:
    """A new bi-encoder's label encoder: (the name gliner records, its config, its tokenizer, its pretrained
    weights or None for a random encoder defined by config fields)."""
    spec = section.labels_encoder
    if isinstance(spec, Mapping):  # a random encoder, its embeddings sized to its tokenizer
        name = section.labels_tokenizer
        labels_tokenizer = _tokenizer(name)
        return name, encoder_config_from_hf({**spec, "vocab_size": len(labels_tokenizer)}), labels_tokenizer, None
    directory = resolve(spec, ENCODER_PATTERNS)
    encoder, config = load_hf_encoder(directory, seed=seed)
    labels_tokenizer = _tokenizer(section.labels_tokenizer) if section.labels_tokenizer else load_tokenizer(directory)
    return spec, config, labels_tokenizer, encoder


def _tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a local directory or hub repo id."""
    return load_tokenizer(resolve(name_or_path, TOKENIZER_PATTERNS))


def _copy_pretrained(target: nnx.Module, pretrained: nnx.Module) -> None:
    """Put the pretrained encoder's (or causal LM's) weights into `target`, every parameter it has (a streaming
    backbone has no untied LM head to take). The word embeddings are resized to
    the tokenizer as gliner resizes them: rows past the tokenizer's ids are dropped (deberta-v3 has 128100 rows for
    128001 ids), rows of added tokens past the encoder's keep their random init."""
    pretrained_params = dict(nnx.to_flat_state(nnx.state(pretrained, nnx.Param)))
    for path, variable in nnx.to_flat_state(nnx.state(target, nnx.Param)):
        value = np.asarray(pretrained_params[path][...])
        current = variable[...]
        if value.shape != current.shape:  # the word embeddings
            value = np.concatenate([value[: current.shape[0]], np.asarray(current[value.shape[0] :])], axis=0)
        variable[...] = jnp.asarray(value)
