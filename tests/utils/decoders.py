"""Tiny random causal decoders: gliner's `Decoder` around a transformers causal LM (GPT-2, Llama, Qwen2), and ours
loaded with its weights. torch / gliner are imported inside the functions (the sizes serve the unit tests too)."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
from flax import nnx

from gliner_jax.checkpoint_io import decoder_table, state_from_torch
from gliner_jax.modeling.decoders import build_decoder, decoder_config_from_hf, decoder_family_of_config

EOS_ID = 2
# Odd widths; Llama with grouped-query heads (4 query heads on 2 key/value heads) and every bias, Qwen2 with one
# key/value head and tied embeddings; GPT-2 with per-layer attention scaling and an untied head.
TINY_DECODERS = {
    "gpt2": dict(vocab_size=97, n_positions=64, n_embd=24, n_layer=2, n_head=3, bos_token_id=1, eos_token_id=EOS_ID),
    "llama": dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=45,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=EOS_ID,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    ),
    "qwen2": dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=45,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=EOS_ID,
        tie_word_embeddings=True,
    ),
}


def hf_decoder_config(model_type: str, **overrides: Any) -> Any:
    """transformers' config of a tiny decoder of `model_type` (TINY_DECODERS sizes)."""
    import transformers

    return transformers.AutoConfig.for_model(model_type, **{**TINY_DECODERS[model_type], **overrides})


def gliner_decoder(hf_config: Any, seed: int = 0) -> Any:
    """gliner's `Decoder` (eval mode) around a random causal LM of `hf_config`, its weights drawn wide (std 0.3;
    norm weights in [0.5, 1.5]) so that greedy choices are far from ties."""
    import torch
    from gliner.modeling.decoder import Decoder

    torch.manual_seed(seed)
    decoder = Decoder(types.SimpleNamespace(labels_decoder="tiny", labels_decoder_config=hf_config, model_name="tiny"))
    with torch.no_grad():
        for param in decoder.parameters():
            param.normal_(0, 0.3) if param.dim() > 1 else param.uniform_(0.5, 1.5)
    return decoder.eval()


def our_decoder(torch_lm: Any) -> nnx.Module:
    """Our decoder (eval mode) of a transformers causal LM's config, loaded with its state dict (strict keys)."""
    config = decoder_config_from_hf(torch_lm.config.to_dict())
    model = build_decoder(config, rngs=nnx.Rngs(0))
    ignored = set(decoder_family_of_config(config).hf_ignored(config))
    tensors = {k: v.numpy() for k, v in torch_lm.state_dict().items() if k not in ignored}
    state_from_torch(model, tensors, decoder_table(config))
    model.eval()
    return model


def random_embeds(batch: int, length: int, width: int, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 input embeddings [batch, length, width]."""
    return np.random.default_rng(seed).normal(size=(batch, length, width)).astype(np.float32)
