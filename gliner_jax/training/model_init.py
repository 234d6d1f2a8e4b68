"""The network a run trains: a new GLiNER on a random or pretrained encoder of any registered family, or an existing
GLiNER."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from gliner_jax.checkpoint_io import load_gliner, load_hf_encoder
from gliner_jax.config import GLiNERConfig
from gliner_jax.hub import ENCODER_PATTERNS, TOKENIZER_PATTERNS, add_special_tokens, resolve, resolve_gliner
from gliner_jax.modeling.encoders import family_of
from gliner_jax.modeling.encoders.deberta import MODEL_TYPE as DEBERTA
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.training.config import ModelSection


def build_model(section: ModelSection, seed: int) -> tuple[GLiNERModel, GLiNERConfig, PreTrainedTokenizerBase]:
    """The model (float32 parameters, compute dtype from the section), its config and its tokenizer.

    `init_from`, `encoder` (as a name) and `tokenizer` are local directories or Hugging Face Hub repo ids
    (`gliner_jax.hub`). An existing GLiNER is read in any layout gliner reads (legacy ones completed). For a new
    GLiNER, gliner's three special tokens ([FLERT], the entity and separator tokens) are added to the tokenizer and
    the word embeddings grow to the new vocabulary; new rows are drawn like the encoder's init.
    """
    dtype = jnp.dtype(section.dtype)
    if section.init_from is not None:
        layout = resolve_gliner(section.init_from)
        model, config = load_gliner(layout.directory, config=layout.config, dtype=dtype, seed=seed)
        return model, config, _tokenizer(section.tokenizer) if section.tokenizer else layout.tokenizer

    base = GLiNERConfig(**section.gliner)  # validates the fields before any weights are built
    encoder_dir = resolve(section.encoder, ENCODER_PATTERNS) if isinstance(section.encoder, str) else None
    tokenizer = _tokenizer(section.tokenizer) if section.tokenizer else AutoTokenizer.from_pretrained(encoder_dir)
    add_special_tokens(tokenizer, base.ent_token, base.sep_token)
    vocab_size = len(tokenizer)
    pretrained = None
    if encoder_dir is not None:
        pretrained, encoder_config = load_hf_encoder(encoder_dir, seed=seed)
        encoder_config = dataclasses.replace(encoder_config, vocab_size=vocab_size)
    else:
        fields = dict(section.encoder)  # a random encoder: its family's config fields, DeBERTa by default
        family = family_of(fields.pop("model_type", DEBERTA))
        encoder_config = family.config_class(**{**fields, "vocab_size": vocab_size})
    config = dataclasses.replace(
        base,
        model_name=section.encoder if isinstance(section.encoder, str) else base.model_name,
        encoder_config=encoder_config,
        vocab_size=vocab_size,
        class_token_index=tokenizer.convert_tokens_to_ids(base.ent_token),
    )
    model = GLiNERModel(config, dtype=dtype, rngs=nnx.Rngs(seed))
    if pretrained is not None:
        _copy_pretrained_encoder(model, pretrained)
    return model, config, tokenizer


def _tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a local directory or hub repo id."""
    return AutoTokenizer.from_pretrained(resolve(name_or_path, TOKENIZER_PATTERNS))


def _copy_pretrained_encoder(model: GLiNERModel, pretrained: nnx.Module) -> None:
    """Put the pretrained encoder's weights into `model.encoder`. The word embeddings are resized to the tokenizer
    as gliner resizes them: rows past the tokenizer's ids are dropped (deberta-v3 has 128100 rows for 128001 ids),
    rows of added tokens past the encoder's keep their random init."""
    target = dict(nnx.to_flat_state(nnx.state(model.encoder, nnx.Param)))
    for path, variable in nnx.to_flat_state(nnx.state(pretrained, nnx.Param)):
        value = np.asarray(variable[...])
        current = target[path][...]
        if value.shape != current.shape:  # the word embeddings
            value = np.concatenate([value[: current.shape[0]], np.asarray(current[value.shape[0] :])], axis=0)
        target[path][...] = jnp.asarray(value)
