"""Model shapes of the benchmarks, defined once: the published DeBERTa-v3 encoder sizes (and a toy one), gliner's
deberta-v3 vocabulary, the span GLiNER of gliner's large models on top, and offline gliner directories of them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from gliner_jax.testing.builders import build_backbone, build_reference

# Published deberta-v3 sizes (and a 2-layer toy); the rest of the layout is DebertaConfig's default (deberta-v3).
DEBERTA_V3 = {
    "toy": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "xsmall": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "small": dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
VOCAB_SIZE = 128004  # gliner's deberta-v3 models: 128,001 tokenizer ids + the 3 tokens gliner adds
CLASS_TOKEN_INDEX = 128001  # gliner's <<ENT>> in that vocabulary
GLINER_HEAD = dict(hidden_size=768, max_width=12)  # gliner's large / multi models: hidden 768, spans up to 12 words
SPAN_GLINER = dict(span_mode="markerV0", **GLINER_HEAD, dropout=0.4, max_len=384)


def deberta_v3(size: str, **fields: object) -> DebertaConfig:
    """The DeBERTa-v3 encoder config of `size` (a key of DEBERTA_V3), with `fields` set on top."""
    return DebertaConfig(**(DEBERTA_V3[size] | fields))


def encoder_dict(size: str) -> dict:
    """The Hugging Face config.json fields of the `size` encoder (its vocabulary comes from the tokenizer)."""
    return deberta_v3(size).to_hf_dict()


def span_gliner(size: str) -> GLiNERConfig:
    """A span GLiNER (SPAN_GLINER) on the `size` encoder with gliner's deberta-v3 vocabulary."""
    encoder = deberta_v3(size, vocab_size=VOCAB_SIZE)
    vocab = dict(vocab_size=VOCAB_SIZE, class_token_index=CLASS_TOKEN_INDEX)
    return GLiNERConfig(**SPAN_GLINER, encoder_config=encoder, **vocab)


def reference_models(
    root: Path, size: str, modes: Sequence[str], corpus: list[str], vocab_size: int
) -> dict[str, Path]:
    """One gliner directory per span mode over one random `size` backbone (word-level tokenizer trained on `corpus`),
    gliner's own head init, the word embeddings grown to `vocab_size` rows (unused ids) so that the optimizer
    updates a real-size table."""
    backbone = build_backbone(
        root / "backbone", encoder_dict(size), tokenizer=dict(vocab_size=1000, model_type="word", corpus=corpus)
    )
    directories = {}
    for mode in modes:
        directory = root / mode
        # gliner's own head init (no noise, no scaling): the loss is then in its usual range.
        reference = build_reference(backbone, directory, span_mode=mode, logit_scale=1.0, noise=0.0, **GLINER_HEAD)
        if vocab_size > reference.config.vocab_size:
            reference.model.token_rep_layer.resize_token_embeddings(vocab_size)
            reference.config.vocab_size = reference.config.encoder_config.vocab_size = vocab_size
            reference.save_pretrained(directory)
        directories[mode] = directory
    return directories
