"""The tiny DeBERTa GLiNER config of the sharding tests (unit rules and e2e steps); no torch."""

from __future__ import annotations

from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling.encoders.deberta import DebertaConfig

TINY_ENCODER = DebertaConfig(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    position_buckets=8,
)
CLASS_TOKEN = 7
TINY_GLINER = GLiNERConfig(hidden_size=16, max_width=3, encoder_config=TINY_ENCODER, class_token_index=CLASS_TOKEN)
