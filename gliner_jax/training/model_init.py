"""The network a run trains: a new GLiNER on a random or pretrained DeBERTa encoder, or an existing GLiNER."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from gliner_jax.checkpoint_io import load_gliner, load_hf_encoder
from gliner_jax.config import DebertaConfig, GLiNERConfig
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.training.config import ModelSection

# Tokens gliner adds to the backbone's tokenizer (in this order) before resizing the embeddings.
FLERT_TOKEN = "[FLERT]"


def build_model(section: ModelSection, seed: int) -> tuple[GLiNERModel, GLiNERConfig, PreTrainedTokenizerBase]:
    """The model (float32 parameters, compute dtype from the section), its config and its tokenizer.

    For a new GLiNER, gliner's three special tokens ([FLERT], the entity and separator tokens) are added to the
    tokenizer and the word embeddings grow to the new vocabulary; new rows are drawn like the encoder's init.
    """
    dtype = jnp.dtype(section.dtype)
    tokenizer = AutoTokenizer.from_pretrained(section.tokenizer_path, local_files_only=True)
    if section.init_from is not None:
        model, config = load_gliner(section.init_from, dtype=dtype, seed=seed)
        return model, config, tokenizer

    base = GLiNERConfig(**section.gliner)  # validates the fields before any weights are built
    tokenizer.add_tokens([FLERT_TOKEN, base.ent_token, base.sep_token], special_tokens=True)
    vocab_size = len(tokenizer)
    pretrained = None
    if isinstance(section.encoder, str):
        pretrained, encoder_config = load_hf_encoder(section.encoder, seed=seed)
        if encoder_config.vocab_size > vocab_size:
            raise ValueError(
                f"the encoder has {encoder_config.vocab_size} embeddings but the tokenizer only {vocab_size} ids"
            )
        encoder_config = dataclasses.replace(encoder_config, vocab_size=vocab_size)
    else:
        encoder_config = DebertaConfig(**{**section.encoder, "vocab_size": vocab_size})
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


def _copy_pretrained_encoder(model: GLiNERModel, pretrained: nnx.Module) -> None:
    """Put the pretrained encoder's weights into `model.encoder`; embedding rows past its vocabulary (the added
    tokens) keep their random init."""
    target = dict(nnx.to_flat_state(nnx.state(model.encoder, nnx.Param)))
    for path, variable in nnx.to_flat_state(nnx.state(pretrained, nnx.Param)):
        value = np.asarray(variable[...])
        current = target[path][...]
        if value.shape != current.shape:  # the word embeddings, grown by the added tokens
            value = np.concatenate([value, np.asarray(current[value.shape[0] :])], axis=0)
        target[path][...] = jnp.asarray(value)
