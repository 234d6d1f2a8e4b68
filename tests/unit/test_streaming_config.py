"""A streaming span model's config (gliner's `StreamingSpanConfig` dict, hand-written here) read, completed with
gliner's defaults, written back, and its unsupported options refused by name; the spans a session's chunk rescores,
hand-checked against gliner's `prepare_streaming_span_idx` rule."""

from __future__ import annotations

import numpy as np
import pytest

from gliner_jax.config import GLiNERConfig
from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.modeling.decoders.gpt2 import Gpt2Config
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from gliner_jax.streaming import _candidates

DECODER = {"model_type": "gpt2", "vocab_size": 60, "n_positions": 64, "n_embd": 24, "n_layer": 2, "n_head": 3}
CONFIG = {
    "model_type": "gliner_streaming_span",
    "model_name": "some/backbone",
    "encoder_config": None,
    "decoder_config": DECODER,
    "hidden_size": 32,
    "max_width": 4,
    "class_token_index": 58,
    "sep_token_index": 59,
    "max_cache_length": 48,
    "transformers_version": "5.16.1",
}


def test_config_reads_completes_and_writes_back():
    config = StreamingSpanConfig.from_dict(CONFIG)
    assert isinstance(config.encoder_config, Gpt2Config) and config.encoder_config.n_positions == 64
    # gliner's defaults: markerV2, no BiLSTM, a two-layer DeBERTa-v2 label encoder as wide as hidden_size, the
    # right context as wide as max_width
    assert (config.span_mode, config.num_rnn_layers, config.right_context_width) == ("markerV2", 0, 4)
    labels = config.labels_encoder_config
    assert isinstance(labels, DebertaConfig) and (labels.num_hidden_layers, labels.hidden_size) == (2, 32)
    assert config.context_limit == 48 and config.prompt_token == "<<LABEL>>" and config.is_streaming
    written = config.to_dict()
    assert written["encoder_config"] is None and written["decoder_config"]["n_embd"] == 24
    assert written["model_type"] == "gliner_streaming_span" and written["transformers_version"] == "5.16.1"
    assert StreamingSpanConfig.from_dict(written) == config
    with pytest.raises(ValueError, match="StreamingSpanConfig"):  # not a uni-encoder config
        GLiNERConfig.from_dict(CONFIG)
    with pytest.raises(ValueError, match="no decoder_config"):
        StreamingSpanConfig.from_dict({**CONFIG, "decoder_config": None})


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("span_mode", "token_level", NotImplementedError),
        ("max_cache_length", 0, ValueError),
        ("right_context_width", -1, ValueError),
    ],
)
def test_unsupported_options_are_refused_by_name(field, value, error):
    with pytest.raises(error, match=field):
        StreamingSpanConfig.from_dict({**CONFIG, field: value})


def test_chunk_rescores_spans_near_the_newest_word():
    config = StreamingSpanConfig.from_dict({**CONFIG, "max_width": 3, "right_context_width": 2})
    # 5 words cached, 2 new (words 5, 6): spans ending at or after min(5, 6 - 2) = 4, inside the 7 words
    scored = _candidates(config, 5, 2, 8, every=False)
    ends = {(start, start + width) for start, width in zip(*np.nonzero(scored), strict=True)}
    assert {end for _, end in ends} == {4, 5, 6} and (2, 4) in ends and (4, 6) in ends and (5, 7) not in ends
    # A chunk longer than the right context still rescores every span ending in it (ends >= 5 cached words).
    assert {s + k for s, k in zip(*np.nonzero(_candidates(config, 5, 6, 16, every=False)), strict=True)} == set(
        range(5, 11)
    )
    assert _candidates(config, 5, 2, 8, every=True).sum() == 3 * 7 - 3  # every span inside the 7 words
